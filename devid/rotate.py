"""Rotation: renew inventory certificates before they expire, in place, and record both.

:func:`rotate` finds the current (``issued``) certificates in the inventory that are due
(:class:`~devid.durations.Threshold`: a span or a fraction of the lifetime before notAfter)
and renews each one:

* the key is the one recorded with the certificate (a token key signs a fresh CSR on the
  token; a key file is loaded with the usual passphrase sources), or with ``rekey`` a new
  token key of the same type labelled ``<label>-r<N>``;
* the CA issues for the old subject and SANs under the old profile, for the old lifetime
  (or ``days``);
* inside the inventory transaction, before its commit: the old certificate becomes
  ``superseded`` (the new one records ``replaces``), the new certificate replaces the old
  file atomically (the file keeps its form: with the chain when it had one; a provisioned
  device's ``chain.pem`` beside it too) and the certificate object on the token. If any of
  that fails, what was installed is put back, a new key is deleted, and nothing is recorded.

With ``rekey`` the old key stays on the token (with its old certificate object): a device
in the middle of a connection keeps working, and the action reports it so it can be
deleted later (``devid hsm delete``).

``at`` moves "now" for choosing what is due (planning, tests); new certificates are always
issued from the real now. Every renewed certificate can run a reload command; when it
fails the renewal stays, the failure is recorded, and the next run with a reload command runs
it again for that certificate (``reloaded``) before renewing anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

import hsm
from devid.durations import Threshold, later, utcnow
from devid.errors import (
    BadInput,
    CheckFailed,
    Conflict,
    DevidError,
    EnvironmentProblem,
    NotFound,
)
from devid.fsutil import write_atomic
from devid.keys import KeyType, PrivateKey, is_token_ref
from devid.loading import load_signing_key
from devid.pki import certs
from devid.pki.ca import CertificateAuthority, KeyLoader, load_ca
from devid.pki.csr import build_csr
from devid.pki.issue import Issued, IssueRequest, check_not_revoked, issue_many, recorded
from devid.pki.profiles import PROFILES, Profile
from devid.provision import DeviceFiles
from devid.store import CertQuery, CertRecord, Event, Status, Store
from hsm.certs import load_certificates, store_certificate
from hsm.errors import HsmError, KeyExists

CA_PROFILES = frozenset({"intermediate", "root"})
EXEC_TIMEOUT = 300.0
#: Environment variables that carry secrets and are withheld from --exec commands.
SECRET_ENV = frozenset({"DEVID_PKCS11_PIN", "DEVID_PKCS11_SO_PIN", "DEVID_PASSPHRASE"})
_REKEYED = re.compile(r"^(?P<base>.*)-r(?P<n>\d+)$")
#: What jitter sleeps with and draws from; module attributes so tests can replace them.
SLEEP: Callable[[float], None] = time.sleep
RANDOM: Callable[[], float] = random.SystemRandom().random
Undo = list[Callable[[], object]]


class Outcome(enum.Enum):
    RENEWED = "renewed"
    WOULD_RENEW = "would-renew"
    SKIPPED = "skipped"  # another run renewed (or revoked) it first: nothing to do
    RETIRED_IN_AWS = "retired-in-aws"  # --iot: an earlier run left the old one active there
    WOULD_RETIRE_IN_AWS = "would-retire-in-aws"
    RELOADED = "reloaded"  # --exec failed after its renewal in an earlier run; ran again
    WOULD_RELOAD = "would-reload"
    FAILED = "failed"


#: Event: a renewal (serial = the new certificate, detail "replaces" = the old one).
ROTATED = "cert.rotate"
#: Events: a reload command is due for a renewal (recorded with it), it failed, it ran.
RELOAD_PENDING = "cert.reload-pending"
RELOAD_FAILED = "cert.reload-failed"
RELOADED = "cert.reloaded"


class _RenewedMeanwhile(Conflict):
    """Another run renewed or revoked the certificate while this one was renewing it."""


@dataclass(frozen=True)
class RotationAction:
    """What happened (or would happen) to one due certificate."""

    outcome: Outcome
    serial: str
    ca: str
    device_id: str | None
    path: str | None
    key_ref: str | None
    not_after: dt.datetime
    renew_at: dt.datetime
    new_serial: str | None = None
    new_not_after: dt.datetime | None = None
    new_key_ref: str | None = None
    old_key_kept: str | None = None
    reason: str | None = None
    exit_code: int = 0
    exec_returncode: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.outcome.value,
            "serial": self.serial,
            "ca": self.ca,
            "device_id": self.device_id,
            "path": self.path,
            "key_ref": self.key_ref,
            "not_after": self.not_after.isoformat(),
            "renew_at": self.renew_at.isoformat(),
            "new_serial": self.new_serial,
            "new_not_after": self.new_not_after.isoformat() if self.new_not_after else None,
            "new_key_ref": self.new_key_ref,
            "old_key_kept": self.old_key_kept,
            "reason": self.reason,
            "exec_returncode": self.exec_returncode,
        }


@dataclass(frozen=True)
class RotationOptions:
    threshold: Threshold
    ca: str | None = None
    rekey: bool = False
    dry_run: bool = False
    days: int | None = None
    exec_command: tuple[str, ...] = ()
    at: dt.datetime | None = None
    jitter: dt.timedelta | None = None


def renewal_due(
    not_before: dt.datetime, not_after: dt.datetime, threshold: Threshold, at: dt.datetime
) -> tuple[bool, dt.datetime]:
    """Whether a certificate valid *not_before*..*not_after* is due at *at*, and from when."""
    renew_at = threshold.renew_at(not_before, not_after)
    return at >= renew_at, renew_at


def due_certificates(
    store: Store, threshold: Threshold, *, at: dt.datetime, ca: str | None = None
) -> list[tuple[CertRecord, dt.datetime]]:
    """Current end-entity certificates due at *at* (CA certificates are not renewed here)."""
    horizon = later(at, threshold.span) if threshold.span is not None else None
    query = CertQuery(ca=ca, statuses=(Status.ISSUED,), not_after_before=horizon)
    due = []
    for record in store.find_certificates(query):
        if record.profile in CA_PROFILES:
            continue
        is_due, renew_at = renewal_due(record.not_before, record.not_after, threshold, at)
        if is_due:
            due.append((record, renew_at))
    return due


@dataclass
class _Context:
    """CAs and their keys, loaded once per run."""

    store: Store
    options: RotationOptions
    loader: KeyLoader
    runner: Callable[..., subprocess.CompletedProcess[bytes]]
    before_install: BeforeInstall | None = None
    _cas: dict[str, tuple[CertificateAuthority, PrivateKey]] = field(default_factory=dict)

    def ca(self, name: str) -> tuple[CertificateAuthority, PrivateKey]:
        if name not in self._cas:
            authority = load_ca(name)
            authority.check_valid()
            check_not_revoked(self.store, authority)
            self._cas[name] = (authority, authority.signing_key(self.loader))
        return self._cas[name]


def _profile(record: CertRecord) -> Profile:
    # A TOML profile is recorded as "<base>+<file stem>"; the file is not kept, so the
    # renewal uses the base profile with the old certificate's subject and SANs.
    base = (record.profile or "").split("+")[0]
    if base not in PROFILES or base in CA_PROFILES:
        raise BadInput(f"certificate {record.serial} has no renewable profile ({record.profile})")
    return PROFILES[base]


def _precheck(record: CertRecord, options: RotationOptions) -> None:
    """What the inventory alone shows cannot be renewed (also reported by a dry run)."""
    if record.key_ref is None:
        raise CheckFailed(
            f"certificate {record.serial} has no key reference recorded; renew it by hand "
            "('devid csr create' + 'devid cert issue --key-ref')"
        )
    token = is_token_ref(record.key_ref)
    if options.rekey and not token:
        raise BadInput(f"--rekey makes token keys; {record.key_ref} is a key file")
    if record.path is None and not token:
        raise CheckFailed(f"certificate {record.serial} has no file or token to install into")
    _profile(record)
    days = options.days or _lifetime_days(record)
    span = options.threshold.span
    if span is not None and dt.timedelta(days=days) <= span:
        raise CheckFailed(
            f"certificate {record.serial}: a renewal valid {days} days would be due again at "
            f"once under --before {_days_text(span)}",
            hint="give --days longer than --before, or --before as a share of the lifetime "
            "(e.g. 33%)",
        )
    if record.path is not None:
        _check_still_installed(record, Path(record.path))


def _days_text(span: dt.timedelta) -> str:
    whole = span % dt.timedelta(days=1) == dt.timedelta(0)
    return f"{span.days}d" if whole else str(span)


def _check_still_installed(record: CertRecord, path: Path) -> None:
    """Refuse to replace *path* when it no longer holds *record*'s certificate: it was
    overwritten by hand, and putting the renewal there would swap identities."""
    if not path.is_file():
        return  # gone: the renewal puts it back
    try:
        current = certs.load_certificates(path.read_bytes(), where=str(path))[0]
    except (DevidError, OSError) as exc:
        raise CheckFailed(
            f"{path} no longer holds a readable certificate ({exc}); devid will not replace it"
        ) from exc
    recorded = certs.record_certificate(record)
    if current != recorded:  # cryptography compares the DER
        raise CheckFailed(
            f"{path} holds certificate {certs.serial_hex(current.serial_number)}, not "
            f"{record.serial}; devid will not replace it",
            hint="renew the certificate the file holds, or revoke the old one",
        )


def _lifetime_days(record: CertRecord) -> int:
    return max(1, round((record.not_after - record.not_before) / dt.timedelta(days=1)))


def _new_token_key(old: hsm.TokenPrivateKey, made: list[hsm.Pkcs11Uri]) -> hsm.TokenPrivateKey:
    """A new key of the old one's type on its token, labelled ``<label>-r<N>``.

    Before generating under a free label its URI goes into *made*: if the generation is
    interrupted (Ctrl-C, SIGTERM) after the token made the key but before it was returned,
    the caller still knows which key to delete.
    """
    key_type = KeyType.of(old)
    if key_type is None:
        raise BadInput(f"cannot make a new key like {old.reference}")
    label = old.handle.label
    match = _REKEYED.match(label)
    base, first = (match["base"], int(match["n"]) + 1) if match else (label, 2)
    token = old.handle.uri.with_(object_label=None, id=None, type=None)
    for n in range(first, first + 1000):
        uri = token.with_(object_label=f"{base}-r{n}")
        if hsm.list_keys(uri):
            continue  # taken: never record (and so never delete) a key this run did not make
        made.append(uri)
        try:
            return hsm.generate_keypair(token, key_type.token_spec(), label=f"{base}-r{n}")
        except KeyExists:  # another run took the label just now
            made.remove(uri)
    raise EnvironmentProblem(f"no free label {base}-r<N> on the token")


def _file_content(path: Path, cert: x509.Certificate, ca: CertificateAuthority) -> bytes:
    """The new file in the old one's form: the certificate, with the chain if it had one."""
    old = path.read_bytes() if path.is_file() else b""
    chain = ca.intermediates if old.count(b"-----BEGIN CERTIFICATE-----") > 1 else ()
    return b"".join(certs.pem(c) for c in (cert, *chain))


