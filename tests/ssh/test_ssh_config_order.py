"""The CodeCommit block must come before any block that would set ``User`` first.

ssh keeps the first value it reads for an option: a dedicated ``Host
git-codecommit.*.amazonaws.com`` block updated in place after ``Host *`` with ``User foo``
changes nothing ssh does. ``ssh -G`` (the config as ssh reads it) is the judge here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import MotoServer, Result
from ssh_support import ssh_resolved, write_key_pair

Devid = Callable[..., Result]
KEY_ID = "APKA44V948RYIW0PSX2D"

SHADOWED = """\
# global
ServerAliveInterval 30

Host bastion
    User ops

# everything
Host *
    User foo
    IdentityFile ~/.ssh/id_other
    AddKeysToAgent yes

# CodeCommit
Host git-codecommit.*.amazonaws.com
    User APKAOLD0000000000000
    IdentityFile ~/.ssh/old
    Port 22
# about the next block

Host other
    User someone"""  # and no newline at the end


def _write(devid: Devid, config: Path, identity: Path) -> Result:
    result = devid(
        "ssh", "config", "--key-id", KEY_ID, "--identity", str(identity), "--write",
        "--file", str(config), "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    return result


def test_the_reported_config(devid: Devid, tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.write_text(
        "Host *\n  User foo\n\nHost git-codecommit.*.amazonaws.com\n  User APKAOLD0000000000000\n"
    )
    identity = tmp_path / "a"

    _write(devid, config, identity)

    resolved = ssh_resolved(config)
    assert resolved["user"] == [KEY_ID]
    assert resolved["identityfile"] == [str(identity)]
    assert ssh_resolved(config, "example.com")["user"] == ["foo"]
    assert config.read_text() == (
        "Host git-codecommit.*.amazonaws.com\n"
        f"  User {KEY_ID}\n"
        f"  IdentityFile {identity}\n"
        "  IdentitiesOnly yes\n"
        "\n"
        "Host *\n"
        "  User foo\n"
    )


def test_the_block_moves_with_its_comment_and_nothing_else_changes(
    devid: Devid, tmp_path: Path
) -> None:
    config = tmp_path / "cfg"
    config.write_text(SHADOWED)
    identity = tmp_path / "cc"

    _write(devid, config, identity)

    assert config.read_text() == (
        "# global\n"
        "ServerAliveInterval 30\n"
        "\n"
        "Host bastion\n"
        "    User ops\n"
        "\n"
        "# CodeCommit\n"
        "Host git-codecommit.*.amazonaws.com\n"
        f"    User {KEY_ID}\n"
        f"    IdentityFile {identity}\n"
        "    IdentitiesOnly yes\n"
        "    Port 22\n"
        "\n"
        "# everything\n"
        "Host *\n"
        "    User foo\n"
        "    IdentityFile ~/.ssh/id_other\n"
        "    AddKeysToAgent yes\n"
        "# about the next block\n"
        "\n"
        "Host other\n"
        "    User someone"
    )
    resolved = ssh_resolved(config)
    assert resolved["user"] == [KEY_ID]
    assert resolved["identityfile"][0] == str(identity)
    assert resolved["port"] == ["22"]
    assert ssh_resolved(config, "bastion")["user"] == ["ops"]
    assert ssh_resolved(config, "example.com")["user"] == ["foo"]

    again = _write(devid, config, identity)
    assert json.loads(again.out)["changed"] is False


def test_a_block_that_is_not_shadowed_stays_where_it_is(devid: Devid, tmp_path: Path) -> None:
    # Host bastion does not apply to CodeCommit; Host * applies but sets no managed option.
    before = (
        "Host bastion\n    User ops\n\nHost *\n    ServerAliveInterval 30\n\n"
        "Host git-codecommit.*.amazonaws.com\n    User APKAOLD0000000000000\n"
    )
    config = tmp_path / "cfg"
    config.write_text(before)
    identity = tmp_path / "cc"

    _write(devid, config, identity)

    assert config.read_text() == before.replace(
        "    User APKAOLD0000000000000\n",
        f"    User {KEY_ID}\n    IdentityFile {identity}\n    IdentitiesOnly yes\n",
    )
    assert ssh_resolved(config)["user"] == [KEY_ID]


def test_rotate_moves_a_shadowed_block(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    config = ssh_home / ".ssh" / "config"
    config.write_text(SHADOWED)
    key = write_key_pair(ssh_home / ".ssh", "cc2025")

    result = devid(
        "ssh", "rotate", "--user", iam_user, "--key", str(key), *moto.aws_args(), "--json"
    )

    assert result.code == 0, result.err
    new_id = json.loads(result.out)["new_key"]["key_id"]
    resolved = ssh_resolved(config)
    assert resolved["user"] == [new_id]
    assert resolved["identityfile"][0] == str(key)
    assert ssh_resolved(config, "example.com")["user"] == ["foo"]


GLOBAL_USER = (
    "User foo\nServerAliveInterval 30\n\n"
    "Host git-codecommit.*.amazonaws.com\n  User APKAOLD0000000000000\n"
)


def test_a_global_user_before_any_host_is_warned_about(devid: Devid, tmp_path: Path) -> None:
    # Options before the first Host line apply to every host, first: no block can win, and
    # putting one above them would turn them into that block's own options.
    config = tmp_path / "cfg"
    config.write_text(GLOBAL_USER)
    result = _write(devid, config, tmp_path / "cc")
    assert f"devid: warning: {config} sets User foo before any Host block" in result.err
    assert ssh_resolved(config)["user"] == ["foo"]  # what the warning says
    assert config.read_text().startswith("User foo\nServerAliveInterval 30\n")  # not moved


def test_a_global_identity_file_is_no_obstacle(devid: Devid, tmp_path: Path) -> None:
    # IdentityFile lines add up: the entry's key is still offered, its User is used
    config = tmp_path / "cfg"
    config.write_text("IdentityFile ~/.ssh/id_ed25519\n")
    identity = tmp_path / "cc"
    result = _write(devid, config, identity)
    assert "before any Host block" not in result.err
    resolved = ssh_resolved(config)
    assert resolved["user"] == [KEY_ID] and str(identity) in resolved["identityfile"]


def test_rotate_refuses_a_config_whose_global_user_would_win(
    devid: Devid, moto: MotoServer, iam_user: str, ssh_home: Path
) -> None:
    config = ssh_home / ".ssh" / "config"
    config.write_text(GLOBAL_USER)
    key = write_key_pair(ssh_home / ".ssh", "cc2026")
    iam = moto.client("iam")
    before = iam.list_ssh_public_keys(UserName=iam_user)["SSHPublicKeys"]

    result = devid("ssh", "rotate", "--user", iam_user, "--key", str(key), *moto.aws_args())

    assert result.code == 2
    assert "sets User foo before any Host block" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert iam.list_ssh_public_keys(UserName=iam_user)["SSHPublicKeys"] == before  # no upload
    assert config.read_text() == GLOBAL_USER


def test_other_global_options_that_win_are_warned_about(devid: Devid, tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.write_text("IdentitiesOnly no\nIdentitiesOnly yes\n")  # the first one counts
    result = _write(devid, config, tmp_path / "cc")
    assert f"{config} sets IdentitiesOnly no before any Host block" in result.err
    assert ssh_resolved(config)["identitiesonly"] == ["no"]  # what the warning says

    config.write_text("PKCS11Provider /usr/lib/other-pkcs11.so\n")
    token = devid(
        "ssh", "config", "--key-id", KEY_ID, "--identity", str(tmp_path / "t.pub"),
        "--pkcs11-provider",
        "/usr/lib/softhsm/libsofthsm2.so", "--write", "--file", str(config),
    )  # fmt: skip
    assert token.code == 0, token.err
    assert "sets PKCS11Provider /usr/lib/other-pkcs11.so before any Host block" in token.err
    plain = _write(devid, config, tmp_path / "cc")  # a file key needs no provider: fine
    assert "before any Host block" not in plain.err
