"""``devid iot``: AWS IoT Core (JITP templates here; registration commands join this group)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from cryptography import x509

from devid import jitp as templates
from devid.cli._common import emit, examples, json_option
from devid.errors import BadInput, CheckFailed
from devid.fsutil import PUBLIC_MODE, read_input, write_atomic
from devid.iot_ca import check_role_arn
from devid.mqtt import load_chain


@click.group()
def iot() -> None:
    """AWS IoT Core: device certificates, CAs and provisioning.

    Certificate ids are the lower-case hex SHA-256 of the DER certificate, as AWS IoT shows
    them. Commands that call AWS take --profile, --region and --endpoint-url.
    """


@iot.group()
def jitp() -> None:
    """Just-in-time provisioning templates: write a starter, check one against a subject."""


def _subject(
    cert: Path | None, profile: str | None, subject: str | None, device_id: str
) -> x509.Name:
    """The subject to check: a certificate's, a DN, or a PKI profile's subject template."""
    if cert is not None:
        return load_chain(cert, what="certificate")[0].subject
    if subject is not None:
        return templates.parse_subject(subject)
    if profile is None:
        raise BadInput("say what to check: --cert PATH, --profile NAME or --subject DN")
    from devid.pki.profiles import get_profile

    name = get_profile(profile).subject_for(device_id)
    if name is None:
        raise BadInput(
            f"profile {profile!r} takes each device's subject from its CSR; "
            "check a device certificate (--cert) or a DN (--subject) instead"
        )
    return name


def _lines(result: templates.JitpCheck) -> list[str]:
    width = max((len(n) for n in result.values), default=0)
    lines = [f"subject: {result.subject or '(empty)'}"]
    for name, value in result.values.items():
        shown = value if value is not None else "MISSING"
        lines.append(f"  {name.ljust(width)}  {shown}")
    lines += [f"note: {w}" for w in result.warnings]
    if result.ok:
        lines.append("OK: JITP can fill every parameter of the template from this subject")
    return lines


@jitp.command("check")
@click.argument("template", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), help="Device cert.")
@click.option("--profile", help="A PKI profile (name or .toml) whose subject to check.")
@click.option("--subject", metavar="DN", help="A subject such as 'CN=dev-1,serialNumber=42'.")
@click.option(
    "--device-id",
    default="device-1",
    show_default=True,
    help="Fills {device_id} in a profile's subject template.",
)
@json_option
@examples(
    """
devid iot jitp check jitp-template.json --cert device.pem
devid iot jitp check registration-config.json --profile fleet.toml --device-id sensor-0042
devid iot jitp check jitp-template.json --subject 'CN=sensor-0042,serialNumber=0042,C=DE' --json
"""
)
def check(
    template: Path,
    cert: Path | None,
    profile: str | None,
    subject: str | None,
    device_id: str,
    as_json: bool,
) -> None:
    """Would JITP with TEMPLATE provision a device with this certificate (or subject)?

    Lists the AWS::IoT::Certificate::* parameters the template declares or references
    (Ref, Fn::Sub) and their values in the subject, and fails (exit 1) naming every one the
    subject lacks: AWS IoT fills them from the certificate subject only, and a missing one
    makes provisioning fail on the device's first connection. Also fails on parameters
    JITP cannot fill and on a thing name AWS IoT would refuse. TEMPLATE may be a bare
    template or a registrationConfig {"templateBody": "...", "roleArn": "..."}.
    """
    if sum(x is not None for x in (cert, profile, subject)) != 1:
        raise BadInput("give exactly one of --cert, --profile, --subject")
    body = templates.load_template(read_input(template, what="template"), where=str(template))
    result = templates.check(body, _subject(cert, profile, subject, device_id))
    emit(result.as_dict(), as_json=as_json, text=_lines(result))
    if not result.ok:
        raise CheckFailed(f"JITP would fail for {result.subject!r}: {'; '.join(result.reasons())}")


@jitp.command("template")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@click.option("--role-arn", help="Write the registrationConfig form with this provisioning role.")
@click.option(
    "--topic-prefix", default="devices", show_default=True, help="Topics the policy allows."
)
@click.option("--force", is_flag=True, help="Overwrite --out.")
@json_option
@examples(
    """
devid iot jitp template --out jitp-template.json
devid iot jitp template --role-arn arn:aws:iam::123456789012:role/JITPRole --out reg.json
"""
)
def template(
    out: Path | None, role_arn: str | None, topic_prefix: str, force: bool, as_json: bool
) -> None:
    """Write a starting JITP template (stdout without --out).

    The thing is named by the certificate's CommonName and records its subject
    serialNumber; the certificate is activated; a policy lets the device connect with its
    thing name as client id and use TOPIC_PREFIX/<thing>/* and devid/check/<thing> (the
    topic `devid device connect` uses). Device certificates need CN and serialNumber in
    their subject; check them with `devid iot jitp check`.
    """
    if not topic_prefix.strip("/") or any(c in topic_prefix for c in "+#$"):
        raise BadInput("--topic-prefix must be a plain topic path such as 'devices'")
    if role_arn is not None:
        check_role_arn(role_arn)
    body = templates.starter_template(topic_prefix=topic_prefix.strip("/"))
    document = body if role_arn is None else templates.registration_config(body, role_arn)
    data = (json.dumps(document, indent=2) + "\n").encode()
    if out is None:
        click.echo(data.decode(), nl=False)
        return
    write_atomic(out, data, mode=PUBLIC_MODE, force=force)
    used = list(templates.TemplateParameters.of(body).certificate)
    emit({"path": str(out), "parameters": used}, as_json=as_json, text=f"wrote {out}")
