"""Tests for devid.sshconfig: rendering, parsing, merging and writing the CodeCommit block.

The OpenSSH client itself (``ssh -G``, which prints the resolved options and connects to
nothing) is the cross-check that ssh reads the merged files as intended.
"""

from __future__ import annotations

import difflib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from devid.errors import BadInput, EnvironmentProblem
from devid.sshconfig import (
    CODECOMMIT_HOST,
    CodeCommitEntry,
    find_entry,
    merge,
    read_config,
    render,
    write_config,
)

KEY_ID = "APKAEIBAERJR2EXAMPLE"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
HOST = "git-codecommit.us-east-1.amazonaws.com"
FILE_ENTRY = CodeCommitEntry(KEY_ID, "~/.ssh/codecommit_rsa")
TOKEN_ENTRY = CodeCommitEntry(KEY_ID, "~/.ssh/codecommit_token.pub", pkcs11_provider=SOFTHSM)

# A hand-kept config: global section with Include, other Host blocks, a Match block, a Host
# line naming CodeCommit among other patterns, a trailing Host * and an old CodeCommit block
# written in the other syntax forms (lower-case keyword, Keyword=value, a comment, Port).
FIXTURE = """\
# ~/.ssh/config, kept by hand
Include ~/.ssh/config.d/*
ServerAliveInterval 60

Host bastion
    HostName bastion.example.com
    User ops

# CodeCommit, old key
Host git-codecommit.*.amazonaws.com
    user APKAOLDOLDOLDOLDOLD01
    # keep this comment
    IdentityFile=~/.ssh/old_codecommit
    Port 22
    IdentitiesOnly no

# internal hosts
Match host *.internal
    ForwardAgent no

Host github.com git-codecommit.*.amazonaws.com
    ForwardX11 no

Host *
    User fallback
    IdentityFile ~/.ssh/id_ed25519
"""
OLD_MANAGED = [
    "    user APKAOLDOLDOLDOLDOLD01",
    "    IdentityFile=~/.ssh/old_codecommit",
    "    IdentitiesOnly no",
]
NEW_MANAGED = [
    f"    User {KEY_ID}",
    "    IdentityFile ~/.ssh/codecommit_rsa",
    "    IdentitiesOnly yes",
]


def _changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) between two texts."""
    a, b = old.splitlines(), new.splitlines()
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added


def _ssh_g(tmp_path: Path, text: str, host: str = HOST) -> dict[str, list[str]]:
    """What ssh resolves for ``host`` from ``text``: keyword -> values, in order."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.fail("ssh not found: apt-get install openssh-client")
    config = tmp_path / "ssh_config"
    config.write_bytes(text.encode())
    config.chmod(0o600)
    result = subprocess.run(
        [ssh, "-G", "-F", str(config), host],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=True,
    )
    resolved: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        resolved.setdefault(keyword, []).append(value)
    return resolved


# render and validation


def test_render_file_key() -> None:
    assert render(FILE_ENTRY) == (
        f"Host {CODECOMMIT_HOST}\n"
        f"  User {KEY_ID}\n"
        "  IdentityFile ~/.ssh/codecommit_rsa\n"
        "  IdentitiesOnly yes\n"
    )


def test_render_token_key() -> None:
    assert render(TOKEN_ENTRY) == (
        f"Host {CODECOMMIT_HOST}\n"
        f"  User {KEY_ID}\n"
        f"  PKCS11Provider {SOFTHSM}\n"
        "  IdentityFile ~/.ssh/codecommit_token.pub\n"
        "  IdentitiesOnly yes\n"
    )


def test_render_quotes_paths_with_spaces(tmp_path: Path) -> None:
    entry = CodeCommitEntry(KEY_ID, "~/My Keys/code commit.pub", pkcs11_provider="/opt/my hsm/p.so")
    text = render(entry)
    assert '  IdentityFile "~/My Keys/code commit.pub"\n' in text
    assert '  PKCS11Provider "/opt/my hsm/p.so"\n' in text
    resolved = _ssh_g(tmp_path, text)
    assert resolved["identityfile"] == ["~/My Keys/code commit.pub"]
    assert resolved["pkcs11provider"] == ["/opt/my hsm/p.so"]
    assert find_entry(text) == entry


