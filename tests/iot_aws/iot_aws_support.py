"""Helpers for the AWS IoT API tests: CAs and device certificates made through devid's CLI
(so the inventory knows them), certificates made by openssl (so devid's answers are checked
against another tool), the AWS IoT id as openssl computes it, and an inventory snapshot read
with sqlite3 directly. Stand-ins for the two things moto does not do as AWS does: sign the
CSR's own key (:class:`SigningIot`), and fail an operation on cue (:class:`FailingIot`).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Result, run_tool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

Devid = Callable[..., Result]


def ok_json(devid: Devid, *args: str) -> Any:
    """Run a devid command with --json, assert success and parse its one JSON document."""
    result = devid(*args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def one_error_line(result: Result) -> str:
    """The command's stderr, asserting it is exactly one ``devid: error:`` line."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def openssl_iot_id(path: Path) -> str:
    """``openssl x509 -noout -fingerprint -sha256``, colons removed, lower case."""
    out = run_tool("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(path))
    return out.stdout.decode().strip().split("=", 1)[1].replace(":", "").lower()


def make_ca(devid: Devid, name: str, key: str | Path, *, parent: str | None = None) -> Path:
    """A devid CA (root, or intermediate under *parent*); returns its ca.pem."""
    args = ["ca", "init", name, "--key", str(key), "--subject", f"CN={name},O=devid tests"]
    if parent:
        args += ["--parent", parent]
    return Path(ok_json(devid, *args)["directory"]) / "ca.pem"


def make_csr(key: Path, subject: str, out: Path) -> Path:
    """A CSR made by ``openssl req`` for the key file *key*."""
    run_tool("openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(out))
    return out


def issue_device(devid: Devid, ca: str, key: Path, device_id: str, out: Path) -> Path:
    """A device certificate issued by devid CA *ca* (recorded in the inventory)."""
    csr = make_csr(key, f"/CN={device_id}/serialNumber={device_id}", out.with_suffix(".csr"))
    ok_json(devid, "cert", "issue", "--ca", ca, "--csr", str(csr), "--out", str(out))
    return out


def openssl_sign(
    ca_pem: Path, ca_key: Path, subject: str, out: Path, *, key: Path | None = None
) -> Path:
    """A leaf certificate for *subject* signed by ``openssl x509 -req`` with *ca_key*."""
    leaf_key = key or out.with_suffix(".key")
    if key is None:
        run_tool(
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(leaf_key),
        )
    csr = make_csr(leaf_key, subject, out.with_suffix(".csr"))
    run_tool(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_pem),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        str(out),
    )
    return out


def snapshot(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every non-empty table of the default inventory, read with sqlite3."""
    path = home / "inventory.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in tables
            if t != "sqlite_sequence"
        }
    return {t: r for t, r in rows.items() if r}


def registrations(home: Path) -> list[dict[str, Any]]:
    """The AWS IoT registrations the inventory holds, read with sqlite3."""
    with sqlite3.connect(home / "inventory.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM aws_iot ORDER BY updated_at, arn")]


def free_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """An http://127.0.0.1:PORT nothing listens on, one attempt per call, test credentials."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class SigningIot:
    """moto's client, but CreateCertificateFromCsr certifies the CSR's own key, as AWS does.

    The certificate is signed here with cryptography and registered in moto without a CA,
    so every other call (UpdateCertificate, DescribeCertificate) still goes to moto.
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "stand-in AWS CA")])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def create_certificate_from_csr(
        self, *, certificateSigningRequest: str, setAsActive: bool
    ) -> dict[str, Any]:
        csr = x509.load_pem_x509_csr(certificateSigningRequest.encode())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        status = "ACTIVE" if setAsActive else "INACTIVE"
        made = self._real.register_certificate_without_ca(certificatePem=pem, status=status)
        return {**made, "certificatePem": pem}


class FailingIot(SigningIot):
    """:class:`SigningIot` whose operations named in ``failing`` fail as AWS IoT fails when
    it has a problem of its own (HTTP 500, InternalFailure); clear ``failing`` to recover.
    """

    def __init__(self, real: Any, *failing: str) -> None:
        super().__init__(real)
        self.failing = set(failing)
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name not in self.failing:
            return getattr(self._real, name)

        def fail(**params: Any) -> Any:
            self.calls.append(name)
            error = {"Code": "InternalFailure", "Message": f"{name} is failing on purpose"}
            meta = {"HTTPStatusCode": 500}
            raise ClientError({"Error": error, "ResponseMetadata": meta}, name)

        return fail
