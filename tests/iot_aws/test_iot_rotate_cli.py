"""``devid rotate --iot``: the renewed certificate takes over the old one's place in AWS IoT.

A device certificate with a recorded key file is renewed by ``devid rotate``; moto then
holds the new certificate (id checked with openssl on the renewed file) ACTIVE with the
thing and policy the old one had, and the old one REVOKED.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MotoServer
from iot_aws_support import (
    Devid,
    make_ca,
    make_csr,
    ok_json,
    one_error_line,
    openssl_iot_id,
    registrations,
)

from devid import iot as iot_module
from devid.errors import EnvironmentProblem

POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
    }
)


def _registered_device(
    devid: Devid, moto: MotoServer, tmp_path: Path, key_file: Callable[[str], Path]
) -> tuple[Path, dict[str, str]]:
    make_ca(devid, "fleet", key_file("ec-p256"))
    ok_json(devid, "iot", "register-ca", "--ca", "fleet", *moto.aws_args())
    key = key_file("ec-p256")
    cert = tmp_path / "device.pem"
    csr = make_csr(key, "/CN=sensor-1/serialNumber=1", tmp_path / "device.csr")
    ok_json(
        devid,
        "cert",
        "issue",
        "--ca",
        "fleet",
        "--csr",
        str(csr),
        "--key-ref",
        str(key),
        "--days",
        "2",
        "--out",
        str(cert),
    )
    registered = ok_json(devid, "iot", "register-cert", str(cert), "--activate", *moto.aws_args())
    return cert, registered


def test_rotate_iot_moves_the_registration(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    cert, registered = _registered_device(devid, moto, tmp_path, key_file)
    old_id = openssl_iot_id(cert)
    iot = moto.client("iot")
    iot.create_thing(thingName="sensor-1")  # type: ignore[attr-defined]
    iot.create_policy(policyName="sensor-policy", policyDocument=POLICY)  # type: ignore[attr-defined]
    iot.attach_thing_principal(thingName="sensor-1", principal=registered["certificate_arn"])  # type: ignore[attr-defined]
    iot.attach_policy(policyName="sensor-policy", target=registered["certificate_arn"])  # type: ignore[attr-defined]

    actions = ok_json(
        devid,
        "rotate",
        "--ca",
        "fleet",
        "--before",
        "5d",
        "--days",
        "30",
        "--iot",
        "--revoke-old",
        *moto.aws_args(),
    )
    [action] = actions
    assert action["action"] == "renewed"
    new_id = openssl_iot_id(cert)
    assert new_id != old_id
    assert f"moved old {old_id} to REVOKED" in action["reason"]

    new = iot.describe_certificate(certificateId=new_id)["certificateDescription"]  # type: ignore[attr-defined]
    old = iot.describe_certificate(certificateId=old_id)["certificateDescription"]  # type: ignore[attr-defined]
    assert (new["status"], old["status"]) == ("ACTIVE", "REVOKED")
    assert iot.list_principal_things(principal=new["certificateArn"])["things"] == ["sensor-1"]  # type: ignore[attr-defined]
    policies = iot.list_attached_policies(target=new["certificateArn"])["policies"]  # type: ignore[attr-defined]
    assert [p["policyName"] for p in policies] == ["sensor-policy"]

    rows = {r["certificate_id"]: r for r in registrations(pki_home) if r["kind"] == "certificate"}
    assert rows[new_id]["status"] == "ACTIVE" and rows[new_id]["serial"] == action["new_serial"]
    assert rows[old_id]["status"] == "REVOKED" and rows[old_id]["serial"] == action["serial"]


def test_revoke_old_needs_iot(devid: Devid, pki_home: Path) -> None:
    result = devid("rotate", "--before", "5d", "--revoke-old")
    assert result.code == 2
    assert "--revoke-old goes with --iot" in one_error_line(result)


def test_aws_failure_before_install_leaves_the_device_untouched(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Activation in AWS fails: the device keeps its old file, which stays ACTIVE there."""
    cert, _ = _registered_device(devid, moto, tmp_path, key_file)
    old_bytes, old_id = cert.read_bytes(), openssl_iot_id(cert)
    real_set_status = iot_module.set_status

    def failing(client: object, cert_id: str, status: iot_module.CertStatus) -> str:
        if status is iot_module.CertStatus.ACTIVE:
            raise EnvironmentProblem("injected: UpdateCertificate failed")
        return real_set_status(client, cert_id, status)

    monkeypatch.setattr(iot_module, "set_status", failing)
    result = devid("rotate", "--ca", "fleet", "--before", "5d", "--days", "30", "--iot",
                   *moto.aws_args())  # fmt: skip

    assert result.code == 3
    assert "injected" in one_error_line(result)
    assert cert.read_bytes() == old_bytes  # nothing installed locally
    iot = moto.client("iot")
    old = iot.describe_certificate(certificateId=old_id)["certificateDescription"]  # type: ignore[attr-defined]
    assert old["status"] == "ACTIVE"
    listed = devid("cert", "list", "--ca", "fleet", "--status", "issued", "--json")
    [current] = json.loads(listed.out)
    assert old_id in json.dumps(current)  # the old certificate is still the current one
