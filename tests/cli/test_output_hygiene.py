"""Output hygiene across commands: PINs never echoed, errors always one line, --json on public.

A key reference may carry ``pin-value=`` (RFC 7512); commands echo references in text, JSON
and errors, so devid redacts the PIN wherever it prints. Messages built from user input
(paths with newlines, click's multi-line usage errors) still come out as one line.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import TEST_PIN, run_tool

SECRET = "s3cret-pin-0815"


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("devid: error: ")
    return lines[0]


def test_pin_value_in_a_reference_is_never_printed(
    devid: Callable[..., Any], token_key_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    key = token_key_factory("ec-p256")
    label = key.handle.label
    # the right PIN inside the URI: the reference is echoed by convert's refusal
    ref = f"pkcs11:token=devid-test;object={label}?pin-value={TEST_PIN}"
    result = devid("key", "convert", ref, "--to", "pkcs8", "--out", tmp_path / "x.pem")
    line = _one_error_line(result.err)
    assert "pin-value=***" in line and f"pin-value={TEST_PIN}" not in line
    assert not (tmp_path / "x.pem").exists()

    # a wrong PIN must not be echoed either, in text or JSON
    wrong = f"pkcs11:token=devid-test;object=no-such-key?pin-value={SECRET}"
    for args in (("key", "fingerprint", wrong), ("key", "check", wrong, "--for", "iot", "--json")):
        result = devid(*args)
        assert result.code != 0
        assert SECRET not in result.out + result.err


def test_errors_are_one_line_even_for_multi_line_input(devid: Callable[..., Any]) -> None:
    result = devid("key", "fingerprint", "no\nsuch\nfile")
    assert result.code == 2
    _one_error_line(result.err)

    result = devid("key", "generate")  # click: missing TYPE, "Choose from:" list over lines
    assert result.code == 2
    _one_error_line(result.err)
    assert "\\" not in result.err  # click's line breaks read as spaces, not as escapes
    assert "Choose from: rsa-2048, rsa-3072, rsa-4096, ec-p256" in result.err


def test_bare_group_prints_its_help_and_exits_2(devid: Callable[..., Any]) -> None:
    result = devid("key")
    assert result.code == 2
    assert "Commands:" in result.err and "fingerprint" in result.err
    assert "devid: error:" not in result.err


def test_key_public_json(devid: Callable[..., Any], tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    assert devid("key", "generate", "ec-p256", "--out", key).code == 0
    openssh = json.loads(devid("key", "public", key, "--json").out)
    expected = run_tool("ssh-keygen", "-y", "-f", str(key)).stdout.decode().split()[:2]
    assert openssh["format"] == "openssh"
    assert openssh["public_key"].split()[:2] == expected
    fp = run_tool("ssh-keygen", "-l", "-E", "sha256", "-f", str(key)).stdout.decode().split()[1]
    assert openssh["openssh_sha256"] == fp

    out = tmp_path / "k.der"
    der = json.loads(devid("key", "public", key, "--format", "der", "--out", out, "--json").out)
    assert base64.b64decode(der["public_key"]) == out.read_bytes()
    spki = run_tool("openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER").stdout
    assert out.read_bytes() == spki


def test_json_stays_json_when_a_value_looks_like_a_pin(
    devid: Callable[..., Any], pki_home: Path, key_file: Callable[[str], Path], tmp_path: Path
) -> None:
    # a device may put anything in its CSR subject; redacting "pin-value=" must not break
    # the JSON quoting around it (it used to run on the encoded text and eat a backslash)
    assert devid("ca", "init", "root", "--key", key_file("ec-p256")).code == 0
    subject = 'CN=pin-value=x\\"y'
    made = devid("csr", "create", "--key", key_file("ec-p256"), "--subject", subject,
                 "--out", tmp_path / "d.csr")  # fmt: skip
    assert made.code == 0, made.err
    issued = devid("cert", "issue", "--ca", "root", "--csr", tmp_path / "d.csr",
                   "--device-id", "d", "--out", tmp_path / "d.pem")  # fmt: skip
    assert issued.code == 0, issued.err
    for args in (("cert", "list"), ("cert", "show", tmp_path / "d.pem"),
                 ("csr", "show", tmp_path / "d.csr")):  # fmt: skip
        result = devid(*args, "--json")
        assert result.code == 0, result.err
        document = json.loads(result.out)
        assert "pin-value=***" in json.dumps(document)
        assert "pin-value=x" not in result.out
