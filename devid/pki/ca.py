"""Certificate authorities: a folder each in ``DEVID_HOME/cas/<name>/``, and a row in the inventory.

The folder holds ``ca.pem`` (the CA certificate), ``chain.pem`` (that certificate followed by
its issuers up to the root), ``key.ref`` (a key file path or a ``pkcs11:`` URI, never with a
PIN) and ``config.toml`` (parent, CRL URL). A root is self-signed; an intermediate is signed
by its parent's key, and its certificate is recorded as issued by the parent so the parent's
CRL can revoke it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

import hsm
from devid.durations import utcnow
from devid.errors import BadInput, CheckFailed, Conflict, EnvironmentProblem, NotFound
from devid.home import devid_home
from devid.keys import PrivateKey, is_token_ref
from devid.loading import load_signing_key
from devid.pki import certs
from devid.pki.build import CertificateSpec, sign_certificate
from devid.pki.names import NameConstraints
from devid.pki.profiles import PROFILES
from devid.store import CaRecord, Event, Store

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KeyLoader = Callable[[str], PrivateKey]


def check_ca_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(f"bad CA name {name!r}; use up to 64 letters, digits, '.', '_' or '-'")
    return name


def cas_dir() -> Path:
    return devid_home() / "cas"


@dataclass(frozen=True)
class CaConfig:
    """``config.toml``: what a CA folder says beyond its certificate."""

    name: str
    parent: str | None = None
    crl_url: str | None = None

    def to_toml(self) -> str:
        lines = [f"name = {json.dumps(self.name)}"]
        if self.parent:
            lines.append(f"parent = {json.dumps(self.parent)}")
        if self.crl_url:
            lines.append(f"crl_url = {json.dumps(self.crl_url)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, *, where: str) -> CaConfig:
        try:
            data = tomllib.loads(text)
            return cls(str(data["name"]), data.get("parent"), data.get("crl_url"))
        except (tomllib.TOMLDecodeError, KeyError) as exc:
            raise BadInput(f"malformed CA config {where}: {exc}") from exc


@dataclass(frozen=True)
class CertificateAuthority:
    name: str
    directory: Path
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # this CA's certificate first, the root last
    key_ref: str
    config: CaConfig

    @property
    def is_root(self) -> bool:
        return self.config.parent is None

    @property
    def path_len(self) -> int | None:
        return _basic_constraints(self.certificate).path_length

    @functools.cached_property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """The chain without its self-signed root: what a device sends with its certificate.
        (Worked out once: telling a root needs a signature check, and a batch asks per device.)"""
        return tuple(c for c in self.chain if not certs.is_self_signed(c))

    @functools.cached_property
    def name_constraints(self) -> tuple[tuple[str, x509.NameConstraints], ...]:
        """The name constraints of this CA's certificate and the intermediates above it
        (relying parties enforce them on everything the CA signs), with whose they are."""
        found = []
        for cert in self.intermediates:
            try:
                value = cert.extensions.get_extension_for_class(x509.NameConstraints).value
            except x509.ExtensionNotFound:
                continue
            found.append((cert.subject.rfc4514_string(), value))
        return tuple(found)

    def check_valid(self, now: dt.datetime | None = None) -> None:
        """Refuse to sign with a CA whose certificate is expired or not yet valid."""
        when = now or utcnow()
        if when > self.certificate.not_valid_after_utc:
            raise CheckFailed(
                f"CA {self.name!r} expired on {self.certificate.not_valid_after_utc:%Y-%m-%d}",
                hint="create a new CA or renew this one",
            )
        if when < self.certificate.not_valid_before_utc:
            raise CheckFailed(
                f"CA {self.name!r} is not valid before "
                f"{self.certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z"
            )

    def signing_key(self, loader: KeyLoader | None = None) -> PrivateKey:
        """The CA's private key (file or token), checked against its certificate."""
        key = (loader or load_signing_key)(self.key_ref)
        if key.public_key() != self.certificate.public_key():
            raise CheckFailed(f"the key {self.key_ref} does not match CA {self.name!r}")
        return key


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return x509.BasicConstraints(ca=False, path_length=None)


