"""Building and signing certificates from a profile: the one place extensions are chosen.

The signing key may be a file key or a token key; devid calls its ``sign()``, which for a
token key runs on the token (DESIGN.md section 1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from devid.keys import PrivateKey, PublicKey
from devid.pki import der
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


def _fixed_extensions(
    spec: CertificateSpec, key_id: x509.AuthorityKeyIdentifier | None
) -> list[x509.Extension[x509.ExtensionType]]:
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
    return [x509.Extension(value.oid, critical, value) for value, critical in chosen]


def _own_extensions(
    spec: CertificateSpec, key_identifier: bytes, *, self_signed: bool
) -> list[x509.Extension[x509.ExtensionType]]:
    """The extensions that differ per certificate: key identifiers, SANs, name constraints."""
    chosen: list[tuple[x509.ExtensionType, bool]] = [
        (x509.SubjectKeyIdentifier(key_identifier), False)
    ]
    if self_signed:  # the issuer's key is the subject's own
        chosen.append((x509.AuthorityKeyIdentifier(key_identifier, None, None), False))
    if spec.sans:
        # RFC 5280 4.2.1.6: the SAN extension is critical when the subject is empty.
        chosen.append((x509.SubjectAlternativeName(list(spec.sans)), len(spec.subject) == 0))
    if spec.name_constraints is not None:
        chosen.append((spec.name_constraints, True))
    return [x509.Extension(value.oid, critical, value) for value, critical in chosen]


def extensions_for(
    spec: CertificateSpec, issuer: x509.Certificate | None
) -> list[x509.Extension[x509.ExtensionType]]:
    """The extensions of the certificate for *spec*, in order; *issuer* None: self-signed.

    First those shared by every certificate of the profile and issuer (basic constraints,
    key usage, AKI, EKU, CRL distribution point), then the certificate's own (SKI, SANs, name
    constraints); the order has no meaning in X.509, and this one lets a batch encode the
    shared part once.
    """
    key_id = der.key_identifier(der.public_key_info(spec.public_key))
    key_id_of_issuer = None if issuer is None else authority_key_id(issuer)
    return [
        *_fixed_extensions(spec, key_id_of_issuer),
        *_own_extensions(spec, key_id, self_signed=issuer is None),
    ]


# AlgorithmIdentifiers of certificate signatures: RFC 5758 3.2 (ECDSA, no parameters),
# RFC 4055 5 (RSA PKCS#1 v1.5, NULL parameters), RFC 8410 3 (Ed25519, no parameters).
_ECDSA = {
    "sha256": der.algorithm_identifier("1.2.840.10045.4.3.2"),
    "sha384": der.algorithm_identifier("1.2.840.10045.4.3.3"),
    "sha512": der.algorithm_identifier("1.2.840.10045.4.3.4"),
}
_RSA_PKCS1 = {"sha256": der.algorithm_identifier("1.2.840.113549.1.1.11", null_parameters=True)}
_ED25519 = der.algorithm_identifier("1.3.101.112")


def _signature(key: PrivateKey) -> tuple[bytes, Callable[[bytes], bytes]]:
    """The AlgorithmIdentifier *key* signs certificates with, and the signing function."""
    digest = signature_hash(key)
    if isinstance(key, ec.EllipticCurvePrivateKey) and digest is not None:
        ecdsa = ec.ECDSA(digest)
        return _ECDSA[digest.name], lambda data: key.sign(data, ecdsa)
    if isinstance(key, rsa.RSAPrivateKey) and digest is not None:
        pkcs1 = padding.PKCS1v15()
        return _RSA_PKCS1[digest.name], lambda data: key.sign(data, pkcs1, digest)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _ED25519, key.sign
    raise TypeError(f"devid cannot sign certificates with a {type(key).__name__}")


_FixedKey = tuple[Profile, int | None, bool, str | None]


class CertificateSigner:
    """Signs certificates for one issuer with one key; a batch makes one and signs many.

    The TBSCertificate is framed by :mod:`devid.pki.der` (the bytes cryptography's
    ``CertificateBuilder`` makes, at a fraction of its cost, from the extensions
    :func:`extensions_for` lists) and signed by ``key.sign``, on the token for a token key.
    What the issuer's certificate gives every certificate (its name, the AKI, the profile's
    shared extensions) is worked out once per signer.
    """

    def __init__(self, issuer: x509.Certificate | None, key: PrivateKey) -> None:
        self.issuer = issuer
        self._algorithm, self._sign = _signature(key)
        self._issuer_name = issuer.subject.public_bytes() if issuer is not None else None
        self._key_id = authority_key_id(issuer) if issuer is not None else None
        self._fixed: dict[_FixedKey, bytes] = {}

    def _fixed_der(self, spec: CertificateSpec) -> bytes:
        rsa_subject = isinstance(spec.public_key, rsa.RSAPublicKey)
        cache_key = (spec.profile, spec.path_len, rsa_subject, spec.crl_url)
        encoded = self._fixed.get(cache_key)
        if encoded is None:
            fixed = _fixed_extensions(spec, self._key_id)
            encoded = self._fixed[cache_key] = b"".join(der.extension(e) for e in fixed)
        return encoded

    def sign_der(self, spec: CertificateSpec) -> bytes:
        """The DER certificate for *spec*."""
        subject = spec.subject.public_bytes()
        public_key = der.public_key_info(spec.public_key)
        own = _own_extensions(spec, der.key_identifier(public_key), self_signed=self.issuer is None)
        tbs = der.tbs_certificate(
            serial=spec.serial,
            algorithm=self._algorithm,
            issuer=self._issuer_name or subject,
            validity=der.validity(spec.not_before, spec.not_after),
            subject=subject,
            public_key=public_key,
            extensions=[self._fixed_der(spec), *(der.extension(e) for e in own)],
        )
        return der.certificate(tbs, self._algorithm, self._sign(tbs))

    def sign(self, spec: CertificateSpec) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.sign_der(spec))


def sign_certificate(
    spec: CertificateSpec, *, issuer: x509.Certificate | None, key: PrivateKey
) -> x509.Certificate:
    """Sign *spec* with *key* (the issuer's key, or the subject's own for a self-signed root)."""
    return CertificateSigner(issuer, key).sign(spec)
