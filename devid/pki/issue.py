"""Issuing certificates: check the CSR, apply the profile, sign, record, write.

Serials are 159-bit positive random numbers (x509.random_serial_number, at least 64 bits as
CA/B Forum BR 7.1 asks). Uniqueness is the inventory's job: its UNIQUE constraint refuses a
repeated serial and the issuer signs that certificate again with a fresh one. The records and
the written file are one transaction: if the file cannot be written nothing is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from devid.durations import utcnow
from devid.errors import BadInput, CheckFailed, Conflict, DevidError
from devid.fsutil import PUBLIC_MODE, refuse_existing, write_atomic
from devid.keys import PrivateKey, PublicKey
from devid.pki import certs
from devid.pki.build import CertificateSigner, CertificateSpec
from devid.pki.ca import CertificateAuthority, KeyLoader, ensure_recorded, key_reference
from devid.pki.names import (
    common_name,
    constrained_subject_names,
    general_name_text,
    outside_constraints,
    unique_names,
)
from devid.pki.profiles import Profile, check_device_id
from devid.store import CertQuery, CertRecord, Event, Status, Store

SerialSource = Callable[[], int]
BACKDATE = dt.timedelta(minutes=1)  # tolerate devices whose clocks run a little behind
MAX_ATTEMPTS = 5
_SAN_KIND = {
    x509.DNSName: "dns",
    x509.UniformResourceIdentifier: "uri",
    x509.IPAddress: "ip",
    x509.RFC822Name: "email",
}


def random_serial() -> int:
    while True:
        serial = x509.random_serial_number()
        if serial.bit_length() >= 64:
            return serial


@dataclass(frozen=True)
class IssueRequest:
    """One certificate to issue for *csr* under *profile*; the rest is recorded with it."""

    csr: x509.CertificateSigningRequest
    profile: Profile
    days: int | None = None
    device_id: str | None = None
    key_ref: str | None = None
    path: str | None = None
    replaces: str | None = None


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    record: CertRecord
    request: IssueRequest


def _checked_public_key(csr: x509.CertificateSigningRequest, profile: Profile) -> PublicKey:
    """Refuse a CSR whose signature does not verify or whose key the profile finds weak;
    return the CSR's key."""
    try:
        public = _verified_key(csr)
    except InvalidSignature:
        raise BadInput(
            "the CSR signature does not verify; it was altered or signed by another key"
        ) from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadInput(f"cannot check the CSR signature: {exc}") from exc
    profile.keys.check(public, profile=profile.name)
    return public


def _verified_key(csr: x509.CertificateSigningRequest) -> PublicKey:
    """The CSR's key, after checking the CSR's signature with it: what ``is_signature_valid``
    does, with the key parsed once instead of twice (a batch does this for every request)."""
    public = csr.public_key()
    params = csr.signature_algorithm_parameters
    signature, signed = csr.signature, csr.tbs_certrequest_bytes
    if isinstance(public, rsa.RSAPublicKey) and isinstance(params, padding.PKCS1v15 | padding.PSS):
        digest = csr.signature_hash_algorithm
        if digest is None:
            raise ValueError("the RSA signature names no hash")
        public.verify(signature, signed, params, digest)
    elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
        public.verify(signature, signed, params)
    elif (
        isinstance(public, ed25519.Ed25519PublicKey)
        and csr.signature_algorithm_oid == SignatureAlgorithmOID.ED25519
    ):  # (params is None for every algorithm cryptography has no parameters for)
        public.verify(signature, signed)
    elif not csr.is_signature_valid:  # any other pairing: cryptography decides
        raise InvalidSignature
    return public  # type: ignore[return-value]  # KeyRules.check refuses the other types


def _device_id(request: IssueRequest, subject: x509.Name) -> str | None:
    """The device id given, else (device profiles) the CN of the CSR's *subject*."""
    if request.device_id is not None:
        return check_device_id(request.device_id)
    if request.profile.device_sans:
        cn = common_name(subject)
        if cn is None:
            raise BadInput("the device profile needs --device-id (the CSR has no CN)")
        try:
            return check_device_id(cn)
        except BadInput as exc:
            raise BadInput(f"the CSR's CN {cn!r} is not a device id; give --device-id") from exc
    return None


