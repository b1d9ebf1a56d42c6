"""Device provisioning: a key made on the device token, a CSR signed there, a certificate.

For each device id: generate a non-extractable key labelled ``device-<id>`` on the token,
sign a CSR (CN = the id) with it on the token, issue with the CA, and, inside the inventory
transaction that records the certificate, write ``cert.pem`` (the certificate) and
``chain.pem`` (the certificate and the CA's intermediates, what a device presents in TLS)
into ``<out>/<id>/`` (default ``DEVID_HOME/devices/<id>/``) and store the certificate on the
token beside the key (same ``CKA_ID``). The record is committed last, so a device is either
recorded with everything in place or not recorded at all.

Re-running is safe and never issues twice. A device counts as done when the inventory holds
a current (``issued``) certificate for its id and the key that certificate names is on the
token; done devices are skipped (their files and token object rewritten from the record if
they went missing). A key left by an interrupted run (generated, no certificate recorded) is
reused; a key with the label that does not look like ours (another type, not generated on
the token as non-extractable, a CA key, or one of a revoked certificate) is refused.

Batches are signed and recorded ``batch_size`` devices per transaction. With ``workers > 1``
each worker is a *spawned* process (:mod:`devid.provision_pool`) that opens the token, the
CA key and the inventory itself (PKCS#11 sessions must not cross processes; DESIGN.md) and
issues its own batches; serials stay unique through the inventory's UNIQUE constraint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import hsm
from devid.errors import BadInput, Conflict
from devid.fsutil import PUBLIC_MODE, write_atomic
from devid.home import devid_home
from devid.keys import KeyType, PrivateKey, is_token_ref
from devid.loading import load_signing_key
from devid.pki import certs
from devid.pki.ca import CertificateAuthority, load_ca
from devid.pki.csr import build_csr
from devid.pki.issue import Issued, IssueRequest, check_not_revoked, issue_many
from devid.pki.profiles import Profile, check_device_id, get_profile
from devid.store import CertQuery, CertRecord, Status, Store, open_store
from hsm.certs import load_certificates, store_certificate
from hsm.errors import KeyExists, KeyNotFound
from hsm.session import session_for

BATCH_SIZE = 64
CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"
Progress = Callable[[int, int], None]


def key_label(device_id: str) -> str:
    """The token label of a device's key (prefixed, so it never meets a CA key's label)."""
    return f"device-{device_id}"


def devices_dir() -> Path:
    return devid_home() / "devices"


@dataclass(frozen=True)
class DeviceFiles:
    """A device's folder: ``cert.pem`` (the certificate) and ``chain.pem`` (it + intermediates)."""

    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def chain(self) -> Path:
        return self.directory / CHAIN_FILE

    @classmethod
    def beside(cls, cert_path: Path) -> DeviceFiles | None:
        """The folder *cert_path* belongs to, when it is a provisioned device's ``cert.pem``."""
        if cert_path.name == CERT_FILE and (cert_path.parent / CHAIN_FILE).is_file():
            return cls(cert_path.parent)
        return None

    def write(self, cert: x509.Certificate, intermediates: Sequence[x509.Certificate]) -> None:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create {self.directory}: {exc.strerror}") from exc
        leaf = certs.pem(cert)
        write_atomic(self.cert, leaf, mode=PUBLIC_MODE, force=True)
        chain = leaf + b"".join(certs.pem(c) for c in intermediates)
        write_atomic(self.chain, chain, mode=PUBLIC_MODE, force=True)


@dataclass(frozen=True)
class ProvisionResult:
    """One device: its key on the token, its certificate, and whether it was done already."""

    device_id: str
    key_reference: str
    serial: str
    certificate_path: Path
    chain_path: Path
    iot_certificate_id: str
    skipped: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "key_reference": self.key_reference,
            "serial": self.serial,
            "certificate_path": str(self.certificate_path),
            "chain_path": str(self.chain_path),
            "iot_certificate_id": self.iot_certificate_id,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class ProvisionOptions:
    """Everything a (spawned) worker needs to provision devices; picklable."""

    token: str
    ca: str
    store_url: str
    key_type: KeyType = KeyType.EC_P256
    out_dir: Path | None = None
    profile: str = "device"
    days: int | None = None
    ca_passphrase: bytes | None = None
    batch_size: int = BATCH_SIZE


@dataclass
class Run:
    """One process's working set: the inventory, the CA and its key, the token."""

    options: ProvisionOptions
    store: Store
    ca: CertificateAuthority
    ca_key: PrivateKey
    profile: Profile
    token: hsm.Pkcs11Uri
    out_dir: Path
    _ca_publics: set[bytes] | None = None

    def files(self, device_id: str) -> DeviceFiles:
        return DeviceFiles(self.out_dir / device_id)

    def ca_publics(self) -> set[bytes]:
        """DER public keys of every CA in the inventory (a device must never reuse one)."""
        if self._ca_publics is None:
            self._ca_publics = {
                _spki(certs.record_certificate(r).public_key()) for r in self.store.list_cas()
            } | {_spki(c.public_key()) for c in self.ca.chain}
        return self._ca_publics


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _token_uri(text: str) -> hsm.Pkcs11Uri:
    uri = hsm.parse_uri(text)
    if uri.object_label is not None or uri.id is not None:
        raise BadInput("--token names a token, not a key: drop object= and id= from the URI")
    return uri.with_(type=None)


