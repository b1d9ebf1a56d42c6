"""``devid cert needs-renewal``: exit 0 when due, 1 when not (as step's needs-renewal).

The moments tested around are computed from the validity openssl reads, not from devid.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DevicePki, run_tool
from rotate_support import one_error_line, provision_at

HOUR = dt.timedelta(hours=1)


def _validity(path: Path) -> tuple[dt.datetime, dt.datetime]:
    out = run_tool("openssl", "x509", "-in", str(path), "-noout", "-startdate", "-enddate")
    fields = dict(line.split("=", 1) for line in out.stdout.decode().splitlines())

    def parse(text: str) -> dt.datetime:
        return dt.datetime.strptime(text, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)

    return parse(fields["notBefore"]), parse(fields["notAfter"])


@pytest.fixture
def device_cert(device_pki: DevicePki, monkeypatch: pytest.MonkeyPatch) -> Path:
    return provision_at(monkeypatch, device_pki, 1)[0].certificate_path


def _check(devid: Callable[..., Any], cert: Path, before: str, at: dt.datetime) -> Any:
    return devid("cert", "needs-renewal", str(cert), "--before", before, "--at", at.isoformat())


def test_duration_threshold(devid: Callable[..., Any], device_cert: Path) -> None:
    _, not_after = _validity(device_cert)
    due_from = not_after - dt.timedelta(days=30)

    early = _check(devid, device_cert, "30d", due_from - HOUR)
    assert early.code == 1 and "does not need renewal" in one_error_line(early)
    late = _check(devid, device_cert, "30d", due_from + HOUR)
    assert late.code == 0 and "needs renewal" in late.out and late.err == ""
    assert _check(devid, device_cert, "720h", due_from + HOUR).code == 0

    now = devid("cert", "needs-renewal", str(device_cert), "--before", "30d")
    assert now.code == 1  # a fresh certificate, evaluated now


def test_percentage_threshold(devid: Callable[..., Any], device_cert: Path) -> None:
    not_before, not_after = _validity(device_cert)
    due_from = not_after - (not_after - not_before) * 0.33

    assert _check(devid, device_cert, "33%", due_from - HOUR).code == 1
    assert _check(devid, device_cert, "33%", due_from + HOUR).code == 0
    assert _check(devid, device_cert, "100%", not_before + HOUR).code == 0


def test_json_and_expired(devid: Callable[..., Any], device_cert: Path) -> None:
    _, not_after = _validity(device_cert)
    expired = devid(
        "cert", "needs-renewal", str(device_cert), "--before", "1d",
        "--at", (not_after + dt.timedelta(days=1)).isoformat(), "--json",
    )  # fmt: skip
    assert expired.code == 0
    data = json.loads(expired.out)
    assert data["needs_renewal"] is True and data["expired"] is True
    assert dt.datetime.fromisoformat(data["not_after"]) == not_after

    fresh = devid("cert", "needs-renewal", str(device_cert), "--before", "1d", "--json")
    assert fresh.code == 1
    assert json.loads(fresh.out)["needs_renewal"] is False
    assert one_error_line(fresh)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--before", "soon"), "bad duration 'soon'"),
        (("--before", "0%"), "bad percentage '0%'"),
        (("--before", "30d", "--at", "tomorrow"), "bad time 'tomorrow'"),
    ],
)
def test_bad_thresholds_and_times(
    devid: Callable[..., Any], device_cert: Path, args: tuple[str, ...], message: str
) -> None:
    result = devid("cert", "needs-renewal", str(device_cert), *args)
    assert result.code == 2
    assert message in one_error_line(result)


def test_missing_or_garbled_certificate(devid: Callable[..., Any], tmp_path: Path) -> None:
    missing = devid("cert", "needs-renewal", str(tmp_path / "nope.pem"), "--before", "30d")
    assert missing.code == 2 and "not found" in one_error_line(missing)
    garbled = tmp_path / "garbled.pem"
    garbled.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    result = devid("cert", "needs-renewal", str(garbled), "--before", "30d")
    assert result.code == 2 and "malformed certificate" in one_error_line(result)