def load_ca(name: str) -> CertificateAuthority:
    """The CA folder *name* in the data directory."""
    directory = cas_dir() / check_ca_name(name)
    if not (directory / "ca.pem").is_file():
        raise NotFound(f"unknown CA {name!r}", hint="'devid ca list' shows the CAs")
    config_text = _ca_file(directory, "config.toml").decode(errors="replace")
    return CertificateAuthority(
        name=name,
        directory=directory,
        certificate=_ca_certificates(directory, "ca.pem")[0],
        chain=tuple(_ca_certificates(directory, "chain.pem")),
        key_ref=_ca_file(directory, "key.ref").decode(errors="replace").strip(),
        config=CaConfig.from_toml(config_text, where=str(directory / "config.toml")),
    )


def _ca_certificates(directory: Path, name: str) -> list[x509.Certificate]:
    return certs.load_certificates(_ca_file(directory, name), where=str(directory / name))


def _ca_file(directory: Path, name: str) -> bytes:
    """One file of a CA folder; a missing or unreadable one says which and where."""
    try:
        return (directory / name).read_bytes()
    except OSError as exc:
        raise EnvironmentProblem(
            f"CA folder {directory} is incomplete: cannot read {name} ({exc.strerror})",
            hint="restore it from a backup, or remove the folder and create the CA again",
        ) from exc


def list_ca_names() -> list[str]:
    root = cas_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "ca.pem").is_file())


@dataclass(frozen=True)
class CaRequest:
    """What ``devid ca init`` asks for."""

    name: str
    key_ref: str
    subject: x509.Name | None = None
    parent: str | None = None
    days: int | None = None
    path_len: int | None = None
    name_constraints: NameConstraints = field(default_factory=NameConstraints)
    crl_url: str | None = None


def key_reference(ref: str, key: PrivateKey | None = None) -> str:
    """A reference safe to store: a token key's canonical URI (no PIN) or an absolute path."""
    if is_token_ref(ref):
        reference = getattr(key, "reference", None)
        return reference if isinstance(reference, str) else str(hsm.parse_uri(ref))
    return str(Path(ref).expanduser().resolve())


def _child_path_len(request: CaRequest, parent: CertificateAuthority | None) -> int | None:
    if parent is None or parent.path_len is None:
        return request.path_len
    if parent.path_len == 0:
        raise BadInput(f"CA {parent.name!r} has path length 0: it cannot sign another CA")
    limit = parent.path_len - 1
    if request.path_len is not None and request.path_len > limit:
        raise BadInput(
            f"--path-len {request.path_len} exceeds what CA {parent.name!r} allows ({limit})"
        )
    return limit if request.path_len is None else request.path_len


def _spec(
    request: CaRequest, key: PrivateKey, parent: CertificateAuthority | None, now: dt.datetime
) -> CertificateSpec:
    profile = PROFILES["root" if parent is None else "intermediate"]
    profile.keys.check(key.public_key(), profile=profile.name)
    not_after = now + dt.timedelta(days=request.days or profile.days)
    if parent is not None:
        not_after = min(not_after, parent.certificate.not_valid_after_utc)
    subject = request.subject or x509.Name(
        [x509.NameAttribute(x509.NameOID.COMMON_NAME, request.name)]
    )
    if request.path_len is not None and request.path_len < 0:
        raise BadInput("--path-len must be 0 or more")
    return CertificateSpec(
        subject=subject,
        public_key=key.public_key(),
        profile=profile,
        serial=x509.random_serial_number(),
        not_before=now,
        not_after=not_after,
        path_len=_child_path_len(request, parent),
        name_constraints=request.name_constraints.extension(),
        crl_url=parent.config.crl_url if parent else None,
    )