def _sans(request: IssueRequest, device_id: str | None) -> tuple[x509.GeneralName, ...]:
    profile = request.profile
    requested = certs.sans_of(request.csr)
    for name in requested:
        if _SAN_KIND.get(type(name)) not in profile.san_kinds:
            kinds = ", ".join(sorted(profile.san_kinds))
            raise BadInput(
                f"the {profile.name} profile does not allow the SAN {general_name_text(name)}; "
                f"allowed kinds: {kinds}"
            )
    sans = unique_names([*requested, *profile.extra_sans(device_id)])
    if profile.san_required and not sans:
        raise BadInput(f"the {profile.name} profile needs a SAN; put one in the CSR")
    return tuple(sans)


def _constrained(
    ca: CertificateAuthority,
    sans: tuple[x509.GeneralName, ...],
    profile: Profile,
    subject: x509.Name,
) -> tuple[x509.GeneralName, ...]:
    """*sans*, refused if a name constraint of the CA chain excludes one of them or of the
    subject's constrained names: relying parties (openssl, TLS stacks) would reject it."""
    subject_names = constrained_subject_names(subject, has_sans=bool(sans))
    for holder, constraints in ca.name_constraints:
        for name in [*sans, *subject_names]:
            why = outside_constraints(name, constraints)
            if why is None:
                continue
            hint = None
            if profile.device_sans:
                hint = (
                    "the device profile adds uri:urn:devid:<id> and dns:<id>; in a profile file "
                    "set device_uri / device_dns to names inside them, e.g. "
                    'device_dns = "{device_id}.devices.example.com"'
                )
            what = "SAN" if name in sans else "subject's"
            raise BadInput(
                f"the {what} {general_name_text(name)} is {why} of CA {holder!r}", hint=hint
            )
    return sans


@dataclass(frozen=True)
class _Plan:
    """A request checked and planned: its certificate's content and the device it is for."""

    spec: CertificateSpec
    device_id: str | None


def plan(
    ca: CertificateAuthority, request: IssueRequest, now: dt.datetime, serial: int
) -> CertificateSpec:
    """What the certificate for *request* will hold (everything checked, nothing signed)."""
    return _plan(ca, request, now, serial).spec


def _plan(ca: CertificateAuthority, request: IssueRequest, now: dt.datetime, serial: int) -> _Plan:
    # The CSR's key, subject and device id are worked out once here and carried to _sign:
    # each costs a parse of the CSR, and a batch does this for every request.
    profile = request.profile
    public = _checked_public_key(request.csr, profile)
    csr_subject = request.csr.subject  # parsed anew on each access
    device_id = _device_id(request, csr_subject)
    subject = profile.subject_for(device_id) or csr_subject
    if len(subject) == 0 and device_id is not None:
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, device_id)])
    days = request.days if request.days is not None else profile.days
    if days < 1:
        raise BadInput("--days must be at least 1")
    spec = CertificateSpec(
        subject=subject,
        public_key=public,
        profile=profile,
        serial=serial,
        not_before=max(now - BACKDATE, ca.certificate.not_valid_before_utc),
        not_after=min(now + dt.timedelta(days=days), ca.certificate.not_valid_after_utc),
        sans=_constrained(ca, _sans(request, device_id), request.profile, subject),
        crl_url=ca.config.crl_url,
    )
    return _Plan(spec, device_id)


def _sign(
    ca: CertificateAuthority,
    spec: CertificateSpec,
    request: IssueRequest,
    signer: CertificateSigner,
    device_id: str | None,
) -> Issued:
    cert = signer.sign(spec)
    record = certs.certificate_record(
        cert,
        ca=ca.name,
        profile=request.profile.name,
        sans=spec.sans,
        key_ref=key_reference(request.key_ref) if request.key_ref else None,
        device_id=device_id,
        path=request.path,
        replaces=request.replaces,
    )
    return Issued(cert, record, request)


def _issue_event(item: Issued) -> Event:
    detail = {"profile": item.record.profile, "device_id": item.record.device_id}
    return Event("cert.issue", ca=item.record.ca, serial=item.record.serial, detail=detail)


