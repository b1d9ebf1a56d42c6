"""``devid cert``: issue, show, list, revoke and verify X.509 certificates.

Other modules add commands to this group (``cert.add_command``), e.g. ``needs-renewal``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from devid.cli._common import emit, examples, json_option, passphrase_file_option, warn
from devid.cli._pki import days_option, key_loader, store_from, store_option
from devid.durations import parse_duration, parse_instant, utcnow
from devid.errors import BadInput, CheckFailed
from devid.pki import certs
from devid.pki.ca import load_ca
from devid.pki.crl import parse_reason, revoke, revoke_certificate
from devid.pki.info import describe_certificate, text_lines
from devid.pki.issue import IssueRequest, issue
from devid.pki.profiles import get_profile
from devid.store import CertQuery, CertRecord, Status


@click.group()
def cert() -> None:
    """Issue, inspect, list, revoke and verify X.509 certificates."""


@cert.command("issue")
@click.option("--ca", "ca_name", required=True, metavar="NAME", help="The issuing CA.")
@click.option(
    "--csr",
    "csr_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The request (PEM or DER).",
)
@click.option(
    "--profile",
    default="device",
    show_default=True,
    metavar="NAME|FILE.toml",
    help="device, client, server, or a TOML profile file.",
)
@days_option("Validity in days (default: the profile's).")
@click.option("--device-id", metavar="ID", help="Device id for the SANs (default: the CSR's CN).")
@click.option("--key-ref", metavar="REF", help="Where the device key lives (recorded only).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Certificate file to write (PEM).",
)
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--chain", is_flag=True, help="Append the CA chain (without the root) to --out.")
@passphrase_file_option
@store_option
@json_option
@examples(
    """
devid cert issue --ca fleet-issuing --csr dev1.csr --device-id dev1 --out dev1.pem --chain
devid cert issue --ca web --csr gw.csr --profile server --days 90 --out gw.pem --json
devid cert issue --ca fleet-issuing --csr dev2.csr --profile acme-device.toml --out dev2.pem
"""
)
def issue_(
    ca_name: str,
    csr_path: Path,
    profile: str,
    days: int | None,
    device_id: str | None,
    key_ref: str | None,
    out: Path,
    force: bool,
    chain: bool,
    passphrase_file: str | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Issue a certificate for the CSR, signed by the CA's key (file or token).

    The CSR's signature is checked and keys weaker than the profile allows are refused
    (RSA < 2048, EC < P-256). The serial is random (159 bits) and unique in the inventory,
    the file is written atomically and the certificate is recorded.
    """
    from devid.fsutil import refuse_existing

    refuse_existing(out, force=force)
    request = IssueRequest(
        csr=certs.read_csr(csr_path),
        profile=get_profile(profile),
        days=days,
        device_id=device_id,
        key_ref=key_ref,
    )
    authority = load_ca(ca_name)
    with store_from(store_url) as store:
        issued = issue(
            authority,
            request,
            store=store,
            out=out,
            force=force,
            chain=chain,
            loader=key_loader(passphrase_file),
        )
    ca_end = authority.certificate.not_valid_after_utc
    if issued.record.not_after >= ca_end:  # issuance never outlives the CA: cut short
        wanted = days if days is not None else request.profile.days
        warn(f"CA {ca_name!r} expires {ca_end:%Y-%m-%d}: the certificate is valid until then, "
             f"not {wanted} days")  # fmt: skip
    data = _record_data(issued.record)
    emit(data, as_json=as_json, text=f"{out} (serial {issued.record.serial})")


def _record_data(record: CertRecord, now: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "ca": record.ca,
        "subject": record.subject,
        "sans": list(record.sans),
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "expired": record.not_after < (now or utcnow()),
        "status": record.status.value,
        "profile": record.profile,
        "device_id": record.device_id,
        "key_ref": record.key_ref,
        "path": record.path,
        "sha256_fingerprint": record.fingerprint,
        "aws_iot_certificate_id": record.aws_iot_id,
        "issued_at": record.issued_at.isoformat(),
    }


@cert.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@examples(
    """
devid cert show dev1.pem
devid cert show dev1.pem --json | jq -r .aws_iot_certificate_id
"""
)
def show(path: Path, as_json: bool) -> None:
    """Show the (first) certificate in PATH: names, validity, key, extensions, fingerprints.

    aws_iot_certificate_id is the lower-case hex SHA-256 of the DER certificate, the id AWS
    IoT gives the certificate; sha256_fingerprint is the same digest as openssl prints it.
    """
    data = describe_certificate(certs.read_certificate(path))
    emit(data, as_json=as_json, text=text_lines(data))


