"""``devid key convert``: a private key file to PKCS#1, PKCS#8, OpenSSH or PuTTY PPK."""

from __future__ import annotations

from pathlib import Path

import click

import hsm
from devid.cli._common import emit, examples, json_option, secret, warn
from devid.cli.key import key
from devid.convert import TargetFormat, encode, read_private
from devid.errors import BadInput
from devid.fingerprint import openssh_sha256
from devid.fsutil import PRIVATE_MODE, read_input, refuse_existing, write_atomic
from devid.keys import is_token_ref


def _input_passphrase(ref: str, passphrase_file: str | None) -> bytes | None:
    return secret(
        file=passphrase_file,
        env="DEVID_PASSPHRASE",
        prompt=f"Passphrase for {ref}",
        what="passphrase",
    )


def _output_passphrase(new_passphrase_file: str | None) -> bytes | None:
    if new_passphrase_file is None:
        return None
    new = secret(file=new_passphrase_file, env=None, prompt=None, what="new passphrase")
    if not new:
        raise BadInput("the new passphrase file is empty; leave out --new-passphrase-file")
    return new


@key.command()
@click.argument("ref", metavar="REF")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Choice([t.value for t in TargetFormat]),
    help="Output format.",
)
@click.option(
    "--ppk-version",
    type=click.Choice(["2", "3"]),
    default="3",
    show_default=True,
    help="PPK version (2 for PuTTY before 0.75).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--comment", help="PPK comment (default: the input PPK's comment, if any).")
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="Passphrase of REF, if encrypted (else DEVID_PASSPHRASE, or a prompt).",
)
@click.option(
    "--new-passphrase-file",
    type=click.Path(dir_okay=False),
    help="Encrypt the output with this passphrase (default: unencrypted).",
)
@json_option
@examples(
    """
devid key convert ~/.ssh/id_ed25519 --to ppk --out id_ed25519.ppk
devid key convert server.ppk --to openssh --out ~/.ssh/server --passphrase-file pass.txt
devid key convert key.pem --to ppk --ppk-version 2 --new-passphrase-file new.txt --out k.ppk
"""
)
def convert(
    ref: str,
    target: str,
    ppk_version: str,
    out: Path,
    force: bool,
    comment: str | None,
    passphrase_file: str | None,
    new_passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Convert the private key file REF (PEM, DER, OpenSSH or PPK v2/v3) to another format.

    pkcs1 is PEM "traditional" (RSA PRIVATE KEY / EC PRIVATE KEY; not for Ed25519), pkcs8
    is PEM PRIVATE KEY, openssh is OpenSSH's own format, ppk is PuTTY's. The output is
    written with mode 0600, atomically, never over an existing file without --force.
    Token keys cannot be converted: their private half never leaves the token.
    """
    if is_token_ref(ref):
        raise hsm.NotExtractable(
            f"{ref} is a token key; it is not extractable and cannot be converted "
            "(use its pkcs11: URI wherever a key is needed)"
        )
    refuse_existing(out, force=force)
    new_passphrase = _output_passphrase(new_passphrase_file)
    data = read_input(ref, what="key file")
    source = read_private(
        data, where=ref, passphrase=lambda: _input_passphrase(ref, passphrase_file)
    )
    fmt = TargetFormat(target)
    blob = encode(
        source.key,
        fmt,
        passphrase=new_passphrase,
        ppk_version=int(ppk_version),
        comment=source.comment if comment is None else comment,
    )
    write_atomic(out, blob, mode=PRIVATE_MODE, force=force)
    if source.encrypted and new_passphrase is None:
        warn(f"{out} is not encrypted (give --new-passphrase-file to encrypt it)")
    emit(
        {
            "reference": str(out),
            "format": fmt.value,
            "ppk_version": int(ppk_version) if fmt is TargetFormat.PPK else None,
            "encrypted": new_passphrase is not None,
            "openssh_sha256": openssh_sha256(source.key.public_key()),
        },
        as_json=as_json,
        text=str(out),
    )
