"""``devid rotate --iot`` when something is off: a certificate cut off in AWS IoT, a local
install that fails after the AWS step, and an old certificate that could not be retired."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoServer
from iot_aws_support import Devid, make_csr, ok_json, openssl_iot_id, registrations
from test_iot_rotate_cli import POLICY, _registered_device

import devid.rotate as rotation
from devid import iot as iot_module
from devid.errors import EnvironmentProblem


def _with_thing(moto: MotoServer, registered: dict[str, str]) -> Any:
    iot = moto.client("iot")
    iot.create_thing(thingName="sensor-1")
    iot.create_policy(policyName="sensor-policy", policyDocument=POLICY)
    iot.attach_thing_principal(thingName="sensor-1", principal=registered["certificate_arn"])
    iot.attach_policy(policyName="sensor-policy", target=registered["certificate_arn"])
    return iot


def _aws(iot: Any) -> dict[str, tuple[str, list[str]]]:
    """Every certificate in AWS IoT: its status and the things attached to it."""
    out = {}
    for listed in iot.list_certificates()["certificates"]:
        things = iot.list_principal_things(principal=listed["certificateArn"])["things"]
        out[listed["certificateId"]] = (listed["status"], things)
    return out


def _current(devid: Devid) -> list[str]:
    return [
        c["serial"] for c in ok_json(devid, "cert", "list", "--ca", "fleet", "--status", "issued")
    ]


ROTATE = ("rotate", "--ca", "fleet", "--before", "5d", "--days", "30", "--iot")


@pytest.mark.parametrize("status", ["REVOKED", "INACTIVE"])
def test_a_certificate_cut_off_in_aws_is_not_renewed(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    status: str,
) -> None:
    cert, registered = _registered_device(devid, moto, tmp_path, key_file)
    iot = _with_thing(moto, registered)
    old_id = registered["aws_certificate_id"]
    iot.update_certificate(certificateId=old_id, newStatus=status)
    before, file_before, current = _aws(iot), cert.read_bytes(), _current(devid)

    result = devid(*ROTATE, *moto.aws_args(), "--json")
    assert result.code == 1
    [action] = json.loads(result.out)
    assert action["action"] == "failed"
    assert f"is {status} in AWS IoT ({old_id})" in action["reason"]
    assert _aws(iot) == before  # no new active certificate for the thing
    assert cert.read_bytes() == file_before and _current(devid) == current


def test_a_failed_install_takes_the_aws_step_back(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    cert, registered = _registered_device(devid, moto, tmp_path, key_file)
    iot = _with_thing(moto, registered)
    before, current = _aws(iot), _current(devid)
    cert.unlink()
    cert.mkdir()  # the install cannot write the renewed certificate there

    result = devid(*ROTATE, *moto.aws_args(), "--json")
    assert result.code == 2
    [action] = json.loads(result.out)
    assert action["action"] == "failed"
    assert "Is a directory" in action["reason"]
    assert (
        "AWS IoT: taken back (detached thing sensor-1, detached policy sensor-policy"
        in (action["reason"])
    )
    assert _aws(iot) == before  # the new certificate is gone from AWS; the old one is ACTIVE
    assert _current(devid) == current
    recorded = {r["certificate_id"] for r in registrations(pki_home) if r["kind"] != "ca"}
    assert recorded == {registered["aws_certificate_id"]}  # no row for a taken-back one


def test_an_old_certificate_left_active_is_retired_by_the_next_run(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, registered = _registered_device(devid, moto, tmp_path, key_file)
    iot = _with_thing(moto, registered)
    old_id = registered["aws_certificate_id"]
    real_set_status = iot_module.set_status

    def failing(client: object, cert_id: str, status: iot_module.CertStatus) -> str:
        if cert_id == old_id:
            raise EnvironmentProblem("injected: UpdateCertificate failed")
        return real_set_status(client, cert_id, status)

    with monkeypatch.context() as patch:
        patch.setattr(iot_module, "set_status", failing)
        first = devid(*ROTATE, "--revoke-old", *moto.aws_args(), "--json")
    assert first.code == 3
    [renewed] = json.loads(first.out)
    new_id = openssl_iot_id(cert)
    assert renewed["action"] == "renewed"
    assert "the next 'devid rotate --iot' retires it" in renewed["reason"]
    assert _aws(iot)[old_id][0] == "ACTIVE" and _aws(iot)[new_id] == ("ACTIVE", ["sensor-1"])
    rows = {r["certificate_id"]: r for r in registrations(pki_home)}
    assert rows[new_id]["status"] == "ACTIVE"  # recorded although the move is unfinished

    [planned] = ok_json(devid, *ROTATE, "--dry-run")  # no AWS call: from the inventory
    assert (planned["action"], planned["serial"], planned["new_serial"]) == (
        "would-retire-in-aws", renewed["serial"], renewed["new_serial"]
    )  # fmt: skip
    assert _aws(iot)[old_id][0] == "ACTIVE"
    second = ok_json(devid, *ROTATE, *moto.aws_args())  # nothing due; the retirement is
    assert [(a["action"], a["serial"], a["new_serial"]) for a in second] == [
        ("retired-in-aws", renewed["serial"], renewed["new_serial"])
    ]
    assert f"moved old {old_id} to REVOKED" in second[0]["reason"]  # as the first run asked
    assert _aws(iot)[old_id][0] == "REVOKED"
    rows = {r["certificate_id"]: r for r in registrations(pki_home)}
    assert rows[old_id]["status"] == "REVOKED"
    assert ok_json(devid, *ROTATE, *moto.aws_args()) == []  # done


def _second_device(
    devid: Devid, moto: MotoServer, tmp_path: Path, key_file: Callable[[str], Path]
) -> tuple[Path, dict[str, str]]:
    key = key_file("ec-p256")
    cert = tmp_path / "device-2.pem"
    csr = make_csr(key, "/CN=sensor-2/serialNumber=2", tmp_path / "device-2.csr")
    ok_json(devid, "cert", "issue", "--ca", "fleet", "--csr", str(csr), "--key-ref", str(key),
            "--days", "2", "--out", str(cert))  # fmt: skip
    registered = ok_json(devid, "iot", "register-cert", str(cert), "--activate", *moto.aws_args())
    return cert, registered


def test_a_run_stopped_after_one_renewal_leaves_its_retirement_to_the_next(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, registered_first = _registered_device(devid, moto, tmp_path, key_file)
    second, registered_second = _second_device(devid, moto, tmp_path, key_file)
    iot = moto.client("iot")
    old_ids = {first: registered_first["aws_certificate_id"],
               second: registered_second["aws_certificate_id"]}  # fmt: skip
    real_install = rotation._install
    installs: list[int] = []

    def install(*args: Any) -> None:
        installs.append(1)
        if len(installs) == 2:  # Ctrl-C while the second device is being renewed
            raise KeyboardInterrupt
        real_install(*args)

    with monkeypatch.context() as patch:
        patch.setattr(rotation, "_install", install)
        stopped = devid(*ROTATE, *moto.aws_args())
    assert stopped.code != 0
    [done] = [path for path, old in old_ids.items() if openssl_iot_id(path) != old]
    [other] = [path for path in old_ids if path != done]
    assert _aws(iot)[old_ids[done]][0] == "ACTIVE"  # renewed, but its old one not retired yet

    ok_json(devid, "ca", "init", "other", "--key", str(key_file("ec-p256")))
    assert ok_json(devid, "rotate", "--ca", "other", "--before", "5d", "--iot",
                   *moto.aws_args()) == []  # fmt: skip  # another CA's run leaves it alone
    assert _aws(iot)[old_ids[done]][0] == "ACTIVE"

    retired, renewed = ok_json(devid, *ROTATE, *moto.aws_args())
    assert (retired["action"], renewed["action"]) == ("retired-in-aws", "renewed")
    assert f"moved old {old_ids[done]} to INACTIVE" in retired["reason"]
    assert _aws(iot)[old_ids[done]][0] == "INACTIVE"
    assert _aws(iot)[old_ids[other]][0] == "INACTIVE"  # renewed and retired in this run
    assert openssl_iot_id(other) != old_ids[other]
    assert ok_json(devid, *ROTATE, *moto.aws_args()) == []


def test_a_stop_during_the_aws_step_takes_it_back(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, registered = _registered_device(devid, moto, tmp_path, key_file)
    iot = _with_thing(moto, registered)
    before, file_before = _aws(iot), cert.read_bytes()
    real_set_status = iot_module.set_status

    def stopped(client: object, cert_id: str, status: iot_module.CertStatus) -> str:
        real_set_status(client, cert_id, status)
        raise KeyboardInterrupt  # Ctrl-C just after the new certificate was activated

    monkeypatch.setattr(iot_module, "set_status", stopped)
    assert devid(*ROTATE, *moto.aws_args()).code != 0
    monkeypatch.setattr(iot_module, "set_status", real_set_status)
    assert _aws(iot) == before  # the new certificate detached, deactivated and deleted
    assert cert.read_bytes() == file_before


def test_the_old_certificate_stays_active_until_the_reload_succeeds(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    _, registered = _registered_device(devid, moto, tmp_path, key_file)
    iot = _with_thing(moto, registered)
    old_id = registered["aws_certificate_id"]

    first = devid(*ROTATE, "--exec", "false", *moto.aws_args(), "--json")
    assert first.code == 3
    [renewed] = json.loads(first.out)
    assert "old certificate left active in AWS IoT until the reload command" in renewed["reason"]
    assert _aws(iot)[old_id][0] == "ACTIVE"

    second = devid(*ROTATE, "--exec", "false", *moto.aws_args(), "--json")
    assert second.code == 3  # the reload failed again: the old one is not retired
    assert [a["action"] for a in json.loads(second.out)] == ["skipped", "failed"]
    assert _aws(iot)[old_id][0] == "ACTIVE"

    third = ok_json(devid, *ROTATE, "--exec", "true", *moto.aws_args())
    assert [a["action"] for a in third] == ["retired-in-aws", "reloaded"]
    assert _aws(iot)[old_id][0] == "INACTIVE"


def test_renewed_again_before_a_reload_worked_all_old_ones_retire_once_it_does(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    cert, registered = _registered_device(devid, moto, tmp_path, key_file)
    iot = _with_thing(moto, registered)
    first = registered["aws_certificate_id"]
    assert devid(*ROTATE, "--exec", "false", *moto.aws_args()).code == 3  # 1 -> 2, waits
    second = openssl_iot_id(cert)
    # 2 -> 3 without --exec: the reload is still owed (now the third's), nothing retires
    ok_json(devid, *ROTATE, "--at", "+29d", *moto.aws_args())
    third = openssl_iot_id(cert)
    ids = (first, second, third)
    assert [_aws(iot)[x][0] for x in ids] == ["ACTIVE"] * 3
    actions = ok_json(devid, *ROTATE, "--exec", "true", *moto.aws_args())  # now it works
    assert sorted(x["action"] for x in actions) == ["reloaded", "retired-in-aws", "retired-in-aws"]
    assert [_aws(iot)[x][0] for x in ids] == ["INACTIVE", "INACTIVE", "ACTIVE"]
    assert ok_json(devid, *ROTATE, "--exec", "true", *moto.aws_args()) == []
