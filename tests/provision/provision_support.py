"""Helpers for the provisioning and rotation tests: what other programs see.

The token is read with ``pkcs11-tool`` (OpenSC), certificates with ``openssl``, and the
inventory with ``sqlite3`` directly, never through devid.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import TEST_PIN, TOKEN_LABEL, DevicePki, run_tool, softhsm_module


def token_objects(label: str | None = None) -> list[dict[str, str]]:
    """Objects on the test token as ``pkcs11-tool --list-objects`` prints them (logged in)."""
    args = ["pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
            "--login", "--pin", TEST_PIN, "--list-objects"]  # fmt: skip
    text = run_tool(*args).stdout.decode()
    objects: list[dict[str, str]] = []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            objects.append({"class": line.split(";")[0].split(" Object")[0].strip()})
        elif ":" in line and objects:
            name, _, value = line.strip().partition(":")
            objects[-1][name.strip()] = value.strip()
    return [o for o in objects if label is None or o.get("label") == label]


def token_public_key_der(key_id: str) -> bytes:
    """The DER SubjectPublicKeyInfo of the token's public key object with CKA_ID *key_id*."""
    args = ["pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
            "--read-object", "--type", "pubkey", "--id", key_id]  # fmt: skip
    return run_tool(*args).stdout


def cert_public_key_der(path: Path) -> bytes:
    pem = run_tool("openssl", "x509", "-in", str(path), "-pubkey", "-noout").stdout
    return run_tool("openssl", "pkey", "-pubin", "-outform", "DER", input=pem).stdout


def openssl_serial(path: Path) -> str:
    """The serial ``openssl x509 -serial`` prints, lower case (devid's inventory form)."""
    out = run_tool("openssl", "x509", "-in", str(path), "-noout", "-serial").stdout.decode()
    return out.strip().split("=", 1)[1].lower()


def openssl_verify(pki: DevicePki, *paths: Path) -> str:
    done = run_tool(
        "openssl", "verify", "-CAfile", str(pki.root), "-untrusted", str(pki.issuing),
        "-purpose", "sslclient", *map(str, paths),
    )  # fmt: skip
    return done.stdout.decode()


def inventory(home: Path) -> Path:
    return home / "inventory.sqlite"


def certificate_rows(home: Path, device_id: str | None = None) -> list[dict[str, Any]]:
    """Certificate rows of the default inventory (sqlite3, not devid)."""
    path = inventory(home)
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM certificates WHERE (? IS NULL OR device_id = ?) ORDER BY issued_at",
            (device_id, device_id),
        ).fetchall()
    return [dict(r) for r in rows]


def per_device_counts(home: Path) -> dict[str, int]:
    with sqlite3.connect(inventory(home)) as db:
        rows = db.execute(
            "SELECT device_id, COUNT(*) FROM certificates WHERE device_id IS NOT NULL "
            "GROUP BY device_id"
        ).fetchall()
    return {device_id: count for device_id, count in rows}


def inventory_dump(home: Path) -> list[str]:
    """Every row of every table (to show a dry run changed nothing)."""
    with sqlite3.connect(inventory(home)) as db:
        return list(db.iterdump())


def tree_snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below *directory*: its bytes and mtime (ns)."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def ok_json(devid: Callable[..., Any], *args: str) -> Any:
    result = devid(*args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def one_error_line(result: Any) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