def _replace_file(path: Path, data: bytes, undo: Undo) -> None:
    """Replace the file at *path* (through a symlink: the link keeps pointing at the
    certificate), keeping its mode, owner and group: a service reading it as another user
    must still be able to after a root cron job renewed it."""
    target = path.resolve() if path.is_symlink() else path
    if target.is_file():
        st = target.stat()
        old: bytes | None = target.read_bytes()
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    else:
        old, mode, owner = None, 0o644, None
    write_atomic(target, data, mode=mode, force=True, owner=owner)
    if old is None:
        undo.append(lambda: target.unlink(missing_ok=True))
    else:
        undo.append(lambda: write_atomic(target, old, mode=mode, force=True, owner=owner))


def _install(
    record: CertRecord,
    key: PrivateKey,
    cert: x509.Certificate,
    ca: CertificateAuthority,
    undo: Undo,
) -> None:
    """Put *cert* where the old one was: its file (and chain.pem beside it), the token."""
    if record.path is not None:
        path = Path(record.path)
        files = DeviceFiles.beside(path)
        _replace_file(path, _file_content(path, cert, ca), undo)
        if files is not None:
            chain = b"".join(certs.pem(c) for c in (cert, *ca.intermediates))
            _replace_file(files.chain, chain, undo)
    if isinstance(key, hsm.TokenPrivateKey):
        before = load_certificates(key)
        store_certificate(key, cert)
        if before:
            undo.append(lambda: store_certificate(key, before[0]))


