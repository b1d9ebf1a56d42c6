"""``devid rotate --iot``: carry each renewed certificate's AWS IoT registration over.

The order keeps a device connected whatever fails (DESIGN.md: rotation in AWS):

1. before the new certificate is installed anywhere (inside the inventory transaction,
   :class:`IotRotation.before_install`), register it in AWS IoT, give it the old one's
   things and policies and activate it: both certificates are now active; if this fails,
   the renewal is abandoned and nothing local has changed;
2. devid installs the new certificate (files, token) and commits;
3. :meth:`IotRotation.finish` moves the old certificate to INACTIVE (REVOKED with
   ``--revoke-old``); if that fails both stay active, which is safe, and the action says
   which command finishes the job.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cryptography import x509

from devid import iot as aws_iot
from devid import iot_ca
from devid.aws import AwsOptions, client
from devid.errors import DevidError
from devid.pki import certs
from devid.pki.ca import load_ca
from devid.rotate import Outcome, RotationAction
from devid.store import CertRecord, Event, Store


@dataclasses.dataclass
class _Moved:
    old: x509.Certificate
    new: x509.Certificate
    steps: list[str]


class IotRotation:
    """The AWS IoT side of one ``devid rotate --iot`` run."""

    def __init__(self, store: Store, aws: AwsOptions, *, revoke_old: bool) -> None:
        self._store = store
        self._client: Any = client("iot", aws)
        self._revoke_old = revoke_old
        self._moved: dict[str, _Moved] = {}

    def before_install(self, record: CertRecord, new_cert: x509.Certificate) -> None:
        """Step 1: the new certificate active in AWS IoT beside the old one."""
        old = certs.load_certificates(record.pem.encode())[0]
        if aws_iot.find_certificate(self._client, old) is None:
            return
        # With the CA when the CA is registered; otherwise without it, as the old one was.
        ca_cert: x509.Certificate | None = load_ca(record.ca).certificate
        if ca_cert is not None and iot_ca.find_ca(self._client, ca_cert) is None:
            ca_cert = None
        steps = aws_iot.rotate_in_aws(
            self._client, old_cert=old, new_cert=new_cert, ca_cert=ca_cert,
            revoke_old=self._revoke_old, retire=False,
        )  # fmt: skip
        self._moved[record.serial] = _Moved(old, new_cert, steps)

    def finish(self, actions: list[RotationAction]) -> list[RotationAction]:
        """Step 3 for every renewed certificate; records the registrations."""
        return [self._finish_one(a) if _renewed(a) else a for a in actions]

    def _finish_one(self, action: RotationAction) -> RotationAction:
        moved = self._moved.get(action.serial)
        if moved is None:
            return _note(action, "not registered in AWS IoT: nothing to move there")
        try:
            moved.steps += aws_iot.retire_in_aws(
                self._client, old_cert=moved.old, new_cert=moved.new, revoke_old=self._revoke_old
            )
        except DevidError as exc:
            failed = _note(action, f"renewed and active in AWS IoT, old one still active: {exc}")
            return dataclasses.replace(failed, exit_code=exc.exit_code)
        self._record(action, moved)
        return _note(action, f"AWS IoT: {moved.steps[-1]}")

    def _record(self, action: RotationAction, moved: _Moved) -> None:
        with self._store.transaction():
            for cert, serial in ((moved.new, action.new_serial), (moved.old, action.serial)):
                aws = aws_iot.describe_certificate(self._client, aws_iot.certificate_id(cert))
                self._store.record_iot_registration(
                    aws.registration(ca=action.ca, serial=serial or "")
                )
            self._store.add_event(
                Event(
                    "iot.rotate", ca=action.ca, serial=action.new_serial,
                    detail={"steps": moved.steps},
                )
            )  # fmt: skip


def _renewed(action: RotationAction) -> bool:
    return action.outcome is Outcome.RENEWED and not action.exit_code


def _note(action: RotationAction, text: str) -> RotationAction:
    reason = f"{action.reason}; {text}" if action.reason else text
    return dataclasses.replace(action, reason=reason)
