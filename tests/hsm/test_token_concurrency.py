"""Token keys under threads, spawned processes and fork.

SoftHSM runs without internal locks when python-pkcs11 initialises it (DESIGN.md), so hsm
serialises every module call behind ``hsm.module.TOKEN_LOCK``. PKCS#11 state (and the
login) does not survive ``fork``: hsm re-initialises the module in the child, which logs in
again with the PIN from ``DEVID_PKCS11_PIN``. Every signature made here is verified with
cryptography against the public key the parent read from the token.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from conftest import unique
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

import hsm
from devid.keys import KeyType, generate_key
from hsm.module import TOKEN_LOCK

THREADS = 8
PER_THREAD = 40
JOIN_TIMEOUT = 90  # a deadlocked child fails the test instead of hanging the suite


def sign(key: Any, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        return bytes(key.sign(data, pss, hashes.SHA256()))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return bytes(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return bytes(key.sign(data))


def verify(public: Any, signature: bytes, data: bytes) -> None:
    if isinstance(public, rsa.RSAPublicKey):
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        public.verify(signature, data, pss, hashes.SHA256())
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(signature, data)


@pytest.fixture(scope="module")
def token_keys(token_uri: str) -> Iterator[dict[str, Any]]:
    made = {}
    for key_type in ("rsa-2048", "ec-p256", "ed25519"):
        key, _ = generate_key(KeyType(key_type), token=token_uri, label=unique(f"mt-{key_type}"))
        made[key_type] = key
    yield made
    for key in made.values():
        hsm.delete_key(key.reference)


# --- threads ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ed25519"])
def test_one_key_signs_from_eight_threads(key_type: str, token_keys: dict[str, Any]) -> None:
    key = token_keys[key_type]
    start = threading.Barrier(THREADS)

    def worker(n: int) -> list[tuple[bytes, bytes]]:
        start.wait()
        out = []
        for i in range(PER_THREAD):
            data = f"thread {n} message {i}".encode()
            out.append((data, sign(key, data)))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    signed = [pair for batch in results for pair in batch]
    assert len(signed) == THREADS * PER_THREAD
    for data, signature in signed:
        verify(key.public_key(), signature, data)


def test_threads_load_by_uri_and_sign_with_different_keys(token_keys: dict[str, Any]) -> None:
    """Each thread loads its own key object by URI (session lookup races) and signs."""
    refs = [key.reference for key in token_keys.values()]
    start = threading.Barrier(THREADS)

    def worker(n: int) -> tuple[str, list[tuple[bytes, bytes]]]:
        start.wait()
        ref = refs[n % len(refs)]
        key = hsm.load_key(ref)
        out = []
        for i in range(PER_THREAD // 2):
            data = f"{ref} {n} {i}".encode()
            out.append((data, sign(key, data)))
        return ref, out

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    publics = {key.reference: key.public_key() for key in token_keys.values()}
    for ref, signed in results:
        for data, signature in signed:
            verify(publics[ref], signature, data)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_signing_survives_module_refresh_in_another_thread(token_keys: dict[str, Any]) -> None:
    """``hsm.list_tokens()`` re-initialises the module (to see tokens made by other
    processes), which invalidates every session and object handle. Threads signing at the
    same time, or loading keys, must re-open and go on, not fail with a stale handle."""
    key = token_keys["ec-p256"]
    stop = threading.Event()
    refreshes = []

    def lister() -> None:
        while not stop.is_set():
            refreshes.append(len(hsm.list_tokens()))

    def signer(n: int) -> list[tuple[bytes, bytes]]:
        own = hsm.load_key(key.reference) if n % 2 else key
        return [(b"%d-%d" % (n, i), sign(own, b"%d-%d" % (n, i))) for i in range(PER_THREAD)]

    background = threading.Thread(target=lister)
    background.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(signer, range(4)))
    finally:
        stop.set()
        background.join(JOIN_TIMEOUT)
    assert refreshes and all(count >= 1 for count in refreshes)
    for batch in results:
        for data, signature in batch:
            verify(key.public_key(), signature, data)


# --- processes --------------------------------------------------------------------------


def _sign_in_child(ref: str, data: bytes) -> tuple[int, str, bytes]:
    """Runs in a child process: load the key by URI, sign, report who did it."""
    key = hsm.load_key(ref)
    return os.getpid(), key.reference, sign(key, data)


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ed25519"])
def test_spawned_processes_load_the_key_by_uri_and_sign(
    key_type: str, token_keys: dict[str, Any]
) -> None:
    key = token_keys[key_type]
    context = multiprocessing.get_context("spawn")
    messages = [f"spawned {key_type} {i}".encode() for i in range(4)]
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [pool.submit(_sign_in_child, key.reference, data) for data in messages]
        results = [f.result(timeout=JOIN_TIMEOUT) for f in futures]
    for data, (pid, reference, signature) in zip(messages, results, strict=True):
        assert pid != os.getpid()
        assert reference == key.reference
        verify(key.public_key(), signature, data)
    # The children's logins and C_Finalize did not disturb this process's session.
    verify(key.public_key(), sign(key, b"parent after children"), b"parent after children")


def test_many_fresh_processes_log_in_at_once(token_keys: dict[str, Any]) -> None:
    """Every task in a fresh spawned process, four at a time: each logs in while others
    read the token. SoftHSM rewrites its token file on every login, and a process reading
    it meanwhile got CKR_GENERAL_ERROR or "token not found"; hsm asks again instead."""
    key = token_keys["ec-p256"]
    context = multiprocessing.get_context("spawn")
    messages = [f"fresh process {i}".encode() for i in range(8)]
    with ProcessPoolExecutor(max_workers=4, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_sign_in_child, key.reference, data) for data in messages]
        results = [f.result(timeout=JOIN_TIMEOUT) for f in futures]
    assert len({pid for pid, _, _ in results}) == len(messages)
    for data, (_, _, signature) in zip(messages, results, strict=True):
        verify(key.public_key(), signature, data)


def _run_forked(target: Callable[..., None], *args: Any) -> tuple[str, Any]:
    """Run *target(results, *args)* in a child made by ``fork``; return what it put."""
    context = multiprocessing.get_context("fork")
    results: Any = context.Queue()
    child = context.Process(target=target, args=(results, *args))
    child.start()
    try:
        outcome: tuple[str, Any] = results.get(timeout=JOIN_TIMEOUT)
    except queue.Empty:
        outcome = ("timeout", "the forked child did not answer (deadlocked?)")
    finally:
        child.join(JOIN_TIMEOUT)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0 or outcome[0] == "timeout", f"child exit code {child.exitcode}"
    return outcome


def _forked_sign(results: Any, key: Any, data: bytes) -> None:
    """In the child: sign with the key object inherited from the parent and with a fresh
    one loaded by URI; report the signatures or the error."""
    try:
        inherited = sign(key, data)
        fresh = sign(hsm.load_key(key.reference), data)
        results.put(("ok", (inherited, fresh)))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _forked_sign_without_pin(results: Any, key: Any, data: bytes) -> None:
    os.environ.pop("DEVID_PKCS11_PIN", None)
    try:
        sign(key, data)
        results.put(("ok", None))
    except hsm.HsmError as exc:
        results.put(("error", (type(exc).__name__, str(exc))))


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ed25519"])
def test_signing_works_in_a_forked_child(key_type: str, token_keys: dict[str, Any]) -> None:
    key = token_keys[key_type]
    sign(key, b"parent is logged in and has open handles before the fork")
    status, value = _run_forked(_forked_sign, key, b"signed after fork")
    assert status == "ok", value
    for signature in value:
        verify(key.public_key(), signature, b"signed after fork")
    verify(key.public_key(), sign(key, b"parent after fork"), b"parent after fork")


def test_forked_child_logs_in_again(token_keys: dict[str, Any]) -> None:
    """The child does not ride on the parent's login: hsm re-initialised the module, so
    without ``DEVID_PKCS11_PIN`` the child has no PIN to log in with."""
    key = token_keys["ec-p256"]
    sign(key, b"parent logged in")
    status, value = _run_forked(_forked_sign_without_pin, key, b"no pin")
    assert status == "error", "the child signed without logging in: module not re-initialised"
    name, message = value
    assert name == "PinRequired"
    assert "DEVID_PKCS11_PIN" in message and "\n" not in message


def test_fork_while_another_thread_is_inside_the_module(token_keys: dict[str, Any]) -> None:
    """Fork while a thread holds TOKEN_LOCK: the child must not inherit a lock owned by a
    thread that does not exist in it (it would deadlock on its first token call)."""
    key = token_keys["ec-p256"]
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with TOKEN_LOCK:
            held.set()
            release.wait(0.5)  # fork waits for this release; it never happens in the child

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(JOIN_TIMEOUT)
    try:
        status, value = _run_forked(_forked_sign, key, b"forked under a held lock")
    finally:
        release.set()
        thread.join(JOIN_TIMEOUT)
    assert status == "ok", value
    for signature in value:
        verify(key.public_key(), signature, b"forked under a held lock")


# --- a module refresh between two steps of one operation -------------------------------------


def _refresh_at_scan(monkeypatch: pytest.MonkeyPatch, at: int) -> list[int]:
    """Re-initialise the module during the *at*-th token scan, as a scan does when another
    process is rewriting the token file (provisioning workers): sessions opened before that
    are gone, and the operation in progress must open new ones."""
    import hsm.keygen
    import hsm.session
    from hsm.module import refresh

    real = hsm.session.find_token
    scans: list[int] = []

    def scan(uri: Any) -> Any:
        scans.append(1)
        if len(scans) == at:
            refresh(uri.module_path)
        return real(uri)

    monkeypatch.setattr(hsm.session, "find_token", scan)
    monkeypatch.setattr(hsm.keygen, "find_token", scan)
    return scans


@pytest.mark.parametrize("at", range(1, 8))
def test_generate_load_and_sign_survive_a_refresh_at_any_token_scan(
    token_uri: str, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    label = unique("refresh")
    scans = _refresh_at_scan(monkeypatch, at)
    made = hsm.generate_keypair(hsm.parse_uri(token_uri), KeyType.EC_P256.token_spec(), label=label)
    loaded = hsm.load_key(made.reference)
    verify(made.public_key(), sign(loaded, b"after a refresh"), b"after a refresh")
    assert len(scans) >= at  # the refresh did happen inside the operations above
    assert len(hsm.list_keys(hsm.parse_uri(f"{token_uri};object={label}"))) == 2  # one pair