@pytest.mark.parametrize(
    "key_id",
    [
        "",
        "APKA",
        "APKAEIBAERJR2EXAMPL",  # 19 characters
        "apkaeibaerjr2example",  # ssh would send it, IAM would not know it
        "AKIAEIBAERJR2EXAMPLE",  # an access key id, not an SSH key id
        "APKAEIBAERJR2EXAMPLE ",
        "APKAEIBAERJR2EXAMPLE\n  ProxyCommand evil",
        "APKA" + "A" * 125,  # 129 characters
    ],
)
def test_bad_key_id(key_id: str) -> None:
    with pytest.raises(BadInput, match="not an IAM SSH public key id"):
        CodeCommitEntry(key_id, "~/.ssh/codecommit_rsa")


@pytest.mark.parametrize("key_id", [KEY_ID, "APKA" + "0" * 16, "APKA" + "Z9" * 62])
def test_good_key_id(key_id: str) -> None:
    assert CodeCommitEntry(key_id, "k").key_id == key_id


@pytest.mark.parametrize("path", ["", "a\nProxyCommand evil", 'a"b', "a\\b", "a\tb", "a\x7f"])
def test_unwritable_paths(path: str) -> None:
    with pytest.raises(BadInput, match="cannot be written to an ssh config"):
        CodeCommitEntry(KEY_ID, path)
    with pytest.raises(BadInput, match="cannot be written to an ssh config"):
        CodeCommitEntry(KEY_ID, "k.pub", pkcs11_provider=path)


def test_token_key_needs_pub_file() -> None:
    with pytest.raises(BadInput, match=r"not a \.pub file"):
        CodeCommitEntry(KEY_ID, "~/.ssh/codecommit_token", pkcs11_provider=SOFTHSM)


# find_entry


def test_find_entry_in_fixture() -> None:
    assert find_entry(FIXTURE) == CodeCommitEntry("APKAOLDOLDOLDOLDOLD01", "~/.ssh/old_codecommit")


@pytest.mark.parametrize("entry", [FILE_ENTRY, TOKEN_ENTRY])
def test_find_entry_round_trip(entry: CodeCommitEntry) -> None:
    assert find_entry(render(entry)) == entry
    assert find_entry(merge(FIXTURE, entry)) == entry


def test_find_entry_syntax_forms() -> None:
    text = (
        "Host=git-codecommit.*.amazonaws.com  # comment\r\n"
        "\tUSER = APKAEIBAERJR2EXAMPLE # trailing comment\r\n"
        "# IdentityFile ~/commented/out\r\n"
        "pkcs11provider='/opt/p 1.so'\r\n"
        'IdentityFile "~/a b.pub"\r\n'
        "IdentityFile ~/second\r\n"
        "Host other\r\n"
        "  User APKAOTHEROTHEROTHER01\r\n"
    )
    assert find_entry(text) == CodeCommitEntry(KEY_ID, "~/a b.pub", pkcs11_provider="/opt/p 1.so")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Host bastion\n  User ops\n",
        "Host github.com git-codecommit.*.amazonaws.com\n  User APKAEIBAERJR2EXAMPLE\n"
        "  IdentityFile k\n",
        "Host GIT-CODECOMMIT.*.AMAZONAWS.COM\n  User APKAEIBAERJR2EXAMPLE\n  IdentityFile k\n",
        "Host git-codecommit.*.amazonaws.com\n  IdentityFile k\n",  # no User
        "Host git-codecommit.*.amazonaws.com\nHost x\n  User APKAEIBAERJR2EXAMPLE\n",
    ],
)
def test_find_entry_none(text: str) -> None:
    assert find_entry(text) is None


def test_find_entry_bad_user_says_where() -> None:
    text = "Host a\n\nHost git-codecommit.*.amazonaws.com\n  User git\n  IdentityFile k\n"
    with pytest.raises(BadInput, match="ssh config line 3: 'git' is not an IAM SSH"):
        find_entry(text)


