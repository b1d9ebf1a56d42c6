"""AWS IoT Core certificate operations over a boto3 ``iot`` client (DESIGN.md section 2).

devid computes every certificate id itself (lower-case hex SHA-256 of the DER) and shows it
beside the id AWS returns, so a mismatch is visible instead of trusted. Checks AWS would make
(and a test double may not) run here first: the key must suit AWS IoT (RSA >= 2048 or
P-256/384/521, never Ed25519), a certificate registered with a CA must verify under it, and a
certificate AWS signs from a CSR must carry the CSR's key before it is kept.

:func:`rotate_in_aws` moves a device to a renewed certificate in an order that never leaves
it without an active one: register the new certificate, give it the old one's things and
policies, activate it, and only then deactivate (or revoke) the old one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from devid import policy
from devid.aws import aws_errors
from devid.errors import BadInput, CheckFailed, Conflict, DevidError, NotFound
from devid.keys import PublicKey
from devid.pki import certs
from devid.store import IotRegistration

Client = Any  # a boto3 IoT client


class CertStatus(enum.Enum):
    """AWS IoT certificate states; only the first three can be set with UpdateCertificate."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    REVOKED = "REVOKED"
    PENDING_TRANSFER = "PENDING_TRANSFER"
    REGISTER_INACTIVE = "REGISTER_INACTIVE"
    PENDING_ACTIVATION = "PENDING_ACTIVATION"

    @classmethod
    def settable(cls, text: str) -> CertStatus:
        """The status UpdateCertificate should set, from ``active``/``inactive``/``revoked``."""
        try:
            status = cls(text.strip().upper().replace("-", "_"))
        except ValueError:
            raise BadInput(f"unknown status {text!r}; choose active, inactive or revoked") from None
        if status not in SETTABLE:
            raise BadInput(
                f"{status.value} cannot be set: AWS IoT sets it itself; "
                "UpdateCertificate takes active, inactive or revoked"
            )
        return status


SETTABLE = (CertStatus.ACTIVE, CertStatus.INACTIVE, CertStatus.REVOKED)


def certificate_id(cert: x509.Certificate) -> str:
    """The AWS IoT certificate id, computed locally: hex SHA-256 of the DER certificate."""
    return certs.sha256_hex(cert)


@dataclass(frozen=True)
class AwsCertificate:
    """A certificate as AWS IoT reports it, with devid's own id for it when the PEM is known."""

    certificate_id: str  # what AWS says
    arn: str
    status: str
    local_id: str | None = None  # SHA-256 of the DER, computed by devid
    ca_certificate_id: str | None = None
    created: str | None = None

    @property
    def id_matches(self) -> bool | None:
        return None if self.local_id is None else self.local_id == self.certificate_id

    def as_dict(self) -> dict[str, Any]:
        return {
            "aws_iot_certificate_id": self.local_id,
            "aws_certificate_id": self.certificate_id,
            "certificate_id_matches": self.id_matches,
            "certificate_arn": self.arn,
            "status": self.status,
            "ca_certificate_id": self.ca_certificate_id,
            "created": self.created,
        }

    def registration(
        self,
        *,
        kind: str = "certificate",
        ca: str | None = None,
        serial: str | None = None,
        mode: str | None = None,
    ) -> IotRegistration:
        """The inventory row for this registration (keyed by ARN, id computed locally)."""
        return IotRegistration(
            arn=self.arn,
            certificate_id=self.local_id or self.certificate_id,
            status=self.status,
            kind=kind,
            ca=ca,
            serial=serial,
            mode=mode,
        )


def _codes(what: str) -> dict[str, DevidError]:
    return {
        "ResourceNotFoundException": NotFound(f"{what} is not registered in AWS IoT"),
        "ResourceAlreadyExistsException": Conflict(f"{what} is already registered in AWS IoT"),
        "CertificateStateException": Conflict(f"{what} is in a state that does not allow this"),
        "CertificateConflictException": Conflict(f"{what} conflicts with a registered one"),
        "CertificateValidationException": CheckFailed(f"AWS IoT refused {what} as invalid"),
    }


