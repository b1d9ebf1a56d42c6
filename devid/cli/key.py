"""``devid key``: generate keys (file or token), print public keys and fingerprints."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from devid import policy
from devid.cli._common import (
    emit,
    examples,
    json_option,
    key_of,
    passphrase_file_option,
    public_key_of,
    secret,
    warn,
)
from devid.errors import BadInput, CheckFailed
from devid.fingerprint import fingerprints
from devid.keys import KeyType, PrivateFormat, generate_key, is_token_ref, public_key_file
from devid.pubformat import PublicFormat, public_bytes, rfc4716_comment

KEY_TYPES = [k.value for k in KeyType]


@click.group()
def key() -> None:
    """Generate keys, show public keys and fingerprints."""


@key.command()
@click.argument("key_type", metavar="TYPE", type=click.Choice(KEY_TYPES, case_sensitive=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Private key file.")
@click.option("--token", metavar="URI", help="Generate on this PKCS#11 token instead.")
@click.option("--label", help="Label of the token key (CKA_LABEL).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pkcs8", "pkcs1", "openssh"]),
    default="pkcs8",
    show_default=True,
    help="File format of a software key.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt the file with DEVID_PASSPHRASE, else a passphrase asked for.",
)
@passphrase_file_option
@click.option("--for", "purpose", type=click.Choice(["ec2-windows"]), help="Extra capability.")
@click.option("--force", is_flag=True, help="Overwrite the file / replace the token key.")
@json_option
@examples(
    """
devid key generate ec-p256 --token 'pkcs11:token=factory' --label device-key
devid key generate rsa-2048 --out ~/.ssh/codecommit_rsa --format openssh
devid key generate ed25519 --out key.pem --passphrase-file pass.txt --json
"""
)
def generate(
    key_type: str,
    out: Path | None,
    token: str | None,
    label: str | None,
    fmt: str,
    encrypt: bool,
    passphrase_file: str | None,
    purpose: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Generate a TYPE key into a file (--out) or on a token (--token, --label).

    Token keys are created non-extractable and sensitive; the private half never leaves
    the token. Files are written with mode 0600, atomically, and never overwritten
    without --force; with --format openssh the public key also goes to FILE.pub (0644),
    as ssh-keygen does. Prints the key reference.
    """
    kt = KeyType.parse(key_type)
    passphrase = None
    if passphrase_file or encrypt:
        if token:
            raise BadInput("a passphrase applies to key files, not token keys")
        # DEVID_PASSPHRASE (also what opens keys) encrypts a new key only when asked to
        passphrase = secret(
            file=passphrase_file,
            env="DEVID_PASSPHRASE" if encrypt else None,
            prompt="New passphrase",
            what="passphrase",
            confirm=True,
        )
        if passphrase is None:
            raise BadInput(
                "no passphrase: give --passphrase-file, or --encrypt with DEVID_PASSPHRASE "
                "set or on a terminal"
            )
        if not passphrase:
            raise BadInput("the passphrase is empty")
    if purpose == "ec2-windows" and kt.algorithm != "rsa":
        raise BadInput("EC2 Windows passwords need an RSA key")
    key_obj, ref = generate_key(
        kt,
        out=out,
        token=token,
        label=label,
        fmt=PrivateFormat(fmt),
        passphrase=passphrase,
        force=force,
        decrypt=purpose == "ec2-windows",
    )
    fp = fingerprints(key_obj.public_key())
    public_file = str(public_key_file(Path(ref))) if fmt == "openssh" and not token else None
    emit(
        {
            "reference": ref,
            "type": kt.value,
            "token": bool(token),
            "openssh_sha256": fp.openssh_sha256,
            "public_file": public_file,
        },
        as_json=as_json,
        text=ref,
    )


