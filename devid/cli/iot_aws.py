"""``devid iot register-ca|register-cert|create-from-csr|status|list``: AWS IoT Core calls.

Every output shows the AWS IoT certificate id devid computes itself (SHA-256 of the DER) and
whether AWS's certificateId equals it; registrations are recorded in the inventory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from devid import iot as aws_iot
from devid import iot_ca
from devid.aws import AwsOptions, client
from devid.cli._common import aws_options, emit, examples, json_option, passphrase_file_option
from devid.cli._common import warn as warning
from devid.cli._pki import key_loader, store_from, store_option
from devid.cli.iot import iot
from devid.errors import BadInput, CheckFailed, Conflict, DevidError, NotFound
from devid.fsutil import PUBLIC_MODE, read_input, refuse_existing, refuse_unwritable, write_atomic
from devid.pki import certs
from devid.pki.ca import CertificateAuthority, load_ca
from devid.store import Event, IotRegistration, Store

_CERT_ID = re.compile(r"[0-9a-fA-F]{64}")


def _client(profile: str | None, region: str | None, endpoint_url: str | None) -> Any:
    return client("iot", AwsOptions(profile, region, endpoint_url))


def _id_lines(aws: aws_iot.AwsCertificate) -> list[str]:
    same = {True: "AWS says the same", False: f"AWS says {aws.certificate_id}!", None: "?"}
    return [
        f"certificate id   {aws.local_id or aws.certificate_id} "
        f"(SHA-256 of the DER; {same[aws.id_matches]})",
        f"arn              {aws.arn}",
        f"status           {aws.status}",
    ]


def _mismatch_warning(aws: aws_iot.AwsCertificate) -> None:
    if aws.id_matches is False:
        warning(
            f"AWS's certificate id {aws.certificate_id} is not the SHA-256 of the DER "
            f"({aws.local_id})"
        )


def _record(store: Store, registration: IotRegistration, event: Event) -> None:
    with store.transaction():
        store.record_iot_registration(registration)
        store.add_event(event)


# register-ca --------------------------------------------------------------------------------


def _jitp_config(template: Path | None, role_arn: str | None) -> dict[str, str] | None:
    if template is None:
        if role_arn is not None:
            raise BadInput("--role-arn goes with --jitp-template")
        return None
    data = read_input(template, what="JITP template")
    return iot_ca.registration_config(data, role_arn, where=str(template))


def _check_signer(store: Store, name: str, force: bool) -> None:
    verdict = iot_ca.signer_check(store, name)
    if verdict.refusal and not force:
        raise CheckFailed(verdict.refusal, hint="--force registers it anyway")
    for message in (verdict.refusal, verdict.warning):
        if message:
            warning(message)


def _verification(
    ca: CertificateAuthority, mode: iot_ca.CaMode, supplied: Path | None, passphrase: str | None
) -> Any:
    """The verification-certificate maker (a supplied file, or signed by the CA key)."""
    if mode is iot_ca.CaMode.SNI_ONLY:
        if supplied is not None:
            raise BadInput("--verification-cert is for DEFAULT mode; SNI_ONLY takes none")
        return None
    if supplied is not None:
        given = certs.read_certificate(supplied)
        return lambda code: given
    key = ca.signing_key(key_loader(passphrase))  # load (and check) before calling AWS
    return lambda code: iot_ca.make_verification_certificate(ca.certificate, key, code)


def _ca_text(name: str, registered: iot_ca.RegisteredCa) -> list[str]:
    lines = [f"registered CA {name} in AWS IoT ({registered.mode.value})"]
    lines += _id_lines(registered.certificate)
    lines.append(f"auto-register    {'yes' if registered.auto_register else 'no'}")
    if registered.jitp:
        lines.append("jitp             template and role set")
    if registered.verification is not None:
        lines.append(f"verification     {registered.verification.subject.rfc4514_string()}")
    return lines


@iot.command("register-ca")
@click.option("--ca", "ca_name", required=True, metavar="NAME", help="The devid CA to register.")
@click.option(
    "--mode",
    type=click.Choice(["default", "sni-only"]),
    default="default",
    show_default=True,
    help="default: prove the CA key with a verification certificate; sni-only: no proof.",
)
@click.option("--auto-register", is_flag=True, help="Allow just-in-time registration (JITR).")
@click.option(
    "--jitp-template",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JITP template (bare or registrationConfig); implies --auto-register.",
)
@click.option("--role-arn", help="IAM role JITP uses (else the template file's roleArn).")
@click.option(
    "--verification-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Send this verification certificate (e.g. made with openssl) instead of making one.",
)
@click.option(
    "--verification-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the verification certificate sent (PEM) here.",
)
@click.option("--force", is_flag=True, help="Register even if devices come from intermediates.")
@passphrase_file_option
@store_option
@aws_options
@json_option
@examples(
    """
