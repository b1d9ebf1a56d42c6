"""``devid ec2 create/import/list/delete`` against a moto server over real HTTP.

moto's fingerprints differ from AWS's (DESIGN.md section 3) and are never asserted: devid's
own values are checked against AWS's openssl / ssh-keygen pipelines, and what AWS stored is
checked through DescribeKeyPairs' public key.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, MotoServer, Result, run_tool, softhsm_module
from ec2_support import (
    MOTO_PUBLIC_KEY,
    MOTO_PUBLISHED_FINGERPRINT,
    Pipelines,
    openssl_ec,
    openssl_rsa,
    public_line,
    ssh_keygen,
)

from devid import fsutil
from devid.errors import BadInput


def key_pairs(moto: MotoServer) -> dict[str, dict[str, Any]]:
    """What EC2 holds, asked with boto3 directly (not through devid)."""
    answer = moto.client("ec2").describe_key_pairs(IncludePublicKey=True)  # type: ignore[attr-defined]
    return {kp["KeyName"]: kp for kp in answer["KeyPairs"]}


def stored_public(moto: MotoServer, name: str) -> str:
    return " ".join(key_pairs(moto)[name]["PublicKey"].split()[:2])


def one_error(result: Result, code: int, needle: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    assert result.err.startswith("devid: error: ") and result.err.count("\n") == 1, result.err
    assert needle in result.err, result.err


# --- create ------------------------------------------------------------------------------------


def test_create_rsa_pem(tmp_path: Path, devid: Callable[..., Result], moto: MotoServer) -> None:
    out = tmp_path / "web.pem"
    result = devid("ec2", "create", "web", "--type", "rsa", "--out", out, "--json",
                   *moto.aws_args())  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    run_tool("openssl", "rsa", "-in", str(out), "-check", "-noout")
    assert data["name"] == "web" and data["type"] == "rsa"
    assert data["key_pair_id"] == key_pairs(moto)["web"]["KeyPairId"]
    assert data["fingerprint"] == key_pairs(moto)["web"]["KeyFingerprint"]  # AWS's, reported
    assert data["devid_fingerprint"] == Pipelines.created(out)
    assert public_line(out) == stored_public(moto, "web")


def test_create_ed25519_pem(tmp_path: Path, devid: Callable[..., Result], moto: MotoServer) -> None:
    out = tmp_path / "edge"
    result = devid("ec2", "create", "edge", "--type", "ed25519", "--out", out, "--json",
                   *moto.aws_args())  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["type"] == "ed25519"
    assert data["devid_fingerprint"] == Pipelines.ed25519(out)
    assert public_line(out) == stored_public(moto, "edge")


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
@pytest.mark.parametrize("version", ["2", "3"])
def test_create_ppk(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer, key_type: str, version: str
) -> None:
    out = tmp_path / "win.ppk"
    result = devid("ec2", "create", "win", "--type", key_type, "--format", "ppk",
                   "--ppk-version", version, "--out", out, "--json", *moto.aws_args())  # fmt: skip
    assert result.code == 0, result.err
    assert out.read_bytes().startswith(f"PuTTY-User-Key-File-{version}: ".encode())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert public_line(out) == stored_public(moto, "win")  # puttygen reads what AWS holds
    data = json.loads(result.out)
    assert data["format"] == "ppk"
    # The fingerprint devid reports is AWS's, computed from what puttygen exports.
    if key_type == "rsa":
        exported = tmp_path / "exported.pem"
        run_tool("puttygen", str(out), "-O", "private-openssh", "-o", str(exported))
        assert data["devid_fingerprint"] == Pipelines.created(exported)
    else:
        pub = tmp_path / "exported.pub"
        run_tool("puttygen", str(out), "-O", "public-openssh", "-o", str(pub))
        assert data["devid_fingerprint"] == Pipelines.ed25519(pub)


def test_create_refuses_an_existing_file_before_calling_aws(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer
) -> None:
    out = tmp_path / "taken.pem"
    out.write_bytes(b"keep")
    one_error(devid("ec2", "create", "kp", "--out", out, *moto.aws_args()), 4, "exists")
    assert out.read_bytes() == b"keep"
    assert key_pairs(moto) == {}
    one_error(
        devid("ec2", "create", "kp", "--out", out / "x.pem", *moto.aws_args()), 2, "directory"
    )
    assert key_pairs(moto) == {}


def test_create_rolls_back_when_the_write_fails(
    tmp_path: Path,
    devid: Callable[..., Result],
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(path: Path, data: bytes, **_: object) -> Path:
        raise BadInput(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(fsutil, "write_atomic", refuse)
    out = tmp_path / "lost.pem"
    result = devid("ec2", "create", "lost", "--out", out, *moto.aws_args())
    one_error(result, 2, "No space left on device")
    assert "deleted again" in result.err
    assert result.out == ""
    assert "lost" not in key_pairs(moto)
    assert not out.exists()


def test_create_rolls_back_on_a_real_write_failure(tmp_path: Path, moto: MotoServer) -> None:
    # A file size limit of 0 makes write() fail with EFBIG (Python ignores SIGXFSZ).
    out = tmp_path / "big.pem"
    args = ["ec2", "create", "big", "--out", str(out), *moto.aws_args()]
    script = 'ulimit -f 0; exec "$0" -m devid "$@"'
    done = subprocess.run(["bash", "-c", script, sys.executable, *args], capture_output=True,
                          text=True, cwd=ROOT, env=os.environ.copy(), timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "deleted again" in done.stderr and done.stderr.count("\n") == 1
    assert "big" not in key_pairs(moto)
    assert list(tmp_path.iterdir()) == []


def test_create_duplicate_name(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer
) -> None:
    assert devid("ec2", "create", "dup", "--out", tmp_path / "a.pem", *moto.aws_args()).code == 0
    one_error(
        devid("ec2", "create", "dup", "--out", tmp_path / "b.pem", *moto.aws_args()), 4, "exists"
    )
    assert not (tmp_path / "b.pem").exists()


# --- import ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["private", "public"])
def test_import_rsa(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer, which: str
) -> None:
    key = ssh_keygen(tmp_path / "id_rsa", "rsa")
    ref = key if which == "private" else Path(f"{key}.pub")
    result = devid("ec2", "import", "laptop", "--key", ref, "--json", *moto.aws_args())
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["devid_fingerprint"] == Pipelines.imported(key)
    assert data["key_pair_id"] == key_pairs(moto)["laptop"]["KeyPairId"]
    assert stored_public(moto, "laptop") == public_line(key)


def test_import_published_moto_key(devid: Callable[..., Result], moto: MotoServer) -> None:
    result = devid("ec2", "import", "moto", "--key", MOTO_PUBLIC_KEY, "--json", *moto.aws_args())
    assert result.code == 0, result.err
    assert json.loads(result.out)["devid_fingerprint"] == MOTO_PUBLISHED_FINGERPRINT


def test_import_ed25519_and_encrypted_ppk(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer
) -> None:
    key = ssh_keygen(tmp_path / "id_ed25519")
    result = devid("ec2", "import", "ed", "--key", key, "--json", *moto.aws_args())
    assert result.code == 0, result.err
    assert json.loads(result.out)["devid_fingerprint"] == Pipelines.ed25519(key)
    # An encrypted PPK imports without its passphrase: the public half is in clear.
    secret = tmp_path / "pass"
    secret.write_bytes(b"ppk pass")
    ppk = tmp_path / "enc.ppk"
    run_tool("puttygen", "-t", "rsa", "-q", "-o", str(ppk), "--new-passphrase", str(secret))
    result = devid("ec2", "import", "putty", "--key", ppk, *moto.aws_args())
    assert result.code == 0, result.err
    assert stored_public(moto, "putty") == public_line(ppk)


@pytest.mark.parametrize("key_type", ["rsa-2048", "ed25519"])
def test_import_token_key(
    devid: Callable[..., Result],
    moto: MotoServer,
    token_key_factory: Callable[..., Any],
    key_type: str,
) -> None:
    key = token_key_factory(key_type)
    result = devid("ec2", "import", "hsm", "--key", key.reference, "--json", *moto.aws_args())
    assert result.code == 0, result.err
    stored = stored_public(moto, "hsm")
    if key_type.startswith("rsa"):
        # OpenSSH reads the token itself; it lists Ed25519 token keys not at all (DESIGN.md).
        listed = run_tool("ssh-keygen", "-D", softhsm_module()).stdout.decode()
        assert stored in {" ".join(line.split()[:2]) for line in listed.splitlines()}
    assert json.loads(result.out)["type"] == key_type.split("-")[0]


def test_import_duplicate(tmp_path: Path, devid: Callable[..., Result], moto: MotoServer) -> None:
    key = ssh_keygen(tmp_path / "k")
    assert devid("ec2", "import", "same", "--key", key, *moto.aws_args()).code == 0
    one_error(devid("ec2", "import", "same", "--key", key, *moto.aws_args()), 4, "already exists")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: openssl_ec(p), "ec-p256"),
        (lambda p: openssl_ec(p, "P-384"), "ec-p384"),
        (lambda p: openssl_rsa(p, 3072), "rsa-3072"),
    ],
    ids=["ecdsa-p256", "ecdsa-p384", "rsa-3072"],
)
def test_import_refuses_keys_ec2_does_not_take(
    tmp_path: Path,
    devid: Callable[..., Result],
    moto: MotoServer,
    make: Callable[[Path], Path],
    needle: str,
) -> None:
    key = make(tmp_path / "k.pem")
    one_error(devid("ec2", "import", "nope", "--key", key, *moto.aws_args()), 1, needle)
    assert key_pairs(moto) == {}


def test_import_corrupt_ppk(tmp_path: Path, devid: Callable[..., Result], moto: MotoServer) -> None:
    bad = tmp_path / "bad.ppk"
    bad.write_bytes(b"PuTTY-User-Key-File-3: ssh-rsa\nEncryption: none\nComment: x\n")
    one_error(devid("ec2", "import", "bad", "--key", bad, *moto.aws_args()), 2, "PPK")
    assert key_pairs(moto) == {}


# --- list and delete ---------------------------------------------------------------------------


def _by_name(data: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    return {
        kp["name"]: sorted((m["reference"], m["method"]) for m in kp["matches"])
        for kp in data["key_pairs"]
    }


def test_list_matches_keys_in_home_ssh(
    tmp_path: Path,
    devid: Callable[..., Result],
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    imported = ssh_keygen(ssh / "id_rsa", "rsa")
    spare = ssh_keygen(ssh / "spare")
    locked = ssh_keygen(ssh / "locked", passphrase="secret words")
    Path(f"{locked}.pub").unlink()
    (ssh / "config").write_text("Host *\n  IdentitiesOnly yes\n")
    (ssh / "known_hosts").write_text(Path(f"{spare}.pub").read_text())
    # not keys of the user's own, though they hold key material: OpenSSH's other files,
    # backups (devid's config backups among them) and hidden files
    (ssh / "authorized_keys2").write_text(Path(f"{spare}.pub").read_text())
    (ssh / "config.bak-20261129T000000").write_text(Path(f"{spare}.pub").read_text())
    (ssh / "spare.bak-20261129T000000").write_bytes(Path(spare).read_bytes())
    (ssh / ".spare-copy").write_bytes(Path(spare).read_bytes())
    aws = moto.aws_args()
    assert devid("ec2", "import", "laptop", "--key", f"{imported}.pub", *aws).code == 0
    assert devid("ec2", "create", "made", "--out", ssh / "made.pem", *aws).code == 0
    assert devid("ec2", "create", "made-ed", "--type", "ed25519", "--out", ssh / "made_ed",
                 *aws).code == 0  # fmt: skip
    assert devid("ec2", "create", "elsewhere", "--out", tmp_path / "x.pem", *aws).code == 0

    result = devid("ec2", "list", "--json", *aws)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    found = _by_name(data)
    assert found["laptop"] == [
        (str(imported), "imported-fingerprint"),
        (f"{imported}.pub", "imported-fingerprint"),
    ]
    # moto's created/Ed25519 fingerprints are not AWS's: any method may match, the key must.
    assert [ref for ref, _ in found["made"]] == [str(ssh / "made.pem")]
    assert [ref for ref, _ in found["made-ed"]] == [str(ssh / "made_ed")]
    assert found["elsewhere"] == []
    unmatched = {k["reference"]: k for k in data["unmatched_local_keys"]}
    assert set(unmatched) == {str(spare), f"{spare}.pub"}
    assert unmatched[str(spare)]["ec2_fingerprint"] == Pipelines.ed25519(spare)
    assert [s["reference"] for s in data["skipped"]] == [str(locked)]

    text = devid("ec2", "list", *aws)
    assert text.code == 0 and str(ssh / "made.pem") in text.out and "skipped" in text.out


def test_list_match_names_files_dirs_and_tokens(
    tmp_path: Path,
    devid: Callable[..., Result],
    moto: MotoServer,
    token_key_factory: Callable[..., Any],
) -> None:
    token = token_key_factory("rsa-2048")
    loose = openssl_rsa(tmp_path / "loose.pem", traditional=True)
    keys = tmp_path / "keys"
    keys.mkdir()
    in_dir = ssh_keygen(keys / "in_dir")
    aws = moto.aws_args()
    for name, ref in (("tok", token.reference), ("loose", loose), ("dir", f"{in_dir}.pub")):
        assert devid("ec2", "import", name, "--key", ref, *aws).code == 0
    result = devid("ec2", "list", "--match", token.reference, "--match", loose, "--match", keys,
                   "--json", *aws)  # fmt: skip
    assert result.code == 0, result.err
    found = _by_name(json.loads(result.out))
    assert found["tok"] == [(token.reference, "imported-fingerprint")]
    assert found["loose"] == [(str(loose), "imported-fingerprint")]
    assert sorted(ref for ref, _ in found["dir"]) == [str(in_dir), f"{in_dir}.pub"]

    missing = devid("ec2", "list", "--match", tmp_path / "nothing.pem", *aws)
    one_error(missing, 2, "not found")


def test_delete(tmp_path: Path, devid: Callable[..., Result], moto: MotoServer) -> None:
    key = ssh_keygen(tmp_path / "k")
    assert devid("ec2", "import", "gone", "--key", key, *moto.aws_args()).code == 0
    result = devid("ec2", "delete", "gone", "--json", *moto.aws_args())
    assert result.code == 0, result.err
    assert json.loads(result.out)["deleted"] is True
    assert key_pairs(moto) == {}
    assert key.exists()
    one_error(devid("ec2", "delete", "gone", *moto.aws_args()), 1, "no key pair")


def test_bad_name_is_refused_before_aws(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer
) -> None:
    out = tmp_path / "k.pem"
    one_error(devid("ec2", "create", "x" * 256, "--out", out, *moto.aws_args()), 2, "255")
    assert not out.exists() and key_pairs(moto) == {}


@pytest.mark.parametrize(
    ("aws", "needle"),
    [
        (["--endpoint-url", "notaurl", "--region", "us-east-1"], "is not an http(s) URL"),
        (["--endpoint-url", "http://[::1", "--region", "us-east-1"], "is not a URL"),
        (["--endpoint-url", "http://127.0.0.1:99999", "--region", "us-east-1"], "is not a URL"),
        (["--region", "bad region"], "is not an AWS Region name"),
        (["--region", ""], "--region is empty"),
    ],
    ids=["not-a-url", "bad-ipv6", "bad-port", "bad-region", "empty-region"],
)
@pytest.mark.parametrize("command", [["list"], ["delete", "k"]])
def test_bad_endpoint_or_region_is_bad_input(
    devid: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    aws: list[str],
    needle: str,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    one_error(devid("ec2", *command, *aws), 2, needle)


def test_list_match_a_whole_token(
    devid: Callable[..., Result],
    moto: MotoServer,
    token_uri: str,
    token_key_factory: Callable[..., Any],
) -> None:
    # A token URI without an object names every key on it, as for 'devid ssh list'.
    token = token_key_factory("rsa-2048")
    aws = moto.aws_args()
    assert devid("ec2", "import", "tok", "--key", token.reference, *aws).code == 0

    result = devid("ec2", "list", "--match", token_uri, "--json", *aws)

    assert result.code == 0, result.err
    found = _by_name(json.loads(result.out))
    assert [method for _, method in found["tok"]] == ["imported-fingerprint"]
    ((ref, _),) = found["tok"]
    assert ref.startswith(token_uri) and token.handle.label in ref
