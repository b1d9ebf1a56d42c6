"""The inventory: unique serials under concurrent issuance, batches, retries, queries."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pki_support import inventory_counts, ok_json
from pki_workers import issue_repeatedly

from devid.errors import EnvironmentProblem
from devid.keys import KeyType
from devid.pki.ca import CaRequest, init_ca, load_ca
from devid.pki.certs import load_csr, serial_hex
from devid.pki.csr import build_csr, csr_pem
from devid.pki.issue import IssueRequest, issue, issue_many
from devid.pki.profiles import PROFILES
from devid.store import CertQuery, Event, SqliteStore, Status, open_store


def _software_ca(key_file: Callable[[str], Path], name: str = "fast") -> Any:
    store = open_store()
    init_ca(CaRequest(name=name, key_ref=str(key_file("ec-p256"))), store=store)
    return store, load_ca(name)


def _device_csr(cn: str = "dev") -> bytes:
    key = KeyType.EC_P256.generate()
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    return csr_pem(build_csr(key, subject))


def test_two_processes_issue_500_each_with_unique_serials(
    pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    store, ca = _software_ca(key_file)
    url = store.url
    store.close()
    csr = _device_csr()
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        jobs = [
            pool.apply_async(issue_repeatedly, (str(pki_home), url, ca.name, csr, 500))
            for _ in range(2)
        ]
        results = [job.get(timeout=600) for job in jobs]  # re-raises a worker's error

    serials = [s for result in results for s in result]
    assert len(serials) == 1000 and len(set(serials)) == 1000
    with sqlite3.connect(pki_home / "inventory.sqlite") as db:
        recorded = [
            r[0] for r in db.execute("SELECT serial FROM certificates WHERE ca = ?", (ca.name,))
        ]
        events = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'cert.issue'").fetchone()[0]
    assert sorted(recorded) == sorted(serials)
    assert events == 1000


def test_a_serial_in_use_is_replaced_by_a_fresh_one(
    pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    store, ca = _software_ca(key_file)
    request = IssueRequest(csr=load_csr(_device_csr()), profile=PROFILES["device"])
    first = issue(ca, request, store=store)
    taken = int(first.record.serial, 16)
    sequence = iter([taken, taken, 0x1234_5678_9ABC_DEF0_1234])
    second = issue(ca, request, store=store, serials=lambda: next(sequence))
    assert second.record.serial == serial_hex(0x1234_5678_9ABC_DEF0_1234)
    assert second.certificate.serial_number == 0x1234_5678_9ABC_DEF0_1234
    assert len(store.find_certificates(CertQuery(ca=ca.name))) == 2


def test_a_batch_with_taken_serials_records_every_certificate_once(
    pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    # one serial already in the inventory and one repeated inside the batch: the batch insert
    # is refused as a whole, the refused rows are found one by one and signed again
    store, ca = _software_ca(key_file)
    first = issue(ca, IssueRequest(load_csr(_device_csr()), PROFILES["device"]), store=store)
    taken = int(first.record.serial, 16)
    base = 0x7000_0000_0000_0000_0000
    sequence = iter([base + 1, base + 2, taken, base + 4, base + 2, base + 6, base + 7])
    requests = [
        IssueRequest(csr=load_csr(_device_csr(f"dev-{n}")), profile=PROFILES["device"])
        for n in range(5)
    ]
    issued = issue_many(ca, requests, store=store, serials=lambda: next(sequence))
    assert [i.certificate.serial_number for i in issued] == [
        base + 1, base + 2, base + 6, base + 4, base + 7
    ]  # fmt: skip
    assert [i.record.serial for i in issued] == [
        serial_hex(i.certificate.serial_number) for i in issued
    ]
    recorded = store.find_certificates(CertQuery(ca=ca.name))
    assert len(recorded) == 6
    assert len(store.events(ca=ca.name)) >= 6


def test_issue_many_records_a_batch_in_one_call(
    pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    store, ca = _software_ca(key_file)
    requests = [
        IssueRequest(csr=load_csr(_device_csr(f"dev-{n}")), profile=PROFILES["device"])
        for n in range(50)
    ]
    issued = issue_many(ca, requests, store=store)
    assert [i.record.device_id for i in issued] == [f"dev-{n}" for n in range(50)]
    found = store.find_certificates(CertQuery(ca=ca.name, statuses=(Status.ISSUED,)))
    assert {r.serial for r in found} == {i.record.serial for i in issued}
    for item in issued:
        item.certificate.verify_directly_issued_by(ca.certificate)


def test_a_failing_write_records_nothing(pki_home: Path, key_file: Callable[[str], Path]) -> None:
    store, ca = _software_ca(key_file)
    before = inventory_counts(pki_home)
    request = IssueRequest(csr=load_csr(_device_csr()), profile=PROFILES["device"])

    def fail(_: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        issue_many(ca, [request], store=store, before_commit=fail)
    assert inventory_counts(pki_home) == before


def test_expiring_within_and_status_filters(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, key_file: Callable[[str], Path]
) -> None:
    ok_json(devid, "ca", "init", "ops", "--key", str(key_file("ec-p256")))
    csr = tmp_path / "d.csr"
    csr.write_bytes(_device_csr("d1"))
    short = ok_json(
        devid,
        "cert",
        "issue",
        "--ca",
        "ops",
        "--csr",
        str(csr),
        "--days",
        "10",
        "--out",
        str(tmp_path / "a.pem"),
    )
    long = ok_json(
        devid,
        "cert",
        "issue",
        "--ca",
        "ops",
        "--csr",
        str(csr),
        "--days",
        "90",
        "--out",
        str(tmp_path / "b.pem"),
    )

    soon = ok_json(devid, "cert", "list", "--ca", "ops", "--expiring-within", "30d")
    assert [r["serial"] for r in soon] == [short["serial"]]
    later = ok_json(devid, "cert", "list", "--ca", "ops", "--expiring-within", "13w")
    assert [r["serial"] for r in later] == [short["serial"], long["serial"]]

    # Revoke by serial written the way openssl prints it (upper case, with colons).
    upper = ":".join(long["serial"][i : i + 2] for i in range(0, len(long["serial"]), 2)).upper()
    ok_json(devid, "cert", "revoke", upper, "--ca", "ops", "--reason", "superseded")
    revoked = ok_json(devid, "cert", "list", "--status", "revoked")
    assert [r["serial"] for r in revoked] == [long["serial"]]
    issued = ok_json(devid, "cert", "list", "--status", "issued", "--ca", "ops")
    assert [r["serial"] for r in issued] == [short["serial"]]
    shown = ok_json(devid, "ca", "show", "ops")
    assert (shown["issued_count"], shown["revoked_count"]) == (1, 1)


def test_store_url_option_and_environment(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok_json(devid, "ca", "init", "elsewhere", "--key", str(key_file("ec-p256")))
    csr = tmp_path / "d.csr"
    csr.write_bytes(_device_csr("d1"))
    other = tmp_path / "other.sqlite"
    ok_json(
        devid, "cert", "issue", "--ca", "elsewhere", "--csr", str(csr),
        "--out", str(tmp_path / "a.pem"), "--store", f"sqlite:///{other}",
    )  # fmt: skip
    with sqlite3.connect(other) as db:  # the CA was recorded there on first use
        assert db.execute("SELECT name FROM cas").fetchall() == [("elsewhere",)]
        assert db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 1
    assert inventory_counts(pki_home)["certificates"] == 0
    monkeypatch.setenv("DEVID_STORE", str(other))
    assert len(ok_json(devid, "cert", "list")) == 1
    bad = devid("cert", "list", "--store", "postgresql://db/devid")
    assert bad.code == 2 and "sqlite" in bad.err


def test_inventory_indexes_and_wal(pki_home: Path, key_file: Callable[[str], Path]) -> None:
    _software_ca(key_file)
    with sqlite3.connect(pki_home / "inventory.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {
            r[1]: r[2]
            for r in db.execute(
                "SELECT type, name, tbl_name FROM sqlite_master WHERE type = 'index'"
            )
        }
        plan = " ".join(
            str(r) for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT serial FROM certificates WHERE not_after <= ?", ("2030",)
            )
        )  # fmt: skip
    assert "certificates_not_after" in indexes and "certificates_ca_status" in indexes
    assert "events_serial" in indexes  # rotation asks for a certificate's events per renewal
    assert "certificates_not_after" in plan


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another writer: a connection in the middle of a write transaction on *path*."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO events (at, kind, detail) VALUES ('2026-01-01', 'other', '{}')")
    return other


def test_a_writer_waits_for_another_and_then_writes(tmp_path: Path) -> None:
    path = tmp_path / "inventory.sqlite"
    store = SqliteStore(path, timeout=30)
    other = _hold_write_lock(path)
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    try:
        store.add_events([Event("mine")])  # queues behind the other writer, then writes
    finally:
        release.join()
        other.close()
    assert [e.kind for e in store.events()] == ["other", "mine"]
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000  # restored


def test_a_writer_gives_up_after_the_timeout_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "inventory.sqlite"
    store = SqliteStore(path, timeout=0.2)
    other = _hold_write_lock(path)
    try:
        with pytest.raises(EnvironmentProblem) as failed:
            store.add_events([Event("mine")])
    finally:
        other.execute("COMMIT")
        other.close()
    assert str(failed.value) == (
        f"inventory {path}: database is locked (waited 0.2 s for another writer)"
    )
    # nothing left half-open: the store writes again once the lock is free
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 200
    store.add_events([Event("mine")])
    assert [e.kind for e in store.events()] == ["other", "mine"]


def test_expired_ca_made_through_the_api_refuses_to_issue(
    pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    store = open_store()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    init_ca(CaRequest(name="old", key_ref=str(key_file("ec-p256")), days=1), store=store, now=past)
    ca = load_ca("old")
    assert ca.certificate.not_valid_after_utc < dt.datetime.now(dt.UTC)
    request = IssueRequest(csr=load_csr(_device_csr()), profile=PROFILES["device"])
    from devid.errors import CheckFailed

    with pytest.raises(CheckFailed, match="expired"):
        issue(ca, request, store=store)