devid iot register-ca --ca fleet-issuing
devid iot register-ca --ca fleet-issuing --mode sni-only --json
devid iot jitp template --role-arn arn:aws:iam::123456789012:role/JITP --out reg.json
devid iot register-ca --ca fleet-issuing --jitp-template reg.json
aws iot get-registration-code   # then sign CN=<code> with the CA key, e.g. with openssl
devid iot register-ca --ca fleet-issuing --verification-cert verification.pem
"""
)
def register_ca(
    ca_name: str,
    mode: str,
    auto_register: bool,
    jitp_template: Path | None,
    role_arn: str | None,
    verification_cert: Path | None,
    verification_out: Path | None,
    force: bool,
    passphrase_file: str | None,
    store_url: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Register CA NAME with AWS IoT Core and set it ACTIVE.

    DEFAULT mode gets the registration code, has the CA sign a verification certificate
    whose CN is the code (for a throw-away key; the CA key may be on a token; it is not
    recorded), checks it locally and registers the CA with it. SNI_ONLY registers the CA
    without one. Refused (exit 1, unless --force) when the inventory shows the devices are
    issued by an intermediate below this CA: AWS IoT needs the CA that directly signs them.
    A JITP template is checked first (parameters JITP can fill, and the subjects of the CA's
    device certificates in the inventory).
    """
    ca = load_ca(ca_name)
    ca.check_valid()
    ca_mode = iot_ca.CaMode.parse(mode)
    if verification_out is not None:  # checked before AWS is asked to change anything
        if ca_mode is iot_ca.CaMode.SNI_ONLY:
            raise BadInput("--verification-out: SNI_ONLY mode uses no verification certificate")
        refuse_existing(verification_out, force=False)
        refuse_unwritable(verification_out)
    config = _jitp_config(jitp_template, role_arn)
    with store_from(store_url) as store:
        _check_signer(store, ca_name, force)
        if config is not None:
            iot_ca.check_template(config["templateBody"], store, ca_name)
        maker = _verification(ca, ca_mode, verification_cert, passphrase_file)
        iot_client = _client(profile, region, endpoint_url)
        existing = iot_ca.find_ca(iot_client, ca.certificate)
        if existing is not None:
            raise Conflict(f"CA {ca_name} is already registered in AWS IoT ({existing})")
        request = iot_ca.CaRegistration(
            ca.certificate, ca_mode, auto_register or config is not None, config
        )
        registered = iot_ca.register_ca(iot_client, request, verification=maker)
        aws = registered.certificate
        detail = {"arn": aws.arn, "mode": ca_mode.value, "jitp": registered.jitp}
        _record(
            store,
            aws.registration(kind="ca", ca=ca_name, mode=ca_mode.value),
            Event("iot.register-ca", ca=ca_name, detail=detail),
        )
    if verification_out is not None and registered.verification is not None:
        write_atomic(verification_out, certs.pem(registered.verification), mode=PUBLIC_MODE)
    _mismatch_warning(aws)
    emit(
        {"ca": ca_name, **registered.as_dict()}, as_json=as_json, text=_ca_text(ca_name, registered)
    )


# register-cert ------------------------------------------------------------------------------


