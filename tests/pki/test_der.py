"""devid frames certificates itself (devid.pki.der); the bytes must be cryptography's.

Every TBSCertificate devid signs is compared byte for byte with the one cryptography's
``CertificateBuilder`` makes from the same fields and extensions, over every profile, subject
and issuer key type, SAN shapes, validity encodings and serial sizes; the DER primitives are
compared with asn1crypto's encoder, and the results are read back by openssl.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from conftest import run_tool
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from devid.pki import der
from devid.pki.build import CertificateSpec, extensions_for, sign_certificate, signature_hash
from devid.pki.profiles import PROFILES

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def _key(kind: str) -> Any:
    if kind == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


KEYS = {kind: _key(kind) for kind in ("p256", "p384", "p521", "rsa2048", "ed25519")}
ISSUER_KEY = KEYS["p256"]


def _name(cn: str, **extra: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(getattr(NameOID, k), v) for k, v in extra.items()]
    return x509.Name(attrs)


def _issuer(key: Any = ISSUER_KEY, cn: str = "DER Test CA") -> x509.Certificate:
    spec = CertificateSpec(
        subject=_name(cn, ORGANIZATION_NAME="devid tests"),
        public_key=key.public_key(),
        profile=PROFILES["root"],
        serial=1000,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=3650),
    )
    return _reference(spec, None, key)


def _reference(
    spec: CertificateSpec, issuer: x509.Certificate | None, key: Any
) -> x509.Certificate:
    """What cryptography's CertificateBuilder makes of *spec* and devid's extensions."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(spec.subject if issuer is None else issuer.subject)
        .public_key(spec.public_key)
        .serial_number(spec.serial)
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
    )
    for ext in extensions_for(spec, issuer):
        builder = builder.add_extension(ext.value, ext.critical)
    pad = padding.PKCS1v15() if isinstance(key, rsa.RSAPrivateKey) else None
    return builder.sign(key, signature_hash(key), rsa_padding=pad)


def _spec(**changes: Any) -> CertificateSpec:
    base = CertificateSpec(
        subject=_name("dev-0001"),
        public_key=KEYS["p256"].public_key(),
        profile=PROFILES["device"],
        serial=0x5A5A_1234_5678_9ABC_DEF0,
        not_before=NOW - dt.timedelta(minutes=1),
        not_after=NOW + dt.timedelta(days=365),
        sans=(x509.UniformResourceIdentifier("urn:devid:dev-0001"), x509.DNSName("dev-0001")),
        crl_url="http://pki.example.com/crl/issuing.crl",
    )
    return dataclasses.replace(base, **changes)


def _assert_same(spec: CertificateSpec, issuer: x509.Certificate | None, key: Any) -> None:
    ours = sign_certificate(spec, issuer=issuer, key=key)
    theirs = _reference(spec, issuer, key)
    assert ours.tbs_certificate_bytes == theirs.tbs_certificate_bytes
    assert ours.signature_algorithm_oid == theirs.signature_algorithm_oid
    # the outer AlgorithmIdentifier repeats the inner one (RFC 5280 4.1.1.2), read by asn1crypto
    parsed = asn1_x509.Certificate.load(ours.public_bytes(serialization.Encoding.DER))
    assert parsed["signature_algorithm"].dump() == parsed["tbs_certificate"]["signature"].dump()
    ours.verify_directly_issued_by(issuer or ours)


@pytest.mark.parametrize("subject_kind", sorted(KEYS))
@pytest.mark.parametrize("profile", ["device", "client", "server"])
def test_leaf_certificates_match_the_builder(subject_kind: str, profile: str) -> None:
    spec = _spec(public_key=KEYS[subject_kind].public_key(), profile=PROFILES[profile])
    if profile != "device":
        spec = dataclasses.replace(spec, sans=(x509.DNSName("host.example.com"),))
    _assert_same(spec, _issuer(), ISSUER_KEY)


@pytest.mark.parametrize("issuer_kind", sorted(KEYS))
def test_every_issuer_key_type_matches_the_builder(issuer_kind: str) -> None:
    key = KEYS[issuer_kind]
    _assert_same(_spec(), _issuer(key, cn=f"CA {issuer_kind}"), key)


def test_self_signed_root_and_constrained_intermediate_match_the_builder() -> None:
    root = _spec(subject=_name("Root", COUNTRY_NAME="DE"), profile=PROFILES["root"], sans=())
    _assert_same(dataclasses.replace(root, public_key=ISSUER_KEY.public_key()), None, ISSUER_KEY)
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("devices.example.com")],
        excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
    )
    inter = _spec(
        subject=_name("Issuing"),
        profile=PROFILES["intermediate"],
        sans=(),
        path_len=0,
        name_constraints=constraints,
    )
    _assert_same(inter, _issuer(), ISSUER_KEY)


