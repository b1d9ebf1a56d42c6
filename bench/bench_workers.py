"""devid's batch issuance in several spawned processes, each issuing a share of the batch.

Each worker is a ``spawn``ed process (never a thread, never ``fork``: PKCS#11 logins and
sessions belong to a process and SoftHSM runs without locks under python-pkcs11; DESIGN.md).
At start it loads the CAs and their keys once — a token CA key logs in to the token in that
process, with its own session — and says it is ready; only then does timing start, as for
a long-running issuing service. A job is ``issue_many`` on the worker's share with its own
connection to the shared SQLite inventory (WAL; write transactions queue), the same pattern
``devid.provision_pool`` uses.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any


def _serve(conn: Connection, ca_names: Sequence[str]) -> None:
    from bench_loops import devid_certificates
    from cryptography import x509

    from devid.pki.ca import load_ca

    try:
        keys = {name: load_ca(name).signing_key() for name in ca_names}
    except Exception as exc:  # reported to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        job = conn.recv()
        if job is None:
            return
        if job[0] == "spin":
            conn.send(("done", _spin(job[1])))
            continue
        ca_name, store_url, ders = job
        try:
            csrs = [x509.load_der_x509_csr(d) for d in ders]
            issued = devid_certificates(ca_name, keys[ca_name], csrs, store_url)
            conn.send(("done", len(issued)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _spin(count: int) -> int:
    """*count* ECDSA P-256 signatures with a software key: CPU work and nothing else."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(count):
        key.sign(b"calibration", ec.ECDSA(hashes.SHA256()))
    return count


class WorkerGroup:
    """*count* spawned issuing processes; use as a context manager."""

    def __init__(self, count: int, ca_names: Sequence[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=_serve, args=(child, list(ca_names)), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            self._expect(conn, "ready")

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *_: object) -> None:
        for conn in self._conns:
            conn.send(None)
        for proc in self._procs:
            proc.join(timeout=30)

    @staticmethod
    def _expect(conn: Connection, what: str) -> Any:
        kind, value = conn.recv()
        if kind != what:
            raise RuntimeError(f"issuing worker failed: {value}")
        return value

    def issue(self, ca_name: str, store_url: str, ders: Sequence[bytes]) -> float:
        """Issue for every CSR (DER), split evenly over the workers; the seconds it took."""
        shares = [list(ders[n :: len(self._conns)]) for n in range(len(self._conns))]
        start = time.perf_counter()
        for conn, share in zip(self._conns, shares, strict=True):
            conn.send((ca_name, store_url, share))
        done = sum(self._expect(conn, "done") for conn in self._conns)
        elapsed = time.perf_counter() - start
        assert done == len(ders)
        return elapsed

    def spin(self, count: int, processes: int) -> float:
        """*count* signatures split over the first *processes* workers; the seconds it took.

        Comparing 1 and N processes shows how much of the other cores this machine really
        offers at the moment (other work on it takes its share)."""
        conns = self._conns[:processes]
        start = time.perf_counter()
        for conn in conns:
            conn.send(("spin", count // len(conns)))
        for conn in conns:
            self._expect(conn, "done")
        return time.perf_counter() - start
