"""The DER frame of an X.509 certificate (RFC 5280 section 4.1), signed with the key's sign().

Why devid frames certificates itself instead of calling ``CertificateBuilder.sign``: the
builder re-validates and converts every Python object of the certificate on each call, which
is about half of the CPU a batch of device certificates costs (bench/RESULTS.md). Here every
part that has encoding choices is still encoded by cryptography — names
(``Name.public_bytes``), the subject key (``public_bytes(SubjectPublicKeyInfo)``) and each
extension's value (``ExtensionType.public_bytes``); this module only puts them in the fixed
SEQUENCE of a TBSCertificate and wraps the signature. ``devid.pki.build`` signs and loads the
result back with ``x509.load_der_x509_certificate``; tests check that the to-be-signed bytes
equal the builder's byte for byte for every profile, key type and extension devid uses.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devid.keys import PublicKey

_SEQUENCE = 0x30
_MAX_SERIAL_BITS = 159  # RFC 5280 4.1.2.2: at most 20 octets; cryptography's limit too
_VERSION_3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: *tag*, definite length, *content*."""
    return bytes((tag,)) + _length(len(content)) + content


def integer(value: int) -> bytes:
    """A DER INTEGER (two's complement, minimal octets)."""
    magnitude = value if value >= 0 else ~value
    size = magnitude.bit_length() // 8 + 1  # room for the sign bit
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


@functools.lru_cache(maxsize=256)
def oid(dotted: str) -> bytes:
    """A DER OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def time(value: dt.datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5), whole seconds."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    if value.year < 2050:
        return tlv(0x17, value.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, f"{value.year:04d}{value.strftime('%m%d%H%M%S')}Z".encode())


@functools.lru_cache(maxsize=64)
def validity(not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    """The Validity SEQUENCE (cached: a batch gives all its certificates the same one)."""
    if not_after <= not_before:
        raise ValueError("the certificate's validity ends before it begins")
    return tlv(_SEQUENCE, time(not_before) + time(not_after))


def algorithm_identifier(dotted: str, *, null_parameters: bool = False) -> bytes:
    """An AlgorithmIdentifier with no parameters, or with NULL ones (RSA, RFC 4055 5)."""
    return tlv(_SEQUENCE, oid(dotted) + (b"\x05\x00" if null_parameters else b""))


def extension(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    """One Extension: extnID, critical (only when true: DER omits a DEFAULT), extnValue."""
    critical = b"\x01\x01\xff" if ext.critical else b""
    value = tlv(0x04, ext.value.public_bytes())
    return tlv(_SEQUENCE, oid(ext.oid.dotted_string) + critical + value)


def _element(data: bytes, pos: int) -> tuple[int, int, int]:
    """The element at *pos*: (tag, start of its content, end); DER with definite lengths."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        return tag, pos, pos + first
    size = first & 0x7F
    length = int.from_bytes(data[pos : pos + size], "big")
    return tag, pos + size, pos + size + length


def key_identifier(public_key_info: bytes) -> bytes:
    """RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value (no tag,
    length or unused-bits octet) of a DER SubjectPublicKeyInfo."""
    _, content, _ = _element(public_key_info, 0)  # SEQUENCE
    _, _, algorithm_end = _element(public_key_info, content)  # AlgorithmIdentifier
    tag, bits, end = _element(public_key_info, algorithm_end)
    if tag != 0x03 or end != len(public_key_info):
        raise ValueError("not a DER SubjectPublicKeyInfo")
    return hashlib.sha1(public_key_info[bits + 1 : end], usedforsecurity=False).digest()


def public_key_info(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tbs_certificate(
    *,
    serial: int,
    algorithm: bytes,
    issuer: bytes,
    validity: bytes,
    subject: bytes,
    public_key: bytes,
    extensions: Sequence[bytes],
) -> bytes:
    """A v3 TBSCertificate from DER parts (*issuer*, *subject*: Names; *validity*: from
    :func:`validity`; *extensions*: each encoded by :func:`extension`)."""
    if serial < 1 or serial.bit_length() > _MAX_SERIAL_BITS:
        raise ValueError(f"the serial number must be positive and at most {_MAX_SERIAL_BITS} bits")
    body = [_VERSION_3, integer(serial), algorithm, issuer, validity, subject, public_key]
    if extensions:
        body.append(tlv(0xA3, tlv(_SEQUENCE, b"".join(extensions))))
    return tlv(_SEQUENCE, b"".join(body))


def certificate(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    """The Certificate: *tbs*, the *algorithm* it was signed with and the *signature*."""
    return tlv(_SEQUENCE, tbs + algorithm + tlv(0x03, b"\x00" + signature))