# merge


def test_merge_fixture_changes_only_managed_lines() -> None:
    merged = merge(FIXTURE, FILE_ENTRY)
    assert _changes(FIXTURE, merged) == (OLD_MANAGED, NEW_MANAGED)
    # the new lines sit where the first old managed line was; Port and the comment stay
    block = merged.split("# CodeCommit, old key\n")[1].split("\n\n")[0]
    assert block.splitlines() == [
        f"Host {CODECOMMIT_HOST}",
        *NEW_MANAGED,
        "    # keep this comment",
        "    Port 22",
    ]


def test_merged_fixture_as_ssh_sees_it(tmp_path: Path) -> None:
    resolved = _ssh_g(tmp_path, merge(FIXTURE, FILE_ENTRY))
    assert resolved["user"] == [KEY_ID]  # ssh lower-cases keywords, not values
    assert resolved["identityfile"][0] == "~/.ssh/codecommit_rsa"
    assert resolved["identitiesonly"] == ["yes"]
    assert resolved["port"] == ["22"]
    assert resolved["forwardx11"] == ["no"]  # the shared Host line still applies
    # and other hosts are unaffected
    assert _ssh_g(tmp_path, merge(FIXTURE, FILE_ENTRY), "bastion")["user"] == ["ops"]


def test_merged_token_entry_as_ssh_sees_it(tmp_path: Path) -> None:
    merged = merge(FIXTURE, TOKEN_ENTRY)
    assert _changes(FIXTURE, merged) == (
        OLD_MANAGED,
        [
            f"    User {KEY_ID}",
            f"    PKCS11Provider {SOFTHSM}",
            "    IdentityFile ~/.ssh/codecommit_token.pub",
            "    IdentitiesOnly yes",
        ],
    )
    resolved = _ssh_g(tmp_path, merged)
    assert resolved["user"] == [KEY_ID]
    assert resolved["pkcs11provider"] == [SOFTHSM]
    assert resolved["identityfile"][0] == "~/.ssh/codecommit_token.pub"
    assert resolved["identitiesonly"] == ["yes"]


def test_merge_switches_between_file_and_token_key() -> None:
    token = merge(FIXTURE, TOKEN_ENTRY)
    back = merge(token, FILE_ENTRY)
    assert back == merge(FIXTURE, FILE_ENTRY)
    assert "PKCS11Provider" not in back


@pytest.mark.parametrize(
    "text",
    [
        FIXTURE,
        "",
        "\n",
        "Host a\n  User x",
        "Host a\r\n  User x\r\n",
        "Host *\n  User fallback\n",
        FIXTURE.replace("\n", "\r\n"),
        FIXTURE.rstrip("\n"),
        "Host git-codecommit.*.amazonaws.com",
    ],
)
@pytest.mark.parametrize("entry", [FILE_ENTRY, TOKEN_ENTRY])
def test_merge_is_idempotent(text: str, entry: CodeCommitEntry) -> None:
    once = merge(text, entry)
    assert merge(once, entry) == once
    assert find_entry(once) == entry


def test_merge_empty_text_is_the_block() -> None:
    assert merge("", FILE_ENTRY) == render(FILE_ENTRY)


def test_merge_appends_after_one_blank_line() -> None:
    text = "ServerAliveInterval 60\n\nHost bastion\n  User ops\n"
    assert merge(text, FILE_ENTRY) == text + "\n" + render(FILE_ENTRY)
    # a file ending in a blank line gets no second one
    assert merge(text + "\n", FILE_ENTRY) == text + "\n" + render(FILE_ENTRY)


