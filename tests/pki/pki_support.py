"""Helpers for the PKI tests: CSRs built outside devid, openssl output parsing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def foreign_csr(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cn: str = "device-x") -> bytes:
    """A PEM CSR made with cryptography directly (for keys devid will not generate)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def flip_signature_byte(pem: bytes) -> bytes:
    """The same CSR with one byte of its signature (the last DER byte) changed."""
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


def ok_json(devid: Callable[..., Any], *args: str) -> Any:
    """Run a devid command with --json, assert success and parse its one JSON document."""
    result = devid(*args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def one_error_line(result: Any) -> str:
    """The command's stderr, asserting it is exactly one ``devid: error:`` line."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def make_pki(
    devid: Callable[..., Any],
    root_key: str | Path,
    issuing_key: str | Path,
    *extra: str,
) -> tuple[Path, Path]:
    """A root CA ``root`` and an intermediate ``issuing`` under it; their ca.pem paths."""
    root = ok_json(
        devid, "ca", "init", "root", "--key", str(root_key), "--subject", "CN=Test Root,O=Acme"
    )
    issuing = ok_json(
        devid, "ca", "init", "issuing", "--parent", "root", "--key", str(issuing_key), *extra
    )
    return Path(root["directory"]) / "ca.pem", Path(issuing["directory"]) / "ca.pem"


def inventory_counts(home: Path) -> dict[str, int]:
    """Rows per table in the default inventory, read with sqlite3 directly (not devid)."""
    path = home / "inventory.sqlite"
    if not path.exists():
        return {"certificates": 0, "revocations": 0, "cas": 0, "events": 0}
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("certificates", "revocations", "cas", "events")
        }