def open_run(options: ProvisionOptions, store: Store) -> Run:
    """Check the options against the CA, profile and token; nothing is written."""
    ca = load_ca(options.ca)
    ca.check_valid()
    check_not_revoked(store, ca)
    profile = get_profile(options.profile)
    if options.days is not None and options.days < 1:
        raise BadInput("--days must be at least 1")
    token = _token_uri(options.token)
    session_for(token)  # the token is there and takes the PIN

    def load(ref: str) -> PrivateKey:
        return load_signing_key(ref, passphrase=options.ca_passphrase)

    out_dir = (options.out_dir or devices_dir()).expanduser().resolve()
    return Run(options, store, ca, ca.signing_key(load), profile, token, out_dir)


# --- one device -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    device_id: str
    key: hsm.TokenPrivateKey
    csr: x509.CertificateSigningRequest


def _current(store: Store, device_id: str) -> CertRecord | None:
    found = store.find_certificates(CertQuery(device_id=device_id, statuses=(Status.ISSUED,)))
    return max(found, key=lambda r: r.issued_at) if found else None


def _prepare(run: Run, device_id: str) -> ProvisionResult | _Pending:
    """Skip a done device, or get its key (new or left by a crash) and sign its CSR."""
    record = _current(run.store, device_id)
    if record is not None:
        return _already_done(run, record)
    # the subject first: a device id it cannot hold fails before anything is on the token
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, device_id)])
    key = _device_key(run, device_id)
    return _Pending(device_id, key, build_csr(key, subject))


def _device_key(run: Run, device_id: str) -> hsm.TokenPrivateKey:
    label = key_label(device_id)
    try:
        return hsm.generate_keypair(
            run.token, run.options.key_type.token_spec(), label=label, drop_lone_public=True
        )
    except KeyExists:
        return _left_over_key(run, device_id, label)


def _left_over_key(run: Run, device_id: str, label: str) -> hsm.TokenPrivateKey:
    """The key an interrupted run generated for *device_id*, if it is safe to reuse."""
    uri = run.token.with_(object_label=label, type="private")
    infos = hsm.list_keys(uri)
    hint = f"delete it with: devid hsm delete '{uri}'"
    if len(infos) != 1:
        raise Conflict(f"{len(infos)} keys labelled {label!r} on the token", hint=hint)
    info = infos[0]
    if not (info.local and info.always_sensitive and info.never_extractable):
        raise Conflict(
            f"the key labelled {label!r} was not generated on the token as non-extractable; "
            "devid will not use it as a device key",
            hint=hint,
        )
    key = hsm.load_key(uri)
    if KeyType.of(key) is not run.options.key_type:
        raise Conflict(f"the key labelled {label!r} is not {run.options.key_type.value}", hint=hint)
    public = _spki(key.public_key())
    if public in run.ca_publics():
        raise Conflict(f"the key labelled {label!r} is a CA key", hint="choose another device id")
    revoked = run.store.find_certificates(
        CertQuery(device_id=device_id, statuses=(Status.REVOKED,))
    )
    if any(_spki(certs.record_certificate(r).public_key()) == public for r in revoked):
        raise Conflict(f"the key labelled {label!r} belongs to a revoked certificate", hint=hint)
    return key


def _recorded_key(run: Run, record: CertRecord) -> hsm.TokenPrivateKey:
    """The token key *record* was issued for; Conflict when it is gone or another one."""
    device_id = record.device_id or "?"
    hint = "revoke it ('devid cert revoke') to provision the device again"
    ref = record.key_ref
    uri = hsm.parse_uri(ref) if ref and is_token_ref(ref) else None
    if uri is None:
        uri = run.token.with_(object_label=key_label(device_id), type="private")
    try:
        key = hsm.load_key(uri)
    except KeyNotFound as exc:
        raise Conflict(
            f"device {device_id} has certificate {record.serial} recorded, "
            f"but its key is not on the token ({uri})",
            hint=hint,
        ) from exc
    if key.public_key() != certs.record_certificate(record).public_key():
        raise Conflict(
            f"device {device_id} has certificate {record.serial} recorded for another key "
            f"than {key.reference}",
            hint=hint,
        )
    return key


