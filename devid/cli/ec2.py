"""``devid ec2``: EC2 key pairs (create, import, list, delete) and Windows passwords."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from devid import ec2 as ec2_keys
from devid import policy
from devid.aws import AwsOptions, client
from devid.cli._common import (
    aws_options,
    emit,
    examples,
    json_option,
    load_key_ref,
    passphrase_file_option,
    public_key_of,
    secret,
)
from devid.errors import BadInput, CheckFailed
from devid.fingerprint import ec2_imported
from devid.fsutil import read_input
from devid.keys import is_token_ref
from devid.localkeys import load_refs


@click.group()
def ec2() -> None:
    """EC2 key pairs: create, import, list (matched to local keys), delete; Windows passwords.

    EC2 shows SHA-1 of the PKCS#8 private key for RSA key pairs it created, MD5 of the DER
    public key for imported RSA keys, and padded base64 SHA-256 for Ed25519 keys; devid
    computes all of them (see also 'devid key fingerprint').
    """


def _client(profile: str | None, region: str | None, endpoint_url: str | None) -> Any:
    return client("ec2", AwsOptions(profile, region, endpoint_url))


@ec2.command()
@click.argument("name")
@click.option(
    "--type",
    "key_type",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa is 2048-bit.",
)
@click.option(
    "--format",
    "key_format",
    type=click.Choice(["pem", "ppk"]),
    default="pem",
    show_default=True,
    help="Private key file format.",
)
@click.option(
    "--ppk-version",
    type=click.Choice(["2", "3"]),
    default="3",
    show_default=True,
    help="PPK version, if devid converts to PPK itself.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (mode 0600).",
)
@click.option("--force", is_flag=True, help="Overwrite --out.")
@aws_options
@json_option
@examples(
    """
devid ec2 create web-2025 --type ed25519 --out ~/.ssh/web-2025.pem
devid ec2 create win-admin --type rsa --format ppk --out win-admin.ppk --json
"""
)
def create(
    name: str,
    key_type: str,
    key_format: str,
    ppk_version: str,
    out: Path,
    force: bool,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Create key pair NAME in EC2 and save its private key to --out.

    The private key is written (0600, atomically) before anything is reported; if that
    fails, the key pair is deleted again so no key pair without a private key is left in
    AWS. An existing --out is refused before AWS is called. When PPK is asked for and the
    endpoint returns PEM anyway, devid converts it locally.
    """
    made = ec2_keys.create(
        _client(profile, region, endpoint_url),
        name,
        ec2_keys.KeyPairType(key_type),
        ec2_keys.KeyFormat(key_format),
        out,
        force=force,
        ppk_version=int(ppk_version),
    )
    pair, ours = made.key_pair, ec2_keys.devid_fingerprint(made.key)
    data = {
        **pair.as_dict(),
        "path": str(made.path),
        "format": made.key_format.value,
        "converted_locally": made.converted,
        "devid_fingerprint": ours,
    }
    how = "SHA-1 of the PKCS#8 private key" if key_type == "rsa" else "base64 SHA-256"
    text = [
        f"wrote {made.path} ({made.key_format.value}"
        + (", converted by devid)" if made.converted else ")"),
        f"name               {pair.name}",
        f"key_pair_id        {pair.key_pair_id}",
        f"ec2 fingerprint    {pair.fingerprint}",
        f"devid fingerprint  {ours} ({how})",
    ]
    emit(data, as_json=as_json, text=text)


