"""``devid rotate --iot``: carry each renewed certificate's AWS IoT registration over.

The order keeps a device connected whatever fails (DESIGN.md: rotation in AWS):

1. before the new certificate is installed anywhere (inside the inventory transaction,
   :class:`IotRotation.before_install`), register it in AWS IoT, give it the old one's
   things and policies and activate it: both certificates are now active; if this fails,
   the renewal is abandoned and nothing local has changed. A certificate that is not
   ACTIVE in AWS IoT (revoked or deactivated there) is not renewed: its replacement would
   be active, undoing what was done in AWS;
2. devid installs the new certificate (files, token) and commits; if that fails, what
   step 1 did in AWS IoT is taken back as well (things and policies detached, the new
   certificate deactivated and, when devid registered it, deleted);
3. :meth:`IotRotation.finish` moves the old certificate to INACTIVE (REVOKED with
   ``--revoke-old``); if that fails both stay active, which is safe. That the old one is
   still to be retired is recorded in step 1, in the renewal's own transaction: if the
   retirement fails, or the run stops before it (Ctrl-C, SIGTERM, another renewal
   failing), the next ``devid rotate --iot`` run retires it first (``retired-in-aws``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from cryptography import x509

from devid import iot as aws_iot
from devid import iot_ca
from devid.aws import AwsOptions, client
from devid.errors import CheckFailed, DevidError
from devid.pki import certs
from devid.pki.ca import load_ca
from devid.rotate import Outcome, RotationAction, latest, owed_events, reload_due, successors
from devid.store import CertRecord, Event, Store

#: Events: the old certificate is still to be retired after a renewal / the move is complete.
RETIRE_PENDING = "iot.retire-pending"
ROTATED = "iot.rotate"
_RETIRE_FAILED_BEFORE = "iot.retire-failed"  # what an earlier devid recorded instead
_WAITING = (
    "old certificate left active in AWS IoT until the reload command (--exec) has run "
    "successfully for the device's current certificate"
)


@dataclasses.dataclass
class _Moved:
    old: x509.Certificate
    new: x509.Certificate
    steps: list[str]


@dataclasses.dataclass(frozen=True)
class _Before:
    """The new certificate in AWS IoT before step 1: what taking it back must restore."""

    registered: bool
    active: bool
    things: frozenset[str]
    policies: frozenset[str]


@dataclasses.dataclass(frozen=True)
class _PendingRetire:
    """A renewal whose old certificate an earlier run could not retire in AWS IoT."""

    old: CertRecord
    new: CertRecord
    revoke_old: bool


class IotRotation:
    """The AWS IoT side of one ``devid rotate --iot`` run."""

    def __init__(
        self, store: Store, aws: AwsOptions, *, revoke_old: bool, ca: str | None = None
    ) -> None:
        self._store = store
        self._client: Any = client("iot", aws)
        self._revoke_old = revoke_old
        self._ca = ca  # as ``rotate --ca``: only this CA's certificates
        self._moved: dict[str, _Moved] = {}
        self._taken_back: dict[str, str] = {}  # old serial -> what taking back did
        # from earlier runs, before this one adds any
        self._pending = pending_retirements(store, ca=ca, revoke_old=revoke_old)

    def before_install(
        self, record: CertRecord, new_cert: x509.Certificate
    ) -> Callable[[], object] | None:
        """Step 1: the new certificate active in AWS IoT beside the old one. Returns what
        takes it back, should the local install fail afterwards."""
        old = certs.record_certificate(record)
        found = aws_iot.find_certificate(self._client, old)
        if found is None:
            return None
        if found.status != aws_iot.CertStatus.ACTIVE.value:
            raise CheckFailed(
                f"certificate {record.serial} is {found.status} in AWS IoT "
                f"({found.certificate_id}); its renewal would be active there",
                hint=f"revoke it in devid too ('devid cert revoke {record.serial} --ca "
                f"{record.ca}'), or set it ACTIVE in AWS IoT to renew it",
            )
        # With the CA when the CA is registered; otherwise without it, as the old one was.
        ca_cert: x509.Certificate | None = load_ca(record.ca).certificate
        if ca_cert is not None and iot_ca.find_ca(self._client, ca_cert) is None:
            ca_cert = None
        before = self._before(new_cert)
        # First (it is rolled back with the renewal if anything below fails): the old one
        # is to be retired once the new one is installed, by this run or the next.
        detail = {"replaces": record.serial, "revoke_old": self._revoke_old}
        new_serial = certs.serial_hex(new_cert.serial_number)
        self._store.add_event(Event(RETIRE_PENDING, ca=record.ca, serial=new_serial, detail=detail))
        steps = aws_iot.rotate_in_aws(
            self._client, old_cert=old, new_cert=new_cert, ca_cert=ca_cert,
            revoke_old=self._revoke_old, retire=False,
        )  # fmt: skip
        self._moved[record.serial] = _Moved(old, new_cert, steps)
        return partial(self._take_back, record.serial, new_cert, before)

    def _before(self, new_cert: x509.Certificate) -> _Before:
        found = aws_iot.find_certificate(self._client, new_cert)
        if found is None:
            return _Before(registered=False, active=False, things=frozenset(), policies=frozenset())
        things, policies = self._attached(found.arn)
        active = found.status == aws_iot.CertStatus.ACTIVE.value
        return _Before(registered=True, active=active, things=things, policies=policies)

    def _attached(self, arn: str) -> tuple[frozenset[str], frozenset[str]]:
        c = self._client
        things = frozenset(aws_iot.pages(c, "list_principal_things", "things", principal=arn))
        listed = aws_iot.pages(c, "list_attached_policies", "policies", target=arn)
        return things, frozenset(p["policyName"] for p in listed)

    def _take_back(self, serial: str, new_cert: x509.Certificate, before: _Before) -> None:
        """Undo step 1 for the renewal of *serial*: its install failed or was stopped."""
        self._moved.pop(serial, None)
        new_id = aws_iot.certificate_id(new_cert)
        done: list[str] = []
        try:
            arn = aws_iot.describe_certificate(self._client, new_id).arn
            things, policies = self._attached(arn)
            for thing in sorted(things - before.things):
                aws_iot.call(self._client, "detach_thing_principal", thingName=thing,
                             principal=arn)  # fmt: skip
                done.append(f"detached thing {thing}")
            for name in sorted(policies - before.policies):
                aws_iot.call(self._client, "detach_policy", policyName=name, target=arn)
                done.append(f"detached policy {name}")
            if not before.registered:
                aws_iot.delete_registered(self._client, new_id)
                done.append(f"deactivated {new_id}, deleted {new_id}")
            elif not before.active:
                aws_iot.set_status(self._client, new_id, aws_iot.CertStatus.INACTIVE)
                done.append(f"deactivated {new_id}")
        except DevidError as exc:
            did = f" after: {', '.join(done)}" if done else ""
            self._taken_back[serial] = (
                f"AWS IoT: could NOT take back the new certificate {new_id}{did} ({exc.message});"
                f" it may still be active there: 'devid iot status {new_id} inactive'"
            )
            return
        self._taken_back[serial] = f"AWS IoT: taken back ({', '.join(done) or 'nothing to do'})"

    def finish(self, actions: list[RotationAction]) -> list[RotationAction]:
        """Step 3 for every renewed certificate, after the retirements earlier runs left;
        records the registrations. A failed renewal says what was taken back in AWS IoT."""
        owed = _reload_owed_in(self._store)  # after this run's renewals and reloads
        retried = [self._retire_again(p, owed) for p in self._pending]
        return retried + [self._finish_one(a, owed) for a in actions]

    def _finish_one(self, action: RotationAction, owed: _Owed) -> RotationAction:
        if action.serial in self._taken_back:
            return _note(action, self._taken_back[action.serial])
        moved_here = action.outcome is Outcome.RENEWED and action.serial in self._moved
        if moved_here and owed(action.new_serial):  # the old one may still be in use
            return _note(action, f"{_WAITING}; a later run with --iot retires it then")
        if not _renewed(action):
            return action
        moved = self._moved.get(action.serial)
        if moved is None:
            return _note(action, "not registered in AWS IoT: nothing to move there")
        try:
            moved.steps += aws_iot.retire_in_aws(
                self._client, old_cert=moved.old, new_cert=moved.new, revoke_old=self._revoke_old
            )
        except DevidError as exc:
            self._record_quietly(action.ca, action.new_serial, moved.new)
            failed = _note(
                action,
                f"renewed and active in AWS IoT, old one still active: {exc}; the next "
                "'devid rotate --iot' retires it",
            )
            return dataclasses.replace(failed, exit_code=exc.exit_code)
        self._record(action.ca, action.serial, action.new_serial, moved)
        return _note(action, f"AWS IoT: {moved.steps[-1]}")

    def _record_quietly(self, ca: str, serial: str | None, cert: x509.Certificate) -> None:
        """Record the new registration (it is active in AWS IoT) if AWS still answers."""
        if serial is not None:
            with contextlib.suppress(DevidError):
                self._record_registration(ca, serial, cert)

    def _retire_again(self, pending: _PendingRetire, owed: _Owed) -> RotationAction:
        old, new = pending.old, pending.new
        action = _retire_action(pending, Outcome.RETIRED_IN_AWS)
        if owed(new.serial):  # (this run's reloads ran before this)
            return dataclasses.replace(action, outcome=Outcome.SKIPPED, reason=_WAITING)
        moved = _Moved(certs.record_certificate(old), certs.record_certificate(new), [])
        try:
            moved.steps += aws_iot.retire_in_aws(
                self._client, old_cert=moved.old, new_cert=moved.new, revoke_old=pending.revoke_old
            )
        except DevidError as exc:
            self._record_quietly(old.ca, new.serial, moved.new)
            reason = f"AWS IoT: the old certificate is still active: {exc}"
            failed = dataclasses.replace(action, outcome=Outcome.FAILED, reason=reason)
            return dataclasses.replace(failed, exit_code=exc.exit_code)
        self._record(old.ca, old.serial, new.serial, moved)
        return _note(action, f"AWS IoT: {moved.steps[-1]} (left active by an earlier run)")

    def _record_registration(self, ca: str, serial: str, cert: x509.Certificate) -> None:
        aws = aws_iot.describe_certificate(self._client, aws_iot.certificate_id(cert))
        self._store.record_iot_registration(aws.registration(ca=ca, serial=serial))

    def _record(self, ca: str, old_serial: str, new_serial: str | None, moved: _Moved) -> None:
        with self._store.transaction():
            self._record_registration(ca, new_serial or "", moved.new)
            self._record_registration(ca, old_serial, moved.old)
            self._store.add_event(
                Event(ROTATED, ca=ca, serial=new_serial, detail={"steps": moved.steps})
            )


def pending_retirements(
    store: Store, *, ca: str | None = None, revoke_old: bool = False
) -> list[_PendingRetire]:
    """Old certificates still to be retired in AWS IoT after their renewal, oldest first."""
    pending = []
    for event in owed_events(store, (RETIRE_PENDING, _RETIRE_FAILED_BEFORE), ROTATED, ca):
        old = store.get_certificate(str(event.detail.get("replaces")))
        new = store.get_certificate(str(event.serial))
        if old is not None and new is not None:
            revoke = bool(event.detail.get("revoke_old")) or revoke_old
            pending.append(_PendingRetire(old, new, revoke))
    return pending


def planned_retirements(store: Store, *, ca: str | None = None) -> list[RotationAction]:
    """What a run with --iot would retire in AWS IoT first: for --dry-run (no AWS call)."""
    planned = []
    owed = _reload_owed_in(store)
    for pending in pending_retirements(store, ca=ca):
        action = _retire_action(pending, Outcome.WOULD_RETIRE_IN_AWS)
        if owed(pending.new.serial):
            action = dataclasses.replace(action, reason=_WAITING)
        planned.append(action)
    return planned


def _retire_action(pending: _PendingRetire, outcome: Outcome) -> RotationAction:
    old, new = pending.old, pending.new
    return RotationAction(
        outcome, old.serial, old.ca, old.device_id, old.path, old.key_ref, old.not_after,
        old.not_after, new_serial=new.serial, new_not_after=new.not_after,
        new_key_ref=new.key_ref,
    )  # fmt: skip


#: Whether the reload for the certificate that renewals of a serial lead to (what the device
#: is meant to use now) has yet to succeed.
_Owed = Callable[[str | None], bool]


def _reload_owed_in(store: Store) -> _Owed:
    """:data:`_Owed` on *store* as it is now (the renewals read once, not per question)."""
    after = successors(store)

    def owed(serial: str | None) -> bool:
        return serial is not None and reload_due(store, latest(after, serial))

    return owed


def _renewed(action: RotationAction) -> bool:
    return action.outcome is Outcome.RENEWED and not action.exit_code


def _note(action: RotationAction, text: str) -> RotationAction:
    reason = f"{action.reason}; {text}" if action.reason else text
    return dataclasses.replace(action, reason=reason)
