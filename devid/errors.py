"""The devid error tree.

Every error a user can cause or meet carries the exit code the CLI uses for it
(see DESIGN.md section 4), so the mapping lives with the error, not at each call site.
"""

from __future__ import annotations


class DevidError(Exception):
    """Root of every error devid raises on purpose; ``str(err)`` is one line for stderr."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class CheckFailed(DevidError):
    """A check ran and said no (verify failed, key not accepted, not due)."""

    exit_code = 1


class NotFound(DevidError):
    """The thing asked for does not exist."""

    exit_code = 1


class BadInput(DevidError):
    """Malformed or unusable input: files, names, options."""

    exit_code = 2


class PassphraseRequired(BadInput):
    """A key file is encrypted and no passphrase was given (the CLI may then ask)."""


class EnvironmentProblem(DevidError):
    """Something outside devid is missing or failing: module, token, PIN, network, AWS."""

    exit_code = 3


class Conflict(DevidError):
    """The thing exists already, is a duplicate, or a quota is reached."""

    exit_code = 4
