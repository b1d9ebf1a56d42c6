"""Worker functions run in 'spawn' child processes (importable, no pytest needed)."""

from __future__ import annotations

import os

from devid.pki.ca import load_ca
from devid.pki.certs import load_csr
from devid.pki.issue import IssueRequest, issue
from devid.pki.profiles import PROFILES
from devid.store import open_store


def issue_repeatedly(
    home: str, store_url: str, ca_name: str, csr_pem: bytes, count: int
) -> list[str]:
    """Issue *count* certificates one by one (one transaction each); return their serials."""
    os.environ["DEVID_HOME"] = home
    store = open_store(store_url)
    ca = load_ca(ca_name)
    key = ca.signing_key()
    request = IssueRequest(csr=load_csr(csr_pem), profile=PROFILES["device"], device_id="dev")
    serials = []
    for _ in range(count):
        issued = issue(ca, request, store=store, loader=lambda _ref: key)
        serials.append(issued.record.serial)
    store.close()
    return serials
