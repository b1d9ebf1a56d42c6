"""Finding a token and keeping one logged-in session per token per process.

PKCS#11 login state belongs to the process, not the session: a second login fails with
"already logged in", and closing any logged-in session logs every session out (DESIGN.md).
So devid opens one read-write session per token, logs in once, and keeps it for the life
of the process (or until a fork or :func:`hsm.module.refresh` invalidates it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as px

from hsm.errors import HsmError, TokenNotFound, translate
from hsm.module import TOKEN_LOCK, generation, library, refresh, resolve_module_path
from hsm.pin import resolve_pin
from hsm.uri import Pkcs11Uri


@dataclass
class _Open:
    session: pkcs11.Session
    generation: int
    logged_in: bool


_sessions: dict[tuple[str, str], _Open] = {}


def token_serial(token: pkcs11.Token) -> str:
    serial = token.serial
    text = serial.decode("ascii", "replace") if isinstance(serial, bytes) else str(serial)
    return text.strip()


def _matches(token: pkcs11.Token, uri: Pkcs11Uri) -> bool:
    wanted = (
        (uri.token, token.label),
        (uri.serial, token_serial(token)),
        (uri.manufacturer, token.manufacturer_id),
        (uri.model, token.model),
    )
    return all(want is None or want == have.strip() for want, have in wanted)


def _initialised(token: pkcs11.Token) -> bool:
    return bool(token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED)


def _candidates(uri: Pkcs11Uri) -> list[pkcs11.Token]:
    lib = library(uri.module_path)
    with TOKEN_LOCK:
        try:
            tokens = [t for t in lib.get_tokens() if _initialised(t) and _matches(t, uri)]
        except px.PKCS11Error as exc:
            raise translate(exc, "listing tokens") from exc
    if uri.slot_id is not None:
        tokens = [t for t in tokens if t.slot.slot_id == uri.slot_id]
    return tokens


def _describe(uri: Pkcs11Uri) -> str:
    parts = [f"{name}={value}" for name, value in (("token", uri.token), ("serial", uri.serial))]
    named = [p for p in parts if not p.endswith("=None")]
    return ", ".join(named) or "any token"


def find_token(uri: Pkcs11Uri) -> pkcs11.Token:
    """The one initialised token *uri* names (by label, serial, manufacturer, model)."""
    tokens = _candidates(uri)
    if not tokens:
        # A token created by another process (softhsm2-util) since the module was loaded
        # is only seen after re-initialising.
        refresh(uri.module_path)
        tokens = _candidates(uri)
    if not tokens:
        raise TokenNotFound(
            f"no PKCS#11 token matches {_describe(uri)}; list them with `devid hsm tokens`"
        )
    if len(tokens) > 1:
        raise TokenNotFound(
            f"{len(tokens)} tokens match {_describe(uri)}; name one with token= or serial="
        )
    return tokens[0]


def _login(token: pkcs11.Token, uri: Pkcs11Uri) -> pkcs11.Session:
    pin = resolve_pin(uri, token_label=token.label)
    try:
        return token.open(rw=True, user_pin=pin)
    except px.UserAlreadyLoggedIn:
        return token.open(rw=True)
    except px.PKCS11Error as exc:
        raise translate(exc, f"logging in to token {token.label!r}") from exc


def session_for(uri: Pkcs11Uri, *, login: bool = True) -> pkcs11.Session:
    """A read-write session on the token *uri* names, logged in unless *login* is false."""
    module = resolve_module_path(uri.module_path)
    token = find_token(uri)
    key = (module, token_serial(token))
    with TOKEN_LOCK:
        cached = _sessions.get(key)
        if cached and cached.generation == generation() and (cached.logged_in or not login):
            return cached.session
        try:
            session = _login(token, uri) if login else token.open(rw=True)
        except HsmError:
            raise
        except px.PKCS11Error as exc:
            raise translate(exc, f"opening a session on token {token.label!r}") from exc
        # Keep the previous (logged-out) session open: closing it would log this one out.
        _sessions[key] = _Open(session, generation(), login)
        return session
