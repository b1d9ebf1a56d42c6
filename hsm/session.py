"""Finding a token and keeping one logged-in session per token per process.

PKCS#11 login state belongs to the process, not the session: a second login fails with
"already logged in", and closing any logged-in session logs every session out (DESIGN.md).
So devid opens one read-write session per token, logs in once, and keeps it for the life
of the process (or until a fork or :func:`hsm.module.refresh` invalidates it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as px

from hsm.errors import TokenFailure, TokenNotFound, translate
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


#: SoftHSM rewrites its token file on every login. Another process reading it meanwhile may
#: get CKR_GENERAL_ERROR, see the token as uninitialised (its slot id changes with that), or
#: be refused a login as if the token had no user PIN, until it re-initialises the module.
#: So those answers are asked again a few times, after a pause and a re-initialisation.
#: A wrong PIN is never retried.
_ATTEMPTS = 5
_TRANSIENT = (px.GeneralError, px.UserPinNotInitialized, px.SlotIDInvalid)


def _settle(attempt: int, module_path: str | None) -> None:
    time.sleep(0.02 * attempt)
    refresh(module_path)


def _scan(uri: Pkcs11Uri, *, last: bool) -> list[pkcs11.Token]:
    try:
        return _candidates(uri)
    except TokenFailure:
        if last:
            raise
        return []


def _describe(uri: Pkcs11Uri) -> str:
    parts = [f"{name}={value}" for name, value in (("token", uri.token), ("serial", uri.serial))]
    named = [p for p in parts if not p.endswith("=None")]
    return ", ".join(named) or "any token"


def find_token(uri: Pkcs11Uri) -> pkcs11.Token:
    """The one initialised token *uri* names (by label, serial, manufacturer, model)."""
    for attempt in range(1, _ATTEMPTS + 1):
        tokens = _scan(uri, last=attempt == _ATTEMPTS)
        if tokens or attempt == _ATTEMPTS:
            break
        # A token created by another process (softhsm2-util) since the module was loaded
        # is only seen after re-initialising; so is one read during a rewrite (above).
        _settle(attempt - 1, uri.module_path)
    if not tokens:
        raise TokenNotFound(
            f"no PKCS#11 token matches {_describe(uri)}; list them with `devid hsm tokens`"
        )
    if len(tokens) > 1:
        raise TokenNotFound(
            f"{len(tokens)} tokens match {_describe(uri)}; name one with token= or serial="
        )
    return tokens[0]


def _open(token: pkcs11.Token, pin: str | None) -> pkcs11.Session:
    """A session, logged in when *pin* is given; :data:`_TRANSIENT` errors pass unchanged."""
    try:
        if pin is None:
            return token.open(rw=True)
        try:
            return token.open(rw=True, user_pin=pin)
        except px.UserAlreadyLoggedIn:
            return token.open(rw=True)
    except _TRANSIENT:
        raise
    except px.PKCS11Error as exc:
        what = "logging in to" if pin is not None else "opening a session on"
        raise translate(exc, f"{what} token {token.label!r}") from exc


def session_for(uri: Pkcs11Uri, *, login: bool = True) -> pkcs11.Session:
    """A read-write session on the token *uri* names, logged in unless *login* is false."""
    module = resolve_module_path(uri.module_path)
    pin: str | None = None
    with TOKEN_LOCK:
        for attempt in range(1, _ATTEMPTS + 1):
            token = find_token(uri)
            key = (module, token_serial(token))
            cached = _sessions.get(key)
            if cached and cached.generation == generation() and (cached.logged_in or not login):
                return cached.session
            if login and pin is None:
                pin = resolve_pin(uri, token_label=token.label)
            try:
                session = _open(token, pin)
            except _TRANSIENT as exc:
                if attempt == _ATTEMPTS:
                    raise translate(exc, f"logging in to token {token.label!r}") from exc
                _settle(attempt, uri.module_path)
                continue
            # Keep the previous (logged-out) session open: closing it would log this one out.
            _sessions[key] = _Open(session, generation(), login)
            return session
    raise AssertionError("unreachable")