def test_merge_puts_new_block_before_host_star(tmp_path: Path) -> None:
    text = (
        "Host bastion\n  User ops\n\n# defaults for every host\nHost *\n  User fallback\n"
        "  IdentityFile ~/.ssh/id_ed25519\n"
    )
    merged = merge(text, FILE_ENTRY)
    assert merged == (
        "Host bastion\n  User ops\n\n"
        + render(FILE_ENTRY)
        + "\n# defaults for every host\nHost *\n  User fallback\n"
        "  IdentityFile ~/.ssh/id_ed25519\n"
    )
    resolved = _ssh_g(tmp_path, merged)
    assert resolved["user"] == [KEY_ID]
    assert resolved["identityfile"] == ["~/.ssh/codecommit_rsa", "~/.ssh/id_ed25519"]
    # appended after Host *, ssh would have used the fallback user
    appended = text + "\n" + render(FILE_ENTRY)
    assert _ssh_g(tmp_path, appended)["user"] == ["fallback"]


def test_merge_ignores_blocks_that_do_not_apply() -> None:
    text = "Host *.example.com !git-codecommit.*\n  User x\nHost * !*.amazonaws.com\n  User y\n"
    assert merge(text, FILE_ENTRY) == text + "\n" + render(FILE_ENTRY)


def test_merge_keeps_shared_host_line_and_adds_dedicated_block(tmp_path: Path) -> None:
    text = "Host github.com git-codecommit.*.amazonaws.com\n  User shared\n"
    merged = merge(text, FILE_ENTRY)
    assert merged == render(FILE_ENTRY) + "\n" + text
    assert _ssh_g(tmp_path, merged)["user"] == [KEY_ID]


def test_merge_keeps_unknown_options_and_indentation() -> None:
    text = (
        "Host git-codecommit.*.amazonaws.com\n"
        "\tProxyCommand nc -X connect -x proxy:3128 %h %p\n"
        "\tIdentityFile ~/.ssh/old\n"
    )
    assert merge(text, FILE_ENTRY) == (
        "Host git-codecommit.*.amazonaws.com\n"
        "\tProxyCommand nc -X connect -x proxy:3128 %h %p\n"
        f"\tUser {KEY_ID}\n"
        "\tIdentityFile ~/.ssh/codecommit_rsa\n"
        "\tIdentitiesOnly yes\n"
    )


def test_merge_empty_dedicated_block_gets_options_after_host_line() -> None:
    text = "Host git-codecommit.*.amazonaws.com\n\n# next\nHost x\n  User y\n"
    assert merge(text, FILE_ENTRY) == render(FILE_ENTRY) + "\n# next\nHost x\n  User y\n"


def test_merge_clears_managed_lines_of_later_duplicate_blocks(tmp_path: Path) -> None:
    text = (
        "Host git-codecommit.*.amazonaws.com\n  User APKAOLDOLDOLDOLDOLD01\n"
        "  IdentityFile ~/.ssh/old1\n"
        "Host git-codecommit.*.amazonaws.com\n  Port 2222\n  IdentityFile ~/.ssh/old2\n"
    )
    merged = merge(text, FILE_ENTRY)
    assert merged == render(FILE_ENTRY) + "Host git-codecommit.*.amazonaws.com\n  Port 2222\n"
    assert _ssh_g(tmp_path, merged)["identityfile"] == ["~/.ssh/codecommit_rsa"]


def test_merge_keeps_crlf() -> None:
    text = FIXTURE.replace("\n", "\r\n")
    merged = merge(text, FILE_ENTRY)
    assert merged.endswith("\r\n")
    assert merged.count("\n") == merged.count("\r\n")
    assert merged == merge(FIXTURE, FILE_ENTRY).replace("\n", "\r\n")


def test_merge_crlf_file_appends_crlf() -> None:
    text = "Host a\r\n  User x\r\n"
    assert merge(text, FILE_ENTRY) == text + "\r\n" + render(FILE_ENTRY).replace("\n", "\r\n")


def test_merge_keeps_missing_final_newline() -> None:
    text = FIXTURE.rstrip("\n")
    merged = merge(text, FILE_ENTRY)
    assert merged == merge(FIXTURE, FILE_ENTRY).rstrip("\n")
    appended = merge("Host a\n  User x", FILE_ENTRY)
    assert appended == "Host a\n  User x\n\n" + render(FILE_ENTRY).rstrip("\n")
    # the block being the last lines of such a file
    last = merge("Host git-codecommit.*.amazonaws.com\n  User APKAOLDOLDOLDOLDOLD01", FILE_ENTRY)
    assert last == render(FILE_ENTRY).rstrip("\n")