@cert.command("list")
@click.option("--ca", "ca_name", metavar="NAME", help="Only certificates this CA issued.")
@click.option(
    "--expiring-within",
    metavar="DURATION",
    help="Only those whose notAfter is within DURATION from now (30d, 12h; expired ones too).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in Status]),
    help="Only these statuses (repeatable).",
)
@click.option("--device-id", metavar="ID", help="Only this device's certificates.")
@store_option
@json_option
@examples(
    """
devid cert list --ca fleet-issuing --expiring-within 30d --status issued
devid cert list --device-id dev1 --json
"""
)
def list_(
    ca_name: str | None,
    expiring_within: str | None,
    statuses: tuple[str, ...],
    device_id: str | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """List recorded certificates, soonest expiry first."""
    now = utcnow()
    horizon = now + parse_duration(expiring_within) if expiring_within is not None else None
    query = CertQuery(
        ca=ca_name,
        statuses=tuple(Status(s) for s in statuses),
        not_after_before=horizon,
        device_id=device_id,
    )
    with store_from(store_url) as store:
        rows = [_record_data(r, now) for r in store.find_certificates(query)]
    text = [
        f"{r['serial']}  {r['status']:<10} {r['not_after'][:19]}  {r['ca']:<16} {r['subject']}"
        for r in rows
    ]
    emit(rows, as_json=as_json, text=text)


@cert.command("revoke")
@click.argument("target", metavar="SERIAL|PATH")
@click.option("--ca", "ca_name", required=True, metavar="NAME", help="The CA that issued it.")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="key-compromise, ca-compromise, affiliation-changed, superseded, "
    "cessation-of-operation, certificate-hold, privilege-withdrawn, aa-compromise.",
)
@store_option
@json_option
@examples(
    """
devid cert revoke 5f3a...c1 --ca fleet-issuing --reason key-compromise
devid cert revoke dev1.pem --ca fleet-issuing --reason superseded --json
"""
)
def revoke_(target: str, ca_name: str, reason: str, store_url: str | None, as_json: bool) -> None:
    """Revoke a certificate by serial (hex) or file; 'devid crl generate' then lists it."""
    flag = parse_reason(reason)
    authority = load_ca(ca_name)
    if Path(target).is_file():
        cert_obj = certs.read_certificate(target)
        with store_from(store_url) as store:
            done = revoke_certificate(authority, cert_obj, store=store, reason=flag)
    else:
        try:
            serial = certs.parse_serial(target)
        except BadInput:
            raise BadInput(f"{target!r} is neither a certificate file nor a hex serial") from None
        with store_from(store_url) as store:
            done = revoke(authority, serial, store=store, reason=flag)
    reason = done.reason.replace("_", "-")  # as --reason takes it
    data = {
        "serial": done.serial,
        "ca": done.ca,
        "reason": reason,
        "revoked_at": done.revoked_at.isoformat(),
    }
    emit(data, as_json=as_json, text=f"revoked {done.serial} ({reason})")


@cert.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--ca-bundle",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trusted root certificates (PEM); others there only help build the path.",
)
@click.option(
    "--untrusted",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Intermediate certificates (PEM) to build the path with.",
)
@click.option("--purpose", type=click.Choice(["client", "server"]), help="Required EKU.")
@click.option("--at", "at_text", metavar="TIME", help="Validate at this time (ISO 8601, +30d).")
@click.option("--max-depth", type=click.IntRange(min=0), help="Most intermediates in the path.")
@json_option
@examples(
    """
devid cert verify dev1.pem --ca-bundle fleet-root.pem --untrusted fleet-issuing.pem \\
    --purpose client
devid cert verify fullchain.pem --ca-bundle roots.pem --at +30d --json
"""
)
def verify(
    path: Path,
    ca_bundle: Path,
    untrusted: Path | None,
    purpose: str | None,
    at_text: str | None,
    max_depth: int | None,
    as_json: bool,
) -> None:
    """Validate the certificate in PATH up to a root in --ca-bundle; exit 1 with the reason.

    Certificates after the first in PATH count as untrusted intermediates, like those in
    --untrusted; so do certificates in --ca-bundle that are not self-signed roots (as with
    openssl verify -CAfile, the path must end at a root). Validation uses cryptography's
    X.509 verifier with a bounded path search.
    """
    from devid.pki.verify import verify_chain

    leaf, *extra = certs.read_certificates(path)
    intermediates = [*extra, *(certs.read_certificates(untrusted) if untrusted else [])]
    at = parse_instant(at_text) if at_text else None
    roots: list[x509.Certificate] = []
    for cert in certs.read_certificates(ca_bundle):  # as openssl verify -CAfile: the path
        (roots if certs.is_self_signed(cert) else intermediates).append(cert)  # ends at a root
    if not roots:
        raise BadInput(
            f"{ca_bundle} holds no root (self-signed) certificate to trust",
            hint="give the root CA's certificate with --ca-bundle, intermediates with --untrusted",
        )
    result = verify_chain(
        leaf,
        roots=roots,
        intermediates=intermediates,
        purpose=purpose,
        at=at,
        max_depth=max_depth,
    )
    data = {
        "ok": result.ok,
        "reason": result.reason,
        "chain": [c.subject.rfc4514_string() for c in result.chain],
    }
    if not result.ok:
        if as_json:
            emit(data, as_json=True)
        raise CheckFailed(f"{path}: {result.reason}")
    emit(data, as_json=as_json, text=f"{path}: OK")
