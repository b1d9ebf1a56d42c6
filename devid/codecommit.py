"""CodeCommit over SSH: clone URLs, the identity ssh offers, and key rotation.

Rotation is three steps with one rule: whatever fails, the ssh config keeps working with a
key that is active in IAM.

1. upload the new key (after devid's policy, quota and duplicate checks);
2. point the config's CodeCommit block at the new key id and identity; if that fails, the
   new key is deleted again, so IAM and the config are as they were;
3. retire the key the config used before (or the single other active key). If that fails
   the config already points at the new, active key, which works; the error says what is
   left to do.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from devid import policy, ppk
from devid.errors import (
    BadInput,
    CheckFailed,
    Conflict,
    DevidError,
    EnvironmentProblem,
    PassphraseRequired,
)
from devid.fingerprint import blob_sha256, ssh_wire_blob
from devid.fsutil import PUBLIC_MODE, read_input, write_atomic
from devid.iam import IamSshKeys, SshKey, Status, parse_key_id
from devid.keys import PublicKey, public_key_file
from devid.loading import parse_public_key
from devid.pubformat import openssh_line
from devid.sshconfig import (
    CodeCommitEntry,
    find_entry,
    global_overrides,
    identity_path,
    merge,
    read_config,
    write_config,
)

# Region names: us-east-1, us-gov-west-1, cn-north-1, us-isob-east-1 ...
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
# CodeCommit repository names: letters, digits, '.', '_', '-'; 1 to 100 characters.
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def default_config() -> Path:
    """``~/.ssh/config`` of the user ``HOME`` names."""
    return Path.home() / ".ssh" / "config"


def clone_url(key_id: str, region: str, repo: str) -> str:
    """``ssh://<key id>@git-codecommit.<region>.amazonaws.com/v1/repos/<repo>``."""
    parse_key_id(key_id)
    if not _REGION.fullmatch(region):
        raise BadInput(f"{region!r} is not an AWS Region name (like us-east-1)")
    if not _REPO.fullmatch(repo) or repo in {".", ".."} or repo.endswith(".git"):
        raise BadInput(
            f"{repo!r} is not a CodeCommit repository name",
            hint="1-100 letters, digits, '.', '_' or '-', not ending in .git",
        )
    # The China Regions use the amazonaws.com.cn domain.
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"ssh://{key_id}@git-codecommit.{region}.{domain}/v1/repos/{repo}"


@dataclass(frozen=True)
class Identity:
    """What the config's ``IdentityFile`` (and for a token key ``PKCS11Provider``) says.

    For a token key, ``pub_file`` is the ``.pub`` file devid writes so that ssh, with
    ``IdentitiesOnly yes``, offers that token key.
    """

    identity_file: str
    pkcs11_provider: str | None = None
    pub_file: Path | None = None
    pub_line: bytes = b""

    def entry(self, key_id: str) -> CodeCommitEntry:
        return CodeCommitEntry(key_id, self.identity_file, self.pkcs11_provider)

    def check_pub(self) -> None:
        """Fail before anything changes when the ``.pub`` file holds a different key."""
        if self.pub_file is None or not self.pub_file.exists():
            return
        try:
            held = ssh_wire_blob(parse_public_key(self.pub_file.read_bytes()))
        except (DevidError, OSError) as exc:
            raise Conflict(f"{self.pub_file} exists and is not a public key") from exc
        wanted = ssh_wire_blob(parse_public_key(self.pub_line))
        if held != wanted:
            raise Conflict(
                f"{self.pub_file} exists and holds another key",
                hint="pass --identity PATH.pub to write the token key's public key elsewhere",
            )

    def write_pub(self) -> bool:
        """Write the ``.pub`` file if it is missing; True if it was written."""
        if self.pub_file is None or self.pub_file.exists():
            return False
        if not self.pub_file.parent.exists():
            self.pub_file.parent.mkdir(mode=0o700, parents=True)
        write_atomic(self.pub_file, self.pub_line + b"\n", mode=PUBLIC_MODE)
        return True


