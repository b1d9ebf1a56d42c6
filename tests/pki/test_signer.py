"""A batch signs with one CertificateSigner, which reuses a builder for what certificates share.

Reuse must never leak one certificate's content into the next: a signer used for a mixed
sequence (profiles, subject key types, CRL URLs, validities, empty subjects, name constraints)
produces exactly the to-be-signed bytes a fresh signer makes for each, and the extensions are
the ones the profile names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from conftest import run_tool
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devid.pki.build import CertificateSigner, CertificateSpec, sign_certificate
from devid.pki.profiles import PROFILES

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)
KEYS: dict[str, Any] = {
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "rsa2048": rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
}
ISSUER_KEY = KEYS["p256"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _root(key: Any = ISSUER_KEY, cn: str = "Signer Test Root") -> x509.Certificate:
    spec = CertificateSpec(
        subject=_name(cn),
        public_key=key.public_key(),
        profile=PROFILES["root"],
        serial=1000,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=3650),
    )
    return sign_certificate(spec, issuer=None, key=key)


def _spec(n: int, **changes: Any) -> CertificateSpec:
    device = f"dev-{n:04d}"
    base = CertificateSpec(
        subject=_name(device),
        public_key=KEYS["p256"].public_key(),
        profile=PROFILES["device"],
        serial=0x5A5A_0000_0000_0000_0000 + n,
        not_before=NOW - dt.timedelta(minutes=1),
        not_after=NOW + dt.timedelta(days=365),
        sans=(x509.UniformResourceIdentifier(f"urn:devid:{device}"), x509.DNSName(device)),
    )
    return dataclasses.replace(base, **changes)


def _mixed() -> list[CertificateSpec]:
    server_sans = (x509.DNSName("host.example.com"),)
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("devices.example.com")],
        excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
    )
    return [
        _spec(1),
        _spec(2, public_key=KEYS["rsa2048"].public_key()),  # adds keyEncipherment
        _spec(3, crl_url="http://pki.example.com/a.crl"),
        _spec(4, crl_url="http://pki.example.com/b.crl"),
        _spec(5, profile=PROFILES["server"], sans=server_sans),
        _spec(6, not_after=NOW + dt.timedelta(days=30)),
        _spec(12, not_before=NOW - dt.timedelta(hours=1)),
        _spec(7, subject=x509.Name([])),  # SAN becomes critical
        _spec(8, profile=PROFILES["intermediate"], sans=(), path_len=0),
        _spec(
            9, profile=PROFILES["intermediate"], sans=(), path_len=1, name_constraints=constraints
        ),
        _spec(10, public_key=KEYS["ed25519"].public_key(), profile=PROFILES["client"], sans=()),
        _spec(11),
    ]


@pytest.mark.parametrize("issuer_kind", sorted(KEYS))
def test_a_reused_signer_makes_what_a_fresh_one_makes(issuer_kind: str) -> None:
    key = KEYS[issuer_kind]
    issuer = _root(key, cn=f"Root {issuer_kind}")
    signer = CertificateSigner(issuer, key)
    for spec in _mixed() + _mixed()[::-1]:
        reused = signer.sign(spec)
        fresh = sign_certificate(spec, issuer=issuer, key=key)
        assert reused.tbs_certificate_bytes == fresh.tbs_certificate_bytes, spec
        reused.verify_directly_issued_by(issuer)


def test_device_certificate_extensions() -> None:
    issuer = _root()
    spec = _spec(1, crl_url="http://pki.example.com/crl/issuing.crl")
    cert = CertificateSigner(issuer, ISSUER_KEY).sign(spec)
    exts = {e.oid: e for e in cert.extensions}
    basic = exts[x509.BasicConstraints.oid]
    assert basic.critical and basic.value == x509.BasicConstraints(ca=False, path_length=None)
    usage = exts[x509.KeyUsage.oid]
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_encipherment and not usage.value.key_cert_sign
    eku = exts[x509.ExtendedKeyUsage.oid].value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert exts[x509.AuthorityKeyIdentifier.oid].value.key_identifier == issuer_ski.digest
    ski = exts[x509.SubjectKeyIdentifier.oid].value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(spec.public_key)
    san = exts[x509.SubjectAlternativeName.oid]
    assert not san.critical and list(san.value) == list(spec.sans)
    crl = exts[x509.CRLDistributionPoints.oid].value
    assert crl[0].full_name == [x509.UniformResourceIdentifier(spec.crl_url)]
    assert cert.issuer == issuer.subject and cert.serial_number == spec.serial
    assert cert.not_valid_before_utc == spec.not_before
    assert cert.not_valid_after_utc == spec.not_after


def test_self_signed_signer_names_itself() -> None:
    key = KEYS["p384"]
    signer = CertificateSigner(None, key)
    for n in (1, 2):
        spec = _spec(n, subject=_name(f"Root {n}"), public_key=key.public_key(), sans=())
        spec = dataclasses.replace(spec, profile=PROFILES["root"])
        cert = signer.sign(spec)
        assert cert.issuer == cert.subject == spec.subject
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        cert.verify_directly_issued_by(cert)


def test_token_key_signer_reused_across_a_batch(token_key_factory: Any) -> None:
    key = token_key_factory("ec-p256")
    issuer = _root(key, cn="Token Root")
    signer = CertificateSigner(issuer, key)
    for spec in _mixed()[:4]:
        signer.sign(spec).verify_directly_issued_by(issuer)


def test_openssl_accepts_a_reused_signers_certificates(tmp_path: Path) -> None:
    issuer = _root()
    signer = CertificateSigner(issuer, ISSUER_KEY)
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
    at = str(int(NOW.timestamp()))
    for spec in (_spec(1), _spec(2, public_key=KEYS["rsa2048"].public_key())):
        leaf = tmp_path / f"{spec.serial}.pem"
        leaf.write_bytes(signer.sign(spec).public_bytes(serialization.Encoding.PEM))
        run_tool(
            "openssl", "verify", "-attime", at, "-CAfile", str(ca_pem), "-purpose", "sslclient",
            str(leaf),
        )  # fmt: skip
