"""The ``~/.ssh/config`` block that sends CodeCommit's SSH endpoints to the right IAM key.

``render`` builds the block, ``find_entry`` reads it back, ``merge`` puts it into an existing
file and ``write_config`` stores the result. The rules ``merge`` follows, all chosen so that a
hand-kept config survives and a second run changes nothing:

- Only a *dedicated* block counts: a ``Host`` line whose single pattern is exactly
  ``git-codecommit.*.amazonaws.com`` (compared case-sensitively, as ssh does: it lower-cases
  the host name, not the patterns). A ``Host`` line that lists that pattern among others is
  never edited; a dedicated block is added or updated beside it.
- A block runs from its ``Host`` line to the next ``Host``/``Match`` line or the end of the
  file. Blank lines and comments at its end are not options, so they are left where they
  are: comments written directly above the next ``Host``/``Match`` stay with that block.
- Inside the block devid manages ``User``, ``IdentityFile``, ``IdentitiesOnly`` and
  ``PKCS11Provider``: those lines are removed and the new ones are written where the first
  of them was (or right after the ``Host`` line). Every other line (``Port``,
  ``ProxyCommand``, comments) is kept as it is. If the file holds more dedicated blocks, the
  first is updated and the managed lines of the later ones are removed, because ssh would
  otherwise add their ``IdentityFile`` lines to the keys it offers.
- ssh uses the *first* value it reads for an option, so a dedicated block that comes after
  a ``Host`` block (such as ``Host *``) or ``Match all`` block that also applies to
  CodeCommit and sets ``User``, ``IdentityFile``, ``IdentitiesOnly`` or ``PKCS11Provider``
  would be updated in vain: it is moved in front of the first such block (with the comments
  directly above it; blank lines and comments after its last option stay where they are).
- With no dedicated block, the block is appended after one blank line, except that ssh uses
  the *first* value it reads for an option: when a ``Host`` block (such as ``Host *``) or a
  ``Match all`` block that also applies to CodeCommit comes earlier, the new block is put in
  front of it (and of the comments directly above it), as ssh_config(5) advises. Options in
  the global section before the first ``Host`` line, in included files and in other
  ``Match`` blocks are not evaluated.
- Every line devid does not write is kept byte for byte; new lines use the newline style of
  the file's first line, and a file that did not end with a newline still does not.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devid.errors import BadInput, EnvironmentProblem
from devid.fsutil import place_atomic
from devid.policy import parse_key_id

__all__ = [
    "CODECOMMIT_HOST",
    "CodeCommitEntry",
    "find_entry",
    "merge",
    "read_config",
    "render",
    "write_config",
]

CODECOMMIT_HOST = "git-codecommit.*.amazonaws.com"
# A concrete host name to test other blocks' patterns against.
_SAMPLE_HOST = "git-codecommit.us-east-1.amazonaws.com"
_MANAGED = frozenset({"user", "identityfile", "identitiesonly", "pkcs11provider"})
_HEADERS = frozenset({"host", "match"})
# IAM SSHPublicKeyId: "APKA" + upper-case letters/digits, 20 to 128 characters.
# Characters that make ssh split or cut a value unless it is quoted.
_NEEDS_QUOTES = re.compile(r"[\s#'=]")
_LINE = re.compile(r"[^\n]*\n|[^\n]+")
_OPTION = re.compile(r"\s*([^\s=]+)\s*(?:=\s*)?(.*)")
_DEFAULT_INDENT = "  "


@dataclass(frozen=True)
class CodeCommitEntry:
    """What the CodeCommit block says: the IAM SSH key id and the key ssh should offer.

    For a key on a PKCS#11 token, ``pkcs11_provider`` names the module and ``identity_file``
    must be the key's ``.pub`` file: with ``IdentitiesOnly yes`` OpenSSH drops token keys
    that no ``IdentityFile`` names.
    """

    key_id: str
    identity_file: str
    pkcs11_provider: str | None = None

    def __post_init__(self) -> None:
        parse_key_id(self.key_id)
        _check_path("IdentityFile", self.identity_file)
        if self.pkcs11_provider is not None:
            _check_path("PKCS11Provider", self.pkcs11_provider)
            if not self.identity_file.endswith(".pub"):
                raise BadInput(
                    f"IdentityFile {self.identity_file!r} for a token key is not a .pub file",
                    hint="with IdentitiesOnly ssh offers a token key only if its .pub is named",
                )

    def options(self) -> list[tuple[str, str]]:
        """The managed options in the order they are written."""
        pairs = [("User", self.key_id)]
        if self.pkcs11_provider is not None:
            pairs.append(("PKCS11Provider", _quote(self.pkcs11_provider)))
        pairs += [("IdentityFile", _quote(self.identity_file)), ("IdentitiesOnly", "yes")]
        return pairs


def render(entry: CodeCommitEntry) -> str:
    """The dedicated ``Host`` block for ``entry``, newline-terminated."""
    return "\n".join([f"Host {CODECOMMIT_HOST}", *_option_lines(entry, _DEFAULT_INDENT)]) + "\n"


def find_entry(text: str) -> CodeCommitEntry | None:
    """The entry of the first dedicated block, or None if there is none or it lacks
    ``User`` or ``IdentityFile``. Raises ``BadInput`` if its values are not usable."""
    lines = [_strip_eol(line) for line in _LINE.findall(text)]
    blocks = _dedicated_blocks(lines)
    if not blocks:
        return None
    start, end = blocks[0]
    found: dict[str, str] = {}
    for content in lines[start + 1 : end]:
        parsed = _parse(content)
        if parsed and parsed[1] and parsed[0] in _MANAGED:
            found.setdefault(parsed[0], parsed[1][0])  # ssh keeps the first value
    if "user" not in found or "identityfile" not in found:
        return None
    try:
        return CodeCommitEntry(found["user"], found["identityfile"], found.get("pkcs11provider"))
    except BadInput as err:
        raise BadInput(f"ssh config line {start + 1}: {err.message}", hint=err.hint) from err


def merge(text: str, entry: CodeCommitEntry) -> str:
    """``text`` with the dedicated CodeCommit block set to ``entry`` (rules in the module doc)."""
    raw = _LINE.findall(text)
    lines = [_strip_eol(line) for line in raw]
    eols = [line[len(content) :] for line, content in zip(raw, lines, strict=True)]
    eol = next((e for e in eols if e), "\n")
    if eols and not eols[-1]:
        eols[-1] = eol  # restored to "" at the end
    out = list(zip(lines, eols, strict=True))
    blocks = _dedicated_blocks(lines)
    if blocks:
        for start, end in reversed(blocks[1:]):
            out[start + 1 : end] = [pair for pair in out[start + 1 : end] if not _managed(pair[0])]
        start, end = blocks[0]
        body = _replace_options(lines[start + 1 : end], eols[start + 1 : end], entry, eol)
        out[start + 1 : end] = body
        ahead = _shadowed_by(lines, start)
        if ahead is not None:
            _move_block(out, start, start + 1 + len(body), ahead, eol)
    else:
        new = [(line, eol) for line in render(entry).splitlines()]
        _insert_block(out, _insert_at(lines), new, eol)
    result = "".join(content + line_eol for content, line_eol in out)
    if text and not text.endswith("\n"):
        result = result.removesuffix(eol)
    return result


def read_config(path: Path) -> str:
    """The text of ``path``, or ``""`` if it does not exist (newlines kept as they are)."""
    data = _read_bytes(path)
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{path} is not UTF-8 text (bad byte at offset {err.start})") from err


def write_config(path: Path, text: str) -> Path | None:
    """Store ``text`` at ``path`` atomically with mode 0600 and return the backup's path.

    A missing parent directory is created with mode 0700. An existing file with other
    content is first copied to ``<name>.bak-YYYYmmddTHHMMSS`` (mode 0600), whose path is
    returned; identical content writes nothing and returns None, as does a new file. A
    symlinked config is written through to its target, so the link survives. On failure the
    old file is untouched and no temporary file is left (a backup already made is kept).
    """
    target = Path(os.path.realpath(path))
    data = text.encode("utf-8")
    try:
        _ensure_dir(target.parent)
        old = _read_bytes(target)
        if old == data:
            return None
        backup = _backup(target, old) if old is not None else None
        place_atomic(target, data, mode=0o600, replace=True)
    except OSError as err:
        raise EnvironmentProblem(f"cannot write {path}: {err.strerror or err}") from err
    return backup


def _check_path(keyword: str, value: str) -> None:
    if not value or any(ch in '"\\' or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise BadInput(
            f"{keyword} {value!r} cannot be written to an ssh config",
            hint="use a non-empty path without quotes, backslashes or control characters",
        )


def identity_path(path: str) -> str:
    """A file path as an ``IdentityFile`` argument: absolute (ssh resolves a relative one
    against its own working directory) and with ``%`` written ``%%`` (ssh_config(5) TOKENS).
    ``${`` would be read as an environment variable and cannot be escaped: refused."""
    absolute = os.path.abspath(os.path.expanduser(path))
    if "${" in absolute:
        raise BadInput(
            f"IdentityFile {path!r} cannot be written to an ssh config: ssh reads '${{' "
            "as an environment variable",
            hint="move the key to a path without '${'",
        )
    return absolute.replace("%", "%%")


def _quote(value: str) -> str:
    # ssh_config(5): "Arguments may optionally be enclosed in double quotes (") in order
    # to represent arguments containing spaces."
    return f'"{value}"' if _NEEDS_QUOTES.search(value) else value


def _option_lines(entry: CodeCommitEntry, indent: str) -> list[str]:
    return [f"{indent}{keyword} {value}" for keyword, value in entry.options()]


def _strip_eol(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


def _parse(content: str) -> tuple[str, list[str]] | None:
    """(lower-case keyword, arguments) of an option line; None for blanks and comments."""
    match = _OPTION.fullmatch(content)
    if match is None or match.group(1).startswith("#"):
        return None
    return match.group(1).lower(), list(_split_args(match.group(2)))


def _split_args(rest: str) -> Iterator[str]:
    """Arguments as OpenSSH's argv_split reads them: quotes, backslash escapes, # comments."""
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n or rest[i] == "#":
            return
        arg: list[str] = []
        quote = ""
        while i < n and (quote or rest[i] not in " \t"):
            ch = rest[i]
            if ch == "\\" and i + 1 < n and rest[i + 1] in "'\"\\" + ("" if quote else " "):
                i += 1
                arg.append(rest[i])
            elif not quote and ch in "'\"":
                quote = ch
            elif ch == quote:
                quote = ""
            else:
                arg.append(ch)
            i += 1
        yield "".join(arg)


def _managed(content: str) -> bool:
    parsed = _parse(content)
    return parsed is not None and parsed[0] in _MANAGED


def global_overrides(text: str, *, token: bool = False) -> list[str]:
    """Options before the first ``Host`` or ``Match`` line of *text* that would win over the
    CodeCommit entry's: they apply to every host and ssh keeps the first value, and devid
    cannot move them without changing other hosts. ``User`` (the SSH key id),
    ``IdentitiesOnly`` other than yes, and with a token key (*token*) ``PKCS11Provider``.
    (``IdentityFile`` lines add up instead, so a global one does not stop the entry's key.)"""
    found = []
    for content in (_strip_eol(line) for line in _LINE.findall(text)):
        parsed = _parse(content)
        if parsed is None:
            continue
        keyword, args = parsed
        if keyword in _HEADERS:
            break
        wins = (
            keyword == "user"
            or (keyword == "identitiesonly" and [a.lower() for a in args] != ["yes"])
            or (keyword == "pkcs11provider" and token)
        )
        if wins:
            found.append(content.strip())
    return found


def _headers(lines: list[str]) -> Iterator[tuple[int, str, list[str]]]:
    for index, content in enumerate(lines):
        parsed = _parse(content)
        if parsed and parsed[0] in _HEADERS:
            yield index, parsed[0], parsed[1]


def _dedicated_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(Host line index, index of the next Host/Match line or len(lines)) of each block."""
    headers = list(_headers(lines))
    if not headers:
        return []
    ends = [index for index, _, _ in headers[1:]] + [len(lines)]
    return [
        (index, end)
        for (index, keyword, args), end in zip(headers, ends, strict=True)
        if keyword == "host" and args == [CODECOMMIT_HOST]
    ]


def _replace_options(
    body: list[str], eols: list[str], entry: CodeCommitEntry, eol: str
) -> list[tuple[str, str]]:
    managed = [i for i, content in enumerate(body) if _managed(content)]
    options = [i for i, content in enumerate(body) if _parse(content)]
    at = managed[0] if managed else 0
    sample = body[managed[0]] if managed else body[options[0]] if options else ""
    indent = sample[: len(sample) - len(sample.lstrip())] or _DEFAULT_INDENT
    pairs = list(zip(body, eols, strict=True))
    new = [(line, eol) for line in _option_lines(entry, indent)]
    after = [pair for i, pair in enumerate(pairs[at:], start=at) if i not in managed]
    return pairs[:at] + new + after


def _applies_to_codecommit(keyword: str, args: list[str]) -> bool:
    if keyword == "match":
        return [arg.lower() for arg in args] == ["all"]
    negated = [arg[1:] for arg in args if arg.startswith("!")]
    positive = [arg for arg in args if not arg.startswith("!")]
    return not any(_glob(p, _SAMPLE_HOST) for p in negated) and any(
        _glob(p, _SAMPLE_HOST) for p in positive
    )


def _glob(pattern: str, host: str) -> bool:
    # ssh patterns know only * and ?; fnmatch would also treat [...] as a class.
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, host) is not None


def _insert_at(lines: list[str]) -> int | None:
    """Where a new block goes: before the first block that also applies, else None (append)."""
    for index, keyword, args in _headers(lines):
        if _applies_to_codecommit(keyword, args):
            return _comments_above(lines, index)
    return None


def _shadowed_by(lines: list[str], start: int) -> int | None:
    """Where the dedicated block at *start* must move so that ssh reads its options first:
    in front of the first earlier block that also applies and sets a managed option (ssh
    keeps the first ``User`` it reads), or None when no earlier block does."""
    headers = list(_headers(lines))
    ends = [index for index, _, _ in headers[1:]] + [len(lines)]
    for (index, keyword, args), end in zip(headers, ends, strict=True):
        if index >= start:
            return None
        if _applies_to_codecommit(keyword, args) and any(
            _managed(content) for content in lines[index + 1 : end]
        ):
            return _comments_above(lines, index)
    return None


def _comments_above(lines: list[str], index: int) -> int:
    """*index*, moved up over the comment lines directly above it (they belong to it)."""
    while index > 0 and lines[index - 1].lstrip().startswith("#"):
        index -= 1
    return index


def _move_block(out: list[tuple[str, str]], start: int, end: int, to: int, eol: str) -> None:
    """Move the block whose ``Host`` line is ``out[start]`` in front of ``out[to]``.

    Moved: the comments directly above the ``Host`` line, and the block up to its last
    option; blank lines and comments after that stay (they belong to the next block), and
    one blank line that separated the block from what was before it goes with it.
    """
    last = max(i for i in range(start, end) if i == start or _parse(out[i][0]))
    first = _comments_above([content for content, _ in out], start)
    block = out[first : last + 1]
    cut = first - 1 if first > 0 and not out[first - 1][0].strip() else first
    del out[cut : last + 1]
    _insert_block(out, to, block, eol)


def _insert_block(
    out: list[tuple[str, str]], at: int | None, block: list[tuple[str, str]], eol: str
) -> None:
    blank = ("", eol)
    if at is None:
        gap = [blank] if out and out[-1][0].strip() else []
        out.extend(gap + block)
        return
    gap = [blank] if at > 0 and out[at - 1][0].strip() else []
    out[at:at] = [*gap, *block, blank]


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror or err}") from err


def _ensure_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask


def _backup(target: Path, data: bytes) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for attempt in range(100):
        suffix = f".{attempt}" if attempt else ""
        candidate = target.with_name(f"{target.name}.bak-{stamp}{suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        try:
            _write_fd(fd, data)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        return candidate
    raise FileExistsError(f"too many backups of {target} named {stamp}")


def _write_fd(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` with mode 0600, fsync and close it."""
    with open(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
