"""``devid cert needs-renewal``: exit 0 when a certificate is due for renewal (for scripts)."""

from __future__ import annotations

from pathlib import Path

import click

from devid.cli._common import emit, examples, json_option
from devid.cli.cert import cert
from devid.durations import parse_instant, parse_threshold, utcnow
from devid.errors import CheckFailed
from devid.pki import certs
from devid.rotate import renewal_due


@cert.command("needs-renewal")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--before",
    required=True,
    metavar="DURATION|PERCENT",
    help="Due this long before notAfter (30d), or when this share of the lifetime is left (33%).",
)
@click.option("--at", "at_text", metavar="TIME", help="Decide at TIME (ISO 8601, +30d).")
@json_option
@examples(
    """
devid cert needs-renewal /etc/device/cert.pem --before 30d && devid rotate --before 30d
devid cert needs-renewal dev1.pem --before 33% --json
devid cert needs-renewal dev1.pem --before 30d --at 2030-01-01T00:00:00Z
"""
)
def needs_renewal(path: Path, before: str, at_text: str | None, as_json: bool) -> None:
    """Exit 0 if the (first) certificate in PATH needs renewal, 1 if it does not.

    Like 'step certificate needs-renewal': exit code 0 means "renew now", so shell scripts
    can write 'needs-renewal ... && renew'. It is due when less than --before is left until
    its notAfter (30d), or less than that share of its lifetime (33%); an expired
    certificate is due. Other exit codes: 2 bad input (no such file, not a certificate,
    a bad --before or --at).
    """
    threshold = parse_threshold(before)
    at = parse_instant(at_text) if at_text else utcnow()
    found = certs.read_certificate(path)
    not_before, not_after = found.not_valid_before_utc, found.not_valid_after_utc
    due, renew_at = renewal_due(not_before, not_after, threshold, at)
    data = {
        "path": str(path),
        "serial": certs.serial_hex(found.serial_number),
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "renew_at": renew_at.isoformat(),
        "at": at.isoformat(),
        "expired": at > not_after,
        "needs_renewal": due,
    }
    if not due:
        if as_json:
            emit(data, as_json=True)
        raise CheckFailed(f"{path} does not need renewal until {renew_at:%Y-%m-%d %H:%M:%S}Z")
    emit(
        data,
        as_json=as_json,
        text=f"{path} needs renewal (due since {renew_at:%Y-%m-%d %H:%M:%S}Z)",
    )
