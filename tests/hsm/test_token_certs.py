"""Certificate objects stored on the token next to their key (same CKA_ID)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Callable
from typing import Any

from conftest import TEST_PIN, TOKEN_LABEL, require_tool, softhsm_module
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from hsm.certs import load_certificates, store_certificate


def _self_signed(key: Any, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_certificate_is_stored_with_the_key_id_and_replaced(
    token_key_factory: Callable[[str], Any],
) -> None:
    key = token_key_factory("ec-p256")
    first, second = _self_signed(key, "one"), _self_signed(key, "two")

    assert store_certificate(key, first) == 0
    assert load_certificates(key) == [first]
    assert store_certificate(key, second) == 1  # rotation replaces the old object
    assert load_certificates(key) == [second]

    tool = require_tool("pkcs11-tool")
    listing = subprocess.run(
        [tool, "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
         "--login", "--pin", TEST_PIN, "--list-objects", "--type", "cert",
         "--id", key.handle.key_id.hex()],
        capture_output=True, text=True, check=True, env=os.environ,
    )  # fmt: skip
    assert listing.stdout.count("Certificate Object") == 1
    assert f"serial:     {second.serial_number:X}" in listing.stdout.replace(
        "serial:     0", "serial:     "
    )