def call(
    client: Client,
    operation: str,
    *,
    what: str = "the certificate",
    codes: Mapping[str, DevidError] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """``client.<operation>(**params)`` with AWS errors mapped (``what`` names the object)."""
    action = "".join(part.title() for part in operation.split("_"))
    with aws_errors(action, {**_codes(what), **(codes or {})}):
        response: dict[str, Any] = getattr(client, operation)(**params)
    return response


def pages(
    client: Client, operation: str, key: str, *, what: str = "the certificate", **params: Any
) -> Iterator[Any]:
    """Every item under *key* of a paginated IoT listing."""
    action = "".join(part.title() for part in operation.split("_"))
    with aws_errors(action, _codes(what)):
        for page in client.get_paginator(operation).paginate(**params):
            yield from page.get(key) or []


def check_key(key: PublicKey, *, whose: str = "the certificate's") -> None:
    """Refuse a key AWS IoT does not accept, with the reason (exit 1)."""
    verdict = policy.check(key, policy.Service.IOT)
    if not verdict.ok:
        raise CheckFailed(f"{whose} key: {verdict.reason}")


def _public_key(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> PublicKey:
    return cert_or_csr.public_key()  # type: ignore[return-value]  # checked by check_key


def check_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate, *, what: str) -> None:
    """Refuse *cert* unless *ca_cert* signed it directly."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CheckFailed(
            f"{what} is not signed by the CA {ca_cert.subject.rfc4514_string()}",
            hint="give the CA that issued it directly",
        ) from exc


def describe_certificate(client: Client, cert_id: str) -> AwsCertificate:
    """DescribeCertificate, with devid's own id computed from the PEM AWS returns."""
    desc = call(
        client, "describe_certificate", what=f"certificate {cert_id}", certificateId=cert_id
    )["certificateDescription"]
    pem = desc.get("certificatePem")
    local = certificate_id(certs.load_certificates(pem.encode())[0]) if pem else None
    return AwsCertificate(
        certificate_id=desc["certificateId"],
        arn=desc["certificateArn"],
        status=desc["status"],
        local_id=local,
        ca_certificate_id=desc.get("caCertificateId"),
        created=_iso_utc(desc.get("creationDate")),
    )


def _iso_utc(when: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC, as devid prints every time (boto3 gives an aware datetime)."""
    if when is None:
        return None
    aware = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat()


def find_certificate(client: Client, cert: x509.Certificate) -> AwsCertificate | None:
    """*cert* as registered in AWS IoT, or None when it is not registered."""
    try:
        return describe_certificate(client, certificate_id(cert))
    except NotFound:
        return None


def register_certificate(
    client: Client, cert: x509.Certificate, *, ca_cert: x509.Certificate | None, activate: bool
) -> AwsCertificate:
    """RegisterCertificate (with the CA's certificate) or RegisterCertificateWithoutCA.

    Checked first: the key suits AWS IoT and, with *ca_cert*, the CA signed *cert* directly
    (AWS checks this; its test double does not).
    """
    check_key(_public_key(cert))
    status = (CertStatus.ACTIVE if activate else CertStatus.INACTIVE).value
    local = certificate_id(cert)
    what = f"certificate {local}"
    pem = certs.pem(cert).decode()
    if ca_cert is not None:
        check_issued_by(cert, ca_cert, what="the certificate")
        response = call(
            client,
            "register_certificate",
            what=what,
            certificatePem=pem,
            caCertificatePem=certs.pem(ca_cert).decode(),
            status=status,
        )
    else:
        response = call(
            client, "register_certificate_without_ca", what=what, certificatePem=pem, status=status
        )
    return AwsCertificate(
        certificate_id=response["certificateId"],
        arn=response["certificateArn"],
        status=status,
        local_id=local,
        ca_certificate_id=certificate_id(ca_cert) if ca_cert is not None else None,
    )


def check_csr(csr: x509.CertificateSigningRequest) -> None:
    """Pre-flight for CreateCertificateFromCsr: a valid signature and a key AWS IoT accepts."""
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # cryptography raises for unsupported signature algorithms
        raise BadInput(f"cannot check the CSR signature: {exc}") from exc
    if not valid:
        raise BadInput("the CSR signature does not verify; it was altered or signed by another key")
    check_key(_public_key(csr), whose="the CSR's")


class LeftInAws(DevidError):
    """A step after AWS IoT created a certificate failed, and deleting it again failed too.

    *certificate* is what is left in AWS IoT, *kept* whether *keep* had run; the exit code
    is the failed step's.
    """

    def __init__(
        self,
        message: str,
        *,
        certificate: AwsCertificate,
        kept: bool,
        exit_code: int,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.certificate = certificate
        self.kept = kept
        self.exit_code = exit_code


def create_from_csr(
    client: Client,
    csr: x509.CertificateSigningRequest,
    *,
    activate: bool,
    keep: Callable[[x509.Certificate], object] | None = None,
    discard: Callable[[x509.Certificate], object] | None = None,
) -> tuple[x509.Certificate, AwsCertificate]:
    """CreateCertificateFromCsr, keeping the result only if it certifies the CSR's key.

    The certificate is created INACTIVE. A certificate for another key (moto signs one for a
    key of its own) is deleted from AWS IoT again and reported as an error. Otherwise
    *keep(cert)* runs (e.g. writes the file) and then, with *activate*, it is set ACTIVE.
    If keeping or activating fails, the certificate is deleted from AWS IoT again and, if
    *keep* had run, *discard(cert)* undoes it (e.g. removes the file); the error, of the
    failed step's kind, says so. If deleting fails too, :class:`LeftInAws` says what is left.
    """
    check_csr(csr)
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    response = call(
        client,
        "create_certificate_from_csr",
        what="the CSR",
        certificateSigningRequest=pem,
        setAsActive=False,
    )
    cert = certs.load_certificates(response["certificatePem"].encode(), where="AWS's answer")[0]
    made = AwsCertificate(
        response["certificateId"], response["certificateArn"], "INACTIVE", certificate_id(cert)
    )
    if cert.public_key() != csr.public_key():
        raise CheckFailed(
            "AWS returned a certificate for a different key than the CSR's; not installed",
            hint=_removed(client, made.certificate_id),
        )
    kept = False
    try:
        if keep is not None:
            keep(cert)
            kept = True
        if activate:
            _activate(client, made.certificate_id)
    except DevidError as exc:
        raise _taken_back(client, cert, made, exc, kept=kept, discard=discard) from exc
    except BaseException:  # interrupted: take back what can be, quickly
        if _remove_quietly(client, made.certificate_id) is None and kept and discard:
            discard(cert)
        raise
    if activate:
        made = AwsCertificate(made.certificate_id, made.arn, "ACTIVE", made.local_id)
    return cert, made


def _activate(client: Client, cert_id: str) -> None:
    try:
        set_status(client, cert_id, CertStatus.ACTIVE)
    except DevidError as exc:
        raise type(exc)(f"activating certificate {cert_id} failed: {exc}") from exc


def _taken_back(
    client: Client,
    cert: x509.Certificate,
    made: AwsCertificate,
    exc: DevidError,
    *,
    kept: bool,
    discard: Callable[[x509.Certificate], object] | None,
) -> DevidError:
    """The error for *exc*, once *made* is deleted from AWS IoT again and *discard* ran."""
    cert_id = made.certificate_id
    undo = _remove_quietly(client, cert_id)
    if undo is None:
        if kept and discard is not None:
            discard(cert)
        return type(exc)(str(exc), hint=_removed_text(cert_id, gone=True))
    return LeftInAws(
        f"{exc}; deleting it from AWS IoT again failed too ({undo}), "
        f"so certificate {cert_id} is left there, INACTIVE",
        certificate=made,
        kept=kept,
        exit_code=exc.exit_code,
        hint=f"'devid iot status {cert_id} active' activates it, or delete it in AWS IoT",
    )


def _removed(client: Client, cert_id: str) -> str:
    """Delete *cert_id* from AWS IoT and say whether that worked."""
    return _removed_text(cert_id, gone=_remove_quietly(client, cert_id) is None)


def _removed_text(cert_id: str, *, gone: bool) -> str:
    return f"certificate {cert_id} " + (
        "was deleted from AWS IoT" if gone else "is left INACTIVE in AWS IoT; delete it"
    )


def _remove_quietly(client: Client, cert_id: str) -> DevidError | None:
    """Deactivate and delete *cert_id*; None when it is gone, else why deleting failed."""
    with contextlib.suppress(DevidError):
        call(client, "update_certificate", certificateId=cert_id, newStatus="INACTIVE")
    try:
        call(client, "delete_certificate", certificateId=cert_id, forceDelete=True)
    except DevidError as exc:
        return exc
    return None


def set_status(client: Client, cert_id: str, status: CertStatus) -> str:
    """UpdateCertificate to *status*; returns the previous status.

    REVOKED is final in AWS IoT: devid refuses to move a revoked certificate (exit 4).
    """
    if status not in SETTABLE:
        raise BadInput(f"{status.value} cannot be set with UpdateCertificate")
    current = describe_certificate(client, cert_id)
    if current.status == CertStatus.REVOKED.value and status is not CertStatus.REVOKED:
        raise Conflict(
            f"certificate {cert_id} is REVOKED, which is final in AWS IoT",
            hint="register a new certificate instead",
        )
    if current.status != status.value:
        call(
            client,
            "update_certificate",
            what=f"certificate {cert_id}",
            certificateId=cert_id,
            newStatus=status.value,
        )
    return current.status


def list_certificates(
    client: Client, *, ca_certificate_id: str | None = None
) -> list[AwsCertificate]:
    """ListCertificates (or ListCertificatesByCA), each described to compute its id locally."""
    if ca_certificate_id is None:
        listed = pages(client, "list_certificates", "certificates")
    else:
        listed = pages(
            client,
            "list_certificates_by_ca",
            "certificates",
            what=f"CA certificate {ca_certificate_id}",
            caCertificateId=ca_certificate_id,
        )
    found = []
    for item in listed:
        aws = describe_certificate(client, item["certificateId"])
        ca_id = aws.ca_certificate_id or item.get("caCertificateId") or ca_certificate_id
        found.append(dataclasses.replace(aws, ca_certificate_id=ca_id))
    return found


# Rotation -----------------------------------------------------------------------------------


@dataclass
class _Undo:
    """What to take back, newest first, if a rotation stops half-way."""

    actions: list[tuple[str, Callable[[], object]]]

    def push(self, description: str, action: Callable[[], object]) -> None:
        self.actions.append((description, action))

    def run(self) -> tuple[list[str], list[str]]:
        done, failed = [], []
        for description, action in reversed(self.actions):
            try:
                action()
                done.append(description)
            except DevidError:
                failed.append(description)
        return done, failed


def _stopped(exc: DevidError, steps: list[str], undo: _Undo) -> DevidError:
    undone, failed = undo.run()
    parts = [f"AWS IoT rotation stopped: {exc.message}"]
    if steps:
        parts.append(f"done: {', '.join(steps)}")
    if undone:
        parts.append(f"undone: {', '.join(undone)}")
    if failed:
        parts.append(f"could NOT undo: {', '.join(failed)}")
    parts.append("the old certificate was not touched")
    return type(exc)("; ".join(parts), hint=exc.hint)


def _registered_new(
    client: Client, new_cert: x509.Certificate, ca_cert: x509.Certificate | None
) -> tuple[AwsCertificate, bool]:
    """The new certificate in AWS IoT (registered INACTIVE now, or found from an earlier run)."""
    found = find_certificate(client, new_cert)
    if found is not None:
        if found.status == CertStatus.REVOKED.value:
            raise Conflict(f"the new certificate {found.certificate_id} is REVOKED in AWS IoT")
        return found, False
    return register_certificate(client, new_cert, ca_cert=ca_cert, activate=False), True


def _attach_all(
    client: Client, old: AwsCertificate, new: AwsCertificate, steps: list[str], undo: _Undo
) -> None:
    """Attach the old certificate's things and policies to the new one."""
    things = list(pages(client, "list_principal_things", "things", principal=old.arn))
    for thing in things:
        call(
            client,
            "attach_thing_principal",
            what=f"thing {thing}",
            thingName=thing,
            principal=new.arn,
        )
        steps.append(f"attached thing {thing}")
        undo.push(
            f"detached thing {thing}",
            partial(call, client, "detach_thing_principal", thingName=thing, principal=new.arn),
        )
    policies = [
        p["policyName"] for p in pages(client, "list_attached_policies", "policies", target=old.arn)
    ]
    for name in policies:
        call(client, "attach_policy", what=f"policy {name}", policyName=name, target=new.arn)
        steps.append(f"attached policy {name}")
        undo.push(
            f"detached policy {name}",
            partial(call, client, "detach_policy", policyName=name, target=new.arn),
        )


def rotate_in_aws(
    client: Client,
    *,
    old_cert: x509.Certificate,
    new_cert: x509.Certificate,
    ca_cert: x509.Certificate | None,
    revoke_old: bool,
    retire: bool = True,
) -> list[str]:
    """Move a device from *old_cert* to *new_cert* in AWS IoT; returns the steps taken.

    With *retire* false it stops after activating the new certificate (both are then
    active); :func:`retire_in_aws` finishes once the device has the new certificate.

    Order: register the new certificate (INACTIVE, with *ca_cert* or without a CA), attach
    the old one's things and policies to it, activate it, and only then move the old one to
    INACTIVE (REVOKED with *revoke_old*). If a step before the last fails, what devid did is
    undone (detach, deactivate, delete the new certificate if devid registered it) and the
    error says so; the old certificate stays as it was. If only the last step fails, both are
    active, which is safe, and the error says which command finishes the job.
    """
    old_id, new_id = certificate_id(old_cert), certificate_id(new_cert)
    if old_id == new_id:
        raise BadInput("the old and the new certificate are the same")
    old = describe_certificate(client, old_id)
    steps: list[str] = []
    undo = _Undo([])
    try:
        new, created = _registered_new(client, new_cert, ca_cert)
        new_id = new.certificate_id
        if created:
            steps.append(f"registered {new_id}")
            undo.push(f"deleted {new_id}", partial(delete_registered, client, new_id))
        _attach_all(client, old, new, steps, undo)
        if new.status != CertStatus.ACTIVE.value:
            # the undo first: a stop may land just after the activation
            deactivate = partial(call, client, "update_certificate", certificateId=new_id)
            undo.push(f"deactivated {new_id}", partial(deactivate, newStatus="INACTIVE"))
            set_status(client, new_id, CertStatus.ACTIVE)
            steps.append(f"activated {new_id}")
    except DevidError as exc:
        raise _stopped(exc, steps, undo) from exc
    except BaseException:  # Ctrl-C, SIGTERM: take back what was done, then stop
        undo.run()
        raise
    if retire:
        steps.extend(_retire(client, old, new, revoke_old=revoke_old))
    return steps


def delete_registered(client: Client, cert_id: str) -> None:
    """Delete a certificate devid registered (AWS IoT deletes only inactive ones)."""
    call(client, "update_certificate", certificateId=cert_id, newStatus="INACTIVE")
    call(client, "delete_certificate", certificateId=cert_id, forceDelete=True)


def retire_in_aws(
    client: Client, *, old_cert: x509.Certificate, new_cert: x509.Certificate, revoke_old: bool
) -> list[str]:
    """Move *old_cert* to INACTIVE (REVOKED with *revoke_old*) now that *new_cert* is active."""
    old = describe_certificate(client, certificate_id(old_cert))
    new = describe_certificate(client, certificate_id(new_cert))
    return _retire(client, old, new, revoke_old=revoke_old)


def _retire(
    client: Client, old: AwsCertificate, new: AwsCertificate, *, revoke_old: bool
) -> list[str]:
    target = CertStatus.REVOKED if revoke_old else CertStatus.INACTIVE
    if old.status in (target.value, CertStatus.REVOKED.value):
        return [f"old {old.certificate_id} already {old.status}"]
    try:
        set_status(client, old.certificate_id, target)
    except DevidError as exc:
        raise type(exc)(
            f"AWS IoT rotation: {new.certificate_id} is active with the old certificate's "
            f"things and policies, but moving the old one to {target.value} failed: "
            f"{exc.message}",
            hint=f"run 'devid iot status {old.certificate_id} {target.value.lower()}'",
        ) from exc
    return [f"moved old {old.certificate_id} to {target.value}"]