#: Opens an encrypted private key file (asking for its passphrase) and returns its public key.
OpenEncrypted = Callable[[Path], PublicKey]


def file_identity(
    ref: str, identity: str | None, key: PublicKey, *, open_encrypted: OpenEncrypted | None = None
) -> Identity:
    """The private key file ssh should use for *key*, which *ref* names.

    A private key file other than *ref* itself (``--identity``, or the file beside a ``.pub``)
    must hold *key*: else ssh would offer another key than the one uploaded. Checked here,
    before anything changes; *open_encrypted* opens an encrypted file without a ``.pub``.
    """
    path = _absolute(ref)
    if identity:
        given = _absolute(identity)
        if given != path:
            _check_holds(given, key, f"--identity {identity}", open_encrypted)
        return Identity(identity_path(identity))
    if path.name.endswith(".pub"):
        private = path.with_name(path.name.removesuffix(".pub"))
        if private.is_file():
            _check_holds(private, key, f"{private} (beside {ref})", open_encrypted)
            return Identity(identity_path(str(private)))
        raise BadInput(f"no private key file {private} beside {ref}; pass --identity PATH")
    head = path.read_bytes()[:4096] if path.is_file() else b""
    if head.startswith(b"PuTTY-User-Key-File"):
        raise BadInput(
            f"{ref} is a PuTTY key, which ssh cannot read",
            hint="convert it (devid key or puttygen -O private-openssh) and pass --identity PATH",
        )
    if b"PRIVATE KEY" not in head:
        raise BadInput(f"{ref} is not a private key file ssh can use; pass --identity PATH")
    return Identity(identity_path(str(path)))


def _absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _check_holds(
    path: Path, key: PublicKey, where: str, open_encrypted: OpenEncrypted | None
) -> None:
    """Fail (exit 2) unless the private key file *path* holds *key*."""
    held = _held_blob(path, where, open_encrypted)
    wanted = ssh_wire_blob(key)
    if held != wanted:
        raise BadInput(
            f"{where} holds the key {blob_sha256(held)}, not the key to upload "
            f"{blob_sha256(wanted)}",
            hint="pass --identity with the private key of the new key",
        )


def _held_blob(path: Path, where: str, open_encrypted: OpenEncrypted | None) -> bytes:
    """The SSH blob of the public key of the private key file *path*, opened only if need be:
    an OpenSSH key carries its public key in clear, an encrypted PEM key may have a ``.pub``."""
    data = read_input(path, what="identity file")
    if ppk.is_ppk(data):
        raise BadInput(f"{where} is a PuTTY key, which ssh cannot read")
    clear = _openssh_public_blob(data, where)
    if clear is not None:
        return clear
    try:
        return ssh_wire_blob(parse_public_key(data, where=where))
    except PassphraseRequired:
        pub = public_key_file(path)
        if pub.is_file():
            return ssh_wire_blob(parse_public_key(read_input(pub), where=str(pub)))
        if open_encrypted is None:
            raise
        return ssh_wire_blob(open_encrypted(path))


_OPENSSH_PRIVATE = re.compile(
    rb"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", re.S
)
_OPENSSH_MAGIC = b"openssh-key-v1\0"


