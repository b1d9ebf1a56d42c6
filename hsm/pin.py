"""Where a PIN comes from: ``pin-source=file:``, ``DEVID_PKCS11_PIN``, a prompt, ``pin-value``.

A PIN is never taken from argv, never logged, and never part of an error message.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from hsm.errors import PinRequired
from hsm.uri import Pkcs11Uri


def _read_pin_file(source: str) -> str:
    if source.startswith("file:"):
        parsed = urlparse(source)
        path = Path(unquote(parsed.path if parsed.netloc in ("", "localhost") else source[5:]))
    elif source.startswith("/"):
        path = Path(source)
    else:
        raise PinRequired(f"unsupported pin-source {source!r}; use file:/path/to/pin")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PinRequired(f"cannot read the PIN file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # never quote the content: it is a secret
        raise PinRequired(f"the PIN file {path} is not UTF-8 text") from exc
    return text.rstrip("\r\n")


def resolve_pin(uri: Pkcs11Uri, *, token_label: str = "") -> str:
    """The user PIN for the token *uri* names, asking on a terminal only as the last resort."""
    if uri.pin_value is not None:
        return uri.pin_value
    if uri.pin_source:
        return _read_pin_file(uri.pin_source)
    env = os.environ.get("DEVID_PKCS11_PIN")
    if env is not None:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(f"PIN for token {token_label or uri.token or '?'}: ")
    raise PinRequired(
        "no PIN for the token: set DEVID_PKCS11_PIN, or add pin-source=file:PATH to the URI"
    )
