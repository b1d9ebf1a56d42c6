"""``devid rotate``: due certificates renewed in place, checked by openssl and pkcs11-tool.

Devices are provisioned "in the past" (the issuer's clock moved back; the CAs are older
still), so their certificates are due today and the renewed ones, valid from now, are not.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DevicePki, run_tool
from rotate_support import (
    cert_public_key_der,
    certificate_rows,
    inventory_dump,
    ok_json,
    one_error_line,
    openssl_serial,
    openssl_verify,
    provision_at,
    token_objects,
    token_public_key_der,
    tree_snapshot,
)

import devid.rotate as rotation
from hsm.errors import TokenFailure


def _key_id(device_id: str, label: str | None = None) -> str:
    objects = token_objects(label or f"device-{device_id}")
    return next(o["ID"] for o in objects if o["class"] == "Private Key")


def _token_certs(label: str) -> list[dict[str, str]]:
    return [o for o in token_objects(label) if o["class"] == "Certificate"]


def _contents(folder: Path) -> dict[str, bytes]:
    return {name: data for name, (data, _mtime) in tree_snapshot(folder).items()}


def _device_state(pki_home: Path, device: Any) -> tuple[Any, ...]:
    """What a renewal that fails or is stopped must leave as it was: the device's files (no
    temporary ones), its inventory rows, its token objects, and no new ``-r2`` key."""
    return (
        _contents(device.certificate_path.parent),
        certificate_rows(pki_home, device.device_id),
        token_objects(f"device-{device.device_id}"),
        token_objects(f"device-{device.device_id}-r2"),
    )


def _same_serial(token_serial: str, serial: str) -> bool:
    return token_serial.lower().lstrip("0") == serial.lstrip("0")


def test_due_certificates_are_renewed_in_place_and_a_second_run_does_nothing(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    due = provision_at(monkeypatch, device_pki, 2, days_ago=340)  # 365 days: 25 left
    fresh = provision_at(monkeypatch, device_pki, 1)[0]
    fresh_bytes = fresh.certificate_path.read_bytes()

    actions = ok_json(devid, "rotate", "--before", "30d")
    assert sorted(a["serial"] for a in actions) == sorted(d.serial for d in due)
    assert {a["action"] for a in actions} == {"renewed"}
    by_serial = {a["serial"]: a for a in actions}
    for old in due:
        action = by_serial[old.serial]
        cert = old.certificate_path
        assert sorted(p.name for p in cert.parent.iterdir()) == ["cert.pem", "chain.pem"]
        new_serial = openssl_serial(cert)
        assert new_serial != old.serial and new_serial == action["new_serial"]
        assert openssl_verify(device_pki, cert).strip() == f"{cert}: OK"
        assert openssl_serial(old.chain_path) == new_serial  # chain.pem starts with it too
        assert openssl_verify(device_pki, old.chain_path).strip().endswith(": OK")
        # same key: the token's public key is the new certificate's
        assert token_public_key_der(_key_id(old.device_id)) == cert_public_key_der(cert)
        rows = {r["serial"]: r for r in certificate_rows(pki_home, old.device_id)}
        assert rows[old.serial]["status"] == "superseded"
        assert rows[new_serial]["status"] == "issued"
        assert rows[new_serial]["replaces"] == old.serial
        assert rows[new_serial]["path"] == str(cert)
        token_certs = _token_certs(f"device-{old.device_id}")
        assert len(token_certs) == 1 and _same_serial(token_certs[0]["serial"], new_serial)

    assert fresh.certificate_path.read_bytes() == fresh_bytes
    assert len(certificate_rows(pki_home, fresh.device_id)) == 1

    assert ok_json(devid, "rotate", "--before", "30d") == []
    text = devid("rotate", "--before", "30d")
    assert text.code == 0 and text.out.startswith("nothing to renew") and text.err == ""


def test_dry_run_changes_nothing(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    due = provision_at(monkeypatch, device_pki, 2, days_ago=340)

    def state() -> Any:
        files = {
            k: v for k, v in tree_snapshot(pki_home).items() if not k.startswith("inventory.sqlite")
        }
        return files, inventory_dump(pki_home), token_objects()

    before = state()
    actions = ok_json(devid, "rotate", "--before", "30d", "--dry-run", "--jitter", "1h")
    assert sorted(a["serial"] for a in actions) == sorted(d.serial for d in due)
    assert {a["action"] for a in actions} == {"would-renew"}
    assert all(a["new_serial"] is None for a in actions)
    text = devid("rotate", "--before", "30d", "--dry-run")
    assert text.code == 0 and text.out.count("would renew") == 2
    # With --before 100% everything issued is due, but never a CA certificate.
    everything = ok_json(devid, "rotate", "--before", "100%", "--dry-run")
    assert openssl_serial(device_pki.issuing) not in {a["serial"] for a in everything}
    assert ok_json(devid, "rotate", "--ca", "root", "--before", "100%", "--dry-run") == []
    assert state() == before


def test_at_moves_now_for_choosing_only(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1)[0]  # fresh, 365 days
    assert ok_json(devid, "rotate", "--before", "30d", "--at", "+300d") == []
    actions = ok_json(devid, "rotate", "--before", "30d", "--at", "+340d", "--days", "700")
    assert [a["serial"] for a in actions] == [device.serial]
    cert = device.certificate_path
    start = run_tool("openssl", "x509", "-in", str(cert), "-noout", "-checkend", "0")
    assert start.returncode == 0  # valid now: issued from the real now, not from --at
    assert ok_json(devid, "rotate", "--before", "30d", "--at", "+340d") == []


def test_short_validity_is_renewed(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days=1)[0]
    actions = ok_json(devid, "rotate", "--before", "2d", "--days", "30")
    assert [a["action"] for a in actions] == ["renewed"]
    cert = device.certificate_path
    assert run_tool("openssl", "x509", "-in", str(cert), "-noout", "-checkend", str(29 * 86400))
    assert openssl_verify(device_pki, cert).strip().endswith(": OK")
    assert ok_json(devid, "rotate", "--before", "2d") == []


def test_rekey_makes_a_new_token_key_and_keeps_the_old_one(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    old_key_id = _key_id(device.device_id)
    old_public = token_public_key_der(old_key_id)

    action = ok_json(devid, "rotate", "--before", "30d", "--rekey")[0]
    new_label = f"device-{device.device_id}-r2"
    assert f"object={new_label};" in action["new_key_ref"]
    assert action["old_key_kept"] == device.key_reference
    cert = device.certificate_path
    new_public = token_public_key_der(_key_id(device.device_id, new_label))
    assert new_public != old_public
    assert cert_public_key_der(cert) == new_public
    assert openssl_verify(device_pki, cert).strip().endswith(": OK")
    new_cert_objects = _token_certs(new_label)
    assert len(new_cert_objects) == 1
    assert new_cert_objects[0]["ID"] == _key_id(device.device_id, new_label)
    assert _same_serial(new_cert_objects[0]["serial"], openssl_serial(cert))
    # The old key (and its old certificate object) are still there.
    assert token_public_key_der(old_key_id) == old_public
    assert _same_serial(_token_certs(f"device-{device.device_id}")[0]["serial"], device.serial)
    rows = {r["serial"]: r for r in certificate_rows(pki_home, device.device_id)}
    assert rows[action["new_serial"]]["key_ref"] == action["new_key_ref"]

    # provisioning again sees the device as done, with its new key
    again = ok_json(
        devid, "device", "provision", device.device_id, "--token", device_pki.token,
        "--ca", "issuing",
    )  # fmt: skip
    assert again["skipped"] is True and again["key_reference"] == action["new_key_ref"]


def test_a_failed_install_puts_everything_back(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    before = _device_state(pki_home, device)

    def fail(*_args: Any, **_kw: Any) -> int:
        raise TokenFailure("storing the certificate: simulated failure")

    monkeypatch.setattr(rotation, "store_certificate", fail)
    result = devid("rotate", "--before", "30d", "--rekey")
    assert result.code == 3
    assert "simulated failure" in one_error_line(result)
    assert "failed" in result.out
    assert _device_state(pki_home, device) == before  # restored; the new key was removed


def test_exec_runs_after_each_renewal_with_the_environment(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    due = provision_at(monkeypatch, device_pki, 2, days_ago=340)
    script = tmp_path / "reload.py"
    script.write_text(
        "import json, os, sys\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('DEVID_')}\n"
        "path = os.path.join(sys.argv[1], env['DEVID_SERIAL'] + '.json')\n"
        "open(path, 'w').write(json.dumps(env))\n"
        "print('reloaded')\n"
    )
    seen = tmp_path / "seen"
    seen.mkdir()
    command = shlex.join([sys.executable, str(script), str(seen)])
    actions = ok_json(devid, "rotate", "--before", "30d", "--exec", command)  # stdout stays JSON
    assert [a["exec_returncode"] for a in actions] == [0, 0]
    calls = {p.stem: json.loads(p.read_text()) for p in seen.iterdir()}
    for old in due:
        new_serial = openssl_serial(old.certificate_path)
        env = calls[new_serial]
        assert env["DEVID_SERIAL"] == new_serial
        assert env["DEVID_OLD_SERIAL"] == old.serial
        assert env["DEVID_CERT_PATH"] == str(old.certificate_path)
        assert env["DEVID_DEVICE_ID"] == old.device_id
        assert env["DEVID_CA"] == "issuing"
        assert env["DEVID_KEY_REF"] == old.key_reference
        assert "DEVID_PKCS11_PIN" not in env  # secrets are not handed to the hook
    assert len(calls) == 2


def test_a_failing_exec_is_reported_and_the_renewal_stays(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    result = devid("rotate", "--before", "30d", "--exec", "sh -c 'echo noise; exit 7'", "--json")
    assert result.code == 3
    action = json.loads(result.out)[0]
    assert action["action"] == "renewed" and action["exec_returncode"] == 7
    assert "exited with 7" in one_error_line(_without_noise(result))
    assert openssl_serial(device.certificate_path) == action["new_serial"]

    missing = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    result = devid("rotate", "--before", "30d", "--exec", "/no/such/reload")
    assert result.code == 3
    assert "command not found: /no/such/reload" in one_error_line(result)
    assert openssl_serial(missing.certificate_path) != missing.serial


def test_a_failed_reload_runs_again_on_the_next_run_until_it_works(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    broken, calls = tmp_path / "broken", tmp_path / "calls"
    broken.touch()
    script = tmp_path / "reload.sh"  # logs what it was told; fails while "broken" exists
    script.write_text(f'echo "$DEVID_SERIAL $DEVID_CERT_PATH" >> {calls}\n[ ! -e {broken} ]\n')
    rotate = ("rotate", "--before", "30d", "--exec", f"sh {script}")

    first = devid(*rotate, "--json")
    assert first.code == 3
    [renewed] = json.loads(first.out)
    new_serial = renewed["new_serial"]
    assert renewed["action"] == "renewed" and renewed["exec_returncode"] == 1
    assert renewed["reason"].endswith("exited with 1; the next run with --exec runs it again")
    assert openssl_serial(device.certificate_path) == new_serial  # the renewal stays

    [planned] = ok_json(devid, *rotate, "--dry-run")
    assert (planned["action"], planned["serial"]) == ("would-reload", new_serial)

    second = devid(*rotate, "--json")  # still broken: reported again
    assert second.code == 3
    [failed] = json.loads(second.out)
    assert (failed["action"], failed["serial"], failed["exec_returncode"]) == (
        "failed", new_serial, 1
    )  # fmt: skip

    broken.unlink()
    [reloaded] = ok_json(devid, *rotate)
    assert (reloaded["action"], reloaded["serial"]) == ("reloaded", new_serial)
    assert reloaded["exec_returncode"] == 0
    assert ok_json(devid, *rotate) == []  # done: nothing more to run
    assert calls.read_text().splitlines() == [f"{new_serial} {device.certificate_path}"] * 3


def _without_noise(result: Any) -> Any:
    """The command's own stderr: the reload command's output (sent to stderr) removed."""
    lines = [line for line in result.err.splitlines() if line != "noise"]
    return type(result)(result.code, result.out, "\n".join(lines) + "\n")


def test_jitter_sleeps_first_but_not_in_a_dry_run(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(rotation, "SLEEP", slept.append)
    monkeypatch.setattr(rotation, "RANDOM", lambda: 0.25)
    assert devid("rotate", "--before", "30d", "--jitter", "10m", "--dry-run").code == 0
    assert slept == []
    assert devid("rotate", "--before", "30d", "--jitter", "10m").code == 0
    assert slept == [0.25 * 600]


def test_a_certificate_with_a_key_file_is_renewed_with_that_key(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    key = key_file("ec-p256")
    csr, cert = tmp_path / "svc.csr", tmp_path / "svc.pem"
    ok_json(devid, "csr", "create", "--key", str(key), "--subject", "CN=svc-1", "--out", str(csr))
    issued = ok_json(
        devid, "cert", "issue", "--ca", "issuing", "--csr", str(csr), "--profile", "client",
        "--key-ref", str(key), "--days", "10", "--chain", "--out", str(cert),
    )  # fmt: skip
    before = cert.read_bytes()

    refused = devid("rotate", "--before", "15d", "--rekey", "--json")
    assert refused.code == 2
    assert json.loads(refused.out)[0]["action"] == "failed"
    assert "--rekey makes token keys" in one_error_line(refused)
    assert cert.read_bytes() == before

    action = ok_json(devid, "rotate", "--before", "15d", "--days", "60")[0]
    assert action["serial"] == issued["serial"] and action["new_key_ref"] == str(key)
    assert openssl_serial(cert) == action["new_serial"]
    assert cert.read_bytes().count(b"BEGIN CERTIFICATE") == 2  # the chain form was kept
    done = run_tool(
        "openssl", "verify", "-CAfile", str(device_pki.root), "-untrusted", str(cert),
        "-purpose", "sslclient", str(cert),
    )  # fmt: skip
    assert done.stdout.decode().strip().endswith(": OK")
    file_public = run_tool("openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER").stdout
    assert cert_public_key_der(cert) == file_public
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("svc")) == [
        "svc.csr",
        "svc.pem",
    ]
    assert ok_json(devid, "rotate", "--before", "15d") == []


def test_the_python_api_reports_actions(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devid.durations import parse_threshold
    from devid.store import open_store

    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    store = open_store()
    try:
        options = rotation.RotationOptions(threshold=parse_threshold("30d"))
        planned = rotation.rotate(
            store, rotation.RotationOptions(parse_threshold("30d"), dry_run=True)
        )
        done = rotation.rotate(store, options)
        again = rotation.rotate(store, options)
    finally:
        store.close()
    assert [a.outcome for a in planned] == [rotation.Outcome.WOULD_RENEW]
    assert [(a.outcome, a.serial) for a in done] == [(rotation.Outcome.RENEWED, device.serial)]
    assert done[0].new_serial == openssl_serial(device.certificate_path)
    assert again == []


def test_a_certificate_renewed_by_another_run_meanwhile_is_not_renewed_twice(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devid.durations import parse_threshold
    from devid.store import open_store

    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    real_csr = rotation.build_csr
    other: list[rotation.RotationAction] = []
    options = rotation.RotationOptions(parse_threshold("30d"), rekey=True)

    started: list[bool] = []

    def racing_csr(key: Any, subject: Any, **kw: Any) -> Any:
        if not started:  # another run renews the same certificate first
            started.append(True)
            second = open_store()
            try:
                other.extend(rotation.rotate(second, options))
            finally:
                second.close()
        return real_csr(key, subject, **kw)

    monkeypatch.setattr(rotation, "build_csr", racing_csr)
    store = open_store()
    try:
        [action] = rotation.rotate(store, options)
    finally:
        store.close()
    # the other run did the work: skipped, not a failure (a cron job's exit code stays 0)
    assert action.outcome is rotation.Outcome.SKIPPED and action.exit_code == 0
    assert "renewed or revoked by another run meanwhile" in (action.reason or "")
    assert action.as_dict()["action"] == "skipped"
    assert [a.outcome for a in other] == [rotation.Outcome.RENEWED]
    rows = certificate_rows(pki_home, device.device_id)
    assert sorted(r["status"] for r in rows) == ["issued", "superseded"]
    assert openssl_serial(device.certificate_path) == other[0].new_serial
    # The first run made its key (-r2) before the second made its own (-r3) and won.
    assert len(_token_certs(f"device-{device.device_id}-r3")) == 1
    assert token_objects(f"device-{device.device_id}-r2") == []  # the loser's key is gone


def _file_cert(
    devid: Callable[..., Any], key: Path, tmp_path: Path, cn: str, out: Path, days: str, *extra: str
) -> dict[str, Any]:
    csr = tmp_path / f"{cn}.csr"
    ok_json(devid, "csr", "create", "--key", str(key), "--subject", f"CN={cn}", "--out", str(csr))
    issued: dict[str, Any] = ok_json(
        devid, "cert", "issue", "--ca", "issuing", "--csr", str(csr), "--profile", "client",
        "--key-ref", str(key), "--days", days, "--out", str(out), *extra,
    )  # fmt: skip
    return issued


def test_a_renewal_that_would_be_due_at_once_is_refused(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    # a 10-day certificate under --before 30d: the renewal (10 days again) would be due as
    # soon as it is made, and every run would issue another one
    cert = tmp_path / "short.pem"
    issued = _file_cert(devid, key_file("ec-p256"), tmp_path, "short", cert, "10")
    before = cert.read_bytes()
    for args in (("--before", "30d"), ("--before", "30d", "--dry-run")):
        result = devid("rotate", *args)
        assert result.code == 1
        assert "would be due again at once under --before 30d" in one_error_line(result)
    assert cert.read_bytes() == before
    action = ok_json(devid, "rotate", "--before", "30d", "--days", "90")[0]
    assert action["serial"] == issued["serial"] and action["action"] == "renewed"
    assert ok_json(devid, "rotate", "--before", "30d") == []


def test_a_renewal_the_cas_expiry_cuts_short_is_said_or_refused(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, key_file: Callable[[str], Path]
) -> None:
    ok_json(devid, "ca", "init", "short-lived", "--key", str(key_file("ec-p256")), "--days", "40")
    key = key_file("ec-p256")
    csr = tmp_path / "d.csr"
    ok_json(devid, "csr", "create", "--key", str(key), "--subject", "CN=d1", "--out", str(csr))
    cert = tmp_path / "d.pem"
    issue = ("cert", "issue", "--ca", "short-lived", "--csr", str(csr), "--profile", "client",
             "--key-ref", str(key), "--out", str(cert))  # fmt: skip
    cut = devid(*issue, "--days", "90")
    assert cut.code == 0
    assert cut.err.startswith("devid: warning: CA 'short-lived' expires ")
    assert cut.err.rstrip().endswith(": the certificate is valid until then, not 90 days")
    assert ok_json(devid, *issue, "--days", "10", "--force")["not_after"]
    rotate = ("rotate", "--ca", "short-lived", "--days", "90")

    # --before 45d: a renewal ending with the CA (40 days) would be due again at once
    refused = devid(*rotate, "--before", "45d")
    assert refused.code == 1
    assert "would end then and be due again at once; renew the CA first" in one_error_line(refused)
    # --before 5d: worth doing, and the action says it is cut short; the next run is quiet
    [renewed] = ok_json(devid, *rotate, "--before", "5d", "--at", "+8d")
    assert renewed["action"] == "renewed"
    assert "valid only until CA short-lived expires" in renewed["reason"]
    assert renewed["reason"].endswith(", not 90 days")
    assert ok_json(devid, *rotate, "--before", "5d") == []


def test_a_file_that_now_holds_another_certificate_is_not_replaced(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    svc, other = tmp_path / "svc.pem", tmp_path / "other.pem"
    first = _file_cert(devid, key_file("ec-p256"), tmp_path, "first", svc, "10")
    second = _file_cert(devid, key_file("ec-p256"), tmp_path, "second", other, "10")
    svc.write_bytes(other.read_bytes())  # overwritten by hand with another identity
    result = devid("rotate", "--before", "15d", "--days", "60", "--json")
    assert result.code == 1
    assert f"holds certificate {second['serial']}, not {first['serial']}" in result.err
    actions = {a["serial"]: a["action"] for a in json.loads(result.out)}
    assert actions == {first["serial"]: "failed", second["serial"]: "renewed"}
    renewed = openssl_serial(other)
    assert renewed != second["serial"]
    assert openssl_serial(svc) == second["serial"]  # left as the user put it


def test_issuing_over_a_recorded_file_supersedes_its_old_certificate(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    svc = tmp_path / "svc.pem"
    old = _file_cert(devid, key_file("ec-p256"), tmp_path, "old", svc, "20")
    new_key = key_file("ec-p256")
    new = _file_cert(devid, new_key, tmp_path, "new", svc, "10", "--force")
    listed = {r["serial"]: r["status"] for r in ok_json(devid, "cert", "list")}
    assert listed[old["serial"]] == "superseded" and listed[new["serial"]] == "issued"
    actions = ok_json(devid, "rotate", "--before", "30d", "--days", "90")
    assert [a["serial"] for a in actions] == [new["serial"]]
    subject = run_tool("openssl", "x509", "-in", str(svc), "-noout", "-subject").stdout.decode()
    assert "CN = new" in subject
    key_public = run_tool("openssl", "pkey", "-in", str(new_key), "-pubout", "-outform",
                          "DER").stdout  # fmt: skip
    assert cert_public_key_der(svc) == key_public


def test_sigterm_in_the_middle_of_a_renewal_undoes_it(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # systemctl stop / timeout / a cancelled CI job: SIGTERM lands after the new certificate
    # was written to the device's files but before the inventory committed it
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    before = _device_state(pki_home, device)
    code = (
        "import os, signal, sys, time\n"
        "import devid.rotate as rotation\n"
        "real = rotation._install\n"
        "def install(*args):\n"
        "    real(*args)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "rotation._install = install\n"
        "sys.argv = ['devid', 'rotate', '--before', '30d', '--rekey']\n"
        "from devid.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr == "devid: error: terminated (SIGTERM); the step in progress was undone\n"
    assert _device_state(pki_home, device) == before  # old certificate back, new key gone
    # nothing is stuck: the next run renews it
    [action] = ok_json(devid, "rotate", "--before", "30d")
    assert action["action"] == "renewed"
    assert openssl_serial(device.certificate_path) == action["new_serial"]


def test_an_interrupt_while_the_new_key_is_made_leaves_no_key_behind(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devid.durations import parse_threshold
    from devid.store import open_store

    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    real = rotation.hsm.generate_keypair

    def interrupted(*args: Any, **kw: Any) -> Any:
        real(*args, **kw)  # the token made the key; Ctrl-C lands before it is returned
        raise KeyboardInterrupt

    monkeypatch.setattr(rotation.hsm, "generate_keypair", interrupted)
    store = open_store()
    try:
        with pytest.raises(KeyboardInterrupt):
            rotation.rotate(store, rotation.RotationOptions(parse_threshold("30d"), rekey=True))
    finally:
        store.close()
    assert token_objects(f"device-{device.device_id}-r2") == []
    assert openssl_serial(device.certificate_path) == device.serial


def test_a_key_label_taken_by_someone_else_is_never_deleted(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    taken = f"device-{device.device_id}-r2"
    made = devid("key", "generate", "ec-p256", "--token", device_pki.token, "--label", taken)
    assert made.code == 0, made.err
    before = token_objects(taken)

    def fail(*_args: Any, **_kw: Any) -> int:
        raise TokenFailure("storing the certificate: simulated failure")

    monkeypatch.setattr(rotation, "store_certificate", fail)
    assert devid("rotate", "--before", "30d", "--rekey").code == 3
    assert token_objects(taken) == before  # someone else's -r2 is still there
    assert token_objects(f"device-{device.device_id}-r3") == []  # this run's own is gone


def test_a_renewed_file_keeps_its_owner_and_a_symlink_keeps_pointing_at_it(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() != 0:
        pytest.fail("giving a file to another user needs root: run the suite as root (CI does)")
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    cert = device.certificate_path
    os.chown(cert, 65534, 65534)  # nobody:nogroup, the service that reads it
    os.chmod(cert, 0o640)
    chain = cert.parent / "chain.pem"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "device-chain.pem"
    target.write_bytes(chain.read_bytes())
    chain.unlink()
    chain.symlink_to(target)

    [action] = ok_json(devid, "rotate", "--before", "30d")
    st = cert.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o640)
    assert openssl_serial(cert) == action["new_serial"]
    assert chain.is_symlink() and chain.resolve() == target
    assert openssl_serial(target) == action["new_serial"]  # the chain starts with the new one
    assert [p.name for p in elsewhere.iterdir()] == ["device-chain.pem"]  # no temporary files


def test_a_mistyped_inventory_or_ca_is_an_error_not_nothing_to_do(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
) -> None:
    typo = tmp_path / "typo" / "inventory.sqlite"
    result = devid("rotate", "--before", "33%", "--dry-run", "--store", f"sqlite://{typo}")
    assert result.code == 1
    assert f"no inventory at {typo}" in one_error_line(result)
    assert not typo.parent.exists()  # a dry run creates nothing

    result = devid("rotate", "--ca", "nosuch", "--before", "100%", "--jitter", "10m")
    assert result.code == 1
    assert "no CA 'nosuch' in the inventory" in one_error_line(result)


def test_at_the_end_of_the_calendar_everything_is_due(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1)[0]
    actions = ok_json(devid, "rotate", "--at", "9999-12-31", "--before", "30d", "--dry-run")
    assert device.serial in [a["serial"] for a in actions]
    assert {a["action"] for a in actions} == {"would-renew"}


def _run_cli_killed(code_before: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``devid *argv*`` in a fresh process whose code is patched by *code_before* to signal
    itself at a chosen moment (the console script's signal handling included)."""
    code = (
        "import os, signal, sys, time\n"
        f"{code_before}\n"
        f"sys.argv = ['devid', *{argv!r}]\n"
        "from devid.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_sigterm_just_after_the_commit_keeps_the_renewal(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    calls = tmp_path / "reloads"
    reload = f"sh -c 'echo $DEVID_SERIAL >> {calls}'"
    patch = (
        "import devid.rotate as rotation\n"
        "from devid.store import SqliteStore\n"
        "armed = []\n"
        "real_install, real_execute = rotation._install, SqliteStore._execute\n"
        "def install(*args):\n"
        "    real_install(*args)\n"
        "    armed.append(True)\n"
        "def execute(self, sql, params=()):\n"
        "    done = real_execute(self, sql, params)\n"
        "    if sql == 'COMMIT' and armed:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(60)\n"
        "    return done\n"
        "rotation._install, SqliteStore._execute = install, execute\n"
    )
    done = _run_cli_killed(patch, ["rotate", "--before", "30d", "--rekey", "--exec", reload])
    assert done.returncode == 143, done.stderr
    rows = {r["status"]: r for r in certificate_rows(pki_home, device.device_id)}
    new_serial = rows["issued"]["serial"]
    assert rows["superseded"]["serial"] == device.serial
    assert openssl_serial(device.certificate_path) == new_serial  # the renewal stands
    new_label = f"device-{device.device_id}-r2"
    assert len(_token_certs(new_label)) == 1  # with its key, not deleted by an undo
    assert not calls.exists()  # the reload never ran: stopped before it
    [reloaded] = ok_json(devid, "rotate", "--before", "30d", "--exec", reload)
    assert (reloaded["action"], reloaded["serial"]) == ("reloaded", new_serial)
    assert calls.read_text().split() == [new_serial]
    assert ok_json(devid, "rotate", "--before", "30d", "--exec", reload) == []


def test_sigterm_while_cert_issue_writes_puts_the_old_file_back(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    out = tmp_path / "svc.pem"
    first = _file_cert(devid, key_file("ec-p256"), tmp_path, "svc", out, "30")
    before = out.read_bytes()
    csr = tmp_path / "svc.csr"
    patch = (
        "import devid.pki.issue as issuing\n"
        "real = issuing.write_atomic\n"
        "def write(*args, **kw):\n"
        "    issuing.write_atomic = real  # once: putting the old file back writes too\n"
        "    real(*args, **kw)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "issuing.write_atomic = write\n"
    )
    done = _run_cli_killed(
        patch,
        ["cert", "issue", "--ca", "issuing", "--csr", str(csr), "--profile", "client",
         "--out", str(out), "--force"],
    )  # fmt: skip
    assert done.returncode == 143, done.stderr
    assert out.read_bytes() == before  # the old certificate, as the inventory still says
    listed = ok_json(devid, "cert", "list", "--ca", "issuing", "--status", "issued")
    assert [c["serial"] for c in listed if c["path"] == str(out)] == [first["serial"]]


def test_ctrl_c_is_one_line_and_exit_130(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provision_at(monkeypatch, device_pki, 1, days_ago=340)
    patch = (
        "import devid.rotate as rotation\n"
        "rotation.SLEEP = lambda _s: (os.kill(os.getpid(), signal.SIGINT), time.sleep(60))\n"
    )
    done = _run_cli_killed(patch, ["rotate", "--before", "30d", "--jitter", "1h"])
    assert done.returncode == 130
    assert done.stderr == "devid: error: interrupted (Ctrl-C); the step in progress was undone\n"


def test_an_ignored_ctrl_c_stays_ignored(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a job started with '&' from a script ignores SIGINT; devid must not take it back
    provision_at(monkeypatch, device_pki, 1, days_ago=340)
    patch = (
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "import devid.rotate as rotation\n"
        "def sleep(_seconds):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "rotation.SLEEP = sleep\n"
    )
    done = _run_cli_killed(patch, ["rotate", "--before", "30d", "--jitter", "1h"])
    assert done.returncode == 143, done.stderr  # the SIGINT did nothing, the SIGTERM stopped it


def test_a_pending_reload_follows_its_certificate_into_the_next_renewal(
    devid: Callable[..., Any],
    device_pki: DevicePki,
    pki_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    calls = tmp_path / "reloads"
    assert devid("rotate", "--before", "30d", "--exec", "false").code == 3  # reload failed
    # renewed again by a run without --exec: the reload is still owed, now for the new one
    [again] = ok_json(devid, "rotate", "--before", "30d", "--at", "+340d")
    assert again["action"] == "renewed"
    [reloaded] = ok_json(devid, "rotate", "--before", "30d", "--exec",
                         f"sh -c 'echo $DEVID_SERIAL >> {calls}'")  # fmt: skip
    assert (reloaded["action"], reloaded["serial"]) == ("reloaded", again["new_serial"])
    assert calls.read_text().split() == [again["new_serial"]]
    assert openssl_serial(device.certificate_path) == again["new_serial"]
