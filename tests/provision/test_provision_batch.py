"""``devid device provision --batch``: CSV and JSONL, resumable, several worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, DevicePki, unique
from provision_support import (
    cert_public_key_der,
    ok_json,
    openssl_serial,
    openssl_verify,
    per_device_counts,
    token_objects,
    token_public_key_der,
)

import devid.provision as provisioning
from devid.errors import Conflict, EnvironmentProblem
from devid.provision import ProvisionResult, provision_batch

COUNT = 10


def _ids(prefix: str = "fleet") -> list[str]:
    base = unique(prefix)
    return [f"{base}-{n:02d}" for n in range(1, COUNT + 1)]


def _check_fleet(pki: DevicePki, home: Path, results: list[dict[str, Any]], ids: list[str]) -> None:
    assert [r["device_id"] for r in results] == ids
    assert len({r["serial"] for r in results}) == len(ids)
    certs = [Path(r["certificate_path"]) for r in results]
    assert openssl_verify(pki, *certs).splitlines() == [f"{c}: OK" for c in certs]
    assert [openssl_serial(c) for c in certs] == [r["serial"] for r in results]
    counts = per_device_counts(home)
    assert {i: counts.get(i) for i in ids} == dict.fromkeys(ids, 1)


def test_csv_with_a_header_and_jsonl_batches(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    csv_ids, jsonl_ids = _ids("csv"), _ids("jsonl")
    csv_file = tmp_path / "line-7.csv"
    rows = ["model,device_id,batch", *[f"m1,{i},7" for i in csv_ids]]
    csv_file.write_text("\n".join(rows) + "\n")
    jsonl_file = tmp_path / "line-8.jsonl"
    jsonl_file.write_text("".join(json.dumps({"device_id": i, "x": 1}) + "\n" for i in jsonl_ids))

    for path, ids in ((csv_file, csv_ids), (jsonl_file, jsonl_ids)):
        args = ("device", "provision", "--batch", str(path), "--token", device_pki.token)
        results = ok_json(devid, *args, "--ca", "issuing")
        _check_fleet(device_pki, pki_home, results, ids)
        assert not any(r["skipped"] for r in results)
        text = devid(*args, "--ca", "issuing")
        assert text.code == 0 and text.err == ""
        assert text.out.strip() == f"{COUNT} devices: 0 provisioned, {COUNT} already done"


def test_a_plain_csv_first_column(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    ids = _ids("plain")[:3]
    path = tmp_path / "ids.csv"
    path.write_text("# line 9\n" + "".join(f"{i},extra\n" for i in ids) + "\n")
    results = ok_json(
        devid, "device", "provision", "--batch", str(path), "--token", device_pki.token,
        "--ca", "issuing",
    )  # fmt: skip
    _check_fleet(device_pki, pki_home, results, ids)


def test_resume_after_a_failure_in_the_middle_issues_nothing_twice(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _ids("crash")
    real_csr = provisioning.build_csr

    def failing_csr(key: Any, subject: Any, **kw: Any) -> Any:
        if ids[4] in subject.rfc4514_string():  # device #5: the run dies after its keygen
            raise EnvironmentProblem("simulated crash")
        return real_csr(key, subject, **kw)

    monkeypatch.setattr(provisioning, "build_csr", failing_csr)
    seen: list[tuple[int, int]] = []
    options: dict[str, Any] = {"token": device_pki.token, "ca": "issuing", "batch_size": 3}
    with pytest.raises(EnvironmentProblem):
        provision_batch(ids, progress=lambda d, t: seen.append((d, t)), **options)
    assert seen == [(3, COUNT)]  # the first batch of three was committed
    assert sorted(per_device_counts(pki_home)) == ids[:3]
    left_over = {i: token_objects(f"device-{i}") for i in ids[3:5]}  # keys, no certificates
    assert all(len(objs) == 2 for objs in left_over.values()), left_over

    monkeypatch.setattr(provisioning, "build_csr", real_csr)
    results = provision_batch(ids, **options)
    assert [r.skipped for r in results] == [True] * 3 + [False] * 7
    for result in results[3:5]:  # the keys made before the crash were used
        key_id = left_over[result.device_id][0]["ID"]
        assert token_public_key_der(key_id) == cert_public_key_der(result.certificate_path)
    _check_fleet(device_pki, pki_home, [r.as_dict() for r in results], ids)


def test_a_failure_while_installing_records_nothing_and_the_rerun_finishes(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _ids("install")
    real_store = provisioning.store_certificate
    calls: list[int] = []

    def failing_store(key: Any, cert: Any, **kw: Any) -> int:
        calls.append(1)
        if len(calls) == 5:
            raise EnvironmentProblem("simulated token failure")
        return real_store(key, cert, **kw)

    monkeypatch.setattr(provisioning, "store_certificate", failing_store)
    with pytest.raises(EnvironmentProblem):
        provision_batch(ids, token=device_pki.token, ca="issuing")
    assert per_device_counts(pki_home) == {}  # the batch's transaction was rolled back
    stale = pki_home / "devices" / ids[0] / "cert.pem"  # written before the failure
    assert stale.exists()

    monkeypatch.setattr(provisioning, "store_certificate", real_store)
    results = provision_batch(ids, token=device_pki.token, ca="issuing")
    assert not any(r.skipped for r in results)
    _check_fleet(device_pki, pki_home, [r.as_dict() for r in results], ids)
    assert openssl_serial(stale) == results[0].serial
    for result in results:  # one certificate object per key: the stale ones were replaced
        certs = [
            o for o in token_objects(f"device-{result.device_id}") if o["class"] == "Certificate"
        ]
        assert len(certs) == 1
        assert certs[0]["serial"].lower().lstrip("0") == result.serial.lstrip("0")


def test_two_worker_processes(
    devid_proc: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    ids = _ids("workers")
    path = tmp_path / "fleet.jsonl"
    path.write_text("".join(json.dumps({"device_id": i}) + "\n" for i in ids))
    args = ("device", "provision", "--batch", str(path), "--token", device_pki.token,
            "--ca", "issuing", "--workers", "2", "--json")  # fmt: skip

    done = devid_proc(*args)
    assert done.code == 0, done.err
    assert done.err == ""  # no progress bar with --json
    _check_fleet(device_pki, pki_home, json.loads(done.out), ids)

    again = devid_proc(*args)
    assert again.code == 0, again.err
    assert all(r["skipped"] for r in json.loads(again.out))
    assert sorted(per_device_counts(pki_home)) == ids


def test_the_python_api_with_workers(device_pki: DevicePki, pki_home: Path) -> None:
    ids = _ids("api")[:4]
    seen: list[tuple[int, int]] = []
    results = provision_batch(
        ids,
        token=device_pki.token,
        ca="issuing",
        workers=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert all(isinstance(r, ProvisionResult) for r in results)
    assert seen[-1] == (4, 4)
    _check_fleet(device_pki, pki_home, [r.as_dict() for r in results], ids)


def test_a_device_provisioned_by_another_run_meanwhile_is_not_issued_twice(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _ids("race")[:3]
    real_csr = provisioning.build_csr
    other: list[ProvisionResult] = []
    started: list[bool] = []

    def racing_csr(key: Any, subject: Any, **kw: Any) -> Any:
        if ids[1] in subject.rfc4514_string() and not started:  # another run gets there first
            started.append(True)
            other.append(provision_batch([ids[1]], token=device_pki.token, ca="issuing")[0])
        return real_csr(key, subject, **kw)

    monkeypatch.setattr(provisioning, "build_csr", racing_csr)
    with pytest.raises(Conflict, match="provisioned by another run meanwhile"):
        provision_batch(ids, token=device_pki.token, ca="issuing")
    assert per_device_counts(pki_home) == {ids[1]: 1}
    assert openssl_serial(other[0].certificate_path) == other[0].serial

    monkeypatch.setattr(provisioning, "build_csr", real_csr)
    results = provision_batch(ids, token=device_pki.token, ca="issuing")
    assert [r.skipped for r in results] == [False, True, False]
    _check_fleet(device_pki, pki_home, [r.as_dict() for r in results], ids)


def _marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries *marker* (the command and its workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if f"DEVID_KILL_MARK={marker}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(proc.name))
    return found


def test_workers_stop_when_the_command_is_killed(device_pki: DevicePki, pki_home: Path) -> None:
    # kill -9 of 'device provision --workers 2': the workers must not go on issuing
    # certificates nobody waits for (they did, then hung); a re-run finishes the batch
    ids = [unique("kill") for _ in range(120)]
    batch = pki_home / "batch.csv"
    batch.write_text("\n".join(ids) + "\n")
    marker = unique("mark")
    env = {**os.environ, "DEVID_KILL_MARK": marker}
    args = [sys.executable, "-m", "devid", "device", "provision", "--batch", str(batch),
            "--token", device_pki.token, "--ca", "issuing", "--workers", "2"]  # fmt: skip
    command = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while sum(per_device_counts(pki_home).values()) < 4 and time.monotonic() < deadline:
        assert command.poll() is None, "the batch ended before it could be killed"
        time.sleep(0.05)
    command.kill()
    command.wait()
    deadline = time.monotonic() + 20
    while _marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked_processes(marker) == [], "workers outlived the killed command"
    done = sum(per_device_counts(pki_home).values())
    assert done < len(ids)
    time.sleep(1)
    assert sum(per_device_counts(pki_home).values()) == done  # nothing issued after
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert per_device_counts(pki_home) == dict.fromkeys(ids, 1)


def test_sigterm_stops_a_batch_with_workers_after_the_chunks_in_hand(
    device_pki: DevicePki, pki_home: Path
) -> None:
    # systemctl stop of a provisioning job: the command must stop (it waited for every
    # queued chunk, and ignored further signals meanwhile), the step in progress undone
    ids = [unique("term") for _ in range(400)]
    batch = pki_home / "batch.csv"
    batch.write_text("\n".join(ids) + "\n")
    args = [sys.executable, "-m", "devid", "device", "provision", "--batch", str(batch),
            "--token", device_pki.token, "--ca", "issuing", "--workers", "2"]  # fmt: skip
    quiet = {"stdout": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
    command = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True, **quiet)
    deadline = time.monotonic() + 60
    while sum(per_device_counts(pki_home).values()) < 4 and time.monotonic() < deadline:
        assert command.poll() is None, "the batch ended before it could be stopped"
        time.sleep(0.05)
    command.send_signal(signal.SIGTERM)
    at_signal = sum(per_device_counts(pki_home).values())
    _, err = command.communicate(timeout=120)
    assert command.returncode == 143
    assert err == "devid: error: terminated (SIGTERM); the step in progress was undone\n"
    done = sum(per_device_counts(pki_home).values())
    assert done <= at_signal + 2 * 64 < len(ids)  # at most the chunk each worker had in hand
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert per_device_counts(pki_home) == dict.fromkeys(ids, 1)
