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


def _shared_extensions(
    spec: CertificateSpec, key_id: x509.AuthorityKeyIdentifier | None
) -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions every certificate of *spec*'s profile, issuer and key kind shares."""
    profile = spec.profile
    path_len = spec.path_len if profile.ca else None
    chosen: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=profile.ca, path_length=path_len), True),
        (profile.key_usage_extension(spec.public_key), True),
    ]
    if key_id is not None:
        chosen.append((key_id, False))
    if profile.extended_key_usage:
        chosen.append((x509.ExtendedKeyUsage(list(profile.extended_key_usage)), False))
    if spec.crl_url and profile.crl_distribution:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(spec.crl_url)], None, None, None
        )
        chosen.append((x509.CRLDistributionPoints([point]), False))
    return chosen


def _own_extensions(
    spec: CertificateSpec, *, self_signed: bool
) -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions that differ per certificate: key identifiers, SANs, name constraints."""
    ski = x509.SubjectKeyIdentifier.from_public_key(spec.public_key)
    chosen: list[tuple[x509.ExtensionType, bool]] = [(ski, False)]
    if self_signed:  # the issuer's key is the subject's own
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        chosen.append((aki, False))
    if spec.sans:
        # RFC 5280 4.2.1.6: the SAN extension is critical when the subject is empty.
        chosen.append((x509.SubjectAlternativeName(list(spec.sans)), len(spec.subject) == 0))
    if spec.name_constraints is not None:
        chosen.append((spec.name_constraints, True))
    return chosen


_Shared = tuple[Profile, int | None, bool, str | None, dt.datetime, dt.datetime]
_MAX_SHARED = 64


class CertificateSigner:
    """Signs certificates for one issuer with one key; a batch makes one and signs many.

    cryptography's ``CertificateBuilder`` builds and signs (DESIGN.md section 1); the key's
    ``sign()`` runs on the token for a token key. What the certificates of a batch share —
    issuer name, validity, the profile's extensions (basic constraints, key usage, AKI, EKU,
    CRL distribution point) — is set once on a builder that each certificate then extends
    with its own subject, key, serial, SKI, SANs and name constraints. Builders are immutable,
    so the shared one is never changed by its extensions.
    """

    def __init__(self, issuer: x509.Certificate | None, key: PrivateKey) -> None:
        self.issuer = issuer
        self._key = key
        self._hash = signature_hash(key)
        self._padding = rsa_padding(key, pss=False)
        self._key_id = authority_key_id(issuer) if issuer is not None else None
        self._shared: dict[_Shared, x509.CertificateBuilder] = {}

    def _shared_builder(self, spec: CertificateSpec) -> x509.CertificateBuilder:
        rsa_subject = isinstance(spec.public_key, rsa.RSAPublicKey)  # key usage depends on it
        key = (
            spec.profile,
            spec.path_len,
            rsa_subject,
            spec.crl_url,
            spec.not_before,
            spec.not_after,
        )
        builder = self._shared.get(key)
        if builder is None:
            builder = (
                x509.CertificateBuilder()
                .not_valid_before(spec.not_before)
                .not_valid_after(spec.not_after)
            )
            if self.issuer is not None:
                builder = builder.issuer_name(self.issuer.subject)
            for value, critical in _shared_extensions(spec, self._key_id):
                builder = builder.add_extension(value, critical)
            if len(self._shared) >= _MAX_SHARED:
                self._shared.clear()
            self._shared[key] = builder
        return builder

    def sign(self, spec: CertificateSpec) -> x509.Certificate:
        builder = (
            self._shared_builder(spec)
            .subject_name(spec.subject)
            .public_key(spec.public_key)
            .serial_number(spec.serial)
        )
        if self.issuer is None:
            builder = builder.issuer_name(spec.subject)
        for value, critical in _own_extensions(spec, self_signed=self.issuer is None):
            builder = builder.add_extension(value, critical)
        return builder.sign(self._key, self._hash, rsa_padding=self._padding)


def sign_certificate(
    spec: CertificateSpec, *, issuer: x509.Certificate | None, key: PrivateKey
) -> x509.Certificate:
    """Sign *spec* with *key* (the issuer's key, or the subject's own for a self-signed root)."""
    return CertificateSigner(issuer, key).sign(spec)
