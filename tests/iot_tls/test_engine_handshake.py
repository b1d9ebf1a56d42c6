"""A TLS handshake with the device key on the token, through OpenSSL's libp11 engine.

``openssl s_client -engine pkcs11 -keyform engine -key 'pkcs11:...'`` is the client; a Python
``ssl`` server that requires client certificates from the test CA is the judge. It accepts a
device whose key is on the token (TLS 1.3, and TLS 1.2; RSA-PSS and PKCS#1 v1.5 for RSA) and
rejects a revoked (CRL checked) or expired device certificate.

libp11 0.4.12 fails for every key on a token that holds one Ed25519 private key, and the
session token gets Ed25519 keys from other tests, so these keys live on their own token.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PIN, TEST_SO_PIN, require_tool
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from iot_tls_support import (
    TestCA,
    TlsServer,
    csr_signed_by,
    engine_config,
    engine_env,
    name,
)

from devid.keys import KeyType, generate_key

TOKEN = "tls-test"


@dataclass
class Fleet:
    ca: TestCA
    conf: Path
    keys: dict[str, Any]

    def device(self, key_type: str, cn: str, **kw: Any) -> Path:
        return self.ca.issue(csr_signed_by(self.keys[key_type], name(cn)), f"{cn}.pem", **kw)


@pytest.fixture(scope="module")
def fleet(softhsm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    import hsm

    hsm.init_softhsm_token(TOKEN, so_pin=TEST_SO_PIN, user_pin=TEST_PIN)
    directory = tmp_path_factory.mktemp("engine")
    keys = {
        kt: generate_key(KeyType(kt), token=f"pkcs11:token={TOKEN}", label=f"tls-{kt}")[0]
        for kt in ("ec-p256", "rsa-2048")
    }
    yield Fleet(TestCA(directory), engine_config(directory), keys)


def handshake(
    fleet: Fleet, server: TlsServer, key_type: str, cert: Path, *options: str
) -> tuple[subprocess.CompletedProcess[bytes], Any]:
    """Run s_client with the token key (by label, PIN in the URI) and collect both sides."""
    label = fleet.keys[key_type].handle.label
    uri = f"pkcs11:token={TOKEN};object={label};type=private;pin-value={TEST_PIN}"
    args = [
        require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{server.port}",
        "-engine", "pkcs11", "-keyform", "engine", "-key", uri, "-cert", str(cert),
        "-CAfile", str(fleet.ca.path), "-verify_return_error", "-verify_ip", "127.0.0.1",
        "-quiet", *options,
    ]  # fmt: skip
    client = subprocess.run(
        args, capture_output=True, input=b"", timeout=60, env=engine_env(fleet.conf)
    )
    return client, server.close()


CASES = [
    ("ec-p256", ["-tls1_3"]),
    ("ec-p256", ["-tls1_2"]),
    ("rsa-2048", ["-tls1_3", "-client_sigalgs", "rsa_pss_rsae_sha256"]),
    ("rsa-2048", ["-tls1_2", "-client_sigalgs", "rsa_pss_rsae_sha256"]),
    ("rsa-2048", ["-tls1_2", "-client_sigalgs", "RSA+SHA256"]),
]


@pytest.mark.parametrize(("key_type", "options"), CASES, ids=[" ".join(c[1]) for c in CASES])
def test_server_accepts_token_key(fleet: Fleet, key_type: str, options: list[str]) -> None:
    cert = fleet.device(key_type, f"good-{key_type}-{len(options)}-{options[-1]}")
    server = TlsServer(fleet.ca)
    client, seen = handshake(fleet, server, key_type, cert, *options)
    assert seen.error is None, (seen.error, client.stderr.decode())
    expected = x509.load_pem_x509_certificate(cert.read_bytes())
    assert seen.peer_der == expected.public_bytes(serialization.Encoding.DER)
    assert b"devid-tls-ok" in client.stdout


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_server_rejects_revoked_device(fleet: Fleet, key_type: str) -> None:
    good = fleet.device(key_type, f"ok-{key_type}")
    revoked = fleet.device(key_type, f"revoked-{key_type}")
    crl = fleet.ca.crl([revoked], f"crl-{key_type}.pem")

    client, seen = handshake(fleet, TlsServer(fleet.ca, crl=crl), key_type, good, "-tls1_3")
    assert seen.error is None, seen.error

    client, seen = handshake(fleet, TlsServer(fleet.ca, crl=crl), key_type, revoked, "-tls1_3")
    assert seen.error is not None and "certificate revoked" in seen.error
    assert b"devid-tls-ok" not in client.stdout


def test_server_rejects_expired_device(fleet: Fleet) -> None:
    expired = fleet.device("ec-p256", "expired-ec", expired=True)
    client, seen = handshake(fleet, TlsServer(fleet.ca), "ec-p256", expired, "-tls1_3")
    assert seen.error is not None and "certificate has expired" in seen.error
    assert b"devid-tls-ok" not in client.stdout


def test_client_sigalgs_really_restrict_the_signature(fleet: Fleet) -> None:
    """Control for the PSS cases: TLS 1.3 forbids PKCS#1 v1.5 in CertificateVerify, so
    limiting the client to RSA+SHA256 there must fail, proving -client_sigalgs is obeyed."""
    cert = fleet.device("rsa-2048", "control-rsa")
    options = ["-tls1_3", "-client_sigalgs", "RSA+SHA256"]
    client, seen = handshake(fleet, TlsServer(fleet.ca), "rsa-2048", cert, *options)
    # with no signature algorithm left for its key, the client sends no certificate
    assert seen.error is not None and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in seen.error
    assert b"devid-tls-ok" not in client.stdout
