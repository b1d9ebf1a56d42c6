"""What every devid command shares: output, errors, secrets, key references, AWS options."""

from __future__ import annotations

import getpass
import inspect
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from devid.errors import BadInput, EnvironmentProblem, PassphraseRequired
from devid.fsutil import read_input
from devid.keys import PrivateKey, PublicKey, is_token_ref
from devid.loading import (
    PassphraseSource,
    load_public_key,
    load_signing_key,
    looks_private,
    open_private_key,
    parse_public_key,
)

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """``--json``: print exactly one JSON document on stdout instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
    )(func)


#: A PIN given in a URI (``pin-value=...``, RFC 7512) wherever it may stand in a key reference.
_PIN_VALUE = re.compile(r"(pin-value=)[^;?&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """*text* with every ``pin-value=`` PIN replaced: key references are echoed in output
    and errors, and a user may have given one with the PIN inside."""
    return _PIN_VALUE.sub(r"\1***", text)


def _redacted(data: Any) -> Any:
    """*data* with :func:`redact` applied to every string in it, keys included."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {_redacted(k): _redacted(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_redacted(v) for v in data]
    return data


def emit(data: Any, *, as_json: bool, text: str | Iterable[str] | None = None) -> None:
    """Print *data* as JSON, or *text* (lines) for people; PINs in URIs are redacted
    (in the values before JSON encoding, so the document stays valid JSON)."""
    if as_json:
        encoded = json.dumps(_redacted(data), indent=2, sort_keys=False, default=str)
        click.echo(encoded)
        return
    if text is None:
        return
    for line in [text] if isinstance(text, str) else text:
        click.echo(redact(line))


def warn(message: str) -> None:
    click.echo(f"devid: warning: {message}", err=True)


#: PINs and passphrases are short; a file larger than this was named by mistake
SECRET_FILE_LIMIT = 4096


def read_secret_file(path: str | Path, what: str) -> bytes:
    """A secret from a file, without its trailing newline; the path may be ``-`` for stdin.
    Like every input file it is read only if regular or a pipe, and at most 4 KiB."""
    if str(path) == "-":
        data = sys.stdin.buffer.read(SECRET_FILE_LIMIT + 1)
        if len(data) > SECRET_FILE_LIMIT:
            raise BadInput(f"the {what} on stdin is longer than {SECRET_FILE_LIMIT} bytes")
    else:
        data = read_input(path, what=f"{what} file", limit=SECRET_FILE_LIMIT)
    return data.rstrip(b"\r\n")


def secret(
    *, file: str | None, env: str | None, prompt: str | None, what: str, confirm: bool = False
) -> bytes | None:
    """A secret from *file*, else the environment variable *env*, else a hidden prompt.

    Returns None when none of the three is available (no file, unset variable, no terminal).
    Secrets never come from argv and are never echoed.
    """
    if file:
        return read_secret_file(file, what)
    if env and os.environ.get(env) is not None:
        return os.environ[env].encode()
    if prompt and sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ").encode()
        if confirm and getpass.getpass(f"{prompt} (again): ").encode() != first:
            raise BadInput(f"the two {what}s differ")
        return first
    return None


def passphrase_file_option(func: F) -> F:
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False),
        help="Read the key passphrase from this file (or DEVID_PASSPHRASE, or a prompt).",
    )(func)


def _passphrases(ref: str, passphrase_file: str | None) -> tuple[bytes | None, PassphraseSource]:
    """The passphrase given (file, else DEVID_PASSPHRASE), and a prompt for when none was."""
    given = secret(file=passphrase_file, env="DEVID_PASSPHRASE", prompt=None, what="passphrase")

    def ask() -> bytes:
        asked = secret(file=None, env=None, prompt=f"Passphrase for {ref}", what="passphrase")
        if asked is None:
            raise BadInput(f"{ref} is encrypted; give --passphrase-file or set DEVID_PASSPHRASE")
        return asked

    return given, ask


def load_key_ref(ref: str, passphrase_file: str | None = None) -> PrivateKey:
    """Load a private key reference, asking for a passphrase only when one is needed."""
    given, ask = _passphrases(ref, passphrase_file)
    return load_signing_key(ref, passphrase=given, ask_passphrase=ask)


def public_key_of(ref: str, passphrase_file: str | None = None) -> PublicKey:
    """The public key of *ref* in any form; an encrypted private key file is opened with
    the passphrase sources of :func:`load_key_ref` (its public half is encrypted too)."""
    if is_token_ref(ref):
        return load_public_key(ref)
    data = read_input(ref, what="key file")  # read once: REF may be a pipe, <(...)
    try:
        return parse_public_key(data, where=ref)
    except PassphraseRequired:
        return _open_private(data, ref, passphrase_file).public_key()


def key_of(ref: str, passphrase_file: str | None = None) -> PrivateKey | PublicKey:
    """What *ref* holds, read once (so ``<(...)`` works): a private key file as its
    private key, a token key or any other form as its public key."""
    if is_token_ref(ref):
        return load_public_key(ref)
    data = read_input(ref, what="key file")
    if not looks_private(data):
        return parse_public_key(data, where=ref)
    return _open_private(data, ref, passphrase_file)


def _open_private(data: bytes, ref: str, passphrase_file: str | None) -> PrivateKey:
    """The private key in *data* (read from *ref*), with :func:`load_key_ref`'s passphrases."""
    given, ask = _passphrases(ref, passphrase_file)
    return open_private_key(data, where=ref, passphrase=given, ask_passphrase=ask)


def aws_options(func: F) -> F:
    """``--profile``, ``--region``, ``--endpoint-url`` for commands that call AWS."""
    for option in (
        click.option("--endpoint-url", help="AWS endpoint (e.g. a local moto server)."),
        click.option("--region", help="AWS Region (else boto3's configuration)."),
        click.option("--profile", help="AWS profile (else boto3's default chain)."),
    ):
        func = option(func)
    return func


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BadInput(message)


def needs_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise EnvironmentProblem(f"{name} not found: apt-get install {package}")
    return found


def examples(text: str) -> Callable[[F], F]:
    """Append an EXAMPLES section to a command's help (kept verbatim by click)."""

    def decorate(func: F) -> F:
        doc = inspect.cleandoc(func.__doc__ or "")
        lines = "\n".join(f"  {line}" if line else "" for line in text.strip().splitlines())
        func.__doc__ = f"{doc}\n\n\b\nEXAMPLES\n{lines}\n"
        return func

    return decorate


__all__ = [
    "aws_options",
    "emit",
    "examples",
    "json_option",
    "load_key_ref",
    "needs_tool",
    "passphrase_file_option",
    "read_secret_file",
    "require",
    "secret",
    "warn",
]
