"""Helpers for the rotation tests: certificates issued in the past, and the provisioning
tests' view of the token, openssl and the inventory (tests/provision/provision_support.py)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from conftest import DevicePki, unique

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provision"))

from provision_support import (
    cert_public_key_der,
    certificate_rows,
    inventory_dump,
    ok_json,
    one_error_line,
    openssl_serial,
    openssl_verify,
    token_objects,
    token_public_key_der,
    tree_snapshot,
)

from devid.provision import ProvisionResult, provision_batch

__all__ = [
    "cert_public_key_der",
    "certificate_rows",
    "inventory_dump",
    "ok_json",
    "one_error_line",
    "openssl_serial",
    "openssl_verify",
    "provision_at",
    "token_objects",
    "token_public_key_der",
    "tree_snapshot",
]


def provision_at(
    monkeypatch: pytest.MonkeyPatch,
    pki: DevicePki,
    count: int,
    *,
    days_ago: int = 0,
    days: int | None = None,
) -> list[ProvisionResult]:
    """Provision *count* new devices as if it were *days_ago* days ago (the CAs are older)."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    base = unique("rot")
    with monkeypatch.context() as patch:
        patch.setattr("devid.pki.issue.utcnow", lambda: then)
        return provision_batch(
            [f"{base}-{n}" for n in range(count)], token=pki.token, ca="issuing", days=days
        )