def _issuer(
    store: Store, cert: x509.Certificate, ca_name: str | None, without_ca: bool
) -> tuple[str | None, str | None]:
    """(CA name, inventory serial): from --ca, else the CA the inventory recorded for it.

    --without-ca changes how the certificate is registered, not who issued it: the
    inventory's CA is still recorded.
    """
    if ca_name and without_ca:
        raise BadInput("give --ca NAME or --without-ca, not both")
    record = store.get_certificate(certs.serial_hex(cert.serial_number))
    if record is not None and record.aws_iot_id != aws_iot.certificate_id(cert):
        record = None
    serial = record.serial if record is not None else None
    if ca_name:
        return ca_name, serial
    if record is None and not without_ca:
        raise BadInput("the certificate is not in the inventory: give --ca NAME or --without-ca")
    return (record.ca if record is not None else None), serial


def _ca_mode(store: Store, iot_client: Any, name: str) -> str | None:
    """CA *name*'s certificate mode in AWS IoT; None if not registered there or not known.

    DescribeCACertificate reports certificateMode (moto leaves it out); failing that, the
    mode devid recorded when it registered the CA under the ARN AWS reports.
    """
    record = store.get_ca(name)
    if record is None:
        return None
    ca_id = aws_iot.certificate_id(certs.load_certificates(record.pem.encode())[0])
    try:
        desc = aws_iot.call(
            iot_client,
            "describe_ca_certificate",
            what=f"CA certificate {ca_id}",
            certificateId=ca_id,
        )["certificateDescription"]
    except NotFound:
        return None
    if desc.get("certificateMode"):
        return str(desc["certificateMode"])
    recorded = [
        r.mode
        for r in store.iot_registrations(certificate_id=ca_id)
        if r.kind == "ca" and r.arn == desc.get("certificateArn")
    ]
    return recorded[-1] if recorded else None


def _check_without_ca(store: Store, iot_client: Any, issuer: str) -> None:
    """--without-ca needs the issuing CA in SNI_ONLY mode (or not registered at all)."""
    if _ca_mode(store, iot_client, issuer) == iot_ca.CaMode.DEFAULT.value:
        raise BadInput(
            f"the certificate's CA {issuer} is registered in AWS IoT in DEFAULT mode; "
            "--without-ca needs it in SNI_ONLY mode",
            hint=f"register the certificate with its CA (--ca {issuer}) instead",
        )


