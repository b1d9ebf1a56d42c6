"""Building and signing certificates from a profile: the one place extensions are chosen.

The signing key may be a file key or a token key; cryptography's builder calls its
``sign()``, which for a token key runs on the token (DESIGN.md section 1).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from devid.keys import PrivateKey, PublicKey
from devid.pki.profiles import Profile

HashAlgorithm = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def signature_hash(key: PrivateKey | PublicKey) -> HashAlgorithm | None:
    """SHA-256, or the hash matching the EC curve; None for Ed25519 (it hashes itself)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.key_size > 384:
            return hashes.SHA512()
        return hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return hashes.SHA256()
    return None


def rsa_padding(key: PrivateKey, *, pss: bool) -> padding.PSS | padding.PKCS1v15 | None:
    """PSS (salt = digest length, MGF1 with the same hash) when asked for; RSA keys only."""
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    if not pss:
        return padding.PKCS1v15()
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


@dataclass(frozen=True)
class CertificateSpec:
    """Everything that goes into one certificate except the issuer."""

    subject: x509.Name
    public_key: PublicKey
    profile: Profile
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    sans: tuple[x509.GeneralName, ...] = ()
    path_len: int | None = None
    name_constraints: x509.NameConstraints | None = None
    crl_url: str | None = None


def authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI naming *issuer*: its SKI when it has one, else derived from its key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _authority_key_id(
    issuer: x509.Certificate | None, own: PublicKey
) -> x509.AuthorityKeyIdentifier:
    if issuer is None:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(own)
    return authority_key_id(issuer)


def builder_for(spec: CertificateSpec, issuer: x509.Certificate | None) -> x509.CertificateBuilder:
    """An unsigned certificate for *spec*; *issuer* None means self-signed."""
    profile = spec.profile
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(spec.subject if issuer is None else issuer.subject)
        .public_key(spec.public_key)
        .serial_number(spec.serial)
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(
            x509.BasicConstraints(ca=profile.ca, path_length=spec.path_len if profile.ca else None),
            critical=True,
        )
        .add_extension(profile.key_usage_extension(spec.public_key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(spec.public_key), critical=False)
        .add_extension(_authority_key_id(issuer, spec.public_key), critical=False)
    )
    if profile.extended_key_usage:
        eku = x509.ExtendedKeyUsage(list(profile.extended_key_usage))
        builder = builder.add_extension(eku, critical=False)
    if spec.sans:
        # RFC 5280 4.2.1.6: the SAN extension is critical when the subject is empty.
        critical = len(spec.subject) == 0
        builder = builder.add_extension(x509.SubjectAlternativeName(list(spec.sans)), critical)
    if spec.name_constraints is not None:
        builder = builder.add_extension(spec.name_constraints, critical=True)
    if spec.crl_url and profile.crl_distribution:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(spec.crl_url)], None, None, None
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder


def sign_certificate(
    spec: CertificateSpec, *, issuer: x509.Certificate | None, key: PrivateKey
) -> x509.Certificate:
    """Sign *spec* with *key* (the issuer's key, or the subject's own for a self-signed root)."""
    return builder_for(spec, issuer).sign(
        key, signature_hash(key), rsa_padding=rsa_padding(key, pss=False)
    )
