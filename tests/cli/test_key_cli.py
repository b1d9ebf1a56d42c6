"""`devid key generate|public|check` and bad input, checked with openssl, ssh-keygen, pkcs11-tool.

Errors must be one line on stderr starting ``devid: error:``, with the documented exit code,
no traceback, nothing on stdout and nothing written (the directory is compared before and
after). Most cases run in-process; some run as ``python -m devid`` to cover the real entry.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN_LABEL, Result, run_tool, softhsm_module, unique
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from devid.keys import PublicKey

PASSPHRASE = "key cli passphrase"
TOKEN = f"pkcs11:token={TOKEN_LABEL}"
PUBLIC_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every entry under *directory* (hidden temporary files too) with contents and mode."""
    found: dict[str, tuple[bytes, int] | None] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        found[key] = (path.read_bytes(), mode_of(path)) if path.is_file() else None
    return found


def ok(result: Result) -> str:
    assert result.code == 0, result.err
    assert result.err == ""
    return result.out


def as_json(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(result))
    return data


def assert_one_error_line(result: Result, code: int, fragment: str = "") -> None:
    assert result.code == code, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.err
    assert result.out == ""


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ssh_public(line: bytes) -> PublicKey:
    key = serialization.load_ssh_public_key(line)
    assert isinstance(key, PUBLIC_TYPES)
    return key


