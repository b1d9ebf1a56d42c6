"""devid.fsutil: atomic writes with the right mode that never clobber by accident."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devid import fsutil
from devid.errors import BadInput, Conflict
from devid.fsutil import read_input, refuse_existing, write_atomic


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(directory: Path) -> list[str]:
    """Everything in *directory*, hidden temporary files included."""
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """umask 000: a file created with the default mode would be world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("loose_umask")
def test_new_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "secret", b"data")
    assert path.read_bytes() == b"data"
    assert mode_of(path) == 0o600
    assert names(tmp_path) == ["secret"]


@pytest.mark.usefixtures("loose_umask")
def test_public_mode_on_request(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "key.pub", b"ssh-ed25519 AAAA", mode=fsutil.PUBLIC_MODE)
    assert mode_of(path) == 0o644


def test_existing_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    path.chmod(0o640)
    with pytest.raises(Conflict, match=r"key\.pem exists; pass --force to overwrite it") as info:
        write_atomic(path, b"new")
    assert info.value.exit_code == 4
    assert path.read_bytes() == b"old"
    assert mode_of(path) == 0o640
    assert names(tmp_path) == ["key.pem"]


def test_force_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old contents")
    path.chmod(0o644)
    inode = path.stat().st_ino
    with path.open("rb") as reader:  # a reader that opened the old file keeps seeing it whole
        write_atomic(path, b"new", force=True)
        assert reader.read() == b"old contents"
    assert path.read_bytes() == b"new"
    assert path.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert mode_of(path) == 0o600
    assert names(tmp_path) == ["key.pem"]


def test_dangling_symlink_counts_as_existing(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(Conflict):
        write_atomic(link, b"x")
    assert not (tmp_path / "nowhere").exists()


def test_force_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"target stays")
    link = tmp_path / "link"
    link.symlink_to(target)
    write_atomic(link, b"new", force=True)
    assert target.read_bytes() == b"target stays"
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"


def test_file_appearing_after_the_check_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process creates the file between the early check and the final link.
    path = tmp_path / "raced"

    def create_meanwhile(p: Path, *, force: bool) -> None:
        p.write_bytes(b"theirs")

    monkeypatch.setattr(fsutil, "refuse_existing", create_meanwhile)
    with pytest.raises(Conflict):
        write_atomic(path, b"ours")
    assert path.read_bytes() == b"theirs"
    assert names(tmp_path) == ["raced"]


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_an_interrupted_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: BaseException, force: bool
) -> None:
    # Ctrl-C (or a full disk) while the data is synced: neither the target nor the
    # temporary file may be left, and an existing file stays as it was
    path = tmp_path / "key.pem"
    if force:
        path.write_bytes(b"old")

    def stop(fd: int) -> None:
        raise interrupt

    monkeypatch.setattr(os, "fsync", stop)
    expected = KeyboardInterrupt if interrupt is KeyboardInterrupt else BadInput
    with pytest.raises(expected):
        write_atomic(path, b"new", force=force)
    assert names(tmp_path) == (["key.pem"] if force else [])
    if force:
        assert path.read_bytes() == b"old"


def test_missing_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot write") as info:
        write_atomic(tmp_path / "no" / "such" / "dir" / "key", b"x")
    assert info.value.exit_code == 2
    assert names(tmp_path) == []


def test_target_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(Conflict):
        write_atomic(tmp_path / "d", b"x")
    with pytest.raises(BadInput, match="cannot write"):
        write_atomic(tmp_path / "d", b"x", force=True)
    assert names(tmp_path) == ["d"]
    assert names(tmp_path / "d") == []


def test_relative_path_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic(Path("here.pem"), b"x")
    assert names(tmp_path) == ["here.pem"]


def test_refuse_existing(tmp_path: Path) -> None:
    refuse_existing(tmp_path / "missing", force=False)
    (tmp_path / "there").write_bytes(b"")
    refuse_existing(tmp_path / "there", force=True)
    with pytest.raises(Conflict):
        refuse_existing(tmp_path / "there", force=False)


def test_read_input(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"\x00bytes")
    assert read_input(tmp_path / "f") == b"\x00bytes"
    assert read_input(str(tmp_path / "f")) == b"\x00bytes"
    with pytest.raises(BadInput, match=r"key file not found: .*missing"):
        read_input(tmp_path / "missing", what="key file")
    with pytest.raises(BadInput, match="certificate is a directory"):
        read_input(tmp_path, what="certificate")


def test_owner_is_given_to_the_new_file_before_it_is_in_place(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("giving a file to another user needs root: run the suite as root (CI does)")
    path = write_atomic(tmp_path / "cert.pem", b"new", mode=0o640, force=True, owner=(65534, 65534))
    st = path.stat()
    assert (st.st_uid, st.st_gid, mode_of(path)) == (65534, 65534, 0o640)
    assert names(tmp_path) == ["cert.pem"]


def test_an_owner_that_cannot_be_kept_fails_with_one_line_and_changes_nothing() -> None:
    if os.geteuid() != 0:
        pytest.fail("dropping to another user needs root: run the suite as root (CI does)")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    with tempfile.TemporaryDirectory() as shared:  # pytest's tmp_path is closed to others
        folder = Path(shared)
        folder.chmod(0o777)
        path = folder / "cert.pem"
        path.write_bytes(b"old")
        code = (
            "from pathlib import Path; from devid.fsutil import write_atomic\n"
            "try:\n"
            f"    write_atomic(Path({str(path)!r}), b'new', mode=0o644, force=True, owner=(0, 0))\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n"
        )
        done = subprocess.run(
            [*nobody, sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert done.stdout == (
            f"BadInput cannot write {path}: cannot keep its owner 0:0 (run as root)\n"
        ), done.stderr
        assert path.read_bytes() == b"old"
        assert names(folder) == ["cert.pem"]
