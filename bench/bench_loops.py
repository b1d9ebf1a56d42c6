"""What is timed: devid's batch issuance and provisioning, and the loops they are compared to.

Every function here does its own set-up first and returns only the seconds of the timed part
(``time.perf_counter``). CSRs are made beforehand with software P-256 device keys, so the
issuance timings measure issuance, not device key generation.

What each side does per certificate:

* ``bare_issue`` — the bare ``CertificateBuilder.sign`` loop: take the CSR's public key and
  CN, build a certificate with exactly the extensions devid's ``device`` profile gives
  (basicConstraints CA:FALSE critical, keyUsage digitalSignature critical, SKI, AKI,
  extendedKeyUsage clientAuth, SAN URI + DNS from the CN), random serial, sign with SHA-256.
  With ``check_csr=True`` it also checks the CSR signature first. Nothing is recorded.
* ``devid_issue`` — ``devid.pki.issue.issue_many`` on the whole batch: checks every CSR
  (signature, key strength, device id), plans, signs, builds the inventory records and
  commits them (and one event each) in one SQLite transaction.
* ``openssl_issue`` — one ``openssl x509 -req`` process per certificate with the same
  extensions (openssl also checks the CSR signature), writing the certificate to a file.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Csrs = Sequence[x509.CertificateSigningRequest]


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def bare_certificates(
    ca_cert: x509.Certificate, key: Any, csrs: Csrs, *, check_csr: bool = False
) -> list[x509.Certificate]:
    """The bare loop (see the module docstring); returns the certificates."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    aki = _aki(ca_cert)
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    basic = x509.BasicConstraints(ca=False, path_length=None)
    out = []
    for csr in csrs:
        if check_csr and not csr.is_signature_valid:
            raise ValueError("bad CSR signature")
        public = csr.public_key()
        cn = str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        sans = [x509.UniformResourceIdentifier(f"urn:devid:{cn}"), x509.DNSName(cn)]
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca_cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(basic, critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(aki, critical=False)
            .add_extension(eku, critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        )
        out.append(builder.sign(key, hashes.SHA256()))
    return out


def bare_issue(ca_cert: x509.Certificate, key: Any, csrs: Csrs, *, check_csr: bool) -> float:
    start = time.perf_counter()
    bare_certificates(ca_cert, key, csrs, check_csr=check_csr)
    return time.perf_counter() - start


def prepare_store(path: Path, ca_name: str) -> str:
    """A new inventory file that already holds the CA (as any inventory in use would)."""
    from devid.pki.ca import ensure_recorded, load_ca
    from devid.store import open_store

    url = f"sqlite:///{path}"
    store = open_store(url)
    try:
        with store.transaction():
            ensure_recorded(store, load_ca(ca_name))
    finally:
        store.close()
    return url


def devid_certificates(ca_name: str, key: Any, csrs: Csrs, store_url: str) -> list[Any]:
    """``issue_many`` on the whole batch with an inventory opened (and closed) here."""
    from devid.pki.ca import load_ca
    from devid.pki.issue import IssueRequest, issue_many
    from devid.pki.profiles import PROFILES
    from devid.store import open_store

    ca = load_ca(ca_name)
    store = open_store(store_url)
    try:
        requests = [IssueRequest(csr=csr, profile=PROFILES["device"]) for csr in csrs]
        return issue_many(ca, requests, store=store, key=key)
    finally:
        store.close()


def devid_issue(ca_name: str, key: Any, csrs: Csrs, store_url: str) -> float:
    start = time.perf_counter()
    issued = devid_certificates(ca_name, key, csrs, store_url)
    elapsed = time.perf_counter() - start
    assert len(issued) == len(csrs)
    return elapsed


def openssl_commands(
    files: Sequence[tuple[Path, Path]], ca_cert: Path, ca_key: str, out: Path, *, engine: bool
) -> list[list[str]]:
    """One ``openssl x509 -req`` per CSR; with *engine* the CA key is a pkcs11: URI."""
    out.mkdir(parents=True, exist_ok=True)
    key_args = ["-CAkey", ca_key]
    if engine:
        key_args = ["-engine", "pkcs11", "-CAkeyform", "engine", "-CAkey", ca_key]
    return [
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            *key_args,
            "-set_serial",
            hex(x509.random_serial_number()),
            "-days",
            "365",
            "-sha256",
            "-extfile",
            str(ext),
            "-extensions",
            "v3",
            "-out",
            str(out / f"{n}.pem"),
        ]
        for n, (csr, ext) in enumerate(files)
    ]


def openssl_issue(commands: list[list[str]], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    for command in commands:
        done = subprocess.run(command, capture_output=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed: {done.stderr.decode()[-300:]}")
    return time.perf_counter() - start


def der_list(csrs: Csrs) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in csrs]


def with_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def cpu_breakdown(ca_name: str, key: Any, csrs: Csrs, store_url: str) -> dict[str, float]:
    """CPU microseconds per certificate for each step devid's batch issuance takes.

    Uses the pieces ``issue_many`` is made of (``plan``, ``CertificateSigner``,
    ``certificate_record``, the store) and
    ``time.process_time``, which counts this process's CPU only: steadier than wall time on a
    machine shared with other work.
    """
    from devid.durations import utcnow
    from devid.pki import certs as pki_certs
    from devid.pki.build import CertificateSigner
    from devid.pki.ca import load_ca
    from devid.pki.issue import IssueRequest, plan, random_serial
    from devid.pki.profiles import PROFILES
    from devid.store import Event, open_store

    ca = load_ca(ca_name)
    now = utcnow().replace(microsecond=0)
    requests = [IssueRequest(csr=csr, profile=PROFILES["device"]) for csr in csrs]
    clock, steps = time.process_time, {}
    start = clock()
    for csr in csrs:
        assert csr.is_signature_valid
    steps["CSR signature check"] = clock() - start
    start = clock()
    specs = [plan(ca, r, now, random_serial()) for r in requests]
    steps["plan besides the check (key rules, device id, subject, SANs, validity)"] = (
        clock() - start - steps["CSR signature check"]
    )
    start = clock()
    signer = CertificateSigner(ca.certificate, key)
    certs = [signer.sign(s) for s in specs]
    steps["build and sign (CertificateBuilder, shared part reused)"] = clock() - start
    start = clock()
    records = [
        pki_certs.certificate_record(c, ca=ca.name, profile=r.profile.name, sans=s.sans)
        for c, s, r in zip(certs, specs, requests, strict=True)
    ]
    steps["inventory record (PEM, SHA-256, subject, SANs)"] = clock() - start
    store = open_store(store_url)
    start = clock()
    with store.transaction():
        store.add_certificates(records)
        store.add_events([Event("cert.issue", ca=ca.name, serial=r.serial) for r in records])
    store.close()
    steps["store: insert, events, commit, close"] = clock() - start
    steps["sum of the steps"] = sum(steps.values())
    start = clock()
    bare_certificates(ca.certificate, key, csrs)
    steps["for comparison: the bare loop (build + sign)"] = clock() - start
    return {name: 1e6 * seconds / len(csrs) for name, seconds in steps.items()}
