"""Certificate signing requests, signed by a file key or on the token.

RSA keys sign with PKCS#1 v1.5 or, with ``pss=True``, RSASSA-PSS (SHA-256, MGF1-SHA-256, salt
of digest length); EC keys with ECDSA and the hash matching the curve; Ed25519 as itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devid.errors import BadInput, CheckFailed
from devid.fsutil import PUBLIC_MODE, write_atomic
from devid.keys import PrivateKey
from devid.pki.build import rsa_padding, signature_hash


def build_csr(
    key: PrivateKey,
    subject: x509.Name,
    *,
    sans: Sequence[x509.GeneralName] = (),
    pss: bool = False,
) -> x509.CertificateSigningRequest:
    """A CSR for *key* (which signs it, on the token if it lives there)."""
    if pss and not isinstance(key, rsa.RSAPrivateKey):
        raise BadInput("--pss needs an RSA key")
    if len(subject) == 0 and not sans:
        raise BadInput("a CSR needs a subject or at least one SAN")
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        # RFC 5280 4.2.1.6: critical when the subject is empty.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(sans)), critical=len(subject) == 0
        )
    csr = builder.sign(key, signature_hash(key), rsa_padding=rsa_padding(key, pss=pss))
    if not csr.is_signature_valid:
        raise CheckFailed("the new CSR's signature does not verify; check the key")
    return csr


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def write_csr(csr: x509.CertificateSigningRequest, path: Path, *, force: bool = False) -> Path:
    return write_atomic(path, csr_pem(csr), mode=PUBLIC_MODE, force=force)
