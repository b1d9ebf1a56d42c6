"""Which files in ~/.ssh devid takes for keys (ec2 list, ssh lookups)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devid.localkeys import candidate_key_file


@pytest.mark.parametrize(
    "name",
    ["id_ed25519", "id_rsa.pub", "rclone_ed25519", "rc-deploy", "config-mgmt.pem",
     "environment_prod.pem", "known_hosts_key", "authorized_keys_signer"],
)  # fmt: skip
def test_keys_named_like_openssh_files_are_candidates(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("x")
    assert candidate_key_file(tmp_path / name)


@pytest.mark.parametrize(
    "name",
    ["config", "known_hosts", "known_hosts.old", "authorized_keys", "authorized_keys2",
     "environment", "rc", ".hidden_key", "config.bak-20261129T000000",
     "id_rsa.bak-20261129T000000"],
)  # fmt: skip
def test_openssh_files_backups_and_hidden_files_are_not(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("x")
    assert not candidate_key_file(tmp_path / name)


def test_directories_and_large_files_are_not(tmp_path: Path) -> None:
    (tmp_path / "keys.d").mkdir()
    (tmp_path / "huge").write_bytes(b"x" * (64 * 1024 + 1))
    assert not candidate_key_file(tmp_path / "keys.d")
    assert not candidate_key_file(tmp_path / "huge")
    assert not candidate_key_file(tmp_path / "missing")
