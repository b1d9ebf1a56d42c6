"""``devid.iot.rotate_in_aws`` against a moto server: the device keeps an active certificate.

The old certificate has a thing and a policy attached (made with boto3 directly); after the
rotation the new certificate has both and is ACTIVE, the old one is INACTIVE (or REVOKED).
A failure half-way is injected by wrapping the real boto3 client so that one operation raises
botocore's own ClientError; everything else still goes to moto over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from conftest import MotoServer
from cryptography import x509
from iot_aws_support import Devid, issue_device, make_ca, ok_json, openssl_iot_id

from devid.errors import DevidError
from devid.iot import rotate_in_aws

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'  # noqa: E501


class FailingClient:
    """The real boto3 IoT client, except that *operation* raises (when *when* says so)."""

    def __init__(self, real: Any, operation: str, when: Callable[[dict[str, Any]], bool]) -> None:
        self._real, self._operation, self._when = real, operation, when

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if name != self._operation:
            return method

        def fail(**params: Any) -> Any:
            if self._when(params):
                error = {"Error": {"Code": "ThrottlingException", "Message": "injected"}}
                raise botocore.exceptions.ClientError(error, name)  # type: ignore[arg-type]
            return method(**params)

        return fail


@pytest.fixture
def device(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> dict[str, Any]:
    """CA ``fleet`` registered; an old ACTIVE certificate with a thing and a policy; a new one."""
    ca_pem = make_ca(devid, "fleet", key_file("ec-p256"))
    ok_json(devid, "iot", "register-ca", "--ca", "fleet", *moto.aws_args())
    key = openssl_key("ec-p256")
    old = issue_device(devid, "fleet", key, "sensor-1", tmp_path / "old.pem")
    new = issue_device(devid, "fleet", key, "sensor-1", tmp_path / "new.pem")
    registered = ok_json(devid, "iot", "register-cert", str(old), "--activate", *moto.aws_args())
    iot = moto.client("iot")
    iot.create_thing(thingName="sensor-1")  # type: ignore[attr-defined]
    iot.create_policy(policyName="sensor-policy", policyDocument=POLICY)  # type: ignore[attr-defined]
    iot.attach_thing_principal(thingName="sensor-1", principal=registered["certificate_arn"])  # type: ignore[attr-defined]
    iot.attach_policy(policyName="sensor-policy", target=registered["certificate_arn"])  # type: ignore[attr-defined]
    return {
        "iot": iot,
        "old": old,
        "new": new,
        "ca": ca_pem,
        "old_arn": registered["certificate_arn"],
    }


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _state(iot: Any, cert_id: str) -> tuple[str, list[str], list[str]] | None:
    """(status, things, policies) of a certificate in moto, None when it is not there."""
    try:
        desc = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return None
    arn = desc["certificateArn"]
    things = iot.list_principal_things(principal=arn)["things"]
    policies = [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]]
    return desc["status"], sorted(things), sorted(policies)


def _rotate(client: Any, device: dict[str, Any], *, revoke_old: bool) -> list[str]:
    return rotate_in_aws(
        client,
        old_cert=_load(device["old"]),
        new_cert=_load(device["new"]),
        ca_cert=_load(device["ca"]),
        revoke_old=revoke_old,
    )


@pytest.mark.parametrize(("revoke_old", "old_status"), [(False, "INACTIVE"), (True, "REVOKED")])
def test_rotation_moves_things_and_policies(
    device: dict[str, Any], revoke_old: bool, old_status: str
) -> None:
    iot = device["iot"]
    old_id, new_id = openssl_iot_id(device["old"]), openssl_iot_id(device["new"])
    steps = _rotate(iot, device, revoke_old=revoke_old)

    assert _state(iot, new_id) == ("ACTIVE", ["sensor-1"], ["sensor-policy"])
    assert _state(iot, old_id) == (old_status, ["sensor-1"], ["sensor-policy"])
    assert steps[0] == f"registered {new_id}"
    assert steps[-1] == f"moved old {old_id} to {old_status}"
    order = [s.split()[0] for s in steps]
    assert order.index("activated") < order.index("moved")
    by_ca = iot.list_certificates_by_ca(caCertificateId=openssl_iot_id(device["ca"]))
    assert {c["certificateId"] for c in by_ca["certificates"]} == {old_id, new_id}


def test_failure_half_way_is_undone(device: dict[str, Any]) -> None:
    iot = device["iot"]
    old_id, new_id = openssl_iot_id(device["old"]), openssl_iot_id(device["new"])
    client = FailingClient(iot, "attach_policy", lambda params: True)
    with pytest.raises(DevidError) as caught:
        _rotate(client, device, revoke_old=False)
    message = str(caught.value)
    assert "rotation stopped" in message and "injected" in message
    assert "undone: detached thing sensor-1, deleted" in message
    assert "\n" not in message

    assert _state(iot, new_id) is None  # registered, then deleted again
    assert _state(iot, old_id) == ("ACTIVE", ["sensor-1"], ["sensor-policy"])


def test_failure_of_the_last_step_leaves_both_active_and_can_be_rerun(
    device: dict[str, Any],
) -> None:
    iot = device["iot"]
    old_id, new_id = openssl_iot_id(device["old"]), openssl_iot_id(device["new"])
    client = FailingClient(
        iot, "update_certificate", lambda params: params["certificateId"] == old_id
    )
    with pytest.raises(DevidError) as caught:
        _rotate(client, device, revoke_old=False)
    assert f"devid iot status {old_id} inactive" in str(caught.value)
    assert _state(iot, new_id) == ("ACTIVE", ["sensor-1"], ["sensor-policy"])
    assert _state(iot, old_id) == ("ACTIVE", ["sensor-1"], ["sensor-policy"])

    steps = _rotate(iot, device, revoke_old=True)  # the same rotation again, to the end
    assert not any(s.startswith("registered") for s in steps)
    assert _state(iot, new_id) == ("ACTIVE", ["sensor-1"], ["sensor-policy"])
    assert _state(iot, old_id) == ("REVOKED", ["sensor-1"], ["sensor-policy"])


def test_old_certificate_must_be_registered(
    device: dict[str, Any], devid: Devid, tmp_path: Path, openssl_key: Callable[[str], Path]
) -> None:
    iot = device["iot"]
    stray = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-2", tmp_path / "s.pem")
    with pytest.raises(DevidError, match="is not registered in AWS IoT"):
        rotate_in_aws(
            iot,
            old_cert=_load(stray),
            new_cert=_load(device["new"]),
            ca_cert=_load(device["ca"]),
            revoke_old=False,
        )
    assert _state(iot, openssl_iot_id(device["new"])) is None
