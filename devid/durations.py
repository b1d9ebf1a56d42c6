"""Durations (``30d``, ``12h``, ``1h30m``), lifetime fractions (``33%``) and points in time.

One parser for every option that takes a span of time, so ``cert list --expiring-within``,
``cert verify --at`` and rotation's ``--before`` read the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from devid.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

#: The longest span of time any option accepts (and the most ``--days``): 100 years.
MAX_DAYS = 36500
MAX_SPAN = dt.timedelta(days=MAX_DAYS)


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``10m``, ``45s``, ``2w`` or a sum of them (``1d12h``)."""
    compact = text.strip().lower().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise BadInput(
            f"bad duration {text!r}; use a number with a unit s, m, h, d or w, e.g. 30d or 1h30m"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds > MAX_SPAN.total_seconds():
        raise BadInput(f"duration {text!r} is too long; at most {MAX_DAYS}d (100 years)")
    return dt.timedelta(seconds=seconds)


def format_duration(span: dt.timedelta) -> str:
    """The shortest ``parse_duration`` text for *span* (whole seconds)."""
    seconds = int(span.total_seconds())
    if seconds == 0:
        return "0s"
    sign, seconds, out = ("-" if seconds < 0 else ""), abs(seconds), []
    for unit in ("w", "d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            out.append(f"{count}{unit}")
    return sign + "".join(out)


@dataclass(frozen=True)
class Threshold:
    """ "Renew this long before expiry": a fixed span, or a fraction of the lifetime left."""

    span: dt.timedelta | None = None
    fraction: float | None = None

    def renew_at(self, not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
        """The moment from which a certificate valid *not_before*..*not_after* is due."""
        if self.fraction is not None:
            return not_after - (not_after - not_before) * self.fraction
        assert self.span is not None
        return not_after - self.span

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        assert self.span is not None
        return format_duration(self.span)


def parse_threshold(text: str) -> Threshold:
    """``30d`` (a duration) or ``33%`` (that fraction of the lifetime before expiry)."""
    stripped = text.strip()
    if stripped.endswith("%"):
        try:
            percent = float(stripped[:-1])
        except ValueError:
            raise BadInput(f"bad percentage {text!r}; use e.g. 33%") from None
        if not 0 < percent <= 100:
            raise BadInput(f"bad percentage {text!r}; use more than 0% and at most 100%")
        return Threshold(fraction=percent / 100)
    return Threshold(span=parse_duration(stripped))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def later(when: dt.datetime, span: dt.timedelta) -> dt.datetime:
    """*when* + *span*, or the last representable instant (UTC) past year 9999."""
    try:
        return when + span
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)


def parse_instant(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC when no zone is given), or ``+30d`` / ``-2h`` relative to now."""
    stripped = text.strip()
    base = now or utcnow()
    if stripped[:1] in "+-" and stripped[1:2].isdigit():
        span = parse_duration(stripped[1:])
        try:
            return base + span if stripped[0] == "+" else base - span
        except OverflowError:
            raise BadInput(f"time {text!r} is out of range") from None
    try:
        when = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"bad time {text!r}; use ISO 8601 (2030-01-31T12:00:00Z) or +30d / -2h"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