def _openssh_public_blob(data: bytes, where: str) -> bytes | None:
    """The public key blob an OpenSSH private key file holds unencrypted (OpenSSH's
    PROTOCOL.key: magic, cipher, kdf, kdf options, number of keys, public keys, ...);
    None if *data* is no OpenSSH private key."""
    match = _OPENSSH_PRIVATE.search(data)
    if match is None:
        return None
    try:
        rest = base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise BadInput(f"{where}: malformed OpenSSH private key") from exc
    if not rest.startswith(_OPENSSH_MAGIC):
        raise BadInput(f"{where}: malformed OpenSSH private key")
    reader = ppk.SshReader(rest[len(_OPENSSH_MAGIC) :], "key list", source=where)
    several = f"{where}: malformed OpenSSH private key, or one with several keys"
    try:
        for _ in range(3):  # cipher, kdf, kdf options
            reader.string()
        count = reader.uint32()
    except BadInput:
        raise BadInput(several) from None
    if count != 1:
        raise BadInput(several)
    try:
        public = reader.string()
    except BadInput:
        public = b""
    if not public:
        raise BadInput(f"{where}: malformed OpenSSH private key")
    return public


def token_identity(key: PublicKey, label: str, module: str, identity: str | None) -> Identity:
    """The lines for a token key: the module, and its ``.pub`` file (default ~/.ssh/<label>.pub)."""
    default = Path.home() / ".ssh" / f"{_LABEL_UNSAFE.sub('_', label) or 'token-key'}.pub"
    pub = Path(os.path.abspath(os.path.expanduser(identity))) if identity else default
    if pub.suffix != ".pub":
        raise BadInput(f"--identity {identity} for a token key must name a .pub file")
    return Identity(identity_path(str(pub)), module, pub, openssh_line(key, label))


class Retire(enum.Enum):
    DEACTIVATE = "deactivate"
    DELETE = "delete"


@dataclass(frozen=True)
class Step:
    """One step of a rotation as reported: ``check``, ``upload``, ``config``, ``retire``,
    ``rollback``."""

    step: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "detail": self.detail}


Report = Callable[[Step], None]


class RotationError(DevidError):
    """A rotation stopped; the message says in what state it left IAM and the config."""

    def __init__(self, message: str, *, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the new key, the config written, the keys retired."""

    new_key: SshKey
    config: Path
    backup: Path | None
    retired: list[tuple[str, str]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "new_key": self.new_key.as_dict(),
            "config": str(self.config),
            "backup": str(self.backup) if self.backup else None,
            "retired": [{"key_id": k, "action": a} for k, a in self.retired],
        }


def _current(text: str) -> CodeCommitEntry | None:
    """The config's CodeCommit entry; None if it has none or one devid cannot read (say a
    ``User`` that is not a key id): the merge replaces it either way."""
    try:
        return find_entry(text)
    except BadInput:
        return None


def _targets(before: list[SshKey], current: CodeCommitEntry | None) -> tuple[list[SshKey], str]:
    """The keys to retire, and why these: the config's key, else the one other active key."""
    by_id = {k.key_id: k for k in before}
    if current is not None and current.key_id in by_id:
        return [by_id[current.key_id]], "the key the config used"
    active = [k for k in before if k.status is Status.ACTIVE]
    if len(active) == 1:
        return active, "the only other active key"
    return [], f"{len(active)} other active keys and none named by the config"


def _switch_config(
    path: Path, text: str, identity: Identity, key_id: str
) -> tuple[Path | None, str]:
    """Write the token key's ``.pub`` if needed and the config; returns (backup, details)."""
    wrote_pub = identity.write_pub()
    try:
        backup = write_config(path, merge(text, identity.entry(key_id)))
    except BaseException:
        if wrote_pub and identity.pub_file is not None:
            identity.pub_file.unlink(missing_ok=True)  # leave nothing behind
        raise
    details = f", wrote {identity.pub_file}" if wrote_pub else ""
    return backup, details + (f", backup {backup}" if backup else "")


