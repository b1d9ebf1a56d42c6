"""``devid ca``: create root and intermediate CAs (key on a token or in a file), list, show."""

from __future__ import annotations

from typing import Any

import click

from devid.cli._common import emit, examples, json_option, passphrase_file_option
from devid.cli._pki import days_option, key_loader, store_from, store_option
from devid.errors import DevidError
from devid.pki import certs
from devid.pki.ca import CaRequest, CertificateAuthority, init_ca, list_ca_names, load_ca
from devid.pki.info import describe_certificate, text_lines
from devid.pki.names import parse_name, parse_name_constraints, parse_san


@click.group()
def ca() -> None:
    """Create and inspect certificate authorities (in DEVID_HOME/cas/NAME)."""


def summary(authority: CertificateAuthority) -> dict[str, Any]:
    cert = authority.certificate
    shown = describe_certificate(cert)
    constraints = next(
        (e["value"] for e in shown["extensions"] if e["name"] == "nameConstraints"), None
    )
    return {
        "name": authority.name,
        "subject": shown["subject"],
        "parent": authority.config.parent,
        "root": authority.is_root,
        "not_before": shown["not_before"],
        "not_after": shown["not_after"],
        "key": shown["key"],
        "key_ref": authority.key_ref,
        "path_len": authority.path_len,
        "name_constraints": constraints,
        "crl_url": authority.config.crl_url,
        "serial": shown["serial"],
        "sha256_fingerprint": shown["sha256_fingerprint"],
        "directory": str(authority.directory),
    }


def _text(data: dict[str, Any]) -> list[str]:
    return text_lines({k: v for k, v in data.items() if v is not None})


@ca.command("init")
@click.argument("name")
@click.option("--key", "key_ref", required=True, metavar="REF", help="CA key: file or pkcs11: URI.")
@click.option("--parent", metavar="NAME", help="Sign with this CA (an intermediate); else a root.")
@click.option("--subject", metavar="DN", help="RFC 4514 subject (default CN=NAME).")
@days_option("Validity in days (root 3650, intermediate 1825).")
@click.option(
    "--path-len", type=click.IntRange(min=0, max=255), help="Most CAs allowed below this one."
)
@click.option(
    "--name-constraint",
    "constraints",
    multiple=True,
    metavar="MODE:KIND:VALUE",
    help="permit:|exclude: + dns:, uri:, email: or ip: (repeatable).",
)
@click.option("--crl-url", metavar="URL", help="CRL distribution point put in issued certificates.")
@passphrase_file_option
@store_option
@json_option
@examples(
    """
devid ca init fleet-root --key 'pkcs11:token=ca;object=root' --subject 'CN=Fleet Root,O=Acme'
devid ca init fleet-issuing --parent fleet-root --key 'pkcs11:token=ca;object=issuing' \\
    --path-len 0 --name-constraint permit:dns:devices.example.com \\
    --crl-url http://pki.example.com/fleet-issuing.crl
devid ca init test-ca --key ca-key.pem --days 30 --json
"""
)
def init(
    name: str,
    key_ref: str,
    parent: str | None,
    subject: str | None,
    days: int | None,
    path_len: int | None,
    constraints: tuple[str, ...],
    crl_url: str | None,
    passphrase_file: str | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Create the CA NAME: a self-signed root, or with --parent an intermediate.

    The key stays where it is (a token key never leaves the token); the CA folder records
    its reference (never a PIN). The CA is recorded in the inventory.
    """
    if crl_url is not None:
        parse_san(f"uri:{crl_url}")
    request = CaRequest(
        name=name,
        key_ref=key_ref,
        subject=parse_name(subject) if subject is not None else None,
        parent=parent,
        days=days,
        path_len=path_len,
        name_constraints=parse_name_constraints(constraints),
        crl_url=crl_url,
    )
    with store_from(store_url) as store:
        authority = init_ca(request, store=store, loader=key_loader(passphrase_file))
    data = summary(authority)
    emit(data, as_json=as_json, text=f"created CA {name}: {authority.directory}")


@ca.command("list")
@json_option
@examples(
    """
devid ca list
devid ca list --json
"""
)
def list_(as_json: bool) -> None:
    """List the CAs in the data directory (DEVID_HOME/cas).

    A CA folder that cannot be read is listed with its error, and the command then exits
    with that error's code after listing the others.
    """
    rows: list[dict[str, Any]] = []
    text: list[str] = []
    failures: list[DevidError] = []
    for name in list_ca_names():
        try:
            row = summary(load_ca(name))
        except DevidError as exc:
            failures.append(exc)
            rows.append({"name": name, "error": str(exc)})
            text.append(f"{name:<24}(unreadable: {exc.message})")
            continue
        rows.append(row)
        where = "root" if row["root"] else "under " + row["parent"]
        text.append(f"{row['name']:<24}{where:<24}{row['not_after']}")
    emit(rows, as_json=as_json, text=text or ["no CAs; create one with 'devid ca init'"])
    if failures:
        raise failures[0]


@ca.command("show")
@click.argument("name")
@store_option
@json_option
@examples(
    """
devid ca show fleet-issuing
devid ca show fleet-root --json
"""
)
def show(name: str, store_url: str | None, as_json: bool) -> None:
    """Show the CA NAME: certificate, key reference, chain and what it has issued."""
    authority = load_ca(name)
    data = summary(authority)
    data["chain"] = [c.subject.rfc4514_string() for c in authority.chain]
    with store_from(store_url) as store:
        data["in_inventory"] = store.get_ca(name) is not None
        counts = store.status_counts(name)
    for status, count in counts.items():
        data[f"{status.value}_count"] = count
    data["aws_iot_certificate_id"] = certs.sha256_hex(authority.certificate)
    emit(data, as_json=as_json, text=_text(data))
