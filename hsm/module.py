"""Loading the PKCS#11 module, once per process, behind one lock.

python-pkcs11 calls ``C_Initialize(NULL)``: no locking flags, so SoftHSM turns its own
locks off and concurrent calls from several threads crash it (DESIGN.md). Every call into
the module therefore runs under :data:`TOKEN_LOCK`. After ``fork`` the child inherits a
module initialised (and logged in) by the parent, which PKCS#11 forbids using; the child
re-initialises on first use (see :func:`library`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pkcs11

from hsm.errors import ModuleNotFound

#: Serialises every call into a PKCS#11 module in this process.
TOKEN_LOCK = threading.RLock()

SOFTHSM_DEFAULT = "/usr/lib/softhsm/libsofthsm2.so"
_SOFTHSM_ALTERNATIVES = (
    SOFTHSM_DEFAULT,
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)

_generation = 0
#: python-pkcs11's ``lib`` objects (its stubs declare ``lib`` as a function, hence Any)
Lib = Any
_loaded: dict[str, tuple[Lib, int]] = {}


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1
    TOKEN_LOCK.release()


# Hold the lock across fork: a child forked while another thread was inside the module
# would inherit a lock owned by a thread that does not exist in it, and deadlock.
os.register_at_fork(
    before=TOKEN_LOCK.acquire,
    after_in_parent=TOKEN_LOCK.release,
    after_in_child=_after_fork_in_child,
)


def generation() -> int:
    """A number that changes whenever handles from before are no longer valid."""
    return _generation


def resolve_module_path(module_path: str | None = None) -> str:
    """The module from the URI, else ``DEVID_PKCS11_MODULE``, else an installed SoftHSM2."""
    chosen = module_path or os.environ.get("DEVID_PKCS11_MODULE")
    if chosen:
        if not Path(chosen).is_file():
            raise ModuleNotFound(
                f"PKCS#11 module not found: {chosen}; check module-path or DEVID_PKCS11_MODULE"
            )
        return chosen
    for candidate in _SOFTHSM_ALTERNATIVES:
        if Path(candidate).is_file():
            return candidate
    raise ModuleNotFound(
        "no PKCS#11 module: set DEVID_PKCS11_MODULE, give module-path in the URI, "
        "or install SoftHSM2 (apt-get install softhsm2)"
    )


def library(module_path: str | None = None) -> Lib:
    """The loaded module for *module_path*, initialised for this process."""
    path = resolve_module_path(module_path)
    with TOKEN_LOCK:
        cached = _loaded.get(path)
        if cached is not None:
            lib, gen = cached
            if gen != _generation:
                lib.reinitialize()
                _loaded[path] = (lib, _generation)
            return lib
        try:
            lib = pkcs11.lib(path)
        except (RuntimeError, OSError) as exc:
            raise ModuleNotFound(f"cannot load PKCS#11 module {path}: {exc}") from exc
        _loaded[path] = (lib, _generation)
        return lib


def forget_sessions() -> None:
    """Open every session anew from now on: a session the module no longer knows was met
    (the module is re-initialised at its next use, as after :func:`refresh`)."""
    global _generation
    with TOKEN_LOCK:
        _generation += 1


def refresh(module_path: str | None = None) -> None:
    """Re-initialise the module so it sees tokens created by other processes since loading.

    Every open session (and with it the login) is lost; cached sessions notice through
    :func:`generation`.
    """
    global _generation
    path = resolve_module_path(module_path)
    with TOKEN_LOCK:
        if path in _loaded:
            _generation += 1
            lib, _ = _loaded[path]
            lib.reinitialize()
            _loaded[path] = (lib, _generation)
