"""``devid ssh`` failure paths, the ssh config it writes, clone URLs and bad input.

Rotation's promise: whatever fails, the ssh config still works with a key that is active in
IAM. boto3 (IAM), ``ssh -G`` (the config as ssh reads it) and the file bytes are checked.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from conftest import MotoServer, Result
from ssh_support import HOST, SOFTHSM, registered_ids, ssh_resolved, statuses, write_key_pair

from devid import codecommit
from devid.errors import EnvironmentProblem
from devid.iam import IamSshKeys

Devid = Callable[..., Result]

# A hand-kept ~/.ssh/config: other hosts, comments and an old CodeCommit block.
HAND_KEPT = """\
# my ssh config
ServerAliveInterval 30

Host bastion
    HostName bastion.example.com
    User ops

# CodeCommit (set up in 2019)
Host git-codecommit.*.amazonaws.com
    User APKAOLDOLDOLDOLDOLD01
    IdentityFile ~/.ssh/codecommit_2019
    Port 22

Host *
    AddKeysToAgent yes
"""


def _iam(moto: MotoServer) -> Any:
    return boto3.client("iam", endpoint_url=moto.url, region_name=moto.region)


def _one_error_line(result: Result) -> str:
    assert result.err.startswith("devid: error: "), result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    return result.err


def _registered(devid: Devid, moto: MotoServer, user: str, key: Path, config: Path) -> str:
    """Register *key* and point *config* at it; returns the key id."""
    out = devid("ssh", "register", "--user", user, "--key", str(key), *moto.aws_args(), "--json")
    assert out.code == 0, out.err
    key_id = str(json.loads(out.out)["key_id"])
    wrote = devid(
        "ssh", "config", "--key-id", key_id, "--identity", str(key), "--file", str(config),
        "--write",
    )  # fmt: skip
    assert wrote.code == 0, wrote.err
    return key_id


@pytest.mark.parametrize("failure", [EnvironmentProblem("disk full"), OSError(28, "No space")])
def test_rotate_rolls_back_when_config_write_fails(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    config = ssh_home / ".ssh" / "config"
    old = write_key_pair(ssh_home / ".ssh", "old")
    new = write_key_pair(ssh_home / ".ssh", "new")
    old_id = _registered(devid, moto, iam_user, old, config)
    before = config.read_bytes()

    def broken(path: Path, text: str) -> None:
        raise failure

    monkeypatch.setattr(codecommit, "write_config", broken)
    result = devid(
        "ssh", "rotate", "--user", iam_user, "--key", str(new), *moto.aws_args(), "--json"
    )

    assert result.code == 3
    assert "was deleted again" in _one_error_line(result)
    report = json.loads(result.out)
    assert report["ok"] is False
    assert [(s["step"], s["ok"]) for s in report["steps"]] == [
        ("check", True), ("upload", True), ("config", False), ("rollback", True),
    ]  # fmt: skip
    assert statuses(_iam(moto), iam_user) == {old_id: "Active"}
    assert config.read_bytes() == before
    assert ssh_resolved(config)["user"] == [old_id]


def test_rotate_with_unusable_config_changes_nothing(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    config = ssh_home / ".ssh" / "config"
    config.mkdir()  # a directory where the file should be
    new = write_key_pair(ssh_home / ".ssh", "new")

    result = devid("ssh", "rotate", "--user", iam_user, "--key", str(new), *moto.aws_args())

    assert result.code == 2
    _one_error_line(result)
    assert registered_ids(_iam(moto), iam_user) == []


def test_rotate_reports_a_failed_retire_and_keeps_the_new_config(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = ssh_home / ".ssh" / "config"
    old = write_key_pair(ssh_home / ".ssh", "old")
    new = write_key_pair(ssh_home / ".ssh", "new")
    old_id = _registered(devid, moto, iam_user, old, config)

    def refuse(self: IamSshKeys, key_id: str, status: object) -> None:
        raise EnvironmentProblem("AWS said Throttling: Rate exceeded")

    monkeypatch.setattr(IamSshKeys, "set_status", refuse)
    result = devid("ssh", "rotate", "--user", iam_user, "--key", str(new), *moto.aws_args())

    assert result.code == 3
    err = _one_error_line(result)
    assert f"devid ssh deactivate --user {iam_user} --key-id {old_id}" in err
    lines = result.out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["check", "ok"], ["upload", "ok"], ["config", "ok"], ["retire", "FAILED"],
    ]  # fmt: skip
    now = statuses(_iam(moto), iam_user)
    (new_id,) = set(now) - {old_id}
    assert now == {old_id: "Active", new_id: "Active"}
    assert ssh_resolved(config)["user"] == [new_id]  # the config uses the new, active key


def test_rotate_changes_only_the_codecommit_block(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    config = ssh_home / ".ssh" / "config"
    config.write_text(HAND_KEPT)
    config.chmod(0o644)
    key = write_key_pair(ssh_home / ".ssh", "cc2025")

    result = devid(
        "ssh", "rotate", "--user", iam_user, "--key", str(key), "--retire", "delete",
        *moto.aws_args(), "--json",
    )  # fmt: skip

    assert result.code == 0, result.err
    report = json.loads(result.out)
    new_id = report["new_key"]["key_id"]
    # The old block names a key id IAM does not know, and no other key is active.
    assert report["retired"] == []
    after = config.read_text()
    changed = [
        line
        for line in difflib.ndiff(HAND_KEPT.splitlines(), after.splitlines())
        if line[:1] in "+-"
    ]
    assert sorted(changed) == sorted(
        [
            "-     User APKAOLDOLDOLDOLDOLD01",
            "-     IdentityFile ~/.ssh/codecommit_2019",
            f"+     User {new_id}",
            f"+     IdentityFile {key}",
            "+     IdentitiesOnly yes",
        ]
    )
    assert config.stat().st_mode & 0o777 == 0o600
    assert Path(report["backup"]).read_text() == HAND_KEPT
    resolved = ssh_resolved(config)
    assert resolved["user"] == [new_id] and resolved["port"] == ["22"]
    assert ssh_resolved(config, "bastion")["user"] == ["ops"]

    again = devid("ssh", "config", "--key-id", new_id, "--identity", str(key), "--write", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["changed"] is False
    assert config.read_text() == after
    assert len(list(config.parent.glob("config.bak-*"))) == 1


def test_rotate_retires_the_key_the_config_used(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    config = ssh_home / ".ssh" / "config"
    keys = [write_key_pair(ssh_home / ".ssh", f"k{n}") for n in range(3)]
    ids = [_registered(devid, moto, iam_user, k, config) for k in keys[:2]]  # config -> ids[1]

    result = devid(
        "ssh", "rotate", "--user", iam_user, "--key", str(keys[2]), "--retire", "delete",
        *moto.aws_args(), "--json",
    )  # fmt: skip

    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["retired"] == [{"key_id": ids[1], "action": "deleted"}]
    assert statuses(_iam(moto), iam_user) == {
        ids[0]: "Active",
        report["new_key"]["key_id"]: "Active",
    }


def test_config_prints_the_block_for_a_token_key(devid: Devid, ssh_home: Path) -> None:
    key_id = "APKA" + "Z9" * 8
    pub = ssh_home / ".ssh" / "token key.pub"

    result = devid(
        "ssh", "config", "--key-id", key_id, "--identity", str(pub), "--pkcs11-provider", SOFTHSM
    )

    assert result.code == 0
    assert not (ssh_home / ".ssh" / "config").exists()
    printed = ssh_home / "printed"
    printed.write_text(result.out)
    resolved = ssh_resolved(printed)
    assert resolved["user"] == [key_id]
    assert resolved["pkcs11provider"] == [SOFTHSM]
    assert resolved["identityfile"] == [str(pub)]
    assert resolved["identitiesonly"] == ["yes"]


def test_config_refuses_a_private_key_for_a_token(devid: Devid, ssh_home: Path) -> None:
    result = devid(
        "ssh", "config", "--key-id", "APKA" + "A" * 16, "--identity", "~/.ssh/id_rsa",
        "--pkcs11-provider", SOFTHSM,
    )  # fmt: skip
    assert result.code == 2
    _one_error_line(result)


def test_clone_url(devid: Devid) -> None:
    key_id = "APKA" + "Q7" * 8
    result = devid(
        "ssh", "clone-url", "--key-id", key_id, "--region", "eu-west-1", "--repo", "fw.x_1-2"
    )
    assert result.code == 0
    url = urlsplit(result.out.strip())
    assert (url.scheme, url.username, url.hostname, url.path) == (
        "ssh", key_id, "git-codecommit.eu-west-1.amazonaws.com", "/v1/repos/fw.x_1-2",
    )  # fmt: skip
    as_json = devid(
        "ssh", "clone-url", "--key-id", key_id, "--region", "eu-west-1", "--repo", "r", "--json"
    )
    assert json.loads(as_json.out)["url"].endswith("/v1/repos/r")


@pytest.mark.parametrize(
    ("region", "repo"),
    [("eu_west_1", "repo"), ("us-east-1", "my repo"), ("us-east-1", "r.git"), ("us-east-1", "")],
)
def test_clone_url_bad_input(devid: Devid, region: str, repo: str) -> None:
    result = devid(
        "ssh", "clone-url", "--key-id", "APKA" + "A" * 16, "--region", region, "--repo", repo
    )
    assert result.code == 2
    _one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ["activate", "--user", "u"],
        ["deactivate", "--user", "u"],
        ["delete", "--user", "u"],
        ["config", "--identity", "id"],
        ["clone-url", "--region", "us-east-1", "--repo", "r"],
    ],
)
@pytest.mark.parametrize("key_id", ["AKIAIOSFODNN7EXAMPLE", "APKAshort", "apkaeibaerjr2example"])
def test_bad_key_id_is_bad_input(
    devid: Devid, moto: MotoServer, args: list[str], key_id: str
) -> None:
    aws = moto.aws_args() if args[0] in {"activate", "deactivate", "delete"} else []
    result = devid("ssh", *args, "--key-id", key_id, *aws)
    assert result.code == 2
    assert "is not an IAM SSH public key id" in _one_error_line(result)


def test_unknown_user(devid: Devid, moto: MotoServer, ssh_home: Path) -> None:
    key = write_key_pair(ssh_home / ".ssh", "k")
    config = ssh_home / ".ssh" / "config"
    config.write_text(HAND_KEPT)
    for args in (
        ["register", "--key", str(key)],
        ["list"],
        ["rotate", "--key", str(key)],
        ["deactivate", "--key-id", "APKA" + "B" * 16],
    ):
        result = devid("ssh", *args, "--user", "nobody-here", *moto.aws_args())
        assert result.code == 1, (args, result.err)
        assert "no IAM user nobody-here" in _one_error_line(result)
    assert config.read_text() == HAND_KEPT


def test_unknown_key_id(devid: Devid, moto: MotoServer, iam_user: str) -> None:
    result = devid(
        "ssh", "delete", "--user", iam_user, "--key-id", "APKA" + "C" * 16, *moto.aws_args()
    )
    assert result.code == 1
    assert f"IAM user {iam_user} has no SSH public key" in _one_error_line(result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint(
    devid: Devid, ssh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    endpoint = f"http://127.0.0.1:{_free_port()}"
    key = write_key_pair(ssh_home / ".ssh", "k")
    config = ssh_home / ".ssh" / "config"
    config.write_text(HAND_KEPT)

    for args in (["list"], ["register", "--key", str(key)], ["rotate", "--key", str(key)]):
        result = devid(
            "ssh", *args, "--user", "u", "--endpoint-url", endpoint, "--region", "us-east-1"
        )
        assert result.code == 3, (args, result.err)
        assert "cannot reach AWS endpoint" in _one_error_line(result)
    assert config.read_text() == HAND_KEPT


@pytest.mark.parametrize(
    ("aws", "needle"),
    [
        (["--endpoint-url", "notaurl", "--region", "us-east-1"], "is not an http(s) URL"),
        (["--endpoint-url", "ftp://127.0.0.1", "--region", "us-east-1"], "is not an http(s) URL"),
        (["--region", "bad region"], "is not an AWS Region name"),
    ],
    ids=["not-a-url", "ftp", "bad-region"],
)
def test_bad_endpoint_or_region_is_bad_input(
    devid: Devid,
    ssh_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    aws: list[str],
    needle: str,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    key = write_key_pair(ssh_home / ".ssh", "k")
    config = ssh_home / ".ssh" / "config"
    config.write_text(HAND_KEPT)
    for args in (["list"], ["register", "--key", str(key)], ["rotate", "--key", str(key)]):
        result = devid("ssh", *args, "--user", "u", *aws)
        assert result.code == 2, (args, result.err)
        assert needle in _one_error_line(result)
    assert config.read_text() == HAND_KEPT


def test_missing_credentials(
    devid: Devid, moto: MotoServer, ssh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(ssh_home / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(ssh_home / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    key = write_key_pair(ssh_home / ".ssh", "k")

    result = devid("ssh", "register", "--user", "u", "--key", str(key), *moto.aws_args())

    assert result.code == 3
    assert "no AWS credentials" in _one_error_line(result)


def test_malformed_public_key(
    devid: Devid, moto: MotoServer, iam_user: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB broken\n")
    result = devid("ssh", "register", "--user", iam_user, "--key", str(bad), *moto.aws_args())
    assert result.code == 2
    _one_error_line(result)
    assert registered_ids(_iam(moto), iam_user) == []


def test_help_ends_with_examples(devid: Devid) -> None:
    for command in ("register", "list", "rotate", "activate", "deactivate", "delete", "config",
                    "clone-url"):  # fmt: skip
        result = devid("ssh", command, "--help")
        assert result.code == 0
        assert "EXAMPLES" in result.out and "devid ssh " + command in result.out


def test_token_rotation_pub_file(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    token_key_factory: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_key = token_key_factory("rsa-2048")
    uri, label = token_key.reference, token_key.handle.label
    default_pub = ssh_home / ".ssh" / f"{label}.pub"
    config = ssh_home / ".ssh" / "config"
    rotate = ["ssh", "rotate", "--user", iam_user, "--key", uri, *moto.aws_args()]

    # Another key already sits where the .pub would go: refused before anything changes.
    other = write_key_pair(ssh_home, "other")
    default_pub.write_bytes(Path(f"{other}.pub").read_bytes())
    refused = devid(*rotate)
    assert refused.code == 4
    assert "--identity" in _one_error_line(refused)
    assert registered_ids(_iam(moto), iam_user) == []
    default_pub.unlink()

    # The config write fails: the new key is deleted again and the .pub is not left behind.
    def broken(path: Path, text: str) -> None:
        raise EnvironmentProblem("read-only file system")

    with monkeypatch.context() as patched:
        patched.setattr(codecommit, "write_config", broken)
        failed = devid(*rotate)
    assert failed.code == 3
    assert registered_ids(_iam(moto), iam_user) == []
    assert not default_pub.exists() and not config.exists()

    # --identity puts the .pub elsewhere; the text output says what happened, step by step.
    pub = ssh_home / "keys" / "codecommit-token.pub"
    done = devid(*rotate, "--identity", str(pub))
    assert done.code == 0, done.err
    steps = [line.split()[:2] for line in done.out.splitlines()]
    assert steps == [["check", "ok"], ["upload", "ok"], ["config", "ok"], ["retire", "ok"]]
    assert f"wrote {pub}" in done.out
    assert ssh_resolved(config)["identityfile"] == [str(pub)]
    assert ssh_resolved(config)["pkcs11provider"] == [SOFTHSM]


def _identity_files_ssh_opens(config: Path) -> list[str]:
    """What ``ssh -v`` says it loads as identity files for the CodeCommit host, connecting
    to a local socket that accepts and says nothing (ssh loads them once connected)."""
    import subprocess
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            conn.recv(1024)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            ["ssh", "-v", "-F", str(config), "-o", "HostName=127.0.0.1", "-o", f"Port={port}",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", HOST],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        listener.close()
    found = re.findall(r"identity file (.+) type -?\d+", done.stderr)
    return [f for f in found if not f.endswith("-cert")]


@pytest.mark.parametrize("name", ["id_rsa", "p%hdir/id", "50%/key"])
def test_config_writes_the_identity_ssh_will_open(
    devid: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # given relative, the path is made absolute (ssh resolves against its own working
    # directory); a '%' is written '%%' (ssh_config TOKENS), or ssh expands %h to the host
    keys = tmp_path / "keys"
    key = keys / name
    key.parent.mkdir(parents=True)
    key.write_text("not read here")
    monkeypatch.chdir(keys)
    config = tmp_path / "config"
    result = devid("ssh", "config", "--key-id", "APKAEIBAERJR2EXAMPLE", "--identity", name,
                   "--write", "--file", config)  # fmt: skip
    assert result.code == 0, result.err
    monkeypatch.chdir("/")
    assert _identity_files_ssh_opens(config) == [str(key)]
    again = devid("ssh", "config", "--key-id", "APKAEIBAERJR2EXAMPLE", "--identity", str(key),
                  "--write", "--file", config, "--json")  # fmt: skip
    assert json.loads(again.out)["changed"] is False


def test_config_refuses_an_identity_ssh_would_expand(
    devid: Callable[..., Result], tmp_path: Path
) -> None:
    identity = str(tmp_path / "${HOME}" / "id")
    result = devid("ssh", "config", "--key-id", "APKAEIBAERJR2EXAMPLE", "--identity", identity,
                   "--write", "--file", tmp_path / "config")  # fmt: skip
    assert result.code == 2 and "environment variable" in result.err
    assert not (tmp_path / "config").exists()
