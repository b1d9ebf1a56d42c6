"""``devid key convert``: PEM / OpenSSH / PPK v2 and v3, cross-checked with puttygen, ssh-keygen
and openssl; bad input leaves nothing behind."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Result, require_tool, run_tool
from ec2_support import openssl_ec, openssl_rsa, public_line, ssh_keygen

from devid.loading import parse_public_key

PASSPHRASE = b"convert test passphrase"
MAKERS: dict[str, Callable[[Path], Path]] = {
    "rsa-2048": lambda p: openssl_rsa(p),
    "ed25519": lambda p: ssh_keygen(p),
    "ec-p256": lambda p: openssl_ec(p),
}


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    path = tmp_path / "pass.txt"
    path.write_bytes(PASSPHRASE)  # no newline: puttygen and devid read it the same way
    return path


def puttygen_public(path: Path, passfile: Path | None = None) -> str:
    old = ["--old-passphrase", str(passfile)] if passfile else []
    out = run_tool("puttygen", str(path), *old, "-O", "public-openssh").stdout
    return " ".join(out.decode().split()[:2])


def assert_private_file(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("version", ["2", "3"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes256"])
def test_to_ppk_reads_back_in_puttygen(
    tmp_path: Path,
    devid: Callable[..., Result],
    passfile: Path,
    kind: str,
    version: str,
    encrypted: bool,
) -> None:
    src = MAKERS[kind](tmp_path / "src")
    out = tmp_path / "out.ppk"
    extra = ["--new-passphrase-file", str(passfile)] if encrypted else []
    result = devid("key", "convert", src, "--to", "ppk", "--ppk-version", version, "--out", out,
                   "--comment", "converted", *extra)  # fmt: skip
    assert result.code == 0, result.err
    assert out.read_bytes().startswith(f"PuTTY-User-Key-File-{version}: ".encode())
    assert (b"Encryption: aes256-cbc" in out.read_bytes()) is encrypted
    assert_private_file(out)
    assert puttygen_public(out, passfile if encrypted else None) == public_line(src)
    # puttygen decrypts the private half too (the public half is in clear): export it.
    exported = tmp_path / "exported"
    old = ["--old-passphrase", str(passfile)] if encrypted else []
    run_tool("puttygen", str(out), *old, "-O", "private-openssh-new", "-o", str(exported),
             "--new-passphrase", "/dev/null")  # fmt: skip
    assert public_line(exported) == public_line(src)
    if encrypted:
        wrong = tmp_path / "wrong"
        wrong.write_bytes(b"not it")
        done = run_tool("puttygen", str(out), "--old-passphrase", str(wrong), "-O",
                        "private-openssh-new", "-o", str(tmp_path / "x"), check=False)  # fmt: skip
        assert done.returncode != 0


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
@pytest.mark.parametrize("version", ["2", "3"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes256"])
def test_puttygen_made_ppk_reads_back(
    tmp_path: Path,
    devid: Callable[..., Result],
    passfile: Path,
    key_type: str,
    version: str,
    encrypted: bool,
) -> None:
    require_tool("puttygen")
    ppk = tmp_path / "f.ppk"
    secret = passfile if encrypted else Path("/dev/null")
    run_tool("puttygen", "-t", key_type, "-q", "-o", str(ppk), "--new-passphrase", str(secret),
             "--ppk-param", f"version={version}")  # fmt: skip
    expected = puttygen_public(ppk, passfile if encrypted else None)
    # The public half is readable without the passphrase (PuTTY keeps it in clear).
    assert " ".join(public_line_of(ppk).split()[:2]) == expected
    target = "pkcs8" if key_type == "rsa" else "openssh"
    out = tmp_path / "out.key"
    extra = ["--passphrase-file", str(passfile)] if encrypted else []
    result = devid("key", "convert", ppk, "--to", target, "--out", out, *extra)
    assert result.code == 0, result.err
    assert_private_file(out)
    assert public_line(out) == expected
    if target == "pkcs8":
        run_tool("openssl", "rsa", "-in", str(out), "-check", "-noout")


def public_line_of(path: Path) -> str:
    from devid.pubformat import openssh_line

    return openssh_line(parse_public_key(path.read_bytes())).decode()


@pytest.mark.parametrize(
    ("target", "header"),
    [
        ("pkcs1", b"-----BEGIN RSA PRIVATE KEY-----"),
        ("pkcs8", b"-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        ("openssh", b"-----BEGIN OPENSSH PRIVATE KEY-----"),
    ],
)
def test_to_pem_and_openssh_with_a_new_passphrase(
    tmp_path: Path, devid: Callable[..., Result], passfile: Path, target: str, header: bytes
) -> None:
    src = openssl_rsa(tmp_path / "src.pem")
    out = tmp_path / "out"
    result = devid("key", "convert", src, "--to", target, "--out", out,
                   "--new-passphrase-file", passfile, "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["encrypted"] is True
    assert out.read_bytes().startswith(header)
    if target == "openssh":
        line = run_tool("ssh-keygen", "-y", "-P", PASSPHRASE.decode(), "-f", str(out)).stdout
    else:
        pem = run_tool("openssl", "pkey", "-in", str(out), "-passin", f"file:{passfile}",
                       "-pubout").stdout  # fmt: skip
        spki = tmp_path / "spki.pem"
        spki.write_bytes(pem)
        line = run_tool("ssh-keygen", "-i", "-m", "PKCS8", "-f", str(spki)).stdout
        assert b"ENCRYPTED" in out.read_bytes()
    assert " ".join(line.decode().split()[:2]) == public_line(src)


def test_unencrypted_pkcs1_from_encrypted_ppk_warns(
    tmp_path: Path, devid: Callable[..., Result], passfile: Path
) -> None:
    ppk = tmp_path / "f.ppk"
    run_tool("puttygen", "-t", "rsa", "-q", "-o", str(ppk), "--new-passphrase", str(passfile))
    out = tmp_path / "out.pem"
    result = devid("key", "convert", ppk, "--to", "pkcs1", "--out", out,
                   "--passphrase-file", passfile)  # fmt: skip
    assert result.code == 0, result.err
    assert "not encrypted" in result.err
    assert out.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    run_tool("openssl", "rsa", "-in", str(out), "-check", "-noout")
    assert public_line(out) == puttygen_public(ppk, passfile)


def test_refuses_to_overwrite_without_force(tmp_path: Path, devid: Callable[..., Result]) -> None:
    src = ssh_keygen(tmp_path / "src")
    out = tmp_path / "out.ppk"
    out.write_bytes(b"keep me")
    result = devid("key", "convert", src, "--to", "ppk", "--out", out)
    assert result.code == 4
    assert out.read_bytes() == b"keep me"
    result = devid("key", "convert", src, "--to", "ppk", "--out", out, "--force")
    assert result.code == 0, result.err
    assert puttygen_public(out) == public_line(src)
    assert_private_file(out)


def _one_error_line(result: Result, code: int, needle: str) -> None:
    assert result.code == code, (result.code, result.err)
    assert result.err.startswith("devid: error: ") and result.err.count("\n") == 1
    assert needle in result.err
    assert "Traceback" not in result.err


def test_token_key_cannot_be_converted(
    tmp_path: Path, devid: Callable[..., Result], token_key_factory: Callable[..., object]
) -> None:
    key = token_key_factory("rsa-2048")
    out = tmp_path / "out.pem"
    result = devid("key", "convert", key.reference, "--to", "pkcs8", "--out", out)  # type: ignore[attr-defined]
    _one_error_line(result, 2, "not extractable")
    assert not out.exists()


def _plain_ppk(tmp_path: Path) -> Path:
    ppk = tmp_path / "plain.ppk"
    run_tool("puttygen", "-t", "ed25519", "-q", "-o", str(ppk), "--new-passphrase", "/dev/null")
    return ppk


def _damaged(ppk: Path) -> bytes:
    lines = ppk.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(b"Private-Lines:")) + 1
    body = bytearray(lines[at])
    body[5] = ord("A") if body[5] != ord("A") else ord("B")
    lines[at] = bytes(body)
    return b"".join(lines)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (_damaged, "corrupt"),
        (lambda p: p.read_bytes()[:120], "truncated"),
        (lambda p: p.read_bytes().replace(b"Encryption: none", b"Encryption: rot13"), "rot13"),
    ],
    ids=["mac-mismatch", "truncated", "unknown-cipher"],
)
def test_corrupt_ppk(
    tmp_path: Path, devid: Callable[..., Result], damage: Callable[[Path], bytes], needle: str
) -> None:
    bad = tmp_path / "bad.ppk"
    bad.write_bytes(damage(_plain_ppk(tmp_path)))
    out = tmp_path / "out.pem"
    _one_error_line(devid("key", "convert", bad, "--to", "pkcs8", "--out", out), 2, needle)
    assert not out.exists()


def test_wrong_or_missing_passphrase(
    tmp_path: Path, devid: Callable[..., Result], passfile: Path
) -> None:
    ppk = tmp_path / "enc.ppk"
    run_tool("puttygen", "-t", "rsa", "-q", "-o", str(ppk), "--new-passphrase", str(passfile),
             "--ppk-param", "version=3")  # fmt: skip
    wrong = tmp_path / "wrong.txt"
    wrong.write_bytes(b"not the passphrase")
    out = tmp_path / "out.pem"
    result = devid("key", "convert", ppk, "--to", "pkcs8", "--out", out, "--passphrase-file", wrong)
    _one_error_line(result, 2, "wrong passphrase")
    _one_error_line(devid("key", "convert", ppk, "--to", "pkcs8", "--out", out), 2, "encrypted")
    enc = ssh_keygen(tmp_path / "enc_openssh", passphrase=PASSPHRASE.decode())
    result = devid("key", "convert", enc, "--to", "ppk", "--out", out, "--passphrase-file", wrong)
    _one_error_line(result, 2, "wrong passphrase")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ed25519_has_no_pkcs1_form(tmp_path: Path, devid: Callable[..., Result]) -> None:
    out = tmp_path / "out.pem"
    result = devid("key", "convert", ssh_keygen(tmp_path / "k"), "--to", "pkcs1", "--out", out)
    _one_error_line(result, 2, "PKCS#1")
    assert not out.exists()