def check_not_revoked(store: Store, ca: CertificateAuthority) -> None:
    """Refuse to issue under a CA whose certificate, or one above it, the inventory records
    as revoked: everything it signed would fail every relying party's CRL check."""
    for cert in ca.intermediates:
        record = store.get_certificate(certs.serial_hex(cert.serial_number))
        if record is None or record.status is not Status.REVOKED:
            continue
        if record.aws_iot_id != certs.sha256_hex(cert):  # another certificate, same serial
            continue
        whose = (
            "its certificate"
            if cert == ca.certificate
            else f"the certificate of the CA above it ({cert.subject.rfc4514_string()})"
        )
        raise CheckFailed(
            f"CA {ca.name!r} cannot issue: {whose} is revoked",
            hint="create a new CA (devid ca init) and issue under it",
        )


def issue_many(
    ca: CertificateAuthority,
    requests: Sequence[IssueRequest],
    *,
    store: Store,
    key: PrivateKey | None = None,
    loader: KeyLoader | None = None,
    now: dt.datetime | None = None,
    serials: SerialSource = random_serial,
    before_commit: Callable[[list[Issued]], None] | None = None,
) -> list[Issued]:
    """Issue a certificate for each request and record them all in one transaction.

    Every request is checked before anything is signed. *before_commit* runs inside the
    transaction (e.g. to write files); if it raises, nothing is recorded.
    """
    now = (now or utcnow()).replace(microsecond=0)
    ca.check_valid(now)
    check_not_revoked(store, ca)
    plans = [_plan(ca, r, now, serials()) for r in requests]
    signer = CertificateSigner(ca.certificate, key or ca.signing_key(loader))
    issued = [
        _sign(ca, p.spec, r, signer, p.device_id) for p, r in zip(plans, requests, strict=True)
    ]
    with store.transaction():
        ensure_recorded(store, ca)
        pending = list(range(len(issued)))
        for _ in range(MAX_ATTEMPTS):
            refused = store.add_certificates([issued[n].record for n in pending])
            pending = [pending[i] for i in refused]
            if not pending:
                break
            for n in pending:  # a serial already in use: sign again with a fresh one
                spec = dataclasses.replace(plans[n].spec, serial=serials())
                issued[n] = _sign(ca, spec, requests[n], signer, plans[n].device_id)
        else:
            raise Conflict("could not find an unused serial; the inventory may be corrupt")
        store.add_events([_issue_event(item) for item in issued])
        if before_commit is not None:
            before_commit(issued)
    return issued


def issue(
    ca: CertificateAuthority,
    request: IssueRequest,
    *,
    store: Store,
    out: Path | None = None,
    force: bool = False,
    chain: bool = False,
    loader: KeyLoader | None = None,
    now: dt.datetime | None = None,
    serials: SerialSource = random_serial,
) -> Issued:
    """Issue one certificate; with *out*, write it (and the chain) there atomically.

    The file is written inside the inventory transaction; if the commit does not happen
    (an error, Ctrl-C, SIGTERM), the file that was there is put back.
    """
    previous: bytes | None = None
    if out is not None:
        refuse_existing(out, force=force)
        request = dataclasses.replace(request, path=str(out.expanduser().resolve()))
        previous = out.read_bytes() if out.is_file() else None
    written: list[str] = []

    def write(items: list[Issued]) -> None:
        if out is None:
            return
        parts = [items[0].certificate, *(ca.intermediates if chain else ())]
        written.append(items[0].record.serial)  # before: a stop may land inside the write
        write_atomic(out, b"".join(certs.pem(c) for c in parts), mode=PUBLIC_MODE, force=force)
        # a certificate recorded at this path is no longer installed there: superseded, so
        # rotation does not renew it into the file that now holds another certificate
        replaced = store.find_certificates(CertQuery(path=request.path, statuses=(Status.ISSUED,)))
        for old in replaced:
            if old.serial != items[0].record.serial:
                store.set_status(old.serial, Status.SUPERSEDED)

    try:
        return issue_many(
            ca, [request], store=store, loader=loader, now=now, serials=serials, before_commit=write
        )[0]
    except BaseException:
        if out is not None and written and not recorded(store, written[0]):
            with contextlib.suppress(OSError, DevidError):
                if previous is None:
                    out.unlink(missing_ok=True)
                else:
                    write_atomic(out, previous, mode=PUBLIC_MODE, force=True)
        raise


def recorded(store: Store, serial: str) -> bool:
    """Whether the inventory holds *serial*: after an interruption, tells a certificate whose
    transaction committed (it stands) from one rolled back (what it changed goes back)."""
    try:
        return store.get_certificate(serial) is not None
    except DevidError:
        return False
