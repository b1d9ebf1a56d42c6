"""Writing files the safe way: atomically, with the right mode, never clobbering by accident."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from devid.errors import BadInput, Conflict

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
#: The most read_input reads by default: keys, certificates, CSRs and templates are far smaller.
INPUT_LIMIT = 1 << 20


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def refuse_existing(path: Path, *, force: bool) -> None:
    """Fail early (before any work is done) when *path* exists and *force* is not set."""
    if not force and (path.exists() or path.is_symlink()):
        raise Conflict(f"{path} exists; pass --force to overwrite it")


def refuse_unwritable(path: Path) -> None:
    """Refuse early (before any other work) a *path* whose folder is missing or not
    writable: a later :func:`write_atomic` there would fail after the work was done."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"cannot write {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write {path}: the folder {folder} is not writable")


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = PRIVATE_MODE,
    force: bool = False,
    owner: tuple[int, int] | None = None,
) -> Path:
    """Write *data* to *path* so that readers see the old file or the whole new one.

    Refuses an existing *path* unless *force* (see :func:`place_atomic`); OS errors become
    one-line :class:`BadInput`, an existing file :class:`Conflict`.
    """
    path = Path(path)
    refuse_existing(path, force=force)
    try:
        place_atomic(path, data, mode=mode, replace=force, owner=owner)
    except FileExistsError as exc:
        raise Conflict(f"{path} exists; pass --force to overwrite it") from exc
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def place_atomic(
    path: Path, data: bytes, *, mode: int, replace: bool, owner: tuple[int, int] | None = None
) -> None:
    """Put *data* at *path* atomically; OS errors propagate to the caller.

    The temporary file is created with mode 0600 in the target directory, synced, given
    *mode* (and *owner*, a uid and gid, when given) and then linked into place:
    ``os.link`` when *replace* is false (fails with FileExistsError if *path* appeared in
    the meantime, so nothing is ever overwritten by a race), ``os.replace`` when it is true;
    then the directory is synced. The temporary file never outlives a failure, an interrupt
    (Ctrl-C, SIGTERM) included.
    """
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if owner is not None and owner != _owner_of(tmp):
            try:
                os.chown(tmp, *owner)  # before the mode: chown may clear set-id bits
            except PermissionError as exc:
                who = f"{owner[0]}:{owner[1]}"
                raise PermissionError(
                    exc.errno, f"cannot keep its owner {who} (run as root)"
                ) from exc
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def _owner_of(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def read_input(path: str | Path, *, what: str = "file", limit: int = INPUT_LIMIT) -> bytes:
    """Read a user-named input file, turning OS errors into one clear line.

    Only regular files and pipes (``<(...)``) are read, and at most *limit* bytes: a device
    such as /dev/zero, or a huge file named by mistake, is refused instead of read forever.
    """
    try:
        if not _readable_kind(os.stat(path).st_mode):
            raise BadInput(f"{what} {path} is not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError as exc:
        raise BadInput(f"{what} not found: {path}") from exc
    except IsADirectoryError as exc:
        raise BadInput(f"{what} is a directory: {path}") from exc
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise BadInput(f"{path} is larger than {limit / 2**20:g} MiB; too large for a {what}")
    return data


def _readable_kind(mode: int) -> bool:
    return stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISDIR(mode)
