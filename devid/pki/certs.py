"""Reading certificates and CSRs, and the identifiers devid shows and records for them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from devid.errors import BadInput
from devid.fsutil import read_input
from devid.pki.names import general_name_text
from devid.store import CaRecord, CertRecord

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_SERIAL = re.compile(r"(?:0x|serial=)?([0-9a-f]+)", re.IGNORECASE)


def load_certificates(data: bytes, *, where: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in *data* (PEM, in order, or one DER certificate)."""
    try:
        if b"-----BEGIN" in data:
            certs = [x509.load_pem_x509_certificate(m) for m in _PEM_CERT.findall(data)]
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise BadInput(f"{where}: malformed certificate ({exc})") from exc
    if not certs:
        raise BadInput(f"{where} holds no certificate")
    return certs


def read_certificates(path: str | Path) -> list[x509.Certificate]:
    return load_certificates(read_input(path, what="certificate file"), where=str(path))


def read_certificate(path: str | Path) -> x509.Certificate:
    """The first certificate in the file at *path*."""
    return read_certificates(path)[0]


def load_csr(data: bytes, *, where: str = "CSR") -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise BadInput(f"{where}: malformed CSR ({exc})") from exc


def read_csr(path: str | Path) -> x509.CertificateSigningRequest:
    return load_csr(read_input(path, what="CSR file"), where=str(path))


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def sha256_hex(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER certificate: also the AWS IoT certificate id."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def colon_fingerprint(hex_digest: str) -> str:
    """``AB:CD:...`` as ``openssl x509 -fingerprint`` prints it."""
    return bytes.fromhex(hex_digest).hex(":").upper()


def serial_hex(serial: int) -> str:
    """The serial as lower-case hex of even length (how the inventory keys certificates)."""
    text = format(serial, "x")
    return text if len(text) % 2 == 0 else "0" + text


def parse_serial(text: str) -> int:
    """A serial in hex, with or without colons, ``0x`` or openssl's ``serial=`` prefix."""
    match = _SERIAL.fullmatch(text.strip().replace(":", ""))
    if not match:
        raise BadInput(f"bad serial {text!r}; give it in hex as 'devid cert show' prints it")
    return int(match.group(1), 16)


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def extensions_of(
    item: x509.Certificate | x509.CertificateSigningRequest, *, where: str | None = None
) -> x509.Extensions:
    """*item*'s extensions; a duplicated or undecodable one is bad input, not a crash."""
    try:
        return item.extensions
    except (x509.DuplicateExtension, ValueError) as exc:
        what = where or ("the CSR" if isinstance(item, x509.CertificateSigningRequest) else
                         "the certificate")  # fmt: skip
        raise BadInput(f"{what} has malformed extensions ({exc})") from exc


def sans_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(extensions_of(cert).get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def record_certificate(record: CertRecord | CaRecord) -> x509.Certificate:
    """The certificate an inventory row (a certificate's or a CA's) holds."""
    return x509.load_pem_x509_certificate(record.pem.encode())


def certificate_record(
    cert: x509.Certificate,
    *,
    ca: str,
    profile: str,
    sans: Sequence[x509.GeneralName] | None = None,
    **extra: str | None,
) -> CertRecord:
    """The inventory row for *cert* issued by the CA named *ca*.

    *sans*, when the caller just signed *cert* from them, saves parsing them back out of
    the certificate (the largest non-crypto cost of batch issuance, bench/RESULTS.md).
    *extra* may give ``key_ref``, ``device_id``, ``path`` and ``replaces``.
    """
    digest = sha256_hex(cert)
    return CertRecord(
        serial=serial_hex(cert.serial_number),
        ca=ca,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=colon_fingerprint(digest),
        aws_iot_id=digest,
        pem=pem(cert).decode(),
        sans=tuple(general_name_text(n) for n in (sans_of(cert) if sans is None else sans)),
        profile=profile,
        key_ref=extra.get("key_ref"),
        device_id=extra.get("device_id"),
        path=extra.get("path"),
        replaces=extra.get("replaces"),
    )
