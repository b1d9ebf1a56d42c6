"""Local keys to match against registered ones: files in ``~/.ssh``, named files, token keys.

Keys are matched by their SSH wire blob (the bytes OpenSSH fingerprints), never by a
fingerprint some service reports. The default scan of ``~/.ssh`` reads ``*.pub`` files and
unencrypted private keys and quietly passes over everything else; keys named explicitly
(``--match``) must load, or the error says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hsm
from devid.errors import BadInput, DevidError
from devid.fingerprint import ssh_wire_blob
from devid.keys import PublicKey, is_token_ref
from devid.loading import load_public_key, parse_public_key

# Files in ~/.ssh that hold no key of the user's.
#: OpenSSH's own files in ~/.ssh (ssh(1), sshd(8) FILES), never the user's keys
_NOT_KEYS = frozenset(
    {"config", "known_hosts", "known_hosts.old", "authorized_keys", "authorized_keys2",
     "environment", "rc"}
)  # fmt: skip
_MAX_SIZE = 64 * 1024


@dataclass(frozen=True)
class LocalKey:
    """A key on this machine: where it is (a path or a ``pkcs11:`` URI) and its public half."""

    ref: str
    public_key: PublicKey

    @property
    def blob(self) -> bytes:
        return ssh_wire_blob(self.public_key)


def ssh_dir() -> Path:
    """``~/.ssh`` of the user ``HOME`` names."""
    return Path.home() / ".ssh"


def candidate_key_file(path: Path) -> bool:
    """Whether a file in ~/.ssh (or a directory like it) may be a key: a regular file of at
    most 64 KiB that is not hidden, not a backup and not one of OpenSSH's other files
    (config, known_hosts, authorized_keys, environment, rc)."""
    name = path.name
    if name.startswith(".") or name in _NOT_KEYS or ".bak-" in name:
        return False
    try:
        return path.is_file() and path.stat().st_size <= _MAX_SIZE
    except OSError:
        return False


def scan_dir(directory: Path) -> list[LocalKey]:
    """The keys devid can read without a passphrase or PIN among the files in *directory*."""
    try:
        paths = sorted(p for p in directory.iterdir() if candidate_key_file(p))
    except OSError:
        return []
    found: list[LocalKey] = []
    for path in paths:
        try:
            found.append(LocalKey(str(path), parse_public_key(path.read_bytes(), where=str(path))))
        except (DevidError, OSError, ValueError):
            continue  # not a key, or an encrypted one: the scan is best effort
    return found


def _token_keys(ref: str) -> list[LocalKey]:
    uri = hsm.parse_uri(ref)
    if uri.is_private_key_ref:
        return [LocalKey(ref, load_public_key(ref))]
    infos = hsm.list_keys(uri.with_(type="private"))
    return [LocalKey(info.uri, hsm.load_key(info.uri).public_key()) for info in infos]


def load_refs(refs: Iterable[str]) -> list[LocalKey]:
    """The keys *refs* name: files, directories (scanned), token keys or whole tokens."""
    found: list[LocalKey] = []
    for ref in refs:
        if is_token_ref(ref):
            found += _token_keys(ref)
        elif Path(ref).is_dir():
            found += scan_dir(Path(ref))
        else:
            try:
                found.append(LocalKey(ref, load_public_key(ref)))
            except BadInput as exc:
                raise BadInput(exc.message, hint="for an encrypted key name its .pub file") from exc
    return found


def local_keys(refs: Sequence[str]) -> list[LocalKey]:
    """The keys *refs* name, or those found in ``~/.ssh`` when *refs* is empty."""
    return load_refs(refs) if refs else scan_dir(ssh_dir())


def matching(blob: bytes | None, keys: Iterable[LocalKey]) -> list[str]:
    """The references of the local keys whose wire blob is *blob*."""
    return [] if blob is None else [k.ref for k in keys if k.blob == blob]


__all__ = ["LocalKey", "load_refs", "local_keys", "matching", "scan_dir", "ssh_dir"]
