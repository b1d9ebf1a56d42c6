"""Out-of-bounds input (huge spans, NaN, deep JSON, endless files): exit 2 and one error line.

Each case once crashed with "unexpected OverflowError" (or TypeError, ValueError,
RecursionError) and exit 3, or read /dev/zero forever.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DevicePki, Result, unique


@dataclass(frozen=True)
class Issued:
    """A root CA ``root`` in a private DEVID_HOME and a device certificate it issued."""

    ca_pem: Path
    csr: Path
    cert: Path
    device_key: Path


def bad_input_line(result: Result) -> str:
    """Exit 2 with exactly one ``devid: error:`` line and no crash report."""
    lines = result.err.strip().splitlines()
    assert result.code == 2, result.err
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: "), result.err
    assert "unexpected" not in result.err.lower()
    assert "Traceback" not in result.err
    return lines[0]


def created(devid: Callable[..., Result], *args: str) -> dict[str, object]:
    result = devid(*args, "--json")
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)
    return data


@pytest.fixture
def issued(
    devid: Callable[..., Result], pki_home: Path, key_file: Callable[[str], Path], tmp_path: Path
) -> Issued:
    ca = created(devid, "ca", "init", "root", "--key", str(key_file("ec-p256")))
    device_key = key_file("ec-p256")
    csr, cert = tmp_path / "dev.csr", tmp_path / "dev.crt"
    created(devid, "csr", "create", "--key", str(device_key), "--subject", "CN=dev1",
            "--out", str(csr))  # fmt: skip
    created(devid, "cert", "issue", "--ca", "root", "--csr", str(csr), "--out", str(cert))
    return Issued(Path(str(ca["directory"])) / "ca.pem", csr, cert, device_key)


# 1. --days and spans of time beyond any validity ---------------------------------------------


def test_ca_init_days_too_large(
    devid: Callable[..., Result], pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    line = bad_input_line(
        devid("ca", "init", "big", "--key", str(key_file("ec-p256")), "--days", "2913000")
    )
    assert "--days" in line
    assert not (pki_home / "ca" / "big").exists()


def test_cert_issue_days_too_large(
    devid: Callable[..., Result], issued: Issued, tmp_path: Path
) -> None:
    out = tmp_path / "long.crt"
    result = devid("cert", "issue", "--ca", "root", "--csr", str(issued.csr), "--out", str(out),
                   "--days", "99999999")  # fmt: skip
    assert "--days" in bad_input_line(result)
    assert not out.exists()


def test_crl_generate_days_too_large(
    devid: Callable[..., Result], issued: Issued, tmp_path: Path
) -> None:
    out = tmp_path / "root.crl"
    result = devid("crl", "generate", "--ca", "root", "--out", str(out), "--days", "99999999")
    assert "--days" in bad_input_line(result)
    assert not out.exists()


def test_device_provision_days_too_large(
    devid: Callable[..., Result], device_pki: DevicePki, pki_home: Path
) -> None:
    device_id = unique("dev")
    result = devid("device", "provision", device_id, "--token", device_pki.token,
                   "--ca", "issuing", "--days", "99999999")  # fmt: skip
    assert "--days" in bad_input_line(result)
    assert not (pki_home / "devices").exists()


def test_cert_list_expiring_within_too_long(devid: Callable[..., Result], issued: Issued) -> None:
    line = bad_input_line(devid("cert", "list", "--expiring-within", "99999999999d"))
    assert "99999999999d" in line


@pytest.mark.parametrize("before", ["99999999999d", "36501d", "1" * 400 + "s"])
def test_needs_renewal_before_too_long(
    devid: Callable[..., Result], issued: Issued, before: str
) -> None:
    bad_input_line(devid("cert", "needs-renewal", str(issued.cert), "--before", before))


@pytest.mark.parametrize("at", ["+2913000d", "-2913000d", "+99999999999d"])
def test_cert_verify_at_too_far(devid: Callable[..., Result], issued: Issued, at: str) -> None:
    result = devid("cert", "verify", str(issued.cert), "--ca-bundle", str(issued.ca_pem),
                   "--at", at)  # fmt: skip
    bad_input_line(result)


def test_rotate_jitter_too_long(devid: Callable[..., Result], issued: Issued) -> None:
    result = devid("rotate", "--before", "30d", "--jitter", "99999999999d", "--dry-run")
    assert "--jitter" in bad_input_line(result) or "99999999999d" in result.err


def test_longest_span_still_accepted(devid: Callable[..., Result], issued: Issued) -> None:
    """100 years is the bound, not an error: the certificate is due that long before expiry."""
    result = devid("cert", "needs-renewal", str(issued.cert), "--before", "36500d")
    assert result.code == 0, result.err


# 2. --path-len ------------------------------------------------------------------------------


def test_ca_init_path_len_too_large(
    devid: Callable[..., Result], pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    result = devid("ca", "init", "x", "--key", str(key_file("ec-p256")),
                   "--path-len", "99999999999999999999")  # fmt: skip
    assert "--path-len" in bad_input_line(result)


# 3. SAN values cryptography refuses (not ASCII) -----------------------------------------------


@pytest.mark.parametrize("san", ["email:ü@ü", "email:dev@bücher.example", "dns:bücher.example",
                                 "dns:\u212a.example", "uri:urn:dev:ü"])  # fmt: skip
def test_csr_create_non_ascii_san(
    devid: Callable[..., Result], key_file: Callable[[str], Path], tmp_path: Path, san: str
) -> None:
    out = tmp_path / "z.csr"
    result = devid("csr", "create", "--key", str(key_file("ec-p256")), "--subject", "CN=x",
                   "--san", san, "--out", str(out))  # fmt: skip
    assert "ASCII" in bad_input_line(result)
    assert not out.exists()


# 4. device connect --timeout ----------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "1e300", "3601"])
def test_device_connect_timeout_out_of_range(
    devid: Callable[..., Result], issued: Issued, timeout: str
) -> None:
    result = devid("device", "connect", "--endpoint", "127.0.0.1:8883", "--cert", str(issued.cert),
                   "--key", str(issued.device_key), "--timeout", timeout)  # fmt: skip
    assert "--timeout" in bad_input_line(result)


# 5. JSON nested too deeply ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000,
        "[" * 5000 + "]" * 5000,
        json.dumps({"Resources": {"r": json.loads("[" * 500 + "]" * 500)}}),
        json.dumps({"templateBody": "[" * 5000, "roleArn": "arn:aws:iam::123456789012:role/x"}),
    ],
    ids=["unclosed", "closed", "deep-resources", "deep-template-body"],
)
def test_jitp_check_deeply_nested_template(
    devid: Callable[..., Result], issued: Issued, tmp_path: Path, body: str
) -> None:
    template = tmp_path / "deep.json"
    template.write_text(body)
    result = devid("iot", "jitp", "check", str(template), "--cert", str(issued.cert))
    assert "nested too deeply" in bad_input_line(result)


def test_device_provision_batch_deeply_nested_line(
    devid: Callable[..., Result], pki_home: Path, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"device_id": "dev1"}\n' + '{"a": ' * 5000 + "\n")
    result = devid("device", "provision", "--batch", str(batch), "--token", "pkcs11:token=absent",
                   "--ca", "issuing")  # fmt: skip
    assert "nested too deeply" in bad_input_line(result)


# 6. input files that never end, or are far too large ----------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_key_fingerprint_of_a_device(devid: Callable[..., Result], device: str) -> None:
    assert "not a regular file" in bad_input_line(devid("key", "fingerprint", device))


def test_key_fingerprint_of_a_huge_file(devid: Callable[..., Result], tmp_path: Path) -> None:
    huge = tmp_path / "huge.pem"
    with huge.open("wb") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MiB of zeros without writing them
    assert "larger than 1 MiB" in bad_input_line(devid("key", "fingerprint", str(huge)))


def test_cert_verify_ca_bundle_device(devid: Callable[..., Result], issued: Issued) -> None:
    result = devid("cert", "verify", str(issued.cert), "--ca-bundle", "/dev/zero")
    assert "not a regular file" in bad_input_line(result)


def test_batch_file_over_1_mib_is_still_read(
    devid: Callable[..., Result], pki_home: Path, tmp_path: Path
) -> None:
    """The 1 MiB cap is for keys and certificates: a long batch file gets past reading."""
    batch = tmp_path / "batch.csv"
    batch.write_text("device_id\n" + "".join(f"device-{n:07d}\n" for n in range(80_000)))
    assert batch.stat().st_size > 1 << 20
    result = devid("device", "provision", "--batch", str(batch), "--token", "pkcs11:token=absent",
                   "--ca", "no-such-ca")  # fmt: skip
    assert result.code == 1, result.err
    assert "no-such-ca" in result.err
