"""``devid crl``: certificate revocation lists signed by a CA's key (file or token)."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from devid.cli._common import emit, examples, json_option, passphrase_file_option
from devid.cli._pki import key_loader, store_from, store_option
from devid.durations import MAX_DAYS
from devid.fsutil import PUBLIC_MODE, refuse_existing, refuse_unwritable, write_atomic
from devid.pki.ca import load_ca
from devid.pki.crl import DEFAULT_CRL_DAYS, generate_crl


@click.group()
def crl() -> None:
    """Generate certificate revocation lists."""


@crl.command("generate")
@click.option("--ca", "ca_name", required=True, metavar="NAME", help="The CA whose CRL it is.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CRL file to write.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1, max=MAX_DAYS),
    default=DEFAULT_CRL_DAYS,
    show_default=True,
    help="Days until nextUpdate.",
)
@click.option("--der", is_flag=True, help="Write DER instead of PEM.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@passphrase_file_option
@store_option
@json_option
@examples(
    """
devid crl generate --ca fleet-issuing --out /var/www/pki/fleet-issuing.crl --force
devid crl generate --ca fleet-root --out root.crl --days 30 --json
"""
)
def generate(
    ca_name: str,
    out: Path,
    days: int,
    der: bool,
    force: bool,
    passphrase_file: str | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Sign a CRL listing every certificate the CA revoked; its CRL number grows each time."""
    refuse_existing(out, force=force)
    refuse_unwritable(out)  # before the CRL number is used up in the inventory
    authority = load_ca(ca_name)
    with store_from(store_url) as store:
        result = generate_crl(authority, store=store, days=days, loader=key_loader(passphrase_file))
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    write_atomic(out, result.crl.public_bytes(encoding), mode=PUBLIC_MODE, force=force)
    next_update = result.crl.next_update_utc
    data = {
        "path": str(out),
        "ca": ca_name,
        "number": result.number,
        "revoked": result.revoked,
        "this_update": result.crl.last_update_utc.isoformat(),
        "next_update": next_update.isoformat() if next_update else None,
    }
    emit(data, as_json=as_json, text=f"{out}: CRL {result.number}, {result.revoked} revoked")
