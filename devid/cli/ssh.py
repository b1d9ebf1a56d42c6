"""``devid ssh``: SSH keys of IAM users for CodeCommit, the ssh config, clone URLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

import hsm
from devid.aws import AwsOptions
from devid.cli._common import (
    aws_options,
    emit,
    examples,
    json_option,
    load_key_ref,
    passphrase_file_option,
    public_key_of,
    warn,
)
from devid.codecommit import (
    Identity,
    Retire,
    Step,
    clone_url,
    default_config,
    file_identity,
    rotate,
    token_identity,
)
from devid.errors import DevidError
from devid.fingerprint import openssh_sha256
from devid.iam import IamSshKeys, SshKey, Status, parse_key_id
from devid.keys import PublicKey, is_token_ref
from devid.localkeys import local_keys, matching
from devid.sshconfig import (
    CodeCommitEntry,
    find_entry,
    global_overrides,
    identity_path,
    merge,
    read_config,
    render,
    write_config,
)
from hsm.module import resolve_module_path

#: --profile, --region, --endpoint-url as click passes them
AwsArgs = tuple[str | None, str | None, str | None]

_user_option = click.option("--user", required=True, help="The IAM user name.")
_key_id_option = click.option(
    "--key-id", required=True, help="The SSH public key id IAM gave (APKA...)."
)


@click.group()
def ssh() -> None:
    """SSH keys for CodeCommit: register with IAM, list, rotate, write ~/.ssh/config.

    Keys must be RSA of at least 2048 bits; an IAM user holds at most 5. A key reference
    (--key) is a key file (private or public) or a pkcs11: URI. AWS commands take --profile,
    --region and --endpoint-url and otherwise follow boto3's credential chain.
    """


def _iam(
    user: str, profile: str | None, region: str | None, endpoint_url: str | None
) -> IamSshKeys:
    return IamSshKeys.connect(user, AwsOptions(profile, region, endpoint_url))


def _fingerprint_lines(key: SshKey) -> list[str]:
    lines = [f"fingerprint  {key.fingerprint}  (MD5 of the SSH key blob, as IAM shows it)"]
    if key.public_key is not None:
        lines.append(f"sha256       {openssh_sha256(key.public_key)}")
    reported = key.reported_fingerprint
    if reported and reported != key.fingerprint:
        lines.append(f"endpoint fp  {reported}  (reported by the endpoint; devid does not use it)")
    return lines


@ssh.command()
@_user_option
@click.option("--key", "ref", required=True, metavar="REF", help="Key file or pkcs11: URI.")
@passphrase_file_option
@aws_options
@json_option
@examples(
    """
devid ssh register --user alice --key ~/.ssh/codecommit_rsa.pub
devid ssh register --user alice --key 'pkcs11:token=laptop;object=codecommit' --json
"""
)
def register(
    user: str,
    ref: str,
    passphrase_file: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Upload the public key of REF to IAM for USER and print its SSH key id.

    Checked first: RSA >= 2048 (exit 1 if not), not registered already and fewer than 5
    keys (exit 4, naming the keys to retire).
    """
    public = public_key_of(ref, passphrase_file)
    key = _iam(user, profile, region, endpoint_url).upload(public)
    data = {"user": user, "reference": ref, **key.as_dict()}
    text = [f"ssh key id   {key.key_id}", f"status       {key.status.value}"]
    text += _fingerprint_lines(key)
    text.append(f"next: devid ssh config --key-id {key.key_id} --identity PATH --write")
    emit(data, as_json=as_json, text=text)


