"""Initialising a token: ``C_InitToken`` and ``C_InitPIN``, called through ctypes.

python-pkcs11 0.10 has neither call (DESIGN.md). ``softhsm2-util``, which devid used before,
takes the PINs only as arguments, where every user of the machine can read them in the
process list; here they never leave this process.

The module is loaded and initialised by python-pkcs11 first (:func:`hsm.module.library`);
``dlopen`` hands back the same library, so these calls see the state python-pkcs11 set up,
and they run under :data:`hsm.module.TOKEN_LOCK` like every other call into the module.
Only a token that is not yet initialised is ever touched (``CKF_TOKEN_INITIALIZED`` clear):
``C_InitToken`` on an initialised token would wipe it.
"""

from __future__ import annotations

import ctypes
from ctypes import Structure, byref, c_char, c_ubyte, c_ulong

from hsm.errors import HsmError, PinRejected, TokenFailure
from hsm.module import TOKEN_LOCK, library

CKF_TOKEN_INITIALIZED = 0x400
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4
CKU_SO = 0
CKR_OK = 0
LABEL_BYTES = 32

#: CK_RV values worth naming in an error line (PKCS#11 2.40 section 5.1)
_RV_NAMES = {
    0x003: "CKR_SLOT_ID_INVALID",
    0x005: "CKR_GENERAL_ERROR",
    0x006: "CKR_FUNCTION_FAILED",
    0x007: "CKR_ARGUMENTS_BAD",
    0x054: "CKR_FUNCTION_NOT_SUPPORTED",
    0x0A0: "CKR_PIN_INCORRECT",
    0x0A1: "CKR_PIN_INVALID",
    0x0A2: "CKR_PIN_LEN_RANGE",
    0x0B6: "CKR_SESSION_EXISTS",
    0x0E0: "CKR_TOKEN_NOT_PRESENT",
    0x0E2: "CKR_TOKEN_WRITE_PROTECTED",
    0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
}
_PIN_ERRORS = {0x0A0, 0x0A1, 0x0A2}


class _Version(Structure):
    _fields_ = [("major", c_ubyte), ("minor", c_ubyte)]


class _TokenInfo(Structure):
    """CK_TOKEN_INFO (PKCS#11 2.40 section 3.2); CK_ULONG is C's unsigned long."""

    _fields_ = [
        ("label", c_char * 32),
        ("manufacturer_id", c_char * 32),
        ("model", c_char * 16),
        ("serial_number", c_char * 16),
        ("flags", c_ulong),
        ("max_session_count", c_ulong),
        ("session_count", c_ulong),
        ("max_rw_session_count", c_ulong),
        ("rw_session_count", c_ulong),
        ("max_pin_len", c_ulong),
        ("min_pin_len", c_ulong),
        ("total_public_memory", c_ulong),
        ("free_public_memory", c_ulong),
        ("total_private_memory", c_ulong),
        ("free_private_memory", c_ulong),
        ("hardware_version", _Version),
        ("firmware_version", _Version),
        ("utc_time", c_char * 16),
    ]


def _check(rv: int, call: str, label: str) -> None:
    if rv == CKR_OK:
        return
    name = _RV_NAMES.get(rv, f"CK_RV 0x{rv:x}")
    if rv in _PIN_ERRORS:
        raise PinRejected(f"{call} refused a PIN for token {label!r}: {name} (check its length)")
    raise TokenFailure(f"{call} failed for token {label!r}: {name}")


def _blank_padded(label: str) -> bytes:
    raw = label.encode("utf-8")
    if len(raw) > LABEL_BYTES:
        raise HsmError(f"the token label {label!r} is longer than {LABEL_BYTES} bytes")
    return raw.ljust(LABEL_BYTES, b" ")


def _module(path: str) -> ctypes.CDLL:
    module = ctypes.CDLL(path)
    for name in (
        "C_GetSlotList", "C_GetTokenInfo", "C_InitToken", "C_OpenSession", "C_Login",
        "C_InitPIN", "C_Logout", "C_CloseSession",
    ):  # fmt: skip
        getattr(module, name).restype = c_ulong
    return module


def _free_slot(module: ctypes.CDLL, label: str) -> tuple[int, _TokenInfo]:
    """The first slot whose token is present but not initialised, and that token's info."""
    count = c_ulong()
    _check(module.C_GetSlotList(c_ubyte(1), None, byref(count)), "C_GetSlotList", label)
    slots = (c_ulong * count.value)()
    _check(module.C_GetSlotList(c_ubyte(1), slots, byref(count)), "C_GetSlotList", label)
    for slot in slots[: count.value]:
        info = _TokenInfo()
        if module.C_GetTokenInfo(c_ulong(slot), byref(info)) != CKR_OK:
            continue
        if not info.flags & CKF_TOKEN_INITIALIZED:
            return int(slot), info
    raise TokenFailure(f"no free slot for token {label!r}: every token is initialised already")


def init_token(module_path: str, label: str, *, so_pin: bytes, user_pin: bytes) -> None:
    """Initialise the first uninitialised token of the module at *module_path* as *label*,
    with *so_pin*, and set its user PIN to *user_pin*."""
    padded = _blank_padded(label)
    library(module_path)  # python-pkcs11 loads and initialises the module
    module = _module(module_path)
    with TOKEN_LOCK:
        free, info = _free_slot(module, label)
        # both PINs are checked before anything changes: a refused user PIN would otherwise
        # leave an initialised token that nobody can log in to
        for what, pin in (("SO PIN", so_pin), ("PIN", user_pin)):
            if not info.min_pin_len <= len(pin) <= info.max_pin_len:
                raise PinRejected(
                    f"the {what} for token {label!r} must be {info.min_pin_len} to "
                    f"{info.max_pin_len} bytes long"
                )
        slot = c_ulong(free)
        _check(module.C_InitToken(slot, so_pin, c_ulong(len(so_pin)), padded), "C_InitToken", label)
        session = c_ulong()
        flags = c_ulong(CKF_SERIAL_SESSION | CKF_RW_SESSION)
        _check(
            module.C_OpenSession(slot, flags, None, None, byref(session)), "C_OpenSession", label
        )
        try:
            rv = module.C_Login(session, c_ulong(CKU_SO), so_pin, c_ulong(len(so_pin)))
            _check(rv, "C_Login as security officer", label)
            try:
                rv = module.C_InitPIN(session, user_pin, c_ulong(len(user_pin)))
                _check(rv, "C_InitPIN", label)
            finally:
                module.C_Logout(session)
        finally:
            module.C_CloseSession(session)