@key.command()
@click.argument("ref", metavar="REF")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in PublicFormat]),
    default="openssh",
    show_default=True,
)
@click.option("--comment", default="", help="Comment for OpenSSH / RFC 4716 output.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@passphrase_file_option
@json_option
@examples(
    """
devid key public 'pkcs11:token=factory;object=device-key'
devid key public key.pem --format rfc4716 --comment alice@example.com
devid key public key.pem --format der --out key.der
devid key public key.pem --json
"""
)
def public(
    ref: str,
    fmt: str,
    comment: str,
    out: Path | None,
    force: bool,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Print the public key of REF (file or pkcs11: URI) as openssh, rfc4716, pem or der.

    With --json: {"format", "public_key" (text; base64 for der), "openssh_sha256", "out"}.
    """
    from devid.fsutil import PUBLIC_MODE, write_atomic

    public_key = public_key_of(ref, passphrase_file)
    data = public_bytes(public_key, PublicFormat(fmt), comment=comment)
    if fmt == "rfc4716" and comment:
        kept = rfc4716_comment(comment).replace('\\"', '"').replace("\\\\", "\\")
        if kept != comment:
            warn(f"the comment was shortened to {kept!r}: RFC 4716 lines hold 72 bytes")
    if out is not None:
        write_atomic(out, data, mode=PUBLIC_MODE, force=force)
    if as_json:
        shown = base64.b64encode(data).decode() if fmt == "der" else data.decode()
        doc = {
            "format": fmt,
            "public_key": shown,
            "out": str(out) if out else None,
            "openssh_sha256": fingerprints(public_key).openssh_sha256,
        }
        emit(doc, as_json=True)
        return
    if out is not None:
        return
    if fmt == "der" and sys.stdout.isatty():
        raise BadInput("refusing to print DER to a terminal; use --out or a pipe")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@key.command()
@click.argument("ref", metavar="REF")
@passphrase_file_option
@json_option
@examples(
    """
devid key fingerprint ~/.ssh/id_rsa.pub
devid key fingerprint 'pkcs11:token=factory;object=device-key' --json
devid key fingerprint key.pem --passphrase-file pass.txt
"""
)
def fingerprint(ref: str, passphrase_file: str | None, as_json: bool) -> None:
    """Show the OpenSSH, IAM and EC2 fingerprints of REF (any key form or pkcs11: URI)."""
    # a private key file stays private: EC2's created-key fingerprint needs it
    fp = fingerprints(key_of(ref, passphrase_file))
    label = _SSH_KEYGEN_NAMES[fp.type]
    text = [f"{fp.bits} {fp.openssh_sha256} ({label})", f"{fp.bits} {fp.openssh_md5} ({label})"]
    text.append(f"iam_md5      {fp.iam_md5}")
    text.append(f"ec2          {fp.ec2 or '(not an EC2 key type)'}")
    if fp.type == "rsa":
        created = fp.ec2_created or (
            "(needs the private key; a token key cannot be read)"
            if is_token_ref(ref)
            else "(needs the private key file)"
        )
        text.append(f"ec2_created  {created}")
    emit(fp.as_dict(), as_json=as_json, text=text)


#: the key type names ``ssh-keygen -l`` prints, so the first two lines read alike
_SSH_KEYGEN_NAMES = {"rsa": "RSA", "ec": "ECDSA", "ed25519": "ED25519"}


@key.command()
@click.argument("ref", metavar="REF")
@click.option(
    "--for", "service", required=True,
    type=click.Choice(["codecommit", "ec2", "ec2-windows", "iot"]),
    help="The AWS service the key is meant for.",
)  # fmt: skip
@passphrase_file_option
@json_option
@examples(
    """
devid key check ~/.ssh/codecommit_rsa.pub --for codecommit
devid key check 'pkcs11:token=factory;object=device-key' --for iot --json
"""
)
def check(ref: str, service: str, passphrase_file: str | None, as_json: bool) -> None:
    """Pre-flight: does REF fit what the AWS service accepts? Exit 0 if so, 1 if not.

    CodeCommit: RSA >= 2048. EC2: RSA 1024/2048/4096 or Ed25519. ec2-windows: RSA only.
    IoT: RSA >= 2048 or EC P-256/P-384/P-521.
    """
    verdict = policy.check(public_key_of(ref, passphrase_file), policy.Service.parse(service))
    emit(verdict.as_dict(), as_json=as_json, text=verdict.reason if verdict.ok else None)
    if not verdict.ok:
        raise CheckFailed(verdict.reason)
