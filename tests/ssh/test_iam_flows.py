"""``devid ssh`` against a moto server over real HTTP, checked through boto3 and ssh-keygen.

moto enforces neither the RSA >= 2048 rule, nor the 5-key quota, nor duplicates, and its
fingerprint is the MD5 of the body text (DESIGN.md section 3): these tests check that devid
enforces all three itself and never assert moto's fingerprint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from conftest import MotoServer, Result, run_tool
from ssh_support import (
    registered_ids,
    ssh_keygen_md5,
    ssh_resolved,
    statuses,
    write_key_pair,
)

from devid import policy
from devid.aws import AwsOptions
from devid.iam import Encoding, IamSshKeys
from devid.loading import load_public_key

Devid = Callable[..., Result]


def _json(result: Result) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def _iam(moto: MotoServer) -> Any:
    """boto3's own view of IAM on the moto server."""
    return boto3.client("iam", endpoint_url=moto.url, region_name=moto.region)


def _blob(pub_file: Path) -> str:
    return pub_file.read_text().split()[1]


def test_register_list_rotate_deactivate_delete(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    aws = moto.aws_args()
    old, new = (
        write_key_pair(ssh_home / ".ssh", "cc_old"),
        write_key_pair(ssh_home / ".ssh", "cc_new"),
    )
    iam = _iam(moto)

    reg = _json(devid("ssh", "register", "--user", iam_user, "--key", f"{old}.pub", *aws, "--json"))
    old_id = reg["key_id"]
    assert registered_ids(iam, iam_user) == [old_id]
    assert reg["status"] == "Active"
    assert reg["fingerprint"] == ssh_keygen_md5(Path(f"{old}.pub"))
    body = iam.get_ssh_public_key(UserName=iam_user, SSHPublicKeyId=old_id, Encoding="SSH")
    assert body["SSHPublicKey"]["SSHPublicKeyBody"].split()[:2] == [
        "ssh-rsa",
        _blob(Path(f"{old}.pub")),
    ]

    wrote = _json(
        devid("ssh", "config", "--key-id", old_id, "--identity", str(old), "--write", "--json")
    )
    config = ssh_home / ".ssh" / "config"
    assert wrote["file"] == str(config)
    assert ssh_resolved(config)["user"] == [old_id]

    listed = _json(devid("ssh", "list", "--user", iam_user, *aws, "--json"))
    (row,) = listed["keys"]
    assert row["key_id"] == old_id
    assert sorted(row["local"]) == [str(old), f"{old}.pub"]  # found by scanning ~/.ssh

    rot = _json(devid("ssh", "rotate", "--user", iam_user, "--key", str(new), *aws, "--json"))
    new_id = rot["new_key"]["key_id"]
    assert [s["step"] for s in rot["steps"]] == ["check", "upload", "config", "retire"]
    assert all(s["ok"] for s in rot["steps"])
    assert rot["retired"] == [{"key_id": old_id, "action": "deactivated"}]
    assert statuses(iam, iam_user) == {old_id: "Inactive", new_id: "Active"}
    resolved = ssh_resolved(config)
    assert resolved["user"] == [new_id]
    assert resolved["identityfile"] == [str(new)]
    assert (config.stat().st_mode & 0o777) == 0o600

    listed = _json(devid("ssh", "list", "--user", iam_user, *aws, "--match", str(new), "--json"))
    local = {r["key_id"]: r["local"] for r in listed["keys"]}
    assert local == {old_id: [], new_id: [str(new)]}

    assert devid("ssh", "deactivate", "--user", iam_user, "--key-id", new_id, *aws).code == 0
    assert statuses(iam, iam_user)[new_id] == "Inactive"
    assert devid("ssh", "activate", "--user", iam_user, "--key-id", new_id, *aws).code == 0
    assert statuses(iam, iam_user)[new_id] == "Active"
    gone = _json(devid("ssh", "delete", "--user", iam_user, "--key-id", old_id, *aws, "--json"))
    assert gone["key_id"] == old_id and gone["deleted"] is True
    assert registered_ids(iam, iam_user) == [new_id]


def test_list_text_names_local_key_and_fingerprint(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    key = write_key_pair(ssh_home / ".ssh", "cc_text")
    reg = _json(
        devid("ssh", "register", "--user", iam_user, "--key", str(key), *moto.aws_args(), "--json")
    )
    out = devid("ssh", "list", "--user", iam_user, *moto.aws_args())
    assert out.code == 0, out.err
    (line,) = out.out.splitlines()
    assert line.split()[:2] == [reg["key_id"], "Active"]
    assert ssh_keygen_md5(key) in line and str(key) in line


def test_sixth_key_is_refused_naming_the_five(
    devid: Devid, moto: MotoServer, iam_user: str, tmp_path: Path
) -> None:
    iam = _iam(moto)
    ids = []
    for n in range(5):
        pub = write_key_pair(tmp_path, f"k{n}").with_suffix(".pub")
        uploaded = iam.upload_ssh_public_key(UserName=iam_user, SSHPublicKeyBody=pub.read_text())
        ids.append(uploaded["SSHPublicKey"]["SSHPublicKeyId"])
    iam.update_ssh_public_key(UserName=iam_user, SSHPublicKeyId=ids[3], Status="Inactive")
    sixth = write_key_pair(tmp_path, "k5")

    result = devid("ssh", "register", "--user", iam_user, "--key", str(sixth), *moto.aws_args())

    assert result.code == 4
    assert result.err.startswith("devid: error: ") and result.err.count("\n") == 1
    for key_id in ids:
        assert key_id in result.err
    assert f"{ids[3]} (Inactive, uploaded " in result.err
    assert f"--key-id {ids[3]}" in result.err  # the inactive key is the one suggested
    assert registered_ids(iam, iam_user) == ids


def test_keys_codecommit_refuses_are_not_uploaded(
    devid: Devid, moto: MotoServer, iam_user: str, tmp_path: Path
) -> None:
    iam = _iam(moto)
    for name, kind, bits in [("small", "rsa", 1024), ("ed", "ed25519", 0), ("ec", "ecdsa", 0)]:
        path = tmp_path / name
        run_tool("ssh-keygen", "-q", "-t", kind, *(["-b", str(bits)] if bits else []),
                 "-N", "", "-f", str(path))  # fmt: skip
        reason = policy.check(load_public_key(f"{path}.pub"), policy.Service.CODECOMMIT).reason

        result = devid(
            "ssh", "register", "--user", iam_user, "--key", f"{path}.pub", *moto.aws_args()
        )

        assert result.code == 1, result.err
        assert result.err == f"devid: error: {reason}\n"
    assert registered_ids(iam, iam_user) == []


def test_duplicate_is_detected_by_key_not_by_body_text(
    devid: Devid, moto: MotoServer, iam_user: str, tmp_path: Path
) -> None:
    iam = _iam(moto)
    key = write_key_pair(tmp_path, "dup")
    # Uploaded by someone else, with a comment: moto's fingerprint (MD5 of the body text)
    # differs from the one devid's upload would get, so only the key itself can tell.
    line = Path(f"{key}.pub").read_text().strip() + " laptop-2019"
    first = iam.upload_ssh_public_key(UserName=iam_user, SSHPublicKeyBody=line)
    first_id = first["SSHPublicKey"]["SSHPublicKeyId"]

    result = devid("ssh", "register", "--user", iam_user, "--key", str(key), *moto.aws_args())

    assert result.code == 4
    assert f"already registered for IAM user {iam_user} as {first_id}" in result.err
    assert registered_ids(iam, iam_user) == [first_id]


def test_pem_private_key_registers_its_public_half(
    devid: Devid, moto: MotoServer, iam_user: str, tmp_path: Path
) -> None:
    iam = _iam(moto)
    key = write_key_pair(tmp_path, "pem")
    pem = tmp_path / "pem.key"
    run_tool("cp", str(key), str(pem))
    run_tool("ssh-keygen", "-q", "-p", "-N", "", "-m", "PEM", "-f", str(pem))
    assert b"BEGIN RSA PRIVATE KEY" in pem.read_bytes()

    reg = _json(
        devid("ssh", "register", "--user", iam_user, "--key", str(pem), *moto.aws_args(), "--json")
    )

    assert reg["fingerprint"] == ssh_keygen_md5(Path(f"{key}.pub"))
    stored = iam.get_ssh_public_key(UserName=iam_user, SSHPublicKeyId=reg["key_id"], Encoding="SSH")
    assert stored["SSHPublicKey"]["SSHPublicKeyBody"].split()[1] == _blob(Path(f"{key}.pub"))


def test_token_key_registers_and_matches(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    token_key_factory: Callable[[str], Any],
    tmp_path: Path,
) -> None:
    iam = _iam(moto)
    token_key = token_key_factory("rsa-2048")
    uri = token_key.reference

    reg = _json(
        devid("ssh", "register", "--user", iam_user, "--key", uri, *moto.aws_args(), "--json")
    )

    # ssh-keygen reads the token itself (-D module): the uploaded key must be one of its keys.
    listed = run_tool("ssh-keygen", "-D", "/usr/lib/softhsm/libsofthsm2.so").stdout.decode()
    stored = iam.get_ssh_public_key(UserName=iam_user, SSHPublicKeyId=reg["key_id"], Encoding="SSH")
    blob = stored["SSHPublicKey"]["SSHPublicKeyBody"].split()[1]
    (line,) = [ln for ln in listed.splitlines() if ln.split()[1:2] == [blob]]
    pub = tmp_path / "token.pub"
    pub.write_text(line + "\n")
    assert reg["fingerprint"] == ssh_keygen_md5(pub)

    token_only = uri.split(";")[0]  # pkcs11:token=...: every key on the token
    for match in (uri, token_only):
        rows = _json(
            devid("ssh", "list", "--user", iam_user, *moto.aws_args(), "--match", match, "--json")
        )
        (row,) = rows["keys"]
        assert len(row["local"]) == 1
        assert f"object={token_key.handle.label}" in row["local"][0]


def test_library_find_and_pem_body(moto: MotoServer, iam_user: str, tmp_path: Path) -> None:

    key = write_key_pair(tmp_path, "enc")
    keys = IamSshKeys.connect(iam_user, AwsOptions(region=moto.region, endpoint_url=moto.url))
    uploaded = keys.upload(load_public_key(f"{key}.pub"))

    assert keys.find(load_public_key(str(key))) == keys.get(uploaded.key_id)
    # Real IAM answers Encoding=PEM with a SubjectPublicKeyInfo; moto returns the body as
    # uploaded. Either way ssh-keygen must read back the same key.
    body = keys.body(uploaded.key_id, Encoding.PEM)
    if body.startswith("-----BEGIN PUBLIC KEY-----"):
        body = run_tool(
            "ssh-keygen", "-i", "-m", "PKCS8", "-f", "/dev/stdin", input=body.encode()
        ).stdout.decode()
    assert body.split()[1] == _blob(Path(f"{key}.pub"))


def test_key_check_agrees_with_register(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    tmp_path: Path,
    token_key_factory: Callable[[str], Any],
) -> None:
    """The pre-flight ``devid key check --for codecommit`` says what register then does."""
    refs = []
    for bits in (1024, 2048):
        path = tmp_path / f"rsa{bits}"
        run_tool("ssh-keygen", "-q", "-t", "rsa", "-b", str(bits), "-N", "", "-f", str(path))
        refs.append(str(path))
    refs += [token_key_factory(kind).reference for kind in ("rsa-2048", "ec-p256")]
    iam = _iam(moto)

    for ref in refs:
        check = devid("key", "check", ref, "--for", "codecommit", "--json")
        verdict = json.loads(check.out)
        before = len(registered_ids(iam, iam_user))

        register = devid("ssh", "register", "--user", iam_user, "--key", ref, *moto.aws_args())

        assert (check.code, register.code) == ((0, 0) if verdict["ok"] else (1, 1)), ref
        assert len(registered_ids(iam, iam_user)) == before + (1 if verdict["ok"] else 0)
        if not verdict["ok"]:
            assert register.err == f"devid: error: {verdict['reason']}\n"
    assert len(registered_ids(iam, iam_user)) == 2  # rsa-2048 file, rsa-2048 token
