"""Bad input to ``devid device provision``: one error line, an exit code, nothing done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DevicePki, unique
from provision_support import one_error_line, per_device_counts, token_objects


def _run(devid: Callable[..., Any], pki: DevicePki, *args: str, ca: str = "issuing") -> Any:
    return devid("device", "provision", *args, "--token", pki.token, "--ca", ca)


def _nothing_done(home: Path, *device_ids: str) -> None:
    assert per_device_counts(home) == {}
    assert not (home / "devices").exists()
    for device_id in device_ids:
        assert token_objects(f"device-{device_id}") == []


def test_unknown_ca(devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path) -> None:
    device_id = unique("dev")
    result = _run(devid, device_pki, device_id, ca="no-such-ca")
    assert result.code == 1
    assert "unknown CA 'no-such-ca'" in one_error_line(result)
    _nothing_done(pki_home, device_id)


@pytest.mark.parametrize(
    "device_id", [".starts-with-dot", "has space", "ünïcode", "slash/inside", "x" * 65, "x" * 129]
)
def test_malformed_device_id(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, device_id: str
) -> None:
    result = _run(devid, device_pki, device_id)
    assert result.code == 2
    assert "bad device id" in one_error_line(result)
    _nothing_done(pki_home)


def _batch(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("garbled.csv", bytes(range(256)) * 4, "not a text file"),
        ("nul.csv", b"dev-a\n\x00\x00\n", "not a text file"),
        ("empty.csv", b"# nothing here\n\n", "lists no device ids"),
        ("header-only.csv", b"device_id,model\n", "lists no device ids"),
        ("bad.jsonl", b'{"device_id": "GOOD"}\n{"device_id": \n', "line 2: not JSON"),
        (
            "wrong-key.jsonl",
            b'{"device_id": "GOOD"}\n{"id": "x"}\n',
            'line 2: expected {"device_id"',
        ),
        ("bad-id.csv", b"GOOD\nGOOD-2\nno good\n", "bad device id 'no good'"),
        ("twice.csv", b"GOOD\nGOOD\n", "listed twice"),
        ("blank-cell.csv", b"device_id,model\nGOOD,m\n,m\n", "line 3: no device id"),
    ],
)
def test_garbled_batch_files_do_nothing(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    name: str,
    data: bytes,
    message: str,
) -> None:
    good = unique("good")
    path = _batch(tmp_path, name, data.replace(b"GOOD", good.encode()))
    result = _run(devid, device_pki, "--batch", str(path))
    assert result.code == 2
    assert message in one_error_line(result)
    _nothing_done(pki_home, good, f"{good}-2")


def test_missing_batch_file(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    result = _run(devid, device_pki, "--batch", str(tmp_path / "nope.csv"))
    assert result.code == 2
    assert "batch file not found" in one_error_line(result)
    _nothing_done(pki_home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give either DEVICE_ID or --batch FILE"),
        (("dev-1", "--batch", "x.csv"), "give either DEVICE_ID or --batch FILE"),
        (("dev-1", "--profile", "nope"), "unknown profile 'nope'"),
        (("dev-1", "--key-type", "dsa"), "Invalid value for '--key-type'"),
    ],
)
def test_bad_options(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    args: tuple[str, ...],
    message: str,
) -> None:
    result = _run(devid, device_pki, *args)
    assert result.code == 2
    assert message in one_error_line(result)
    _nothing_done(pki_home)


def test_a_token_uri_naming_a_key_is_refused(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path
) -> None:
    result = devid(
        "device", "provision", unique("dev"), "--ca", "issuing",
        "--token", f"{device_pki.token};object=some-key",
    )  # fmt: skip
    assert result.code == 2
    assert "names a token, not a key" in one_error_line(result)
    _nothing_done(pki_home)


def test_an_unknown_token(devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path) -> None:
    result = devid(
        "device", "provision", unique("dev"), "--ca", "issuing", "--token", "pkcs11:token=absent"
    )
    assert result.code == 3
    assert "no PKCS#11 token matches" in one_error_line(result)
    _nothing_done(pki_home)


def test_the_longest_device_id_is_a_valid_common_name(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path
) -> None:
    # 64 characters: the upper bound of a CN (ub-common-name); 65 is refused above
    device_id = "d" * 64
    result = _run(devid, device_pki, device_id)
    assert result.code == 0, result.err


def test_a_revoked_issuing_ca_issues_nothing(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    # relying parties would reject everything it signs once the root's CRL lists it
    revoked = devid("cert", "revoke", device_pki.issuing, "--ca", "root",
                    "--reason", "ca-compromise")  # fmt: skip
    assert revoked.code == 0, revoked.err
    device_id = unique("dev")
    result = _run(devid, device_pki, device_id)
    assert result.code == 1
    assert "CA 'issuing' cannot issue: its certificate is revoked" in one_error_line(result)
    _nothing_done(pki_home, device_id)
    key = tmp_path / "d.key"
    assert devid("key", "generate", "ec-p256", "--out", key).code == 0
    assert devid("csr", "create", "--key", key, "--subject", "CN=d1", "--out",
                 tmp_path / "d.csr").code == 0  # fmt: skip
    issued = devid("cert", "issue", "--ca", "issuing", "--csr", tmp_path / "d.csr",
                   "--out", tmp_path / "d.pem")  # fmt: skip
    assert issued.code == 1 and "is revoked" in one_error_line(issued)
    assert not (tmp_path / "d.pem").exists()
    # the root itself still issues
    ok = devid("cert", "issue", "--ca", "root", "--csr", tmp_path / "d.csr", "--profile",
               "client", "--out", tmp_path / "r.pem")  # fmt: skip
    assert ok.code == 0, ok.err
