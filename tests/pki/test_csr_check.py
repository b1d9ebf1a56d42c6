"""Issuance checks a CSR's signature with the key parsed once; it must agree with cryptography.

``issue._verified_key`` does what ``CertificateSigningRequest.is_signature_valid`` does for the
signatures devid meets (RSA PKCS#1 v1.5 and PSS, ECDSA, Ed25519) and hands everything else to
it. Every kind is checked intact, with a flipped signature bit and with a flipped bit in the
signed request, against ``is_signature_valid`` and ``openssl req -verify``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos as asn1_algos
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from conftest import run_tool
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from devid.errors import BadInput
from devid.pki.issue import _checked_public_key, _verified_key
from devid.pki.profiles import PROFILES

_RSA = rsa.generate_private_key(65537, 2048)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _csr(key: Any, algorithm: Any = None, **kwargs: Any) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-0001")])
    )
    return builder.sign(key, algorithm, **kwargs)


KINDS = {
    "rsa-pkcs1": lambda: _csr(_RSA, hashes.SHA256()),
    "rsa-pss": lambda: _csr(_RSA, hashes.SHA256(), rsa_padding=_PSS),
    "rsa-pkcs1-sha512": lambda: _csr(_RSA, hashes.SHA512()),
    "ec-p256": lambda: _csr(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()),
    "ec-p384-sha384": lambda: _csr(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()),
    "ec-p256-sha512": lambda: _csr(ec.generate_private_key(ec.SECP256R1()), hashes.SHA512()),
    "ed25519": lambda: _csr(ed25519.Ed25519PrivateKey.generate()),
    "ed448 (cryptography decides)": lambda: _csr(ed448.Ed448PrivateKey.generate()),
    "dsa (cryptography decides)": lambda: _csr(dsa.generate_private_key(2048), hashes.SHA256()),
}


def _der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def _flip(csr: x509.CertificateSigningRequest, where: bytes) -> x509.CertificateSigningRequest:
    """The CSR with one bit flipped in the last octet of *where* (its signature or its
    request info)."""
    data = bytearray(_der(csr))
    at = data.rindex(where) + len(where) - 1
    data[at] ^= 0x01
    return x509.load_der_x509_csr(bytes(data))


def _agrees(csr: x509.CertificateSigningRequest) -> bool:
    try:
        key = _verified_key(csr)
    except InvalidSignature:
        assert not csr.is_signature_valid
        return False
    assert csr.is_signature_valid
    assert key == csr.public_key()
    return True


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_agrees_with_is_signature_valid(kind: str) -> None:
    csr = KINDS[kind]()
    assert _agrees(csr)
    assert not _agrees(_flip(csr, csr.signature))
    # a bit of the CN ("dev-0001" -> "dev-0000"): the signature no longer covers the request
    assert not _agrees(_flip(csr, b"dev-0001"))


@pytest.mark.parametrize("kind", ["rsa-pss", "ec-p384-sha384", "ed25519"])
def test_openssl_agrees(kind: str, tmp_path: Path) -> None:
    csr = KINDS[kind]()
    for name, candidate, valid in [
        ("good.csr", csr, True),
        ("bad.csr", _flip(csr, csr.signature), False),
    ]:
        path = tmp_path / name
        path.write_bytes(candidate.public_bytes(serialization.Encoding.PEM))
        done = run_tool("openssl", "req", "-verify", "-noout", "-in", str(path), check=False)
        said = (done.stdout + done.stderr).decode()
        # openssl 3.0 exits 0 either way; what it prints tells
        assert ("self-signature verify OK" in said) is valid, said
        assert ("verify failure" in said) is not valid, said
        assert _agrees(candidate) is valid


def test_a_key_that_did_not_make_the_signature_is_a_bad_csr() -> None:
    # an EC request whose key was swapped for another EC key after signing
    csr = KINDS["ec-p256"]()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    swapped = _der(csr).replace(
        spki,
        other.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    with pytest.raises(BadInput, match="does not verify"):
        _checked_public_key(x509.load_der_x509_csr(swapped), PROFILES["device"])


def test_a_signature_algorithm_for_another_key_type_is_a_bad_csr() -> None:
    # an RSA-signed request whose key was swapped for an EC key: the pairing cannot verify
    csr = KINDS["rsa-pkcs1"]()
    spki_ec = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    request = asn1_csr.CertificationRequest.load(_der(csr))
    info = request["certification_request_info"]
    info["subject_pk_info"] = asn1_keys.PublicKeyInfo.load(spki_ec)
    mixed = x509.load_der_x509_csr(request.dump(force=True))
    assert isinstance(mixed.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(mixed.signature_algorithm_parameters, padding.PKCS1v15)
    with pytest.raises(BadInput):
        _checked_public_key(mixed, PROFILES["device"])


@pytest.mark.parametrize("oid", ["1.3.101.113", "1.3.101.99", "1.2.840.10045.4.3.2"])
def test_an_ed25519_signature_under_another_algorithm_name_is_refused(oid: str) -> None:
    # the signatureAlgorithm field is outside the signed part: relabelling an Ed25519
    # signature as Ed448, as an unknown algorithm or as ECDSA must not pass as Ed25519
    csr = KINDS["ed25519"]()
    request = asn1_csr.CertificationRequest.load(_der(csr))
    request["signature_algorithm"] = asn1_algos.SignedDigestAlgorithm({"algorithm": oid})
    relabelled = x509.load_der_x509_csr(request.dump(force=True))
    assert not relabelled.is_signature_valid
    with pytest.raises(BadInput):
        _checked_public_key(relabelled, PROFILES["device"])
