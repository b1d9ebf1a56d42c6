"""PKCS#11 error tree.

One root (`HsmError`) and one subclass per kind of failure a user can act on. PKCS#11
return codes are mapped to these classes in one table (`_BY_PKCS11`), not at each call
site; `translate()` turns a python-pkcs11 exception into ours. Every class carries the
exit code the devid CLI uses for it (DESIGN.md section 4).
"""

from __future__ import annotations

import re

import pkcs11.exceptions as px


class HsmError(Exception):
    """Root of every error the hsm package raises; ``str()`` is one line, never a PIN."""

    exit_code: int = 3

    def __init__(self, message: str) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message


def one_line(text: str) -> str:
    """*text* with control characters escaped: labels, paths and URIs come from users and
    tokens, and a newline in one must not split an error over several lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class UriError(HsmError):
    """A PKCS#11 URI that is not RFC 7512 (or one of the accepted dialects)."""

    exit_code = 2


class ModuleNotFound(HsmError):
    """The PKCS#11 module (shared library) cannot be found or loaded."""


class TokenNotFound(HsmError):
    """No token matches the URI."""


class PinIncorrect(HsmError):
    """The token refused the PIN."""


class PinRejected(HsmError):
    """The module refused a new PIN (its length or characters) when setting up a token."""

    exit_code = 2


class PinLocked(HsmError):
    """Too many wrong PINs: the token locked the user PIN."""


class PinRequired(HsmError):
    """No PIN source was given and there is no terminal to ask on."""


class KeyNotFound(HsmError):
    """No key on the token matches the URI."""

    exit_code = 1


class AmbiguousKey(HsmError):
    """More than one key matches the URI; name it by id or a unique label."""

    exit_code = 2


class KeyExists(HsmError):
    """A key with that label is already on the token."""

    exit_code = 4


class TokenFailure(HsmError):
    """Any other failure reported by the module."""


class StaleHandle(TokenFailure):
    """The module forgot an object handle: SoftHSM re-reads its files when another process
    changed the token, and handles found before may then be invalid. Finding again helps."""


class SessionLost(StaleHandle):
    """The session is gone: the module was re-initialised meanwhile (to see another
    process's change to the token). Opening a new session and finding again helps."""


class MechanismUnsupported(HsmError):
    """The token does not offer what the operation needs."""


class NotExtractable(HsmError):
    """The private key lives on the token and cannot be exported. That is the point."""

    exit_code = 2


_BY_PKCS11: dict[type[Exception], tuple[type[HsmError], str]] = {
    px.PinIncorrect: (PinIncorrect, "the token refused the PIN"),
    px.PinInvalid: (PinIncorrect, "the PIN is not valid for this token"),
    px.PinLenRange: (PinIncorrect, "the PIN has the wrong length for this token"),
    px.PinLocked: (PinLocked, "the user PIN is locked; reset it with the SO PIN"),
    px.PinExpired: (PinLocked, "the user PIN has expired; set a new one"),
    px.UserPinNotInitialized: (PinLocked, "the token has no user PIN; initialise it"),
    px.TokenNotPresent: (TokenNotFound, "the token is not present"),
    px.TokenNotRecognised: (TokenNotFound, "the token is not recognised"),
    px.NoSuchToken: (TokenNotFound, "no such token"),
    px.MultipleTokensReturned: (TokenNotFound, "more than one token matches; name it by serial"),
    px.NoSuchKey: (KeyNotFound, "no such key on the token"),
    px.MultipleObjectsReturned: (AmbiguousKey, "more than one key matches; give id= or object="),
    px.MechanismInvalid: (MechanismUnsupported, "the token does not support this mechanism"),
    px.MechanismParamInvalid: (MechanismUnsupported, "the token refused the mechanism parameters"),
    px.KeyTypeInconsistent: (MechanismUnsupported, "the key does not fit this mechanism"),
    px.FunctionRejected: (MechanismUnsupported, "the token rejected the operation"),
    px.KeySizeRange: (MechanismUnsupported, "the token does not support this key size"),
    px.DomainParamsInvalid: (MechanismUnsupported, "the token does not support this curve"),
    px.TokenWriteProtected: (TokenFailure, "the token is write-protected"),
    px.AttributeSensitive: (NotExtractable, "the attribute is sensitive and cannot be read"),
    px.KeyUnextractable: (NotExtractable, "the key is not extractable"),
    px.FunctionNotSupported: (MechanismUnsupported, "the module does not implement this"),
    px.DeviceRemoved: (TokenNotFound, "the token was removed"),
    px.SessionHandleInvalid: (SessionLost, "the module was re-initialised meanwhile"),
    px.SessionClosed: (SessionLost, "the module was re-initialised meanwhile"),
    px.ObjectHandleInvalid: (StaleHandle, "the token's objects changed meanwhile"),
    px.KeyHandleInvalid: (StaleHandle, "the token's objects changed meanwhile"),
}


#: return values python-pkcs11 0.10 has no exception class for ("Unmapped error code 0x68")
_BY_CODE: dict[int, tuple[type[HsmError], str]] = {
    # SoftHSM answers CKR_KEY_FUNCTION_NOT_PERMITTED for a key it is re-reading from a token
    # file another process is rewriting (seen under concurrent logins): find it again; if it
    # stays, the key really lacks the usage flag (CKA_SIGN, CKA_DECRYPT)
    0x68: (StaleHandle, "the key may not be used for this (or the token changed meanwhile)"),
}
_UNMAPPED = re.compile(r"Unmapped error code (0x[0-9a-fA-F]+)")


def translate(exc: Exception, context: str) -> HsmError:
    """Map a python-pkcs11 exception to our tree; *context* says what was being done."""
    for kind in type(exc).__mro__:
        if kind in _BY_PKCS11:
            cls, why = _BY_PKCS11[kind]
            return cls(f"{context}: {why}")
    unmapped = _UNMAPPED.fullmatch(str(exc)) if type(exc) is px.PKCS11Error else None
    if unmapped and int(unmapped.group(1), 16) in _BY_CODE:
        cls, why = _BY_CODE[int(unmapped.group(1), 16)]
        return cls(f"{context}: {why}")
    detail = type(exc).__name__
    return TokenFailure(f"{context}: the PKCS#11 module failed ({detail})")