def _undo(undo: Undo) -> None:
    for step in reversed(undo):
        with contextlib.suppress(DevidError, HsmError, OSError):
            step()


def _exec_env(record: CertRecord) -> dict[str, str]:
    """What --exec gets to know about the (new) certificate *record*."""
    return {
        "DEVID_CERT_PATH": record.path or "",
        "DEVID_SERIAL": record.serial,
        "DEVID_OLD_SERIAL": record.replaces or "",
        "DEVID_DEVICE_ID": record.device_id or "",
        "DEVID_KEY_REF": record.key_ref or "",
        "DEVID_CA": record.ca,
        "DEVID_NOT_AFTER": record.not_after.isoformat(),
    }


def run_exec(
    command: Sequence[str],
    env: Mapping[str, str],
    runner: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> int:
    """Run the reload command (no shell) with *env* added; its output goes to stderr.

    The command does not inherit devid's secrets (PINs, passphrases) from the environment.
    """
    inherited = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    try:
        done = runner(
            list(command),
            env={**inherited, **env},
            stdin=subprocess.DEVNULL,
            stdout=2,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"--exec: command not found: {command[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(f"--exec: {command[0]} ran longer than {EXEC_TIMEOUT:g}s") from exc
    except OSError as exc:
        raise EnvironmentProblem(f"--exec: cannot run {command[0]}: {exc.strerror}") from exc
    return done.returncode


def _renew(
    ctx: _Context, record: CertRecord, renew_at: dt.datetime
) -> tuple[RotationAction, CertRecord]:
    ca, ca_key = ctx.ca(record.ca)
    old_cert = certs.record_certificate(record)
    cut_short = _ca_lifetime_check(ca, record, ctx.options)
    assert record.key_ref is not None  # _precheck
    key = ctx.loader(record.key_ref)
    if key.public_key() != old_cert.public_key():
        raise CheckFailed(f"the key {record.key_ref} no longer matches certificate {record.serial}")
    undo: Undo = []
    made: list[hsm.Pkcs11Uri] = []  # a new key's URI, from just before it is generated
    serial: list[str] = []  # the renewal's serial, once it is being installed
    new_key: PrivateKey = key
    try:
        if ctx.options.rekey and isinstance(key, hsm.TokenPrivateKey):
            new_key = _new_token_key(key, made)
        new_ref = getattr(new_key, "reference", record.key_ref)
        issued = _issue(ctx, record, ca, ca_key, new_key, new_ref, undo, serial)
    except BaseException:  # Ctrl-C and SIGTERM (devid.cli.Stopped) included
        if serial and recorded(ctx.store, serial[0]):
            raise  # stopped just after the commit: the renewal stands (its reload is pending)
        _undo(undo)
        for uri in made:
            with contextlib.suppress(HsmError):
                hsm.delete_key(uri)
        raise
    action = _action(
        Outcome.RENEWED,
        record,
        renew_at,
        new_serial=issued.record.serial,
        new_not_after=issued.record.not_after,
        new_key_ref=new_ref,
        old_key_kept=record.key_ref if new_key is not key else None,
        reason=cut_short,
    )
    return action, issued.record


def _ca_lifetime_check(
    ca: CertificateAuthority, record: CertRecord, options: RotationOptions
) -> str | None:
    """Refuse a renewal the CA's expiry would cut so short that it is due again at once (the
    next run would renew it again, forever); else say when it is cut short, or None."""
    ca_end = ca.certificate.not_valid_after_utc
    days = options.days or _lifetime_days(record)
    now = utcnow()
    if ca_end >= later(now, dt.timedelta(days=days)):
        return None
    due_at_once, _ = renewal_due(now, ca_end, options.threshold, now)
    if due_at_once or ca_end <= record.not_after:
        raise CheckFailed(
            f"CA {ca.name!r} expires {ca_end:%Y-%m-%d}: a renewal of certificate "
            f"{record.serial} would end then and be due again at once; renew the CA first"
        )
    return f"valid only until CA {ca.name} expires ({ca_end:%Y-%m-%d}), not {days} days"


def _issue(
    ctx: _Context,
    record: CertRecord,
    ca: CertificateAuthority,
    ca_key: PrivateKey,
    key: PrivateKey,
    key_ref: str,
    undo: Undo,
    serial: list[str],
) -> Issued:
    old = certs.record_certificate(record)
    csr = build_csr(key, old.subject, sans=certs.sans_of(old))
    request = IssueRequest(
        csr=csr,
        profile=_profile(record),
        days=ctx.options.days or _lifetime_days(record),
        device_id=record.device_id,
        key_ref=key_ref,
        path=record.path,
        replaces=record.serial,
    )

    def install(items: list[Issued]) -> None:
        new = items[0]
        serial.append(new.record.serial)
        current = ctx.store.get_certificate(record.serial)
        if current is None or current.status is not Status.ISSUED:
            raise _RenewedMeanwhile(
                f"certificate {record.serial} was renewed or revoked by another run meanwhile"
            )
        ctx.store.set_status(record.serial, Status.SUPERSEDED)
        detail = {"replaces": record.serial, "rekey": key_ref != record.key_ref}
        ctx.store.add_event(Event(ROTATED, ca=record.ca, serial=new.record.serial, detail=detail))
        if ctx.options.exec_command or reload_due(ctx.store, record.serial):
            # committed with the renewal: a later run with --exec runs it if this one does
            # not (stopped, no --exec this time, or the old one's reload never succeeded)
            ctx.store.add_event(Event(RELOAD_PENDING, ca=record.ca, serial=new.record.serial))
        if ctx.before_install is not None:
            take_back = ctx.before_install(record, new.certificate)
            if take_back is not None:  # runs if the install or the commit fails after it
                undo.append(take_back)
        _install(record, key, new.certificate, ca, undo)

    return issue_many(ca, [request], store=ctx.store, key=ca_key, before_commit=install)[0]


def _action(
    outcome: Outcome, record: CertRecord, renew_at: dt.datetime, **rest: Any
) -> RotationAction:
    """The action for *record*, its identifying fields taken from the inventory row."""
    return RotationAction(
        outcome, record.serial, record.ca, record.device_id, record.path, record.key_ref,
        record.not_after, renew_at, **rest,
    )  # fmt: skip


def _failed(
    record: CertRecord, renew_at: dt.datetime, exc: DevidError | HsmError
) -> RotationAction:
    return _action(
        Outcome.FAILED,
        record,
        renew_at,
        reason=str(exc),
        exit_code=exc.exit_code,
    )


def _reload(ctx: _Context, record: CertRecord) -> tuple[int | None, str | None, int]:
    """Run --exec for the certificate *record*: its return code (None when it could not
    run), what went wrong and the exit code for it. A failure is recorded in the inventory,
    so that the next run with --exec runs it again (the renewal itself is done)."""
    command = ctx.options.exec_command
    try:
        code = run_exec(command, _exec_env(record), ctx.runner)
    except EnvironmentProblem as exc:
        code, reason, exit_code = None, str(exc), exc.exit_code
    else:
        if code == 0:
            ctx.store.add_event(Event(RELOADED, ca=record.ca, serial=record.serial))
            return 0, None, 0
        reason, exit_code = f"--exec {command[0]} exited with {code}", 3
    detail = {"command": command[0], "returncode": code}
    ctx.store.add_event(Event(RELOAD_FAILED, ca=record.ca, serial=record.serial, detail=detail))
    return code, f"{reason}; the next run with --exec runs it again", exit_code


def _after_exec(ctx: _Context, action: RotationAction, new: CertRecord) -> RotationAction:
    if not ctx.options.exec_command:
        return action
    code, reason, exit_code = _reload(ctx, new)
    reason = "; ".join(r for r in (action.reason, reason) if r) or None
    return _replace(action, reason=reason, exit_code=exit_code, exec_returncode=code)


def successors(store: Store) -> dict[str, str]:
    """Each renewed certificate's serial -> the serial of the certificate that renewed it."""
    return {
        str(e.detail.get("replaces")): e.serial
        for e in store.events(kind=ROTATED)
        if e.serial is not None
    }


def latest(after: Mapping[str, str], serial: str) -> str:
    """The serial that renewals of *serial* (and of its renewals) lead to, by *after*
    (:func:`successors`)."""
    seen = {serial}
    while (following := after.get(serial)) is not None and following not in seen:
        seen.add(following)
        serial = following
    return serial


def owed_events(store: Store, kinds: Sequence[str], done: str, ca: str | None) -> list[Event]:
    """Per serial, the oldest event of one of *kinds* with no *done* event for that serial:
    work recorded as owed (a reload, a retirement) and not yet done."""
    finished = {e.serial for e in store.events(kind=done, ca=ca)}
    owed: dict[str, Event] = {}
    events = [e for kind in kinds for e in store.events(kind=kind, ca=ca)]
    for event in sorted(events, key=lambda e: e.at):
        if event.serial is not None and event.serial not in finished:
            owed.setdefault(event.serial, event)
    return list(owed.values())


def reload_due(store: Store, serial: str) -> bool:
    """Whether the reload command is still to run (successfully) for certificate *serial*."""
    kinds = {e.kind for e in store.events(serial=serial)}
    return bool(kinds & {RELOAD_PENDING, RELOAD_FAILED}) and RELOADED not in kinds


def pending_reloads(store: Store, ca: str | None = None) -> list[CertRecord]:
    """Current certificates whose reload command has not run successfully since their
    renewal (it failed, or the run stopped before it), oldest first."""
    pending = []
    for event in owed_events(store, (RELOAD_PENDING, RELOAD_FAILED), RELOADED, ca):
        record = store.get_certificate(str(event.serial))
        if record is not None and record.status is Status.ISSUED:
            pending.append(record)
    return pending


def _reload_again(ctx: _Context, record: CertRecord) -> RotationAction:
    renew_at = ctx.options.threshold.renew_at(record.not_before, record.not_after)
    if ctx.options.dry_run:
        return _action(Outcome.WOULD_RELOAD, record, renew_at)
    code, reason, exit_code = _reload(ctx, record)
    if exit_code:
        return _action(
            Outcome.FAILED, record, renew_at, reason=reason, exit_code=exit_code,
            exec_returncode=code,
        )  # fmt: skip
    return _action(Outcome.RELOADED, record, renew_at, exec_returncode=0)


def _replace(action: RotationAction, **changes: Any) -> RotationAction:
    return dataclasses.replace(action, **changes)


def _one(ctx: _Context, record: CertRecord, renew_at: dt.datetime) -> RotationAction:
    try:
        _precheck(record, ctx.options)
        if ctx.options.dry_run:
            return _action(Outcome.WOULD_RENEW, record, renew_at)
        action, new = _renew(ctx, record, renew_at)
    except _RenewedMeanwhile as exc:  # the other run did the work: not a failure
        return _action(Outcome.SKIPPED, record, renew_at, reason=str(exc))
    except (DevidError, HsmError) as exc:
        return _failed(record, renew_at, exc)
    return _after_exec(ctx, action, new)


#: Called inside the inventory transaction, before the new certificate replaces the old one
#: anywhere; raising a DevidError stops that renewal with nothing changed locally.
#: It may return a callable that takes back what it did; that runs (after the old files are
#: put back) if installing or committing the renewal fails afterwards.
BeforeInstall = Callable[[CertRecord, x509.Certificate], Callable[[], object] | None]


def rotate(
    store: Store,
    options: RotationOptions,
    *,
    loader: KeyLoader | None = None,
    before_install: BeforeInstall | None = None,
    runner: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
    sleep: Callable[[float], None] | None = None,
    rng: Callable[[], float] | None = None,
) -> list[RotationAction]:
    """Renew every due certificate (see the module docstring); one action each.

    A failure renewing one certificate is reported in its action and the others go on.
    With ``jitter`` (and not ``dry_run``) first sleep a random time up to it.
    """
    if options.ca is not None and store.get_ca(options.ca) is None:
        raise NotFound(f"no CA {options.ca!r} in the inventory {store.url}")
    if options.jitter is not None and not options.dry_run:
        seconds = (rng or RANDOM)() * options.jitter.total_seconds()
        (sleep or SLEEP)(seconds)
    at = options.at or utcnow()
    ctx = _Context(store, options, loader or load_signing_key, runner, before_install)
    reloads = pending_reloads(store, options.ca) if options.exec_command else []
    return [_reload_again(ctx, r) for r in reloads] + [
        _one(ctx, r, renew_at)
        for r, renew_at in due_certificates(store, options.threshold, at=at, ca=options.ca)
    ]
