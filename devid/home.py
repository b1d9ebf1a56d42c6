"""The devid data directory: ``DEVID_HOME``, else ``~/.local/share/devid``."""

from __future__ import annotations

import os
from pathlib import Path

from devid.errors import EnvironmentProblem


def devid_home(*, create: bool = False) -> Path:
    """The data directory (CAs, the default inventory); created 0700 when *create* is set."""
    configured = os.environ.get("DEVID_HOME")
    home = Path(configured).expanduser() if configured else Path.home() / ".local/share/devid"
    if create:
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot create the devid data directory {home}: {exc.strerror}",
                hint="set DEVID_HOME to a writable directory",
            ) from exc
    return home
