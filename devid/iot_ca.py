"""Registering a devid CA with AWS IoT Core (RegisterCACertificate).

DEFAULT mode proves possession of the CA key: AWS IoT hands out a registration code, and the
CA signs a *verification certificate* whose subject CN is that code. devid makes it for a
fresh throw-away key (the CA key may be on a token: only ``sign()`` runs there), keeps it out
of the inventory, and checks it locally before sending it, because a test double accepts any
verification certificate: its CN must be the code, and the CA must have signed it.
SNI_ONLY mode registers the CA without one (devices must then send SNI).

AWS IoT wants the CA that *directly* signs the device certificates; :func:`signer_check`
reads the inventory and refuses a root whose devices are issued by an intermediate below it.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from devid import jitp
from devid.durations import utcnow
from devid.errors import BadInput, CheckFailed, NotFound
from devid.iot import AwsCertificate, Client, call, certificate_id, check_issued_by, check_key
from devid.keys import PrivateKey
from devid.pki import certs
from devid.pki.build import CertificateSpec, sign_certificate
from devid.pki.names import common_name
from devid.pki.profiles import PROFILES
from devid.store import CaRecord, CertQuery, Status, Store

_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
VERIFICATION_DAYS = 1
#: how many of the CA's device certificates a JITP template is checked against
JITP_SAMPLE = 20


class CaMode(enum.Enum):
    DEFAULT = "DEFAULT"
    SNI_ONLY = "SNI_ONLY"

    @classmethod
    def parse(cls, text: str) -> CaMode:
        try:
            return cls(text.strip().upper().replace("-", "_"))
        except ValueError:
            raise BadInput(f"unknown CA mode {text!r}; choose default or sni-only") from None


def make_verification_certificate(
    ca_cert: x509.Certificate, ca_key: PrivateKey, code: str, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """A one-day certificate with CN = *code*, signed by the CA key for a throw-away key."""
    now = (now or utcnow()).replace(microsecond=0)
    throwaway = ec.generate_private_key(ec.SECP256R1())
    spec = CertificateSpec(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, code)]),
        public_key=throwaway.public_key(),
        profile=PROFILES["client"],
        serial=x509.random_serial_number(),
        not_before=max(now - dt.timedelta(minutes=1), ca_cert.not_valid_before_utc),
        not_after=min(now + dt.timedelta(days=VERIFICATION_DAYS), ca_cert.not_valid_after_utc),
    )
    return sign_certificate(spec, issuer=ca_cert, key=ca_key)


def check_verification_certificate(
    verification: x509.Certificate,
    ca_cert: x509.Certificate,
    code: str,
    *,
    now: dt.datetime | None = None,
) -> None:
    """What AWS IoT checks (and moto does not): signed by the CA, CN = code, valid now."""
    check_issued_by(verification, ca_cert, what="the verification certificate")
    cn = common_name(verification.subject)
    if cn != code:
        raise CheckFailed(
            f"the verification certificate's CN is {cn!r}, not the registration code {code!r}",
            hint="its subject CN must be the code GetRegistrationCode returns",
        )
    when = now or utcnow()
    if not verification.not_valid_before_utc <= when <= verification.not_valid_after_utc:
        raise CheckFailed("the verification certificate is not valid now")


# The CA that directly signs device certificates ---------------------------------------------


@dataclass(frozen=True)
class SignerCheck:
    refusal: str | None = None
    warning: str | None = None


def _device_certificates(store: Store, ca: str, children: list[CaRecord]) -> int:
    """Certificates *ca* issued, less the certificates of its intermediates."""
    total = sum(store.status_counts(ca).values())
    for child in children:
        serial = certs.serial_hex(certs.load_certificates(child.pem.encode())[0].serial_number)
        record = store.get_certificate(serial)
        if record is not None and record.ca == ca:
            total -= 1
    return total


def signer_check(store: Store, name: str) -> SignerCheck:
    """Refuse *name* when devices are issued only by intermediates below it (per inventory)."""
    cas = store.list_cas()
    children: dict[str, list[CaRecord]] = {c.name: [] for c in cas}
    for record in cas:
        if record.parent in children:
            children[record.parent].append(record)
    if name not in children or _device_certificates(store, name, children[name]) > 0:
        return SignerCheck()
    below, queue = [], list(children[name])
    while queue:
        record = queue.pop(0)
        if _device_certificates(store, record.name, children[record.name]) > 0:
            below.append(record.name)
        queue.extend(children[record.name])
    if below:
        return SignerCheck(
            refusal=f"devices are issued by intermediate {', '.join(below)}, not by {name}; "
            f"register {below[0]} instead (AWS IoT needs the CA that directly signs them)"
        )
    if children[name]:
        names = ", ".join(c.name for c in children[name])
        return SignerCheck(
            warning=f"{name} has intermediates below it ({names}); AWS IoT needs the CA that "
            "directly signs device certificates"
        )
    return SignerCheck()


# JITP ---------------------------------------------------------------------------------------


def check_role_arn(role_arn: str) -> str:
    """*role_arn* if it is an IAM role ARN (``arn:aws:iam::ACCOUNT:role/NAME``), else exit 2."""
    if not _ROLE_ARN.fullmatch(role_arn):
        raise BadInput(f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return role_arn


def registration_config(data: bytes, role_arn: str | None, *, where: str) -> dict[str, str]:
    """``{templateBody, roleArn}`` from a template file (bare or a registrationConfig)."""
    body = jitp.load_template(data, where=where)
    if role_arn is None:
        doc = jitp.loads(data, where=where)
        role_arn = doc.get("roleArn") if isinstance(doc, dict) else None
    if not role_arn:
        raise BadInput("a JITP template needs --role-arn (the provisioning role)")
    return jitp.registration_config(body, check_role_arn(role_arn))


def check_template(template_body: str, store: Store, ca: str) -> list[str]:
    """Refuse a template JITP cannot fill; check it against the CA's device subjects.

    Returns the subjects checked. Fails (exit 1) on parameters JITP does not provide or
    cannot fill, and on the first device certificate whose subject lacks a parameter.
    """
    template = jitp.loads(template_body, where="the JITP template")
    empty = jitp.check(template, x509.Name([]))
    if empty.unknown or empty.unfillable:
        reasons = "; ".join(r for r in empty.reasons() if not r.startswith("the subject lacks"))
        raise CheckFailed(f"the JITP template cannot work: {reasons}")
    checked = []
    query = CertQuery(ca=ca, statuses=(Status.ISSUED,), limit=JITP_SAMPLE + 20)
    devices = [r for r in store.find_certificates(query) if r.profile != "intermediate"]
    for record in devices[:JITP_SAMPLE]:
        subject = certs.load_certificates(record.pem.encode())[0].subject
        result = jitp.check(template, subject)
        if not result.ok:
            raise CheckFailed(
                f"JITP would fail for device certificate {record.serial} ({result.subject}): "
                + "; ".join(result.reasons()),
                hint="fix the template or the profile; 'devid iot jitp check' shows details",
            )
        checked.append(result.subject)
    return checked


# Registration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaRegistration:
    """What RegisterCACertificate is asked to do."""

    ca_cert: x509.Certificate
    mode: CaMode = CaMode.DEFAULT
    auto_register: bool = False
    config: Mapping[str, str] | None = None


@dataclass(frozen=True)
class RegisteredCa:
    certificate: AwsCertificate
    mode: CaMode
    auto_register: bool
    jitp: bool
    registration_code: str | None = None
    verification: x509.Certificate | None = None

    def as_dict(self) -> dict[str, object]:
        verification = self.verification
        return {
            **self.certificate.as_dict(),
            "mode": self.mode.value,
            "auto_registration": self.auto_register,
            "jitp": self.jitp,
            "registration_code": self.registration_code,
            "verification_certificate": None
            if verification is None
            else {
                "subject": verification.subject.rfc4514_string(),
                "aws_iot_certificate_id": certificate_id(verification),
                "not_after": verification.not_valid_after_utc.isoformat(),
            },
        }


def find_ca(client: Client, ca_cert: x509.Certificate) -> str | None:
    """The CA's status in AWS IoT when it is registered there (DescribeCACertificate)."""
    local = certificate_id(ca_cert)
    try:
        desc = call(
            client, "describe_ca_certificate", what=f"CA certificate {local}", certificateId=local
        )
    except NotFound:
        return None
    return str(desc["certificateDescription"]["status"])


