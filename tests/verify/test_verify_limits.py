"""The bounds on devid's path search: pool preparation, the deadline worker, bad arguments.

No timing assertions: each test checks *what* comes back (a verdict, or a "search limit
reached" reason), never how long it took. The deadline test uses a task that would sleep far
longer than its deadline.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from verify_cases import NOW, Issued, Spec, ca, device, make, new_key, root

from devid.errors import BadInput
from devid.pki import verify as verify_module
from devid.pki.verify import SearchLimits, prepare_pool, verify_chain


def two_level() -> tuple[Issued, Issued, Issued]:
    r = root()
    i = ca("Issuing CA", r)
    return r, i, device(i)


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"purpose": "email"}, "unknown purpose"),
        ({"max_depth": -1}, "bad maximum depth"),
        ({"max_depth": 256}, "bad maximum depth"),
    ],
)
def test_bad_arguments_are_bad_input(kwargs: dict[str, object], message: str) -> None:
    r, i, leaf = two_level()
    with pytest.raises(BadInput, match=message) as caught:
        verify_chain(leaf.cert, roots=[r.cert], intermediates=[i.cert], **kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == 2


def test_no_roots_is_bad_input() -> None:
    _, i, leaf = two_level()
    with pytest.raises(BadInput, match="no trusted root"):
        verify_chain(leaf.cert, roots=[], intermediates=[i.cert])


def test_naive_time_means_utc() -> None:
    r, i, _ = two_level()
    leaf = device(i, not_before=NOW - 10 * dt.timedelta(days=1), not_after=NOW)
    naive = NOW.replace(tzinfo=None)
    before = verify_chain(
        leaf.cert, roots=[r.cert], intermediates=[i.cert], at=naive - dt.timedelta(seconds=5)
    )
    after = verify_chain(
        leaf.cert, roots=[r.cert], intermediates=[i.cert], at=naive + dt.timedelta(seconds=5)
    )
    assert before.ok, before.reason
    assert not after.ok
    assert after.reason.startswith("certificate expired at ")


# --- pool preparation -------------------------------------------------------------------------


def test_pool_drops_duplicates_and_certificates_that_can_never_be_candidates() -> None:
    r, i, leaf = two_level()
    unrelated = [ca(f"Unrelated {n}", r).cert for n in range(5)]
    pool = prepare_pool(leaf.cert, [r.cert], [*unrelated, i.cert, i.cert, r.cert], when=NOW)
    assert pool.certs == [i.cert, r.cert]  # nearest to the leaf first
    assert pool.set_aside == 0
    assert pool.note == ""


def test_pool_is_capped_per_subject_and_in_total() -> None:
    r = root()
    level1 = [ca("Level 1", r) for _ in range(5)]
    level2 = [ca("Level 2", level1[0]) for _ in range(5)]
    leaf = device(level2[0])
    limits = SearchLimits(per_subject=2, intermediates=3)
    pool = prepare_pool(
        leaf.cert, [r.cert], [c.cert for c in [*level1, *level2]], when=NOW, limits=limits
    )
    assert len(pool.certs) == 3
    assert pool.certs[0] is level2[0].cert  # its key is the one the leaf names
    assert pool.certs[2] is level1[0].cert  # the one level2[0] names
    assert pool.set_aside == 7
    assert "5 candidates named CN=Level 2" in pool.note
    assert "(limit 3)" in pool.note


def test_likeliest_candidates_come_first() -> None:
    """Valid in time before expired, not self-issued before self-issued, under a root first."""
    r = root()
    key = new_key()
    expired = ca("Cross", r, key=key, not_before=NOW - dt.timedelta(days=9), not_after=NOW)
    bridge = ca("Cross", r, key=key)
    looped = make(Spec("Cross", ca=True), issuer=bridge, key=key)
    elsewhere = ca("Cross", root("Elsewhere"), key=key)
    leaf = device(bridge)
    pool = prepare_pool(
        leaf.cert,
        [r.cert],
        [expired.cert, looped.cert, elsewhere.cert, bridge.cert],
        when=NOW + dt.timedelta(seconds=1),
    )
    assert pool.certs == [bridge.cert, elsewhere.cert, looped.cert, expired.cert]


def test_a_flood_of_duplicates_is_harmless() -> None:
    r, i, leaf = two_level()
    result = verify_chain(leaf.cert, roots=[r.cert], intermediates=[i.cert] * 200_000)
    assert result.ok, result.reason


def test_a_subject_flooded_with_lying_key_ids_hits_the_limit_with_a_clear_reason() -> None:
    """The documented trade-off: past ``per_subject`` look-alikes, devid stops and says so.

    Every decoy claims the real CA's subject key identifier but holds another key, and the
    real CA comes last. cryptography alone (its pool unbounded) spends a signature check on
    each and finds it; devid keeps the first ``per_subject`` and reports the limit. Raising
    the limit finds the path.
    """
    r = root()
    real = ca("Issuing CA", r)
    lying = real.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    decoys = [ca("Issuing CA", r, ski_digest=lying) for _ in range(20)]
    leaf = device(real)
    pool = [*(d.cert for d in decoys), real.cert]
    plain = PolicyBuilder().store(Store([r.cert])).time(NOW).build_client_verifier()
    assert plain.verify(leaf.cert, pool).chain[1] == real.cert

    limited = verify_chain(leaf.cert, roots=[r.cert], intermediates=pool, at=NOW)
    assert not limited.ok
    assert limited.reason.startswith("search limit reached (21 candidates named CN=Issuing CA")
    assert "(limit 16)" in limited.reason

    roomy = verify_chain(
        leaf.cert, roots=[r.cert], intermediates=pool, at=NOW, limits=SearchLimits(per_subject=32)
    )
    assert roomy.ok, roomy.reason


def test_a_big_mesh_with_decoys_returns_a_verdict() -> None:
    """64 self-issued CAs with one subject and key signing each other, 300 decoys on top."""
    r = root()
    key = new_key()
    bridge = ca("Mesh", r, key=key)
    mesh = [make(Spec("Mesh", ca=True), issuer=bridge, key=key).cert for _ in range(64)]
    decoys = [ca("Mesh", r).cert for _ in range(300)]
    leaf = device(bridge)
    for roots, expect in (([r.cert], True), ([root("Nobody").cert], False)):
        result = verify_chain(leaf.cert, roots=roots, intermediates=[*decoys, *mesh, bridge.cert])
        assert result.ok == expect or result.reason.startswith("search limit reached"), (
            result.reason
        )
        if not result.ok:
            assert result.reason.startswith(("search limit reached", "no path to a trusted root"))


def test_two_cas_signing_each_other_are_named_a_loop_not_a_depth_limit() -> None:
    # A is issued by B and B by A, with no way to a trusted root: cryptography runs into
    # its depth limit going round; the reason says what is wrong
    key_a, key_b = new_key(), new_key()
    name_holder = make(Spec("B", ca=True, aki=False), key=key_b)
    a = ca("A", name_holder, key=key_a)
    b = make(Spec("B", ca=True), issuer=a, key=key_b)
    leaf = device(a)
    result = verify_chain(leaf.cert, roots=[root("Trusted").cert], intermediates=[a.cert, b.cert])
    assert not result.ok
    assert result.reason.startswith("no path to a trusted root: the intermediates only lead")
    # a genuinely long chain beyond --max-depth keeps the depth reason
    r = root()
    chain = [ca("L0", r)]
    for n in range(1, 4):
        chain.append(ca(f"L{n}", chain[-1]))
    deep = device(chain[-1])
    result = verify_chain(
        deep.cert, roots=[r.cert], intermediates=[c.cert for c in chain], max_depth=2
    )
    assert not result.ok and "within 2 intermediates" in result.reason, result.reason


# --- the deadline worker ----------------------------------------------------------------------


def _sleeps() -> tuple[bool, str, list[bytes]]:
    time.sleep(120)
    return True, "ok", []


def _dies() -> tuple[bool, str, list[bytes]]:
    os._exit(7)


def _raises() -> tuple[bool, str, list[bytes]]:
    raise RuntimeError("boom")


def test_a_worker_past_its_deadline_is_killed_with_a_limit_reason() -> None:
    ok, reason, chain = verify_module._run_bounded(_sleeps, 0.5)
    assert (ok, chain) == (False, [])
    assert reason == "search limit reached: no result within 0.5 s"


def test_a_dead_worker_is_reported() -> None:
    ok, reason, _ = verify_module._run_bounded(_dies, 30)
    assert not ok
    assert reason == "verification did not finish: worker exited with 7"


def test_a_failing_worker_is_reported() -> None:
    ok, reason, _ = verify_module._run_bounded(_raises, 30)
    assert not ok
    assert reason == "verification failed unexpectedly: boom"


def test_without_fork_it_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    parent = os.getpid()

    def where() -> tuple[bool, str, list[bytes]]:
        return True, str(os.getpid()), []

    assert verify_module._run_bounded(where, 30) == (True, str(parent), [])
    r, i, leaf = two_level()
    assert verify_chain(leaf.cert, roots=[r.cert], intermediates=[i.cert]).ok
