"""``devid ssh rotate`` writes an ``IdentityFile`` only if it holds the key it uploads, and
``ssh register``/``ssh rotate`` open encrypted keys with ``--passphrase-file``.

A rotation to a key whose ``IdentityFile`` holds another key would leave ssh offering a
key IAM does not know, and then retire the old, working one: it must stop (exit 2) before
anything is uploaded. Keys are made by ``ssh-keygen``; fingerprints come from it too.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import MotoServer, Result, run_tool
from ssh_support import registered_ids, ssh_resolved, statuses, write_key_pair

from devid.codecommit import _openssh_public_blob
from devid.errors import BadInput

Devid = Callable[..., Result]
PASSPHRASE = "correct horse battery staple 7"


def _iam(moto: MotoServer) -> Any:
    return boto3.client("iam", endpoint_url=moto.url, region_name=moto.region)


def _sha256(path: Path) -> str:
    """``ssh-keygen -l`` of a key file: its SHA256 fingerprint."""
    return run_tool("ssh-keygen", "-l", "-f", str(path)).stdout.decode().split()[1]


def _keygen(path: Path, *, pem: bool) -> tuple[Path, str]:
    """An encrypted RSA key made by ssh-keygen (PEM or OpenSSH format), without its .pub,
    and its fingerprint."""
    fmt = ["-m", "PEM"] if pem else []
    run_tool("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", *fmt, "-N", PASSPHRASE,
             "-C", "", "-f", str(path))  # fmt: skip
    pub = Path(f"{path}.pub")
    fingerprint = _sha256(pub)
    pub.unlink()
    return path, fingerprint


def _one_error_line(result: Result) -> str:
    assert result.err.startswith("devid: error: "), result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    return result.err


@pytest.fixture
def configured(devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path) -> tuple[str, Path]:
    """A registered key the ssh config uses: (its key id, the config file)."""
    config = ssh_home / ".ssh" / "config"
    old = write_key_pair(ssh_home / ".ssh", "old")
    out = devid("ssh", "register", "--user", iam_user, "--key", f"{old}.pub", *moto.aws_args(),
                "--json")  # fmt: skip
    assert out.code == 0, out.err
    key_id = str(json.loads(out.out)["key_id"])
    wrote = devid("ssh", "config", "--key-id", key_id, "--identity", old, "--file", config,
                  "--write")  # fmt: skip
    assert wrote.code == 0, wrote.err
    return key_id, config


def _unchanged(moto: MotoServer, user: str, configured: tuple[str, Path], before: bytes) -> None:
    old_id, config = configured
    assert statuses(_iam(moto), user) == {old_id: "Active"}
    assert config.read_bytes() == before
    assert ssh_resolved(config)["user"] == [old_id]


def test_rotate_refuses_an_identity_holding_another_key(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path, configured: tuple[str, Path]
) -> None:
    new = write_key_pair(ssh_home / ".ssh", "b")
    other = write_key_pair(ssh_home / ".ssh", "c")
    before = configured[1].read_bytes()

    result = devid("ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub",
                   "--identity", other, *moto.aws_args())  # fmt: skip

    assert result.code == 2, result.err
    err = _one_error_line(result)
    assert _sha256(Path(f"{new}.pub")) in err and _sha256(other) in err
    assert result.out == ""
    _unchanged(moto, iam_user, configured, before)


def test_rotate_refuses_a_private_key_beside_the_pub_holding_another_key(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path, configured: tuple[str, Path]
) -> None:
    new = write_key_pair(ssh_home / ".ssh", "b")
    other = write_key_pair(ssh_home / ".ssh", "c")
    shutil.copy(other, new)  # b.pub and b no longer belong together
    before = configured[1].read_bytes()

    result = devid("ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub", *moto.aws_args())

    assert result.code == 2, result.err
    assert _sha256(other) in _one_error_line(result)
    _unchanged(moto, iam_user, configured, before)


def test_rotate_refuses_a_missing_identity(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path, configured: tuple[str, Path]
) -> None:
    new = write_key_pair(ssh_home / ".ssh", "b")
    before = configured[1].read_bytes()

    result = devid("ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub",
                   "--identity", ssh_home / "nonexistent", *moto.aws_args())  # fmt: skip

    assert result.code == 2, result.err
    assert "not found" in _one_error_line(result)
    _unchanged(moto, iam_user, configured, before)


def test_rotate_refuses_a_putty_identity(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path, configured: tuple[str, Path]
) -> None:
    new = write_key_pair(ssh_home / ".ssh", "b")
    ppk = ssh_home / "b.ppk"
    run_tool("puttygen", str(new), "-O", "private", "-o", str(ppk))
    before = configured[1].read_bytes()

    result = devid("ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub",
                   "--identity", ppk, *moto.aws_args())  # fmt: skip

    assert result.code == 2, result.err
    assert "PuTTY" in _one_error_line(result)
    _unchanged(moto, iam_user, configured, before)


def test_an_encrypted_openssh_identity_is_checked_without_its_passphrase(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    configured: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenSSH keeps the public key of an encrypted key in clear: no passphrase is asked for.
    monkeypatch.delenv("DEVID_PASSPHRASE", raising=False)
    new = write_key_pair(ssh_home / ".ssh", "b")
    other, fingerprint = _keygen(ssh_home / ".ssh" / "c", pem=False)
    before = configured[1].read_bytes()

    result = devid("ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub",
                   "--identity", other, *moto.aws_args())  # fmt: skip

    assert result.code == 2, result.err
    err = _one_error_line(result)
    assert fingerprint in err and "passphrase" not in err
    _unchanged(moto, iam_user, configured, before)


def test_an_encrypted_pem_identity_is_opened_with_the_passphrase_file(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    configured: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEVID_PASSPHRASE", raising=False)
    secret = ssh_home / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    new = write_key_pair(ssh_home / ".ssh", "b")
    other, fingerprint = _keygen(ssh_home / ".ssh" / "c", pem=True)  # no .pub to read
    before = configured[1].read_bytes()
    rotate = ["ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub", *moto.aws_args()]

    refused = devid(*rotate, "--identity", other, "--passphrase-file", secret)
    assert refused.code == 2, refused.err
    assert fingerprint in _one_error_line(refused)
    assert PASSPHRASE not in refused.out + refused.err
    _unchanged(moto, iam_user, configured, before)

    # The same key in an encrypted PEM file elsewhere: accepted.
    same = ssh_home / "same.pem"
    run_tool("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f",
             str(same))  # fmt: skip
    shutil.copy(same, new)
    shutil.copy(f"{same}.pub", f"{new}.pub")
    run_tool("ssh-keygen", "-q", "-p", "-m", "PEM", "-P", "", "-N", PASSPHRASE, "-f", str(same))
    Path(f"{same}.pub").unlink()
    done = devid(*rotate, "--identity", same, "--passphrase-file", secret, "--json")
    assert done.code == 0, done.err
    assert PASSPHRASE not in done.out + done.err
    new_id = json.loads(done.out)["new_key"]["key_id"]
    assert ssh_resolved(configured[1])["identityfile"] == [str(same)]
    assert statuses(_iam(moto), iam_user) == {configured[0]: "Inactive", new_id: "Active"}


def test_rotate_accepts_a_copy_of_the_private_key(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path, configured: tuple[str, Path]
) -> None:
    new = write_key_pair(ssh_home / ".ssh", "b")
    copy = ssh_home / "keys" / "b-copy"
    copy.parent.mkdir()
    shutil.copy(new, copy)

    result = devid("ssh", "rotate", "--user", iam_user, "--key", f"{new}.pub",
                   "--identity", copy, *moto.aws_args(), "--json")  # fmt: skip

    assert result.code == 0, result.err
    assert ssh_resolved(configured[1])["identityfile"] == [str(copy)]


@pytest.mark.parametrize("pem", [True, False], ids=["pem", "openssh"])
def test_register_and_rotate_open_an_encrypted_key_with_a_passphrase_file(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    pem: bool,
) -> None:
    monkeypatch.delenv("DEVID_PASSPHRASE", raising=False)
    secret = ssh_home / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    aws = moto.aws_args()
    first, _ = _keygen(ssh_home / ".ssh" / "first", pem=pem)
    second, _ = _keygen(ssh_home / ".ssh" / "second", pem=pem)

    asked = devid("ssh", "register", "--user", iam_user, "--key", first, *aws)
    assert asked.code == 2
    assert "--passphrase-file" in _one_error_line(asked)

    registered = devid("ssh", "register", "--user", iam_user, "--key", first,
                       "--passphrase-file", secret, *aws, "--json")  # fmt: skip
    assert registered.code == 0, registered.err
    first_id = json.loads(registered.out)["key_id"]
    assert registered_ids(_iam(moto), iam_user) == [first_id]

    rotated = devid("ssh", "rotate", "--user", iam_user, "--key", second,
                    "--passphrase-file", secret, *aws)  # fmt: skip
    assert rotated.code == 0, rotated.err
    (second_id,) = set(registered_ids(_iam(moto), iam_user)) - {first_id}
    config = ssh_home / ".ssh" / "config"
    assert ssh_resolved(config)["user"] == [second_id]
    assert ssh_resolved(config)["identityfile"] == [str(second)]
    for result in (asked, registered, rotated):
        assert PASSPHRASE not in result.out + result.err


def _openssh_file(body: bytes) -> bytes:
    text = base64.b64encode(b"openssh-key-v1\0" + body).decode()
    return (
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{text}\n-----END OPENSSH PRIVATE KEY-----\n".encode()
    )


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def test_the_clear_public_key_of_an_openssh_file_and_malformed_ones(tmp_path: Path) -> None:
    key = tmp_path / "k"
    run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "secret words", "-f", str(key))
    line = (tmp_path / "k.pub").read_text().split()
    assert _openssh_public_blob(key.read_bytes(), "k") == base64.b64decode(line[1])

    head = _string(b"none") + _string(b"none") + _string(b"")
    several = "k: malformed OpenSSH private key, or one with several keys"
    for body, message in [
        (head[:-2], several),  # truncated in the cipher/kdf fields
        (head + (2).to_bytes(4, "big"), several),  # two keys
        (head + (1).to_bytes(4, "big") + b"\0\0\0\x09abc", "k: malformed OpenSSH private key"),
        (head + (1).to_bytes(4, "big") + _string(b""), "k: malformed OpenSSH private key"),
    ]:
        with pytest.raises(BadInput) as info:
            _openssh_public_blob(_openssh_file(body), "k")
        assert str(info.value) == message
    assert _openssh_public_blob(b"-----BEGIN PRIVATE KEY-----\n", "k") is None