def _holds(path: Path, cert: x509.Certificate) -> bool:
    """Whether the file at *path* starts with *cert* (False when missing or unreadable)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()) == cert
    except (OSError, ValueError):
        return False


def _already_done(run: Run, record: CertRecord) -> ProvisionResult:
    """A done device: nothing is issued; missing or damaged files (a ``cert.pem`` that no
    longer holds the recorded certificate) and a missing token object are restored."""
    key = _recorded_key(run, record)
    cert = certs.record_certificate(record)
    device_id = record.device_id or ""
    files = DeviceFiles(Path(record.path).parent) if record.path else run.files(device_id)
    ours = record.path is not None and Path(record.path).name == CERT_FILE
    if ours and not (_holds(files.cert, cert) and files.chain.is_file()):
        files.write(cert, load_ca(record.ca).intermediates)
    if cert not in load_certificates(key):
        store_certificate(key, cert)
    return ProvisionResult(
        device_id=device_id,
        key_reference=key.reference,
        serial=record.serial,
        certificate_path=Path(record.path) if record.path else files.cert,
        chain_path=files.chain,
        iot_certificate_id=record.aws_iot_id,
        skipped=True,
    )


# --- batches ------------------------------------------------------------------------------------


def _issue(run: Run, pending: list[_Pending]) -> list[ProvisionResult]:
    """Issue for *pending* in one transaction; files and token objects are written before the
    commit, so a failure leaves no record (and the next run reuses the keys)."""
    requests = [
        IssueRequest(
            csr=p.csr,
            profile=run.profile,
            days=run.options.days,
            device_id=p.device_id,
            key_ref=p.key.reference,
            path=str(run.files(p.device_id).cert),
        )
        for p in pending
    ]

    def install(items: list[Issued]) -> None:
        for item, p in zip(items, pending, strict=True):
            _check_alone(run.store, p.device_id, item.record.serial)
            run.files(p.device_id).write(item.certificate, run.ca.intermediates)
            store_certificate(p.key, item.certificate)

    issued = issue_many(run.ca, requests, store=run.store, key=run.ca_key, before_commit=install)
    return [
        ProvisionResult(
            device_id=p.device_id,
            key_reference=p.key.reference,
            serial=item.record.serial,
            certificate_path=run.files(p.device_id).cert,
            chain_path=run.files(p.device_id).chain,
            iot_certificate_id=item.record.aws_iot_id,
            skipped=False,
        )
        for item, p in zip(issued, pending, strict=True)
    ]


def _check_alone(store: Store, device_id: str, serial: str) -> None:
    """Inside the transaction: refuse when another run provisioned the device meanwhile."""
    others = [
        r.serial
        for r in store.find_certificates(CertQuery(device_id=device_id, statuses=(Status.ISSUED,)))
        if r.serial != serial
    ]
    if others:
        raise Conflict(
            f"device {device_id} was provisioned by another run meanwhile (serial {others[0]})",
            hint="run the command again; it skips done devices",
        )


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def provision_ids(
    run: Run, device_ids: Sequence[str], step: Callable[[int], None]
) -> list[ProvisionResult]:
    results: list[ProvisionResult] = []
    for chunk in chunks(device_ids, run.options.batch_size):
        prepared = [_prepare(run, device_id) for device_id in chunk]
        pending = [p for p in prepared if isinstance(p, _Pending)]
        issued = iter(_issue(run, pending) if pending else [])
        results += [next(issued) if isinstance(p, _Pending) else p for p in prepared]
        step(len(chunk))
    return results


def check_device_ids(device_ids: Iterable[str]) -> list[str]:
    """The ids, each checked, refusing duplicates (before anything is generated)."""
    seen: set[str] = set()
    out: list[str] = []
    for device_id in device_ids:
        check_device_id(device_id)
        if device_id in seen:
            raise BadInput(f"device id {device_id!r} is listed twice")
        seen.add(device_id)
        out.append(device_id)
    return out


def provision_batch(
    device_ids: Iterable[str],
    *,
    token: str,
    ca: str,
    key_type: KeyType = KeyType.EC_P256,
    out_dir: Path | None = None,
    store: Store | None = None,
    profile: str = "device",
    days: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
    ca_passphrase: bytes | None = None,
) -> list[ProvisionResult]:
    """Provision every device in *device_ids* (skipping those already done), in input order.

    *progress* is called as ``progress(done, total)`` after each batch. Everything is
    checked (ids, CA, profile, token, CA key) before the first key is generated.
    """
    ids = check_device_ids(device_ids)
    if workers < 1 or batch_size < 1:
        raise BadInput("workers and batch size must be at least 1")
    own_store = store is None
    active = open_store() if store is None else store
    try:
        options = ProvisionOptions(
            token, ca, active.url, key_type, out_dir, profile, days, ca_passphrase, batch_size
        )
        run = open_run(options, active)
        options = dataclasses.replace(options, out_dir=run.out_dir)
        done = 0

        def step(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done, len(ids))

        if workers > 1 and len(ids) > 1:
            from devid.provision_pool import in_workers

            return in_workers(options, ids, workers, step)
        return provision_ids(run, ids, step)
    finally:
        if own_store:
            active.close()


def provision_device(
    device_id: str,
    *,
    token: str,
    ca: str,
    key_type: KeyType = KeyType.EC_P256,
    out_dir: Path | None = None,
    store: Store | None = None,
    profile: str = "device",
    days: int | None = None,
    ca_passphrase: bytes | None = None,
) -> ProvisionResult:
    """Provision one device (or report it done: ``skipped``); see the module docstring."""
    return provision_batch(
        [device_id],
        token=token,
        ca=ca,
        key_type=key_type,
        out_dir=out_dir,
        store=store,
        profile=profile,
        days=days,
        ca_passphrase=ca_passphrase,
    )[0]
