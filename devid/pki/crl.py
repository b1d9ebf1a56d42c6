"""Revocation and certificate revocation lists (RFC 5280 section 5), signed by the CA key.

The CRL carries the authority key identifier and a CRL number (both required by RFC 5280);
the number comes from the inventory and grows by one with every CRL a CA signs. A revocation
with reason ``unspecified`` carries no reason code, as RFC 5280 5.3.1 recommends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from devid.durations import utcnow
from devid.errors import BadInput, CheckFailed, Conflict, NotFound
from devid.keys import PrivateKey
from devid.pki import certs
from devid.pki.build import authority_key_id, rsa_padding, signature_hash
from devid.pki.ca import CertificateAuthority, KeyLoader, ensure_recorded
from devid.store import Event, Revocation, Status, Store

REASONS = {f.name: f for f in x509.ReasonFlags if f not in (x509.ReasonFlags.remove_from_crl,)}
DEFAULT_CRL_DAYS = 7


def parse_reason(text: str) -> x509.ReasonFlags:
    """``key-compromise``, ``key_compromise`` or ``keyCompromise`` (RFC 5280's spelling)."""
    wanted = text.replace("-", "").replace("_", "").lower()
    for name, flag in REASONS.items():
        if name.replace("_", "") == wanted:
            return flag
    choices = ", ".join(n.replace("_", "-") for n in REASONS)
    raise BadInput(f"unknown revocation reason {text!r}; choose {choices}")


def revoke(
    ca: CertificateAuthority,
    serial: int,
    *,
    store: Store,
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    now: dt.datetime | None = None,
) -> Revocation:
    """Record that the certificate *serial* issued by *ca* is revoked."""
    key = certs.serial_hex(serial)
    record = store.get_certificate(key)
    if record is None or record.ca != ca.name:
        raise NotFound(
            f"no certificate with serial {key} issued by CA {ca.name!r} in the inventory",
            hint="'devid cert list --ca NAME' shows them",
        )
    if record.status is Status.REVOKED:
        raise Conflict(f"certificate {key} is already revoked")
    revocation = Revocation(key, ca.name, reason.name, (now or utcnow()).replace(microsecond=0))
    with store.transaction():
        store.revoke(revocation)
        store.add_event(
            Event("cert.revoke", ca=ca.name, serial=key, detail={"reason": reason.name})
        )
    return revocation


def revoke_certificate(
    ca: CertificateAuthority,
    cert: x509.Certificate,
    *,
    store: Store,
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    now: dt.datetime | None = None,
) -> Revocation:
    """Revoke *cert*, after checking that *ca* issued it."""
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise BadInput(f"the certificate was not issued by CA {ca.name!r}") from exc
    return revoke(ca, cert.serial_number, store=store, reason=reason, now=now)


@dataclass(frozen=True)
class CrlResult:
    crl: x509.CertificateRevocationList
    number: int
    revoked: int


def _entry(revocation: Revocation) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(certs.parse_serial(revocation.serial))
        .revocation_date(revocation.revoked_at)
    )
    if revocation.reason != x509.ReasonFlags.unspecified.name:
        reason = x509.CRLReason(x509.ReasonFlags[revocation.reason])
        builder = builder.add_extension(reason, critical=False)
    return builder.build()


def generate_crl(
    ca: CertificateAuthority,
    *,
    store: Store,
    days: int = DEFAULT_CRL_DAYS,
    key: PrivateKey | None = None,
    loader: KeyLoader | None = None,
    now: dt.datetime | None = None,
) -> CrlResult:
    """A CRL listing every certificate of *ca* revoked in the inventory, signed by its key."""
    if days < 1:
        raise BadInput("--days must be at least 1")
    now = (now or utcnow()).replace(microsecond=0)
    ca.check_valid(now)
    signer = key or ca.signing_key(loader)
    with store.transaction():
        ensure_recorded(store, ca)
        number = store.next_crl_number(ca.name)
        revocations = store.revocations(ca.name)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(authority_key_id(ca.certificate), critical=False)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for revocation in revocations:
            builder = builder.add_revoked_certificate(_entry(revocation))
        crl = builder.sign(
            signer, signature_hash(signer), rsa_padding=rsa_padding(signer, pss=False)
        )
        if not crl.is_signature_valid(ca.certificate.public_key()):  # type: ignore[arg-type]
            raise CheckFailed(f"the CRL signed with the key of CA {ca.name!r} does not verify")
        store.add_event(Event("crl.generate", ca=ca.name, detail={"number": number}))
    return CrlResult(crl, number, len(revocations))
