"""Private key files from one format to another: PEM PKCS#1/PKCS#8, OpenSSH and PuTTY PPK.

Reading takes every form :func:`devid.loading.parse_private_key` takes (PPK v2/v3 included,
encrypted or not); the passphrase is asked for only when the input turns out to need one.
Token keys never reach this module: they are not extractable, which is the point of them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from devid import ppk
from devid.errors import BadInput, PassphraseRequired
from devid.keys import PrivateFormat, PrivateKey, private_key_bytes
from devid.loading import parse_private_key


class TargetFormat(enum.Enum):
    """What ``devid key convert --to`` writes."""

    PKCS1 = "pkcs1"
    PKCS8 = "pkcs8"
    OPENSSH = "openssh"
    PPK = "ppk"


@dataclass(frozen=True)
class SourceKey:
    """A private key read from a file, with what the file said about it."""

    key: PrivateKey
    comment: str
    encrypted: bool


def read_private(data: bytes, *, where: str, passphrase: Callable[[], bytes | None]) -> SourceKey:
    """Parse *data*; *passphrase* is called (once) only if the file is encrypted."""
    try:
        return _parse(data, where, None)
    except PassphraseRequired:
        secret = passphrase()
        if not secret:
            raise BadInput(
                f"{where} is encrypted; give --passphrase-file or set DEVID_PASSPHRASE"
            ) from None
        return _parse(data, where, secret)


def _parse(data: bytes, where: str, secret: bytes | None) -> SourceKey:
    if not ppk.is_ppk(data):
        key = parse_private_key(data, passphrase=secret, where=where)
        return SourceKey(key, "", encrypted=secret is not None)
    try:
        key, comment = ppk.load_ppk(data, secret)
    except PassphraseRequired:
        raise
    except BadInput as exc:
        raise BadInput(f"{where}: {exc.message}") from exc
    return SourceKey(key, comment, encrypted=secret is not None)


def encode(
    key: PrivateKey,
    target: TargetFormat,
    *,
    passphrase: bytes | None = None,
    ppk_version: int = 3,
    comment: str = "",
) -> bytes:
    """*key* as *target*; encrypted with *passphrase* when one is given."""
    if target is TargetFormat.PPK:
        return ppk.dump_ppk(key, comment=comment, version=ppk_version, passphrase=passphrase)
    return private_key_bytes(key, PrivateFormat(target.value), passphrase=passphrase)
