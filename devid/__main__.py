"""``python -m devid``."""

from __future__ import annotations

from devid.cli import main

if __name__ == "__main__":
    main()