def test_merge_keeps_mixed_and_odd_lines_byte_for_byte() -> None:
    text = "Host a\r\n  User x\n\t# odd  spacing \t\n  ServerAliveInterval=5\r\n"
    merged = merge(text, FILE_ENTRY)
    assert merged.startswith(text)


# read_config and write_config


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _backups(directory: Path) -> list[Path]:
    return sorted(directory.glob("config.bak-*"))


def test_write_new_config_creates_ssh_dir(tmp_path: Path) -> None:
    config = tmp_path / ".ssh" / "config"
    assert write_config(config, render(FILE_ENTRY)) is None
    assert config.read_text() == render(FILE_ENTRY)
    assert _mode(config) == 0o600
    assert _mode(config.parent) == 0o700
    assert sorted(p.name for p in config.parent.iterdir()) == ["config"]


def test_write_existing_config_backs_up_once(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(FIXTURE)
    config.chmod(0o644)
    merged = merge(FIXTURE, FILE_ENTRY)

    backup = write_config(config, merged)
    assert backup is not None
    assert backup.parent == tmp_path
    assert backup.name.startswith("config.bak-")
    assert len(backup.name) == len("config.bak-YYYYmmddTHHMMSS")
    assert backup.read_text() == FIXTURE
    assert _mode(backup) == 0o600
    assert config.read_text() == merged
    assert _mode(config) == 0o600

    # the same content again: nothing written, no second backup
    before = config.stat()
    assert write_config(config, merge(merged, FILE_ENTRY)) is None
    after = config.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _backups(tmp_path) == [backup]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config", backup.name])


def test_backups_in_the_same_second_do_not_collide(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("a\n")
    first = write_config(config, "b\n")
    second = write_config(config, "c\n")
    assert first is not None and second is not None
    assert (first.read_text(), second.read_text(), config.read_text()) == ("a\n", "b\n", "c\n")
    assert len(_backups(tmp_path)) == 2


def test_write_keeps_bytes_and_crlf(tmp_path: Path) -> None:
    config = tmp_path / "config"
    text = merge(FIXTURE.replace("\n", "\r\n"), TOKEN_ENTRY)
    write_config(config, text)
    assert config.read_bytes() == text.encode()
    assert read_config(config) == text


def test_write_through_symlink_keeps_link(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "config"
    real.write_text(FIXTURE)
    link = tmp_path / "config"
    link.symlink_to(real)
    backup = write_config(link, merge(FIXTURE, FILE_ENTRY))
    assert link.is_symlink()
    assert real.read_text() == merge(FIXTURE, FILE_ENTRY)
    assert backup is not None and backup.parent == dotfiles


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    config = tmp_path / "config"
    config.write_text(FIXTURE)

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(f"os.{failing}", boom)
    with pytest.raises(EnvironmentProblem, match=f"cannot write {config}"):
        write_config(config, merge(FIXTURE, FILE_ENTRY))
    assert config.read_text() == FIXTURE
    assert not list(tmp_path.glob(".config.*"))
    assert not list(tmp_path.glob("*.tmp"))
    # a backup, when made, is complete
    for backup in _backups(tmp_path):
        assert backup.read_text() == FIXTURE


def test_write_into_missing_home_is_environment_problem(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="cannot write"):
        write_config(tmp_path / "no-home" / ".ssh" / "config", "x\n")


def test_read_missing_config_is_empty(tmp_path: Path) -> None:
    assert read_config(tmp_path / "config") == ""


def test_read_undecodable_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_bytes(b"Host a\n  User \xff\xfe\n")
    with pytest.raises(BadInput, match=f"{config} is not UTF-8"):
        read_config(config)


def test_read_unreadable_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()  # reading a directory fails even for root
    with pytest.raises(BadInput, match=f"cannot read {config}"):
        read_config(config)
    with pytest.raises(BadInput, match=f"cannot read {config}"):
        write_config(config, "x\n")