def init_ca(
    request: CaRequest,
    *,
    store: Store,
    loader: KeyLoader | None = None,
    now: dt.datetime | None = None,
) -> CertificateAuthority:
    """Create the CA *request* describes: sign, write its folder, record it (all or nothing)."""
    name = check_ca_name(request.name)
    directory = cas_dir() / name
    if directory.exists() or store.get_ca(name) is not None:
        raise Conflict(f"CA {name!r} exists", hint="choose another name")
    parent = load_ca(request.parent) if request.parent else None
    now = (now or utcnow()).replace(microsecond=0)
    if parent is not None:
        parent.check_valid(now)
    key = (loader or load_signing_key)(request.key_ref)
    spec = _spec(request, key, parent, now)
    signer = parent.signing_key(loader) if parent else key
    cert = _sign_checked(spec, parent, signer)
    chain = (cert, *(parent.chain if parent else ()))
    config = CaConfig(name, request.parent, request.crl_url)
    ca = CertificateAuthority(
        name, directory, cert, chain, key_reference(request.key_ref, key), config
    )
    with store.transaction():
        ensure_recorded(store, parent)
        store.add_ca(ca_record(ca))
        if parent is not None:
            _record_ca_certificate(store, ca, parent)
        store.add_event(Event("ca.init", ca=name, detail={"parent": request.parent}))
        _write_folder(ca)
    return ca


def _sign_checked(
    spec: CertificateSpec, parent: CertificateAuthority | None, signer: PrivateKey
) -> x509.Certificate:
    cert = sign_certificate(spec, issuer=parent.certificate if parent else None, key=signer)
    try:
        cert.verify_directly_issued_by(parent.certificate if parent else cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CheckFailed("the new CA certificate does not verify; check the CA keys") from exc
    return cert


def _record_ca_certificate(
    store: Store, ca: CertificateAuthority, parent: CertificateAuthority
) -> None:
    record = certs.certificate_record(ca.certificate, ca=parent.name, profile="intermediate")
    if store.add_certificates([record]):
        # A 159-bit random serial colliding is not going to happen; refuse rather than loop.
        raise Conflict(f"serial {record.serial} exists in the inventory; run the command again")


def ca_record(ca: CertificateAuthority) -> CaRecord:
    cert = ca.certificate
    return CaRecord(
        name=ca.name,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=certs.sha256_hex(cert),
        key_ref=ca.key_ref,
        directory=str(ca.directory),
        pem=certs.pem(cert).decode(),
        parent=ca.config.parent,
    )


def ensure_recorded(store: Store, ca: CertificateAuthority | None) -> None:
    """Add *ca* (and its parents) to *store* when it is not there yet (e.g. another --store)."""
    if ca is None or store.get_ca(ca.name) is not None:
        return
    if ca.config.parent:
        ensure_recorded(store, load_ca(ca.config.parent))
    store.add_ca(ca_record(ca))


def _write_folder(ca: CertificateAuthority) -> None:
    """Write the folder under a temporary name, then rename it into place."""
    devid_home(create=True)
    ca.directory.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ca.name}.", dir=ca.directory.parent))
    try:
        (tmp / "ca.pem").write_bytes(certs.pem(ca.certificate))
        (tmp / "chain.pem").write_bytes(b"".join(certs.pem(c) for c in ca.chain))
        (tmp / "key.ref").write_text(ca.key_ref + "\n")
        (tmp / "config.toml").write_text(ca.config.to_toml())
        for child in tmp.iterdir():
            os.chmod(child, 0o600 if child.name == "key.ref" else 0o644)
        os.chmod(tmp, 0o700)
        os.rename(tmp, ca.directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        if ca.directory.exists():
            raise Conflict(f"CA {ca.name!r} exists") from exc
        raise BadInput(f"cannot write the CA folder {ca.directory}: {exc.strerror}") from exc