def test_empty_subject_long_names_and_many_sans_match_the_builder() -> None:
    # empty subject: SAN critical; long subject and SAN list: multi-octet DER lengths
    _assert_same(_spec(subject=x509.Name([])), _issuer(), ISSUER_KEY)
    long_subject = _name("d" * 64, ORGANIZATION_NAME="o" * 64, ORGANIZATIONAL_UNIT_NAME="u" * 64)
    sans = tuple(x509.DNSName(f"host-{n}.{'x' * 40}.example.com") for n in range(40))
    _assert_same(_spec(subject=long_subject, sans=sans), _issuer(), ISSUER_KEY)


@pytest.mark.parametrize(
    "not_before, not_after",
    [
        (
            dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
            dt.datetime(2050, 1, 1, tzinfo=dt.UTC),
        ),
        (
            dt.datetime(1999, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        ),
        (
            dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2027, 6, 1, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        ),
        (NOW.replace(microsecond=999_999), NOW.replace(year=2027, microsecond=1)),
    ],
)
def test_validity_encodings_match_the_builder(
    not_before: dt.datetime, not_after: dt.datetime
) -> None:
    issuer = _issuer()
    _assert_same(_spec(not_before=not_before, not_after=not_after), issuer, ISSUER_KEY)


@pytest.mark.parametrize("serial", [1, 127, 128, 255, 256, 2**63, 2**64 - 1, 2**158, 2**159 - 1])
def test_serials_match_the_builder(serial: int) -> None:
    _assert_same(_spec(serial=serial), _issuer(), ISSUER_KEY)


@pytest.mark.parametrize("serial", [0, -5, 2**159])
def test_serials_out_of_range_are_refused_like_the_builder(serial: int) -> None:
    with pytest.raises(ValueError, match="serial"):
        sign_certificate(_spec(serial=serial), issuer=_issuer(), key=ISSUER_KEY)
    with pytest.raises(ValueError):
        _reference(_spec(serial=serial), _issuer(), ISSUER_KEY)


def test_validity_ending_before_it_begins_is_refused() -> None:
    spec = _spec(not_before=NOW, not_after=NOW - dt.timedelta(seconds=1))
    with pytest.raises(ValueError, match="validity"):
        sign_certificate(spec, issuer=_issuer(), key=ISSUER_KEY)


def test_token_issuer_key_signs_the_same_certificate(token_key_factory: Any) -> None:
    key = token_key_factory("ec-p256")
    issuer = _issuer(key, cn="Token CA")
    _assert_same(_spec(), issuer, key)
    rsa_key = token_key_factory("rsa-2048")
    _assert_same(_spec(), _issuer(rsa_key, cn="Token RSA CA"), rsa_key)


def test_openssl_reads_and_verifies_what_devid_frames(tmp_path: Path) -> None:
    issuer = _issuer()
    leaf = sign_certificate(_spec(), issuer=issuer, key=ISSUER_KEY)
    ca_pem, leaf_pem = tmp_path / "ca.pem", tmp_path / "leaf.pem"
    ca_pem.write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    at = str(int(NOW.timestamp()))
    verify = ["openssl", "verify", "-attime", at, "-CAfile", str(ca_pem), "-purpose", "sslclient"]
    run_tool(*verify, str(leaf_pem))
    text = run_tool("openssl", "x509", "-in", str(leaf_pem), "-noout", "-text").stdout.decode()
    assert "URI:urn:devid:dev-0001, DNS:dev-0001" in text
    assert "5a:5a:12:34:56:78:9a:bc:de:f0" in text
    assert "X509v3 CRL Distribution Points" in text


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**64, 2**159 - 1, -(2**70)]
)
def test_integer_matches_asn1crypto(value: int) -> None:
    assert der.integer(value) == core.Integer(value).dump()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 70000])
def test_lengths_match_asn1crypto(size: int) -> None:
    assert der.tlv(0x04, b"\x00" * size) == core.OctetString(b"\x00" * size).dump()


@pytest.mark.parametrize(
    "dotted",
    [
        "2.5.29.17",
        "1.2.840.113549.1.1.11",
        "1.3.101.112",
        "2.999.1",
        "1.2.840.10045.4.3.2",
        "1.3.6.1.4.1.311.21.7",
        "2.25.329800735698586629295641978511506172918",
    ],
)
def test_oid_matches_asn1crypto(dotted: str) -> None:
    assert der.oid(dotted) == core.ObjectIdentifier(dotted).dump()


def test_times_match_asn1crypto() -> None:
    early = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    late = dt.datetime(2050, 1, 1, tzinfo=dt.UTC)
    assert der.time(early) == core.UTCTime(early).dump()
    assert der.time(late) == core.GeneralizedTime(late).dump()


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_key_identifier_is_cryptographys(kind: str) -> None:
    public = KEYS[kind].public_key()
    expected = x509.SubjectKeyIdentifier.from_public_key(public).digest
    assert der.key_identifier(der.public_key_info(public)) == expected


def test_key_identifier_refuses_what_is_not_a_public_key_info() -> None:
    with pytest.raises(ValueError, match="SubjectPublicKeyInfo"):
        der.key_identifier(der.tlv(0x30, der.integer(5) + der.integer(7)))