@ec2.command(name="import")
@click.argument("name")
@click.option("--key", "ref", required=True, help="Key file (any form) or pkcs11: URI.")
@passphrase_file_option
@aws_options
@json_option
@examples(
    """
devid ec2 import laptop --key ~/.ssh/id_ed25519.pub
devid ec2 import factory --key 'pkcs11:token=factory;object=ssh-key' --json
"""
)
def import_(
    name: str,
    ref: str,
    passphrase_file: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Import the public key of --key as key pair NAME (works for token keys).

    Pre-flight: EC2 imports RSA 1024/2048/4096 and Ed25519 only. Other keys (ECDSA, and
    RSA 3072, which is not in EC2's documented list) are refused with exit 1 before AWS
    is called. A duplicate NAME exits 4.
    """
    public = public_key_of(ref, passphrase_file)
    verdict = policy.check(public, policy.Service.EC2)
    if not verdict.ok:
        raise CheckFailed(f"{ref}: {verdict.reason}")
    pair = ec2_keys.import_key(_client(profile, region, endpoint_url), name, public)
    ours = ec2_imported(public)
    data = {**pair.as_dict(), "reference": ref, "devid_fingerprint": ours}
    text = [
        f"imported {ref} as {pair.name} ({pair.key_pair_id})",
        f"ec2 fingerprint    {pair.fingerprint}",
        f"devid fingerprint  {ours}",
    ]
    emit(data, as_json=as_json, text=text)


def _local_keys(
    refs: tuple[str, ...], passphrase_file: str | None
) -> tuple[list[ec2_keys.LocalKey], list[ec2_keys.Skipped]]:
    if not refs:
        return ec2_keys.scan(Path.home() / ".ssh")
    keys: list[ec2_keys.LocalKey] = []
    skipped: list[ec2_keys.Skipped] = []
    for ref in refs:
        if is_token_ref(ref):
            keys += _token_keys(ref)
        elif Path(ref).is_dir():
            more, less = ec2_keys.scan(Path(ref))
            keys, skipped = keys + more, skipped + less
        else:
            keys.append(_local_key(ref, passphrase_file))
    return keys, skipped


def _token_keys(ref: str) -> list[ec2_keys.LocalKey]:
    """The key a token URI names, or every key on the token it names (as ``ssh list``)."""
    return [ec2_keys.LocalKey.of(k.ref, k.public_key) for k in load_refs([ref])]


def _local_key(ref: str, passphrase_file: str | None) -> ec2_keys.LocalKey:
    data = read_input(ref, what="key file")
    passphrase = secret(
        file=passphrase_file, env="DEVID_PASSPHRASE", prompt=None, what="passphrase"
    )
    found = ec2_keys.key_from_bytes(ref, data, passphrase=passphrase)
    if isinstance(found, ec2_keys.Skipped):
        raise BadInput(f"{ref}: {found.reason}")
    if found is None:
        raise BadInput(f"{ref} holds no key devid can read")
    return found


def _list_text(
    pairs: list[ec2_keys.KeyPair],
    matches: list[ec2_keys.Match],
    unmatched: list[ec2_keys.LocalKey],
    skipped: list[ec2_keys.Skipped],
) -> list[str]:
    lines = []
    for pair in pairs:
        lines.append(f"{pair.name}  {pair.key_pair_id}  {pair.key_type}  {pair.fingerprint}")
        found = [m for m in matches if m.key_pair is pair]
        lines += [f"    = {m.local.ref}  (by {m.method.value})" for m in found]
        if not found:
            lines.append("    (no local key matches)")
    if not pairs:
        lines.append("(no key pairs in this Region)")
    if unmatched:
        lines.append("local keys that match no key pair:")
        lines += [f"    {k.ref}  {k.ec2_imported or '(not an EC2 key type)'}" for k in unmatched]
    lines += [f"skipped {s.ref}: {s.reason}" for s in skipped]
    return lines


@ec2.command(name="list")
@click.option(
    "--match",
    "refs",
    multiple=True,
    metavar="PATH",
    help="Local key file, directory or pkcs11: URI (repeatable; default ~/.ssh).",
)
@passphrase_file_option
@aws_options
@json_option
@examples(
    """
devid ec2 list
devid ec2 list --match ~/keys --match 'pkcs11:token=factory;object=ssh-key' --json
"""
)
def list_(
    refs: tuple[str, ...],
    passphrase_file: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """List the Region's key pairs and the local keys that match them.

    Each local key is compared by every fingerprint EC2 may show for it (imported form;
    created form for readable RSA private keys) and by the public key EC2 returns, and
    the method that matched is shown. Local keys default to the files in ~/.ssh.
    """
    local, skipped = _local_keys(refs, passphrase_file)
    pairs = ec2_keys.describe(_client(profile, region, endpoint_url))
    matches, unmatched = ec2_keys.match_all(pairs, local)
    data = {
        "key_pairs": [
            {
                **pair.as_dict(),
                "matches": [
                    {"reference": m.local.ref, "method": m.method.value}
                    for m in matches
                    if m.key_pair is pair
                ],
            }
            for pair in pairs
        ],
        "unmatched_local_keys": [
            {"reference": k.ref, "ec2_fingerprint": k.ec2_imported, "ec2_created": k.ec2_created}
            for k in unmatched
        ],
        "skipped": [{"reference": s.ref, "reason": s.reason} for s in skipped],
    }
    emit(data, as_json=as_json, text=_list_text(pairs, matches, unmatched, skipped))


@ec2.command()
@click.argument("name")
@aws_options
@json_option
@examples(
    """
devid ec2 delete web-2024
"""
)
def delete(
    name: str,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Delete key pair NAME (exit 1 if there is none). Local key files are left alone."""
    pair = ec2_keys.delete(_client(profile, region, endpoint_url), name)
    emit(
        {**pair.as_dict(), "deleted": True},
        as_json=as_json,
        text=f"deleted {pair.name} ({pair.key_pair_id})",
    )


@ec2.command()
@click.option("--key", "ref", required=True, help="RSA key file or pkcs11: URI.")
@click.option("--instance-id", help="Fetch the password data of this instance.")
@click.option("--password-data", metavar="B64", help="Base64 password data ('-': stdin).")
@passphrase_file_option
@aws_options
@json_option
@examples(
    """
devid ec2 password --key win-admin.pem --instance-id i-0123456789abcdef0
devid ec2 password --key 'pkcs11:token=ops;object=win' --password-data - < data.b64
"""
)
def password(
    ref: str,
    instance_id: str | None,
    password_data: str | None,
    passphrase_file: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Decrypt an EC2 Windows administrator password with --key (file or token RSA key).

    Prints nothing but the password (or {"password": ...} with --json); it is never
    logged. A token key needs the DECRYPT capability ('devid key generate rsa-2048
    --token URI --label L --for ec2-windows'). Exit 1 if the data was not encrypted to
    this key.
    """
    if (instance_id is None) == (password_data is None):
        raise BadInput("give exactly one of --instance-id and --password-data")
    key_obj = load_key_ref(ref, passphrase_file)
    if password_data == "-":
        password_data = sys.stdin.read()
    if password_data is None:
        assert instance_id is not None
        password_data = ec2_keys.password_data(_client(profile, region, endpoint_url), instance_id)
    plain = ec2_keys.decrypt_password(key_obj, password_data)
    emit({"password": plain}, as_json=as_json, text=plain)