@ssh.command(name="list")
@_user_option
@click.option(
    "--match", "refs", multiple=True, metavar="REF",
    help="Local key (file, directory or pkcs11: URI) to look for; repeatable. Default: ~/.ssh.",
)  # fmt: skip
@aws_options
@json_option
@examples(
    """
devid ssh list --user alice
devid ssh list --user alice --match ~/.ssh/codecommit_rsa --match 'pkcs11:token=laptop' --json
"""
)
def list_(
    user: str,
    refs: tuple[str, ...],
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """List USER's SSH keys: id, status, upload date, fingerprint and the matching local key."""
    found = _iam(user, profile, region, endpoint_url).list_keys()
    local = local_keys(refs)
    rows = [{**k.as_dict(), "local": matching(k.blob, local)} for k in found]
    text = [
        f"{r['key_id']}  {r['status']:<8}  {r['upload_date']}  {r['fingerprint']}  "
        f"{', '.join(r['local']) or '-'}"
        for r in rows
    ]
    emit({"user": user, "keys": rows}, as_json=as_json, text=text or [f"(no SSH keys for {user})"])


def _identity(
    ref: str, key: PublicKey, identity: str | None, passphrase_file: str | None
) -> Identity:
    if not is_token_ref(ref):

        def open_encrypted(path: Path) -> PublicKey:
            return load_key_ref(str(path), passphrase_file).public_key()

        return file_identity(ref, identity, key, open_encrypted=open_encrypted)
    token_key = hsm.load_key(ref)
    module = resolve_module_path(hsm.parse_uri(ref).module_path)
    return token_identity(key, token_key.handle.label, module, identity)


def _step_printer(as_json: bool, steps: list[Step]) -> Callable[[Step], None]:
    def report(step: Step) -> None:
        steps.append(step)
        if not as_json:
            click.echo(f"{step.step:<8} {'ok' if step.ok else 'FAILED':<6} {step.detail}")

    return report


@ssh.command(name="rotate")
@_user_option
@click.option("--key", "ref", required=True, metavar="NEWREF", help="The new key.")
@click.option(
    "--retire", type=click.Choice([r.value for r in Retire]), default="deactivate",
    show_default=True, help="What to do with the old key once the config uses the new one.",
)  # fmt: skip
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="ssh config file.")
@click.option(
    "--identity",
    help="IdentityFile for the config: the private key file (it must hold NEWREF's key), or "
    "for a token key the .pub file devid writes (default ~/.ssh/<label>.pub).",
)
@passphrase_file_option
@aws_options
@json_option
@examples(
    """
devid ssh rotate --user alice --key ~/.ssh/codecommit_2025
devid ssh rotate --user alice --key 'pkcs11:token=laptop;object=cc-2025' --retire delete --json
"""
)
def rotate_cmd(
    user: str,
    ref: str,
    retire: str,
    config_path: Path | None,
    identity: str | None,
    passphrase_file: str | None,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Upload NEWREF, point the ssh config (default ~/.ssh/config) at it, retire the old key.

    The old key is the one the config used (else the single other active key). If the
    config cannot be written, the new key is deleted again (exit code of that failure); if
    retiring fails, the config already uses the new, active key (exit 3). A config that sets,
    before any Host block, an option that would win over the entry's (User, IdentitiesOnly
    no, a token key's PKCS11Provider) is refused before anything changes (exit 2).
    """
    key = public_key_of(ref, passphrase_file)
    ident = _identity(ref, key, identity, passphrase_file)
    config = config_path or default_config()
    steps: list[Step] = []
    keys = _iam(user, profile, region, endpoint_url)
    try:
        done = rotate(
            keys,
            key,
            ident,
            config=config,
            retire=Retire(retire),
            report=_step_printer(as_json, steps),
        )
    except (DevidError, hsm.HsmError) as exc:
        if as_json:
            emit(
                {"ok": False, "error": str(exc), "steps": [s.as_dict() for s in steps]},
                as_json=True,
            )
        raise
    data = {"ok": True, "user": user, **done.as_dict(), "steps": [s.as_dict() for s in steps]}
    emit(data, as_json=as_json, text=None)


def _set_status(user: str, key_id: str, status: Status, aws: AwsArgs, as_json: bool) -> None:
    parse_key_id(key_id)
    key = _iam(user, *aws).set_status(key_id, status)
    _warn_if_configured(key_id, status.value.lower())
    emit({"user": user, **key.as_dict()}, as_json=as_json, text=f"{key_id} {key.status.value}")


def _warn_if_configured(key_id: str, what: str) -> None:
    try:
        entry = find_entry(read_config(default_config()))
    except DevidError:
        return
    if entry is not None and entry.key_id == key_id:
        warn(f"{default_config()} still uses {key_id}, which is now {what}")


@ssh.command()
@_user_option
@_key_id_option
@aws_options
@json_option
@examples("devid ssh activate --user alice --key-id APKAEIBAERJR2EXAMPLE")
def activate(
    user: str,
    key_id: str,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Set USER's SSH key KEY-ID Active."""
    _set_status(user, key_id, Status.ACTIVE, (profile, region, endpoint_url), as_json)


@ssh.command()
@_user_option
@_key_id_option
@aws_options
@json_option
@examples("devid ssh deactivate --user alice --key-id APKAEIBAERJR2EXAMPLE --json")
def deactivate(
    user: str,
    key_id: str,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Set USER's SSH key KEY-ID Inactive (CodeCommit refuses it; it still counts to 5)."""
    _set_status(user, key_id, Status.INACTIVE, (profile, region, endpoint_url), as_json)


@ssh.command()
@_user_option
@_key_id_option
@aws_options
@json_option
@examples("devid ssh delete --user alice --key-id APKAEIBAERJR2EXAMPLE")
def delete(
    user: str,
    key_id: str,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Delete USER's SSH key KEY-ID from IAM."""
    parse_key_id(key_id)
    gone = _iam(user, profile, region, endpoint_url).delete(key_id)
    _warn_if_configured(key_id, "deleted")
    emit(
        {"user": user, "deleted": True, **gone.as_dict()},
        as_json=as_json,
        text=f"deleted {gone.summary()}",
    )


@ssh.command()
@_key_id_option
@click.option("--identity", required=True, help="IdentityFile: the key file (a .pub for a token).")
@click.option("--file", "path", type=click.Path(path_type=Path), help="Default ~/.ssh/config.")
@click.option("--write", is_flag=True, help="Merge the block into the file (else print it).")
@click.option("--pkcs11-provider", "module", help="PKCS#11 module, for a key on a token.")
@json_option
@examples(
    """
devid ssh config --key-id APKAEIBAERJR2EXAMPLE --identity ~/.ssh/codecommit_rsa
devid ssh config --key-id APKAEIBAERJR2EXAMPLE --identity ~/.ssh/cc.pub --write \\
    --pkcs11-provider /usr/lib/softhsm/libsofthsm2.so
"""
)
def config(
    key_id: str, identity: str, path: Path | None, write: bool, module: str | None, as_json: bool
) -> None:
    """Print the 'Host git-codecommit.*.amazonaws.com' block, or merge it (--write).

    The merge changes only that block, keeps every other line, writes atomically with mode
    0600 and keeps a backup of the previous file; a second run changes nothing. The block
    goes in front of any block that would set User for CodeCommit first; options set before
    any Host block that would win over the entry's (User, IdentitiesOnly no, a token key's
    PKCS11Provider) cannot be overridden, and are warned about.
    """
    entry = CodeCommitEntry(parse_key_id(key_id), identity_path(identity), module)
    if not Path(identity).expanduser().exists():
        warn(f"IdentityFile {identity} does not exist (yet)")
    block = render(entry)
    if not write:
        emit({"block": block, "written": False}, as_json=as_json, text=block.rstrip("\n"))
        return
    target = path or default_config()
    text = read_config(target)
    overrides = global_overrides(text, token=module is not None)
    if overrides:
        warn(
            f"{target} sets {', '.join(overrides)} before any Host block: ssh uses that for "
            "every host, this entry's too; move it into a 'Host *' block at the end"
        )
    merged = merge(text, entry)
    backup = write_config(target, merged)
    changed = merged != text
    data = {"block": block, "written": True, "file": str(target), "changed": changed}
    data["backup"] = str(backup) if backup else None
    line = f"updated {target}" + (f" (backup {backup})" if backup else "")
    emit(data, as_json=as_json, text=line if changed else f"{target} already up to date")


@ssh.command(name="clone-url")
@_key_id_option
@click.option("--region", required=True, help="The repository's AWS Region.")
@click.option("--repo", required=True, help="The CodeCommit repository name.")
@json_option
@examples("devid ssh clone-url --key-id APKAEIBAERJR2EXAMPLE --region eu-west-1 --repo firmware")
def clone_url_cmd(key_id: str, region: str, repo: str, as_json: bool) -> None:
    """The ssh:// clone URL that carries the SSH key id (works without an ssh config)."""
    url = clone_url(key_id, region, repo)
    emit({"url": url}, as_json=as_json, text=url)
