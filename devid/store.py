"""The inventory: CAs, certificates, revocations and events, behind a small interface.

:class:`Store` is what the rest of devid uses; :class:`SqliteStore` implements it on one SQLite
file (WAL mode and a busy timeout, so several processes can issue at once; write transactions
start with ``BEGIN IMMEDIATE`` so they queue instead of failing on a lock upgrade, trying
again every 2 ms at most while another process writes). A
PostgreSQL backend would implement the same protocol and be picked by :func:`open_store`
from the URL scheme.

Certificate serials are unique in the whole inventory (a UNIQUE constraint, not a check
then insert): :meth:`Store.add_certificates` reports which records it refused so the issuer
can sign those again with fresh serials.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devid.errors import BadInput, Conflict, EnvironmentProblem, NotFound
from devid.home import devid_home

DEFAULT_FILE = "inventory.sqlite"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Status(enum.Enum):
    ISSUED = "issued"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"

    @classmethod
    def parse(cls, text: str) -> Status:
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise BadInput(f"unknown status {text!r}; choose {names}") from None


@dataclass(frozen=True)
class CaRecord:
    name: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    key_ref: str
    directory: str
    pem: str
    parent: str | None = None
    created_at: dt.datetime = field(default_factory=_now)


@dataclass(frozen=True)
class CertRecord:
    serial: str
    ca: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    aws_iot_id: str
    pem: str
    sans: tuple[str, ...] = ()
    status: Status = Status.ISSUED
    profile: str | None = None
    key_ref: str | None = None
    device_id: str | None = None
    path: str | None = None
    replaces: str | None = None
    issued_at: dt.datetime = field(default_factory=_now)


@dataclass(frozen=True)
class Revocation:
    serial: str
    ca: str
    reason: str
    revoked_at: dt.datetime


@dataclass(frozen=True)
class Event:
    kind: str
    ca: str | None = None
    serial: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: dt.datetime = field(default_factory=_now)


@dataclass(frozen=True)
class IotRegistration:
    """A certificate (or CA certificate) registered in AWS IoT, as AWS last reported it.

    Keyed by the ARN (the same certificate may be registered in several accounts/Regions);
    *certificate_id* is the AWS IoT id (SHA-256 of the DER), *serial* links a certificate
    devid issued, *ca* names the devid CA (the CA itself for ``kind == "ca"``).
    """

    arn: str
    certificate_id: str
    status: str
    kind: str = "certificate"
    ca: str | None = None
    serial: str | None = None
    mode: str | None = None
    updated_at: dt.datetime = field(default_factory=_now)


@dataclass(frozen=True)
class CertQuery:
    """Filters for :meth:`Store.find_certificates`; None / empty means "any"."""

    ca: str | None = None
    statuses: tuple[Status, ...] = ()
    not_after_before: dt.datetime | None = None
    device_id: str | None = None
    path: str | None = None
    limit: int | None = None


class Store(Protocol):
    """What devid needs from an inventory backend."""

    url: str

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def add_ca(self, record: CaRecord) -> None: ...
    def get_ca(self, name: str) -> CaRecord | None: ...
    def list_cas(self) -> list[CaRecord]: ...
    def add_certificates(self, records: Sequence[CertRecord]) -> list[int]: ...
    def get_certificate(self, serial: str) -> CertRecord | None: ...
    def find_certificates(self, query: CertQuery) -> list[CertRecord]: ...
    def status_counts(self, ca: str) -> dict[Status, int]: ...
    def set_status(self, serial: str, status: Status) -> None: ...
    def revoke(self, revocation: Revocation) -> None: ...
    def revocations(self, ca: str) -> list[Revocation]: ...
    def next_crl_number(self, ca: str) -> int: ...
    def add_event(self, event: Event) -> None: ...
    def add_events(self, events: Sequence[Event]) -> None: ...
    def events(
        self, *, ca: str | None = None, serial: str | None = None, kind: str | None = None
    ) -> list[Event]: ...
    def record_iot_registration(self, registration: IotRegistration) -> None: ...
    def iot_registrations(self, *, certificate_id: str | None = None) -> list[IotRegistration]: ...
    def close(self) -> None: ...


def store_url(url: str | None = None) -> str:
    """*url*, else ``DEVID_STORE``, else SQLite in the data directory."""
    return url or os.environ.get("DEVID_STORE") or f"sqlite:///{devid_home() / DEFAULT_FILE}"


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """The inventory at *url* (``sqlite:///abs/path``, ``sqlite:rel/path`` or a bare path).

    Without *create*, a missing inventory is :class:`NotFound` instead of made empty: for
    commands that only work on what is recorded (a mistyped ``DEVID_HOME`` in a cron job
    must fail, not find nothing to do).
    """
    resolved = store_url(url)
    scheme, sep, rest = resolved.partition(":")
    if not sep or "/" in scheme or len(scheme) == 1:  # a bare path (or C:\...)
        return SqliteStore(Path(resolved), create=create)
    if scheme.lower() == "sqlite":
        rest = rest[2:] if rest.startswith("//") else rest
        if not rest:
            raise BadInput(f"store URL {resolved!r} names no file")
        return SqliteStore(Path(rest), create=create)
    raise BadInput(f"unsupported store URL scheme {scheme!r}; devid has a sqlite: backend")


def _ts(value: dt.datetime) -> str:
    if value.tzinfo is dt.UTC:
        return value.isoformat(timespec="seconds")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def _dt(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cas (
    name TEXT PRIMARY KEY, subject TEXT NOT NULL, parent TEXT REFERENCES cas(name),
    not_before TEXT NOT NULL, not_after TEXT NOT NULL, fingerprint TEXT NOT NULL,
    key_ref TEXT NOT NULL, directory TEXT NOT NULL, pem TEXT NOT NULL,
    crl_number INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT NOT NULL UNIQUE, ca TEXT NOT NULL REFERENCES cas(name),
    subject TEXT NOT NULL, sans TEXT NOT NULL, not_before TEXT NOT NULL,
    not_after TEXT NOT NULL, status TEXT NOT NULL, profile TEXT, key_ref TEXT, device_id TEXT,
    fingerprint TEXT NOT NULL, aws_iot_id TEXT NOT NULL, path TEXT, replaces TEXT,
    issued_at TEXT NOT NULL, pem TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates(not_after);
CREATE INDEX IF NOT EXISTS certificates_ca_status ON certificates(ca, status);
CREATE INDEX IF NOT EXISTS certificates_device ON certificates(device_id);
CREATE TABLE IF NOT EXISTS revocations (
    serial TEXT PRIMARY KEY, ca TEXT NOT NULL REFERENCES cas(name), reason TEXT NOT NULL,
    revoked_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS revocations_ca ON revocations(ca);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL, ca TEXT,
    serial TEXT, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
CREATE INDEX IF NOT EXISTS events_serial ON events(serial);
CREATE TABLE IF NOT EXISTS aws_iot (
    arn TEXT PRIMARY KEY, certificate_id TEXT NOT NULL, status TEXT NOT NULL,
    kind TEXT NOT NULL, ca TEXT, serial TEXT, mode TEXT, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS aws_iot_certificate ON aws_iot(certificate_id);
"""
_INSERT_CERT = (
    "INSERT INTO certificates (serial, ca, subject, sans, not_before, not_after, status, "
    "profile, key_ref, device_id, fingerprint, aws_iot_id, path, replaces, issued_at, pem) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_SELECT_CERT = (
    "SELECT serial, ca, subject, sans, not_before, not_after, status, profile, key_ref, "
    "device_id, fingerprint, aws_iot_id, path, replaces, issued_at, pem FROM certificates"
)
_SELECT_EVENT = "SELECT kind, ca, serial, detail, at FROM events"
_INSERT_CA = (
    "INSERT INTO cas (name, subject, parent, not_before, not_after, fingerprint, key_ref, "
    "directory, pem, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_SELECT_CA = (
    "SELECT name, subject, parent, not_before, not_after, fingerprint, key_ref, directory, "
    "pem, created_at FROM cas"
)


class SqliteStore:
    """:class:`Store` on one SQLite file."""

    def __init__(self, path: Path, *, timeout: float = 60.0, create: bool = True) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._depth = 0
        self._timeout = timeout
        if not create and not path.is_file():
            raise NotFound(
                f"no inventory at {path}: nothing was issued with this DEVID_HOME "
                "(or --store / DEVID_STORE)"
            )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise EnvironmentProblem(f"cannot open the inventory {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested calls join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        try:
            yield
            self._execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``: take the write lock, waiting for other writers in short steps.

        SQLite's own busy handler sleeps 1, 2, 5, 10, 15... ms between tries, so a writer
        queued behind another's 12 ms transaction got in after 18 ms (measured with two
        issuing processes, bench/RESULTS.md). Trying again every 0.2 ms, doubling to at most
        2 ms, lets it in within 2 ms of the release. Gives up after the store's timeout.
        """
        deadline = time.monotonic() + self._timeout
        delay = 0.0002
        self._execute("PRAGMA busy_timeout = 0")  # a busy lock fails at once: we wait here
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.Error as exc:
                    code = getattr(exc, "sqlite_errorcode", None)  # extended: BUSY_RECOVERY...
                    busy = code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() >= deadline:
                        waited = f" (waited {self._timeout:g} s for another writer)" if busy else ""
                        raise EnvironmentProblem(f"inventory {self.path}: {exc}{waited}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            self._execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise EnvironmentProblem(f"inventory {self.path}: {exc}") from exc

    # CAs

    def add_ca(self, record: CaRecord) -> None:
        values = (
            record.name, record.subject, record.parent, _ts(record.not_before),
            _ts(record.not_after), record.fingerprint, record.key_ref, record.directory,
            record.pem, _ts(record.created_at),
        )  # fmt: skip
        try:
            self._execute(_INSERT_CA, values)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY" in str(exc):
                raise Conflict(f"CA {record.name!r} exists in the inventory") from exc
            raise NotFound(f"parent CA {record.parent!r} is not in the inventory") from exc

    def get_ca(self, name: str) -> CaRecord | None:
        row = self._execute(_SELECT_CA + " WHERE name = ?", (name,)).fetchone()
        return _ca_record(row) if row else None

    def list_cas(self) -> list[CaRecord]:
        rows = self._execute(_SELECT_CA + " ORDER BY name")
        return [_ca_record(r) for r in rows.fetchall()]

    def next_crl_number(self, ca: str) -> int:
        with self.transaction():
            row = self._execute(
                "UPDATE cas SET crl_number = crl_number + 1 WHERE name = ? RETURNING crl_number",
                (ca,),
            ).fetchone()
        if row is None:
            raise NotFound(f"CA {ca!r} is not in the inventory")
        return int(row[0])

    # Certificates

    def add_certificates(self, records: Sequence[CertRecord]) -> list[int]:
        """Insert *records* in one transaction; return the positions refused as duplicates."""
        rows = [_cert_row(r) for r in records]
        with self.transaction():
            # All at once; should one be refused, undo them and find which, one by one.
            self._execute("SAVEPOINT add_certificates")
            try:
                self._db.executemany(_INSERT_CERT, rows)
            except sqlite3.IntegrityError:
                self._execute("ROLLBACK TO add_certificates")
            except sqlite3.Error as exc:
                raise EnvironmentProblem(f"inventory {self.path}: {exc}") from exc
            else:
                self._execute("RELEASE add_certificates")
                return []
            self._execute("RELEASE add_certificates")
            return self._add_one_by_one(records, rows)

    def _add_one_by_one(
        self, records: Sequence[CertRecord], rows: Sequence[tuple[Any, ...]]
    ) -> list[int]:
        duplicates: list[int] = []
        for n, (record, row) in enumerate(zip(records, rows, strict=True)):
            try:
                self._execute(_INSERT_CERT, row)
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise NotFound(f"CA {record.ca!r} is not in the inventory") from exc
                duplicates.append(n)
        return duplicates

    def get_certificate(self, serial: str) -> CertRecord | None:
        row = self._execute(_SELECT_CERT + " WHERE serial = ?", (serial,)).fetchone()
        return _cert_record(row) if row else None

    def find_certificates(self, query: CertQuery) -> list[CertRecord]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if query.ca is not None:
            where.append("ca = ?")
            params.append(query.ca)
        if query.statuses:
            where.append(f"status IN ({','.join('?' * len(query.statuses))})")
            params.extend(s.value for s in query.statuses)
        if query.not_after_before is not None:
            where.append("not_after <= ?")
            params.append(_ts(query.not_after_before))
        if query.device_id is not None:
            where.append("device_id = ?")
            params.append(query.device_id)
        if query.path is not None:
            where.append("path = ?")
            params.append(query.path)
        # Only fixed fragments are joined here; every value is a bound parameter.
        sql = f"{_SELECT_CERT} WHERE {' AND '.join(where)}"
        sql += " ORDER BY not_after, serial"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [_cert_record(r) for r in self._execute(sql, params).fetchall()]

    def status_counts(self, ca: str) -> dict[Status, int]:
        rows = self._execute(
            "SELECT status, COUNT(*) FROM certificates WHERE ca = ? GROUP BY status", (ca,)
        ).fetchall()
        counts = dict.fromkeys(Status, 0)
        counts.update({Status(status): int(n) for status, n in rows})
        return counts

    def set_status(self, serial: str, status: Status) -> None:
        with self.transaction():
            cursor = self._execute(
                "UPDATE certificates SET status = ? WHERE serial = ?", (status.value, serial)
            )
        if cursor.rowcount == 0:
            raise NotFound(f"certificate {serial} is not in the inventory")

    # Revocations and events

    def revoke(self, revocation: Revocation) -> None:
        with self.transaction():
            try:
                self._execute(
                    "INSERT INTO revocations (serial, ca, reason, revoked_at) VALUES (?,?,?,?)",
                    (
                        revocation.serial,
                        revocation.ca,
                        revocation.reason,
                        _ts(revocation.revoked_at),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"certificate {revocation.serial} is already revoked") from exc
            self._execute(
                "UPDATE certificates SET status = ? WHERE serial = ?",
                (Status.REVOKED.value, revocation.serial),
            )

    def revocations(self, ca: str) -> list[Revocation]:
        rows = self._execute(
            "SELECT serial, ca, reason, revoked_at FROM revocations WHERE ca = ? "
            "ORDER BY revoked_at, serial",
            (ca,),
        ).fetchall()
        return [Revocation(r[0], r[1], r[2], _dt(r[3])) for r in rows]

    def add_event(self, event: Event) -> None:
        self.add_events([event])

    def add_events(self, events: Sequence[Event]) -> None:
        rows = [(_ts(e.at), e.kind, e.ca, e.serial, json.dumps(e.detail)) for e in events]
        with self.transaction():
            try:
                self._db.executemany(
                    "INSERT INTO events (at, kind, ca, serial, detail) VALUES (?,?,?,?,?)", rows
                )
            except sqlite3.Error as exc:
                raise EnvironmentProblem(f"inventory {self.path}: {exc}") from exc

    def events(
        self, *, ca: str | None = None, serial: str | None = None, kind: str | None = None
    ) -> list[Event]:
        given = {"ca = ?": ca, "serial = ?": serial, "kind = ?": kind}
        # Only the fixed fragments above are joined in; every value is a bound parameter.
        where = " AND ".join(["1 = 1", *(test for test, v in given.items() if v is not None)])
        sql = f"{_SELECT_EVENT} WHERE {where} ORDER BY id"
        rows = self._execute(sql, [v for v in given.values() if v is not None]).fetchall()
        return [Event(r[0], r[1], r[2], json.loads(r[3]), _dt(r[4])) for r in rows]

    # AWS IoT registrations

    def record_iot_registration(self, registration: IotRegistration) -> None:
        """Insert or replace the row for *registration.arn* (AWS's latest word wins)."""
        r = registration
        values = (r.arn, r.certificate_id, r.status, r.kind, r.ca, r.serial, r.mode,
                  _ts(r.updated_at))  # fmt: skip
        with self.transaction():
            self._execute(
                "INSERT OR REPLACE INTO aws_iot (arn, certificate_id, status, kind, ca, serial, "
                "mode, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                values,
            )

    def iot_registrations(self, *, certificate_id: str | None = None) -> list[IotRegistration]:
        rows = self._execute(
            "SELECT arn, certificate_id, status, kind, ca, serial, mode, updated_at FROM aws_iot "
            "WHERE (? IS NULL OR certificate_id = ?) ORDER BY updated_at, arn",
            (certificate_id, certificate_id),
        ).fetchall()
        return [IotRegistration(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _dt(r[7])) for r in rows]


def _ca_record(row: Sequence[Any]) -> CaRecord:
    name, subject, parent, nb, na, fp, key_ref, directory, pem, created = row
    return CaRecord(
        name, subject, _dt(nb), _dt(na), fp, key_ref, directory, pem, parent, _dt(created)
    )


def _cert_row(r: CertRecord) -> tuple[Any, ...]:
    return (
        r.serial, r.ca, r.subject, json.dumps(list(r.sans)), _ts(r.not_before),
        _ts(r.not_after), r.status.value, r.profile, r.key_ref, r.device_id, r.fingerprint,
        r.aws_iot_id, r.path, r.replaces, _ts(r.issued_at), r.pem,
    )  # fmt: skip


def _cert_record(row: Sequence[Any]) -> CertRecord:
    serial, ca, subject, sans, nb, na, status, profile, key_ref, device_id = row[:10]
    fingerprint, iot_id, path, replaces, issued_at, pem = row[10:]
    return CertRecord(
        serial, ca, subject, _dt(nb), _dt(na), fingerprint, iot_id, pem,
        tuple(json.loads(sans)), Status(status), profile, key_ref, device_id, path, replaces,
        _dt(issued_at),
    )  # fmt: skip