@iot.command("register-cert")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ca", "ca_name", metavar="NAME", help="The devid CA that issued it.")
@click.option("--without-ca", is_flag=True, help="RegisterCertificateWithoutCA (SNI_ONLY).")
@click.option("--activate", is_flag=True, help="Register it ACTIVE (else INACTIVE).")
@store_option
@aws_options
@json_option
@examples(
    """
devid iot register-cert dev1.pem --ca fleet-issuing --activate
devid iot register-cert dev1.pem --activate --json        # CA taken from the inventory
devid iot register-cert other-vendor.pem --without-ca
"""
)
def register_cert(
    path: Path,
    ca_name: str | None,
    without_ca: bool,
    activate: bool,
    store_url: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Register the device certificate in PATH with AWS IoT Core.

    With --ca the CA must be registered (devid iot register-ca) and must have signed the
    certificate directly; with --without-ca it is registered on its own (the CA's mode must
    then be SNI_ONLY: refused, exit 2, when the issuing CA the inventory knows is registered
    in DEFAULT mode). With neither, the CA is the one the inventory recorded for it; the
    inventory's CA is recorded with --without-ca too. The key must suit AWS IoT: RSA >= 2048
    or EC P-256/P-384/P-521.
    """
    cert = certs.read_certificate(path)
    with store_from(store_url) as store:
        issuer, serial = _issuer(store, cert, ca_name, without_ca)
        ca_cert = load_ca(issuer).certificate if issuer and not without_ca else None
        aws_iot.check_key(cert.public_key())  # type: ignore[arg-type]
        iot_client = _client(profile, region, endpoint_url)
        if without_ca and issuer:
            _check_without_ca(store, iot_client, issuer)
        if ca_cert is not None and iot_ca.find_ca(iot_client, ca_cert) is None:
            raise NotFound(
                f"CA {issuer} is not registered in AWS IoT",
                hint=f"run 'devid iot register-ca --ca {issuer}' first",
            )
        aws = aws_iot.register_certificate(iot_client, cert, ca_cert=ca_cert, activate=activate)
        detail = {"arn": aws.arn, "status": aws.status}
        _record(
            store,
            aws.registration(ca=issuer, serial=serial),
            Event("iot.register-cert", ca=issuer, serial=serial, detail=detail),
        )
    _mismatch_warning(aws)
    data = {"path": str(path), "ca": issuer, "serial": serial, **aws.as_dict()}
    emit(data, as_json=as_json, text=[f"registered {path} in AWS IoT", *_id_lines(aws)])


# create-from-csr ----------------------------------------------------------------------------


@iot.command("create-from-csr")
@click.argument("csr_path", metavar="CSR", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the certificate AWS IoT signs (PEM).",
)
@click.option("--activate", is_flag=True, help="Set it ACTIVE once it is checked and written.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@store_option
@aws_options
@json_option
@examples(
    """
devid csr create --key 'pkcs11:token=factory;object=dev1' --subject CN=dev1 --out dev1.csr
devid iot create-from-csr dev1.csr --out dev1.pem --activate
"""
)
def create_from_csr(
    csr_path: Path,
    out: Path,
    activate: bool,
    force: bool,
    store_url: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Have AWS IoT sign a certificate for CSR (CreateCertificateFromCsr) and write it.

    Pre-flight: the CSR's signature must verify and its key suit AWS IoT (RSA >= 2048 or
    EC P-256/P-384/P-521, never Ed25519); nothing is sent otherwise. The certificate AWS
    returns must carry the CSR's key: if it does not, it is deleted from AWS IoT again,
    nothing is written and the command fails (exit 1). It is created INACTIVE and
    activated (--activate) only after it was written; if writing or activating fails, it is
    deleted from AWS IoT again and nothing is written (with --force, the old --out is put
    back). Should that deletion fail too, the certificate is left INACTIVE: the file and an
    inventory record say what is there, and the error says so.
    """
    refuse_existing(out, force=force)
    csr = certs.read_csr(csr_path)
    aws_iot.check_csr(csr)
    iot_client = _client(profile, region, endpoint_url)
    previous = out.read_bytes() if force and out.is_file() else None

    def write(cert: x509.Certificate) -> None:
        write_atomic(out, certs.pem(cert), mode=PUBLIC_MODE, force=force)

    def unwrite(cert: x509.Certificate) -> None:  # AWS IoT deleted it again: write nothing
        if previous is None:
            out.unlink(missing_ok=True)
        else:
            write_atomic(out, previous, mode=PUBLIC_MODE, force=True)

    with store_from(store_url) as store:
        try:
            _, aws = aws_iot.create_from_csr(
                iot_client, csr, activate=activate, keep=write, discard=unwrite
            )
        except aws_iot.LeftInAws as exc:
            raise _recorded_left(store, exc, out) from exc
        detail = {"arn": aws.arn, "status": aws.status, "path": str(out)}
        _record(store, aws.registration(), Event("iot.create-from-csr", detail=detail))
    _mismatch_warning(aws)
    data = {"path": str(out), **aws.as_dict()}
    emit(data, as_json=as_json, text=[f"wrote {out}", *_id_lines(aws)])


def _recorded_left(store: Store, exc: aws_iot.LeftInAws, out: Path) -> aws_iot.LeftInAws:
    """Record the certificate left in AWS IoT (and the file written) and say so."""
    aws = exc.certificate
    path = str(out) if exc.kept else None
    detail = {"arn": aws.arn, "status": aws.status, "path": path, "error": exc.message}
    try:
        _record(store, aws.registration(), Event("iot.create-from-csr", detail=detail))
        recorded = "recorded it in the inventory"
    except DevidError as failed:
        recorded = f"recording it in the inventory failed ({failed})"
    wrote = f"wrote {out} and " if exc.kept else ""
    return aws_iot.LeftInAws(
        f"{exc.message}; {wrote}{recorded}",
        certificate=aws,
        kept=exc.kept,
        exit_code=exc.exit_code,
        hint=exc.hint,
    )


# status -------------------------------------------------------------------------------------


def _cert_id(target: str) -> str:
    """A certificate id given as such, or computed from a certificate file."""
    if Path(target).exists():
        return aws_iot.certificate_id(certs.read_certificate(target))
    if _CERT_ID.fullmatch(target):
        return target.lower()
    raise BadInput(f"{target!r} is neither a certificate file nor a 64-hex certificate id")


def _updated(store: Store, aws: aws_iot.AwsCertificate) -> IotRegistration:
    known = [r for r in store.iot_registrations(certificate_id=aws.local_id) if r.arn == aws.arn]
    if not known:
        return aws.registration()
    old = known[-1]
    return aws.registration(kind=old.kind, ca=old.ca, serial=old.serial, mode=old.mode)


@iot.command("status")
@click.argument("target", metavar="CERT_ID|PATH")
@click.argument("new_status", metavar="active|inactive|revoked")
@store_option
@aws_options
@json_option
@examples(
    """
devid iot status dev1.pem inactive
devid iot status 3f2a...c9e1 active --json
devid iot status dev1.pem revoked        # final in AWS IoT
"""
)
def status(
    target: str,
    new_status: str,
    store_url: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Set a registered certificate ACTIVE, INACTIVE or REVOKED (UpdateCertificate).

    PENDING_* states are AWS IoT's own and cannot be set (exit 2); a REVOKED certificate
    cannot be moved again (exit 4). This is the certificate's status in AWS IoT only: to
    revoke it in devid's CRL, use 'devid cert revoke'.
    """
    wanted = aws_iot.CertStatus.settable(new_status)
    cert_id = _cert_id(target)
    iot_client = _client(profile, region, endpoint_url)
    # the inventory is opened first: a bad --store must stop the command before AWS changes
    with store_from(store_url) as store:
        previous = aws_iot.set_status(iot_client, cert_id, wanted)
        aws = aws_iot.describe_certificate(iot_client, cert_id)
        registration = _updated(store, aws)
        detail = {"arn": aws.arn, "from": previous, "to": aws.status}
        _record(
            store,
            registration,
            Event("iot.status", ca=registration.ca, serial=registration.serial, detail=detail),
        )
    _mismatch_warning(aws)
    data = {**aws.as_dict(), "previous_status": previous}
    emit(data, as_json=as_json, text=[f"{previous} -> {aws.status}", *_id_lines(aws)])


# list ---------------------------------------------------------------------------------------


def _list_line(aws: aws_iot.AwsCertificate, known: bool) -> str:
    same = {True: "=", False: f"!= AWS {aws.certificate_id}", None: "?"}[aws.id_matches]
    return f"{aws.local_id or aws.certificate_id}  {aws.status:<18} {same}" + (
        "  (recorded by devid)" if known else ""
    )


@iot.command("list")
@click.option("--ca", "ca_name", metavar="NAME", help="Only certificates of this devid CA.")
@store_option
@aws_options
@json_option
@examples(
    """
devid iot list
devid iot list --ca fleet-issuing --json | jq '.certificates[] | select(.status == "ACTIVE")'
"""
)
def list_(
    ca_name: str | None,
    store_url: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """List the certificates registered in AWS IoT (ListCertificates / ListCertificatesByCA).

    Each certificate is described to compute its id locally from the DER; '=' marks an id
    equal to AWS's certificateId. The inventory is not changed.
    """
    ca_id = aws_iot.certificate_id(load_ca(ca_name).certificate) if ca_name else None
    listed = aws_iot.list_certificates(
        _client(profile, region, endpoint_url), ca_certificate_id=ca_id
    )
    with store_from(store_url) as store:
        known = {r.arn for r in store.iot_registrations()}
    items = [{**aws.as_dict(), "recorded_by_devid": aws.arn in known} for aws in listed]
    text = [_list_line(aws, aws.arn in known) for aws in listed] or ["no certificates"]
    emit({"ca": ca_name, "certificates": items}, as_json=as_json, text=text)