def _rollback(
    keys: IamSshKeys, new: SshKey, path: Path, exc: Exception, report: Report
) -> NoReturn:
    code = exc.exit_code if isinstance(exc, DevidError) else EnvironmentProblem.exit_code
    why = str(exc) if isinstance(exc, DevidError) else f"{type(exc).__name__}: {exc}"
    report(Step("config", False, f"writing {path} failed: {why}"))
    try:
        keys.delete(new.key_id)
    except DevidError as undo:
        report(Step("rollback", False, f"deleting {new.key_id} failed: {undo}"))
        raise RotationError(
            f"writing {path} failed ({why}) and deleting the new key {new.key_id} failed too "
            f"({undo}); {path} is unchanged",
            exit_code=EnvironmentProblem.exit_code,
            hint=f"devid ssh delete --user {keys.user} --key-id {new.key_id}",
        ) from exc
    report(Step("rollback", True, f"deleted {new.key_id} again; {path} is unchanged"))
    raise RotationError(
        f"writing {path} failed ({why}); the new key {new.key_id} was deleted again, "
        "IAM and the config are as before",
        exit_code=code,
    ) from exc


def _retire(keys: IamSshKeys, key: SshKey, how: Retire, report: Report) -> str | None:
    if how is Retire.DEACTIVATE and key.status is Status.INACTIVE:
        report(Step("retire", True, f"{key.key_id} is inactive already"))
        return None
    try:
        if how is Retire.DELETE:
            keys.delete(key.key_id)
        else:
            keys.set_status(key.key_id, Status.INACTIVE)
    except DevidError as exc:
        report(Step("retire", False, f"could not {how.value} {key.key_id}: {exc}"))
        raise RotationError(
            f"the config now uses the new active key, but {how.value} {key.key_id} failed: {exc}",
            exit_code=EnvironmentProblem.exit_code,
            hint=f"devid ssh {how.value} --user {keys.user} --key-id {key.key_id}",
        ) from exc
    report(Step("retire", True, f"{key.key_id} {how.value}d"))
    return how.value + "d"


def _upload(keys: IamSshKeys, new_key: PublicKey, report: Report) -> tuple[SshKey, list[SshKey]]:
    verdict = policy.check(new_key, policy.Service.CODECOMMIT)
    report(Step("check", verdict.ok, verdict.reason))
    if not verdict.ok:
        raise CheckFailed(verdict.reason)
    try:
        before = keys.list_keys()
        new = keys.upload(new_key, existing=before)
    except DevidError as exc:
        report(Step("upload", False, str(exc)))
        raise
    report(Step("upload", True, f"uploaded {new.key_id} (Active), fingerprint {new.fingerprint}"))
    return new, before


def rotate(
    keys: IamSshKeys,
    new_key: PublicKey,
    identity: Identity,
    *,
    config: Path,
    retire: Retire,
    report: Report,
) -> Rotation:
    """Upload *new_key*, switch *config* to it, retire the old key (see the module doc)."""
    text = read_config(config)  # unreadable config: fail before anything changes
    overrides = global_overrides(text, token=identity.pkcs11_provider is not None)
    if overrides:  # the switch would not take: ssh would go on using the global values
        raise BadInput(
            f"{config} sets {', '.join(overrides)} before any Host block: it applies to every "
            "host first, so the CodeCommit entry cannot take effect",
            hint="move those lines into a 'Host *' block at the end of the file",
        )
    current = _current(text)
    identity.check_pub()
    new, before = _upload(keys, new_key, report)
    try:
        backup, details = _switch_config(config, text, identity, new.key_id)
    except Exception as exc:  # anything: the new key must not stay behind unused
        _rollback(keys, new, config, exc, report)
    what = f"User {new.key_id}, IdentityFile {identity.identity_file}"
    report(Step("config", True, f"{config}: {what}{details}"))
    targets, why = _targets(before, current)
    if not targets:
        report(Step("retire", True, f"nothing retired: {why}"))
    retired = []
    for key in targets:
        done = _retire(keys, key, retire, report)
        if done:
            retired.append((key.key_id, done))
    return Rotation(new, config, backup, retired)


__all__ = [
    "Identity",
    "Retire",
    "Rotation",
    "RotationError",
    "Step",
    "clone_url",
    "default_config",
    "file_identity",
    "rotate",
    "token_identity",
]
