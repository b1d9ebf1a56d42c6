"""Options and helpers the PKI commands (ca, csr, cert, crl) share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from devid.cli._common import load_key_ref
from devid.durations import MAX_DAYS
from devid.keys import PrivateKey
from devid.store import Store, open_store

F = TypeVar("F", bound=Callable[..., Any])


def store_option(func: F) -> F:
    """``--store URL``: the inventory (else DEVID_STORE, else SQLite in DEVID_HOME)."""
    return click.option(
        "--store",
        "store_url",
        metavar="URL",
        help="Inventory URL, e.g. sqlite:///path/inventory.sqlite (else DEVID_STORE).",
    )(func)


@contextlib.contextmanager
def store_from(url: str | None, *, create: bool = True) -> Iterator[Store]:
    """The inventory for one command, closed when it is done (see :func:`open_store`)."""
    store = open_store(url, create=create)
    try:
        yield store
    finally:
        store.close()


def key_loader(passphrase_file: str | None) -> Callable[[str], PrivateKey]:
    """Load CA keys the way every command does: token URI, or a file (passphrase if needed)."""

    def load(ref: str) -> PrivateKey:
        return load_key_ref(ref, passphrase_file)

    return load


def days_option(help_text: str) -> Callable[[F], F]:
    """``--days``: bounded so dates stay within what X.509 and Python can represent."""
    return click.option("--days", type=click.IntRange(min=1, max=MAX_DAYS), help=help_text)