def register_ca(
    client: Client,
    request: CaRegistration,
    *,
    verification: Callable[[str], x509.Certificate] | None = None,
) -> RegisteredCa:
    """Register the CA; in DEFAULT mode *verification(code)* gives the verification cert.

    The verification certificate is checked locally (CN = code, signed by the CA) before
    RegisterCACertificate is called; the CA is set ACTIVE.
    """
    ca_cert = request.ca_cert
    check_key(ca_cert.public_key(), whose="the CA's")  # type: ignore[arg-type]
    params: dict[str, Any] = {
        "caCertificate": certs.pem(ca_cert).decode(),
        "setAsActive": True,
        "allowAutoRegistration": request.auto_register,
        "certificateMode": request.mode.value,
    }
    if request.config is not None:
        params["registrationConfig"] = dict(request.config)
    code, proof = None, None
    if request.mode is CaMode.DEFAULT:
        if verification is None:
            raise BadInput("DEFAULT mode needs a verification certificate")
        code = str(call(client, "get_registration_code")["registrationCode"])
        proof = verification(code)
        check_verification_certificate(proof, ca_cert, code)
        params["verificationCertificate"] = certs.pem(proof).decode()
    local = certificate_id(ca_cert)
    response = call(client, "register_ca_certificate", what=f"CA certificate {local}", **params)
    aws = AwsCertificate(response["certificateId"], response["certificateArn"], "ACTIVE", local)
    return RegisteredCa(
        aws, request.mode, request.auto_register, request.config is not None, code, proof
    )
