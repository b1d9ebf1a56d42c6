"""``devid csr``: create certificate signing requests (file or token key) and show them."""

from __future__ import annotations

from pathlib import Path

import click

from devid.cli._common import (
    emit,
    examples,
    json_option,
    load_key_ref,
    passphrase_file_option,
)
from devid.errors import CheckFailed
from devid.fsutil import refuse_existing
from devid.pki.certs import read_csr
from devid.pki.csr import build_csr, write_csr
from devid.pki.info import describe_csr, text_lines
from devid.pki.names import parse_name, parse_sans


@click.group()
def csr() -> None:
    """Create and inspect certificate signing requests (PKCS#10)."""


@csr.command("create")
@click.option("--key", "key_ref", required=True, metavar="REF", help="Key file or pkcs11: URI.")
@click.option("--subject", required=True, metavar="DN", help="RFC 4514, e.g. 'CN=dev1,O=Acme'.")
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="KIND:VALUE",
    help="dns:, uri:, ip: or email: (repeatable).",
)
@click.option("--pss", is_flag=True, help="Sign with RSASSA-PSS (RSA keys).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSR file to write (PEM).",
)
@click.option("--force", is_flag=True, help="Overwrite --out.")
@passphrase_file_option
@json_option
@examples(
    """
devid csr create --key 'pkcs11:token=dev1;object=device-key' --subject 'CN=dev1,O=Acme' \\
    --san uri:urn:devid:dev1 --out dev1.csr
devid csr create --key key.pem --subject CN=gw.example.com --san dns:gw.example.com --pss \\
    --out gw.csr --json
"""
)
def create(
    key_ref: str,
    subject: str,
    sans: tuple[str, ...],
    pss: bool,
    out: Path,
    force: bool,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Create a CSR signed by the key REF (on the token when REF is a pkcs11: URI)."""
    name, alt_names = parse_name(subject), parse_sans(sans)
    refuse_existing(out, force=force)
    key = load_key_ref(key_ref, passphrase_file)
    request = build_csr(key, name, sans=alt_names, pss=pss)
    write_csr(request, out, force=force)
    data = {"path": str(out), **describe_csr(request)}
    emit(data, as_json=as_json, text=str(out))


@csr.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@examples(
    """
devid csr show dev1.csr
devid csr show dev1.csr --json
"""
)
def show(path: Path, as_json: bool) -> None:
    """Show a CSR: subject, key, SANs, signature algorithm; exit 1 if its signature is bad."""
    data = describe_csr(read_csr(path))
    emit(data, as_json=as_json, text=text_lines(data))
    if not data["signature_valid"]:
        raise CheckFailed(f"{path}: the CSR signature does not verify")