def openssh_blob(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def ssh_keygen_y(path: Path, passphrase: str = "") -> PublicKey:
    return ssh_public(run_tool("ssh-keygen", "-y", "-P", passphrase, "-f", str(path)).stdout)


def pkcs11_tool_public(label: str, tmp_path: Path) -> PublicKey:
    """The token's public key object as pkcs11-tool (opensc) exports it."""
    out = tmp_path / "pkcs11-tool.pub"
    run_tool("pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
             "--read-object", "--type", "pubkey", "--label", label, "-o", str(out))  # fmt: skip
    data = out.read_bytes()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
    else:
        key = serialization.load_der_public_key(data)
    assert isinstance(key, PUBLIC_TYPES)
    return key


# -- generate -------------------------------------------------------------------------------


def test_generate_default_is_pkcs8_0600_atomic(
    devid: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "device.pem"
    assert ok(devid("key", "generate", "ec-p256", "--out", out)) == f"{out}\n"
    assert mode_of(out) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.pem"]  # no temp file left
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    text = run_tool("openssl", "pkey", "-in", str(out), "-noout", "-text").stdout
    assert b"ASN1 OID: prime256v1" in text
    printed = ok(devid("key", "public", out)).encode()
    assert ssh_public(printed) == ssh_keygen_y(out)


@pytest.mark.parametrize("key_type", ["rsa-2048", "ed25519"])
def test_generate_openssh_format_read_by_ssh_keygen(
    devid: Callable[..., Result], tmp_path: Path, key_type: str
) -> None:
    out = tmp_path / "id"
    ok(devid("key", "generate", key_type, "--out", out, "--format", "openssh"))
    assert out.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert mode_of(out) == 0o600
    assert ssh_public(ok(devid("key", "public", out)).encode()) == ssh_keygen_y(out)
    # and the public half beside it, as ssh-keygen writes it
    pub = tmp_path / "id.pub"
    assert mode_of(pub) == 0o644
    assert ssh_public(pub.read_bytes()) == ssh_keygen_y(out)
    assert ok(devid("key", "check", pub, "--for", "ec2")).strip()


def test_generate_openssh_refuses_an_existing_pub_before_writing_anything(
    devid: Callable[..., Result], tmp_path: Path
) -> None:
    out, pub = tmp_path / "id", tmp_path / "id.pub"
    pub.write_text("someone else's key\n")
    result = devid("key", "generate", "ed25519", "--out", out, "--format", "openssh")
    assert result.code == 4 and "id.pub exists" in result.err
    assert not out.exists() and pub.read_text() == "someone else's key\n"
    ok(devid("key", "generate", "ed25519", "--out", out, "--format", "openssh", "--force"))
    assert ssh_public(pub.read_bytes()) == ssh_keygen_y(out)


def test_generate_openssh_keeps_the_old_key_when_its_pub_cannot_be_written(
    devid: Callable[..., Result], tmp_path: Path
) -> None:
    out, pub = tmp_path / "id", tmp_path / "id.pub"
    ok(devid("key", "generate", "ed25519", "--out", out, "--format", "openssh"))
    old_key, old_pub = out.read_bytes(), pub.read_bytes()
    pub.unlink()
    pub.mkdir()  # the .pub cannot be written: the key it belongs to must stay as it was
    result = devid("key", "generate", "ed25519", "--out", out, "--format", "openssh", "--force")
    assert result.code == 2 and "id.pub" in result.err
    assert out.read_bytes() == old_key
    # the other way round: the key cannot be written after its .pub was: the old .pub is back
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (tmp_path / "blocked.pub").write_bytes(old_pub)
    result = devid("key", "generate", "ed25519", "--out", blocked, "--format", "openssh",
                   "--force")  # fmt: skip
    assert result.code == 2
    assert (tmp_path / "blocked.pub").read_bytes() == old_pub
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "blocked.pub", "id", "id.pub"]


def test_generate_pkcs1(devid: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "rsa.pem"
    ok(devid("key", "generate", "rsa-2048", "--out", out, "--format", "pkcs1"))
    assert out.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    run_tool("openssl", "rsa", "-in", str(out), "-check", "-noout")


@pytest.mark.parametrize("fmt", ["pkcs8", "openssh"])
def test_generate_encrypted_with_passphrase_file(
    devid: Callable[..., Result],
    devid_proc: Callable[..., Result],
    tmp_path: Path,
    fmt: str,
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE + "\n")  # the trailing newline is not part of it
    out = keys / "enc"
    ok(devid("key", "generate", "rsa-2048", "--out", out, "--format", fmt,
             "--passphrase-file", pass_file))  # fmt: skip
    assert mode_of(out) == 0o600
    written = ["enc", "enc.pub"] if fmt == "openssh" else ["enc"]  # no temporary files
    assert sorted(p.name for p in keys.iterdir()) == written
    if fmt == "pkcs8":
        assert out.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        der = run_tool("openssl", "pkey", "-in", str(out), "-passin", f"file:{pass_file}",
                       "-pubout", "-outform", "DER").stdout  # fmt: skip
        expected = serialization.load_der_public_key(der)
    else:
        expected = ssh_keygen_y(out, PASSPHRASE)
        assert run_tool("ssh-keygen", "-y", "-P", "", "-f", str(out), check=False).returncode
    shown = ok(devid("key", "public", out, "--passphrase-file", pass_file)).encode()
    assert ssh_public(shown) == expected
    # No passphrase and no terminal (a subprocess with stdin from /dev/null): a clear error.
    assert_one_error_line(devid_proc("key", "public", out), 2, "give --passphrase-file")
    # DEVID_PASSPHRASE is the other non-interactive source.
    env = {"DEVID_PASSPHRASE": PASSPHRASE}
    assert ssh_public(ok(devid_proc("key", "public", out, env=env)).encode()) == expected


def test_existing_file_refused_then_force_replaces(
    devid: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "k.pem"
    ok(devid("key", "generate", "ec-p256", "--out", out))
    before = snapshot(tmp_path)
    result = devid("key", "generate", "ec-p384", "--out", out)
    assert_one_error_line(result, 4, "exists; pass --force")
    assert snapshot(tmp_path) == before
    ok(devid("key", "generate", "ec-p384", "--out", out, "--force"))
    assert out.read_bytes() != before["k.pem"][0]  # type: ignore[index]
    assert mode_of(out) == 0o600
    assert b"secp384r1" in run_tool("openssl", "pkey", "-in", str(out), "-noout", "-text").stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_generate_json_for_a_file(devid: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "k"
    data = as_json(devid("key", "generate", "ed25519", "--out", out, "--format", "openssh",
                         "--json"))  # fmt: skip
    assert set(data) == {"reference", "type", "token", "openssh_sha256", "public_file"}
    assert (data["reference"], data["type"], data["token"]) == (str(out), "ed25519", False)
    assert data["public_file"] == str(tmp_path / "k.pub")
    line = run_tool("ssh-keygen", "-l", "-E", "sha256", "-f", data["public_file"]).stdout.decode()
    assert data["openssh_sha256"] == line.split()[1]


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256"])
def test_generate_on_token_prints_a_reference_others_accept(
    devid: Callable[..., Result], token_uri: str, tmp_path: Path, key_type: str
) -> None:
    label = unique("cli-gen")
    out = ok(devid("key", "generate", key_type, "--token", token_uri, "--label", label))
    ref = out.strip()
    assert out == f"{ref}\n"
    assert ref.startswith(f"pkcs11:token={TOKEN_LABEL};object={label};type=private;id=")
    shown = ssh_public(ok(devid("key", "public", ref)).encode())
    assert spki(shown) == spki(pkcs11_tool_public(label, tmp_path))
    # ssh-keygen -D (OpenSSH's own PKCS#11 reader, no login) lists the same public key.
    listed = run_tool("ssh-keygen", "-D", softhsm_module()).stdout.splitlines()
    assert any(line.split()[:2] == openssh_blob(shown).split() for line in listed)


def test_generate_on_token_json(devid: Callable[..., Result], token_uri: str) -> None:
    label = unique("cli-json")
    data = as_json(devid("key", "generate", "ed25519", "--token", token_uri, "--label", label,
                         "--json"))  # fmt: skip
    assert (data["type"], data["token"]) == ("ed25519", True)
    assert data["reference"].startswith(f"{token_uri};object={label};type=private;id=")
    fp = as_json(devid("key", "fingerprint", data["reference"], "--json"))
    assert data["openssh_sha256"] == fp["openssh_sha256"]


# -- public ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    ref: str
    expected: PublicKey


@pytest.fixture(params=["file-rsa", "file-ed25519", "token-ec"])
def source(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    token_key_factory: Callable[[str], Any],
) -> Source:
    """A key and its public half as a tool other than devid reads it."""
    if request.param == "token-ec":
        key = token_key_factory("ec-p256")
        return Source(key.reference, pkcs11_tool_public(key.handle.label, tmp_path))
    kind = request.param.removeprefix("file-")
    path = tmp_path / f"id_{kind}"
    run_tool("ssh-keygen", "-q", "-t", kind, "-b", "2048", "-N", "", "-C", "", "-f", str(path))
    return Source(str(path), ssh_keygen_y(path))


def test_public_openssh_with_comment(
    devid: Callable[..., Result], source: Source, tmp_path: Path
) -> None:
    out = ok(devid("key", "public", source.ref, "--comment", "alice@example.com"))
    assert out.endswith(" alice@example.com\n")
    assert out.encode().rsplit(b" ", 1)[0] == openssh_blob(source.expected)
    pub = tmp_path / "k.pub"
    pub.write_text(out)
    listed = run_tool("ssh-keygen", "-l", "-f", str(pub)).stdout.decode()
    assert "alice@example.com" in listed


@pytest.mark.parametrize(
    "comment",
    ["", 'a "quoted" comment', 'a "quoted" comment long enough not to fit one header line',
     "x" * 59 + "\\" + "y" * 20, "ü" * 50, "alice@example.com"],
)  # fmt: skip
def test_public_rfc4716_read_back_by_ssh_keygen_and_puttygen(
    devid: Callable[..., Result], source: Source, tmp_path: Path, comment: str
) -> None:
    out = tmp_path / "k.rfc4716"
    result = devid("key", "public", source.ref, "--format", "rfc4716", "--comment", comment,
                   "--out", out)  # fmt: skip
    assert result.code == 0, result.err
    assert mode_of(out) == 0o644
    lines = out.read_bytes().split(b"\n")
    assert all(len(line) <= 72 for line in lines)  # RFC 4716 section 3
    assert not any(line.endswith(b"\\") for line in lines)  # no continued header lines
    back = run_tool("ssh-keygen", "-i", "-m", "RFC4716", "-f", str(out)).stdout
    assert ssh_public(back) == source.expected
    listed = run_tool("puttygen", "-l", str(out)).stdout.decode()
    assert "SHA256:" in listed
    shortened = "shortened" in result.err
    escaped = comment.replace("\\", "\\\\").replace('"', '\\"')  # as the header writes it
    assert shortened == (len(escaped.encode()) > 72 - len('Comment: ""'))


@pytest.mark.parametrize("fmt", ["openssh", "rfc4716"])
def test_a_comment_with_a_newline_is_refused(
    devid: Callable[..., Result], source: Source, tmp_path: Path, fmt: str
) -> None:
    # an OpenSSH line with a newline in its comment would smuggle a second key line into
    # an authorized_keys file
    evil = "alice\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEVIL evil"
    result = devid("key", "public", source.ref, "--format", fmt, "--comment", evil,
                   "--out", tmp_path / "k.pub")  # fmt: skip
    assert result.code == 2 and "control characters" in result.err
    assert not (tmp_path / "k.pub").exists()


def test_public_pem_read_by_openssl(
    devid: Callable[..., Result], source: Source, tmp_path: Path
) -> None:
    out = tmp_path / "k.pem"
    out.write_text(ok(devid("key", "public", source.ref, "--format", "pem")))
    der = run_tool("openssl", "pkey", "-pubin", "-in", str(out), "-outform", "DER").stdout
    assert der == spki(source.expected)


def test_public_der_read_by_openssl(
    devid: Callable[..., Result], source: Source, tmp_path: Path
) -> None:
    out = tmp_path / "k.der"
    ok(devid("key", "public", source.ref, "--format", "der", "--out", out))
    der = run_tool("openssl", "pkey", "-pubin", "-inform", "DER", "-in", str(out),
                   "-outform", "DER").stdout  # fmt: skip
    assert der == spki(source.expected)


# -- check ----------------------------------------------------------------------------------

# DESIGN.md section 2: IAM SSH keys RSA >= 2048; EC2 ImportKeyPair RSA 1024/2048/4096 or
# Ed25519; Windows password data needs RSA; IoT RSA >= 2048 or EC P-256/P-384/P-521.
ACCEPTED = {
    "codecommit": {"rsa-2048", "rsa-3072", "rsa-4096"},
    "ec2": {"rsa-1024", "rsa-2048", "rsa-4096", "ed25519"},
    "ec2-windows": {"rsa-1024", "rsa-2048", "rsa-4096"},
    "iot": {"rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521"},
}
FILE_KINDS = ["rsa-1024", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521",
              "ed25519"]  # fmt: skip


def assert_verdict(devid: Callable[..., Result], ref: str, kind: str, service: str) -> None:
    accepted = kind in ACCEPTED[service]
    result = devid("key", "check", ref, "--for", service, "--json")
    assert result.code == (0 if accepted else 1), result.err
    data = json.loads(result.out)
    assert set(data) == {"service", "ok", "reason"}
    assert (data["service"], data["ok"]) == (service, accepted)
    assert kind in data["reason"]
    if accepted:
        assert result.err == ""
        assert ok(devid("key", "check", ref, "--for", service)) == f"{data['reason']}\n"
    else:
        assert result.err == f"devid: error: {data['reason']}\n"
        assert "; use " in data["reason"]  # says what to use instead
        text = devid("key", "check", ref, "--for", service)
        assert_one_error_line(text, 1, data["reason"])


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_check_public_key_files(
    devid: Callable[..., Result], openssl_key: Callable[[str], Path], tmp_path: Path, kind: str
) -> None:
    # The public half as openssl writes it: loading big RSA private keys is slow (cryptography
    # validates them), and the private file is covered below.
    pub = tmp_path / f"{kind}.pub.pem"
    run_tool("openssl", "pkey", "-in", str(openssl_key(kind)), "-pubout", "-out", str(pub))
    for service in ACCEPTED:
        assert_verdict(devid, str(pub), kind, service)


@pytest.mark.parametrize("kind", ["rsa-2048", "ec-p384", "ed25519"])
def test_check_private_key_files(
    devid: Callable[..., Result], openssl_key: Callable[[str], Path], kind: str
) -> None:
    for service in ACCEPTED:
        assert_verdict(devid, str(openssl_key(kind)), kind, service)


@pytest.mark.parametrize("kind", ["rsa-2048", "ec-p256", "ed25519"])
def test_check_token_keys(
    devid: Callable[..., Result], token_key_factory: Callable[[str], Any], kind: str
) -> None:
    ref = token_key_factory(kind).reference
    for service in ACCEPTED:
        assert_verdict(devid, ref, kind, service)


def test_check_codecommit_refuses_ed25519_with_advice(
    devid_proc: Callable[..., Result], openssl_key: Callable[[str], Path]
) -> None:
    result = devid_proc("key", "check", openssl_key("ed25519"), "--for", "codecommit", "--json")
    reason = "ed25519 keys are not accepted by CodeCommit; use rsa-2048 or larger"
    assert result.err == f"devid: error: {reason}\n"
    assert result.code == 1
    assert json.loads(result.out) == {"service": "codecommit", "ok": False, "reason": reason}


def test_check_encrypted_key_with_passphrase_file(
    devid: Callable[..., Result], openssl_key: Callable[[str], Path], tmp_path: Path
) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE)
    enc = tmp_path / "enc.pem"
    run_tool("openssl", "pkey", "-in", str(openssl_key("rsa-2048")), "-aes256",
             "-passout", f"file:{pass_file}", "-out", str(enc))  # fmt: skip
    result = devid("key", "check", enc, "--for", "iot", "--passphrase-file", pass_file, "--json")
    assert as_json(result)["ok"] is True


# -- bad input ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]  # "{d}" is the work directory
    code: int
    fragment: str
    proc: bool = False  # also run as a subprocess


GARBAGE_FILES = ["garbage.bin", "truncated.pem", "empty", "adir", "missing.pem"]
BAD: dict[str, Bad] = {
    "uri-bad-escape": Bad(("key", "public", f"{TOKEN};object=x;id=%zz"), 2, "malformed PKCS#11 URI",
                          proc=True),
    "uri-unknown-attribute": Bad(("key", "fingerprint", f"{TOKEN};bogus=1"), 2,
                                 "unknown attribute"),
    "uri-no-equals": Bad(("key", "check", f"{TOKEN};object", "--for", "iot"), 2, "has no '='"),
    "uri-names-no-key": Bad(("key", "public", TOKEN), 2, "names no key"),
    "unknown-token": Bad(("key", "public", "pkcs11:token=no-such-token;object=x"), 3,
                         "no PKCS#11 token matches", proc=True),
    "unknown-key": Bad(("key", "fingerprint", f"{TOKEN};object=no-such-key"), 1,
                       "no private key object='no-such-key'"),
    "missing-module": Bad(("key", "public", f"{TOKEN};object=x?module-path=/nonexistent/p11.so"),
                          3, "module not found", proc=True),
    **{
        f"{verb}-{name}": Bad(
            ("key", verb, f"{{d}}/{name}", *(("--for", "ec2") if verb == "check" else ())),
            2, "", proc=verb == "fingerprint" and name in ("garbage.bin", "truncated.pem"),
        )
        for verb in ("public", "fingerprint", "check")
        for name in GARBAGE_FILES
    },
    "generate-existing": Bad(("key", "generate", "ec-p256", "--out", "{d}/existing.pem"), 4,
                             "exists; pass --force", proc=True),
    "public-out-existing": Bad(("key", "public", "{d}/existing.pem", "--out", "{d}/existing.pub"),
                               4, "exists; pass --force"),
    "unknown-key-type": Bad(("key", "generate", "ec-p999", "--out", "{d}/new.pem"), 2,
                            "'ec-p999' is not one of", proc=True),
    "out-and-token": Bad(("key", "generate", "ec-p256", "--out", "{d}/new.pem", "--token", TOKEN,
                          "--label", "{label}"), 2, "either --out PATH or --token URI", proc=True),
    "neither-out-nor-token": Bad(("key", "generate", "ec-p256"), 2,
                                 "either --out PATH or --token URI"),
    "token-without-label": Bad(("key", "generate", "ec-p256", "--token", TOKEN), 2, "--label"),
    "token-with-passphrase": Bad(("key", "generate", "ec-p256", "--token", TOKEN, "--label",
                                  "{label}", "--passphrase-file", "{d}/pass"), 2, "token keys"),
    "generate-unknown-token": Bad(("key", "generate", "ec-p256", "--token",
                                   "pkcs11:token=no-such-token", "--label", "{label}"), 3,
                                  "no PKCS#11 token matches"),
    "generate-malformed-token-uri": Bad(("key", "generate", "ec-p256", "--token",
                                         "pkcs11:token=x;id=%zz", "--label", "{label}"), 2,
                                        "malformed PKCS#11 URI"),
    "ed25519-pkcs1": Bad(("key", "generate", "ed25519", "--out", "{d}/new.pem", "--format",
                          "pkcs1"), 2, "no PKCS#1 form"),
    "out-in-missing-dir": Bad(("key", "generate", "ec-p256", "--out", "{d}/no/such/k.pem"), 2,
                              "cannot write"),
    "out-is-a-directory": Bad(("key", "generate", "ec-p256", "--out", "{d}/adir"), 2,
                              "is a directory"),
    "missing-passphrase-file": Bad(("key", "generate", "ec-p256", "--out", "{d}/new.pem",
                                    "--passphrase-file", "{d}/nope"), 2, "passphrase file"),
    "empty-passphrase-file": Bad(("key", "generate", "ec-p256", "--out", "{d}/new.pem",
                                  "--passphrase-file", "{d}/empty"), 2,
                                 "the passphrase is empty"),
    "encrypted-no-passphrase": Bad(("key", "fingerprint", "{d}/enc.pem"), 2,
                                   "give --passphrase-file or set DEVID_PASSPHRASE", proc=True),
    "encrypted-wrong-passphrase": Bad(("key", "fingerprint", "{d}/enc.pem", "--passphrase-file",
                                       "{d}/wrong"), 2, "wrong passphrase", proc=True),
    "unknown-service": Bad(("key", "check", "{d}/existing.pem", "--for", "s3"), 2,
                           "'s3' is not one of"),
    "unknown-command": Bad(("key", "frobnicate"), 2, "No such command"),
    "missing-argument": Bad(("key", "public"), 2, "Missing argument"),
}  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path, openssl_key: Callable[[str], Path]) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / "garbage.bin").write_bytes(bytes(range(256)) * 3)
    whole = openssl_key("ec-p256").read_bytes()
    (d / "truncated.pem").write_bytes(whole[: len(whole) // 2])
    (d / "empty").write_bytes(b"")
    (d / "adir").mkdir()
    (d / "existing.pem").write_bytes(whole)
    (d / "existing.pub").write_text("keep me\n")
    (d / "pass").write_text(PASSPHRASE)
    (d / "wrong").write_text("not " + PASSPHRASE)
    run_tool("openssl", "pkey", "-in", str(openssl_key("ec-p256")), "-aes256",
             "-passout", f"file:{d / 'pass'}", "-out", str(d / "enc.pem"))  # fmt: skip
    return d


def bad_args(case: Bad, directory: Path, label: str) -> list[str]:
    return [a.replace("{d}", str(directory)).replace("{label}", label) for a in case.args]


def token_labels(devid: Callable[..., Result]) -> set[str]:
    return {k["label"] for k in as_json(devid("hsm", "keys", TOKEN, "--json"))}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_in_process(
    devid: Callable[..., Result], token_uri: str, workdir: Path, name: str
) -> None:
    case = BAD[name]
    label = unique("never-made")
    before = snapshot(workdir)
    result = devid(*bad_args(case, workdir, label))
    assert_one_error_line(result, case.code, case.fragment)
    assert snapshot(workdir) == before
    if "{label}" in case.args:
        assert label not in token_labels(devid)


@pytest.mark.parametrize("name", [n for n, c in BAD.items() if c.proc])
def test_bad_input_as_subprocess(
    devid_proc: Callable[..., Result], token_uri: str, workdir: Path, name: str
) -> None:
    case = BAD[name]
    before = snapshot(workdir)
    result = devid_proc(*bad_args(case, workdir, unique("never-made")))
    assert_one_error_line(result, case.code, case.fragment)
    assert snapshot(workdir) == before


def test_wrong_pin_is_an_environment_error(
    devid_proc: Callable[..., Result], token_key_factory: Callable[[str], Any]
) -> None:
    ref = token_key_factory("ec-p256").reference
    result = devid_proc("key", "public", ref, env={"DEVID_PKCS11_PIN": "9999"})
    assert_one_error_line(result, 3, "refused the PIN")
    assert "9999" not in result.err


def test_generate_encrypt_takes_devid_passphrase_and_only_then(
    devid: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVID_PASSPHRASE", "abcdefgh")
    made = devid("key", "generate", "ec-p256", "--out", tmp_path / "enc.pem", "--encrypt")
    assert made.code == 0, made.err
    assert b"ENCRYPTED" in (tmp_path / "enc.pem").read_bytes()
    run_tool("openssl", "pkey", "-in", str(tmp_path / "enc.pem"), "-passin", "pass:abcdefgh",
             "-noout")  # fmt: skip
    # without --encrypt the ambient variable (it also opens keys) does not encrypt a new key
    plain = devid("key", "generate", "ec-p256", "--out", tmp_path / "plain.pem")
    assert plain.code == 0 and b"ENCRYPTED" not in (tmp_path / "plain.pem").read_bytes()
    monkeypatch.setenv("DEVID_PASSPHRASE", "")
    empty = devid("key", "generate", "ec-p256", "--out", tmp_path / "e.pem", "--encrypt")
    assert empty.code == 2 and "the passphrase is empty" in empty.err
    assert not (tmp_path / "e.pem").exists()


@pytest.mark.parametrize("source", ["long", "/dev/zero"])
def test_passphrase_files_that_cannot_be_a_passphrase(
    devid: Callable[..., Result], tmp_path: Path, source: str
) -> None:
    path = tmp_path / "long.txt"
    path.write_text("x" * 1100 + "\n")
    given = str(path) if source == "long" else source
    result = devid("key", "generate", "ed25519", "--out", tmp_path / "k", "--passphrase-file",
                   given)  # fmt: skip
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1
    expected = "at most 1023" if source == "long" else "not a regular file"
    assert expected in result.err and "xxxx" not in result.err
    assert not (tmp_path / "k").exists()
