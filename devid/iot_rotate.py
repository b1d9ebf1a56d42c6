"""``devid rotate --iot``: carry each renewed certificate's AWS IoT registration over.

:func:`devid.iot.rotate_in_aws` does the AWS side for one certificate; this module runs it
for the actions :func:`devid.rotate.rotate` returns and records the result in the inventory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cryptography import x509

from devid import iot as aws_iot
from devid import iot_ca
from devid.aws import AwsOptions, client
from devid.errors import DevidError, NotFound
from devid.pki import certs
from devid.pki.ca import load_ca
from devid.rotate import Outcome, RotationAction
from devid.store import Event, Store


def _rotate_one(
    iot_client: Any, store: Store, action: RotationAction, *, revoke_old: bool
) -> RotationAction:
    """Move one renewed certificate's AWS IoT registration to the new certificate."""
    old_record = store.get_certificate(action.serial)
    new_record = store.get_certificate(action.new_serial or "")
    if old_record is None or new_record is None:
        raise NotFound(f"certificate {action.serial} or its renewal is not in the inventory")
    old = certs.load_certificates(old_record.pem.encode())[0]
    new = certs.load_certificates(new_record.pem.encode())[0]
    if aws_iot.find_certificate(iot_client, old) is None:
        return _note(action, "not registered in AWS IoT: nothing to move there")
    # With the CA when the CA is registered; otherwise without it, as the old one was.
    ca_cert: x509.Certificate | None = load_ca(action.ca).certificate
    if ca_cert is not None and iot_ca.find_ca(iot_client, ca_cert) is None:
        ca_cert = None
    steps = aws_iot.rotate_in_aws(
        iot_client, old_cert=old, new_cert=new, ca_cert=ca_cert, revoke_old=revoke_old
    )
    with store.transaction():
        for cert, record in ((new, new_record), (old, old_record)):
            aws = aws_iot.describe_certificate(iot_client, aws_iot.certificate_id(cert))
            store.record_iot_registration(aws.registration(ca=action.ca, serial=record.serial))
        store.add_event(
            Event("iot.rotate", ca=action.ca, serial=new_record.serial, detail={"steps": steps})
        )
    return _note(action, f"AWS IoT: {steps[-1]}")


def _renewed(action: RotationAction) -> bool:
    return action.outcome is Outcome.RENEWED and not action.exit_code


def _note(action: RotationAction, text: str) -> RotationAction:
    reason = f"{action.reason}; {text}" if action.reason else text
    return dataclasses.replace(action, reason=reason)


def rotate_actions_in_aws(
    store: Store, actions: list[RotationAction], *, aws: AwsOptions, revoke_old: bool
) -> list[RotationAction]:
    """``devid rotate --iot``: for each renewed certificate, :func:`devid.iot.rotate_in_aws`.

    The new certificate is registered (with the CA when the CA is registered), gets the old
    one's things and policies and is activated; then the old one goes INACTIVE (REVOKED with
    *revoke_old*). A failure marks that action failed (the file was already renewed; the old
    certificate stays ACTIVE in AWS IoT) and the others go on.
    """
    if not any(_renewed(a) for a in actions):
        return actions
    try:
        iot_client = client("iot", aws)
    except DevidError as exc:
        return [_failed(a, exc) if _renewed(a) else a for a in actions]
    done = []
    for action in actions:
        if not _renewed(action):
            done.append(action)
            continue
        try:
            done.append(_rotate_one(iot_client, store, action, revoke_old=revoke_old))
        except DevidError as exc:
            done.append(_failed(action, exc))
    return done


def _failed(action: RotationAction, exc: DevidError) -> RotationAction:
    failed = _note(action, f"renewed, but not moved in AWS IoT: {exc}")
    return dataclasses.replace(failed, exit_code=exc.exit_code)
