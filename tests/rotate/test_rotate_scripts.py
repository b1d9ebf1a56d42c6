"""The cron job (scripts/rotate-cron.sh) and the systemd service/timer pair."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, DevicePki
from rotate_support import provision_at

SCRIPT = ROOT / "scripts" / "rotate-cron.sh"


def _run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "DEVID": str(Path(sys.executable).parent / "devid"),
        "DEVID_HOME": str(home),
        "ROTATE_BEFORE": "30d",
        "ROTATE_LOG": "stderr",
        **env,
    }
    return subprocess.run(
        ["sh", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=120
    )


def test_the_cron_job_runs_rotate_and_logs_what_it_did(
    device_pki: DevicePki, pki_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    assert subprocess.run(["sh", "-n", str(SCRIPT)], check=False).returncode == 0

    planned = _run(pki_home, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert f"devid-rotate: would renew {device.serial}" in planned.stderr

    done = _run(pki_home, "--exec", "true", ROTATE_JITTER="0s")
    assert done.returncode == 0, done.stderr
    assert f"devid-rotate: renewed {device.serial} -> " in done.stderr
    assert (pki_home / "rotate.lock").exists()


def test_an_overlapping_run_does_not_start(device_pki: DevicePki, pki_home: Path) -> None:
    with (pki_home / "rotate.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = _run(pki_home, "--dry-run")
    assert result.returncode == 0
    assert result.stderr == (
        f"devid-rotate: another rotation holds {pki_home / 'rotate.lock'}; not starting\n"
    )


def test_a_failing_rotation_passes_its_exit_code_on(device_pki: DevicePki, pki_home: Path) -> None:
    result = _run(pki_home, "--dry-run", DEVID_STORE="nosuch://inventory")
    assert result.returncode == 2
    assert "unsupported store URL scheme" in result.stderr
    assert result.stderr.endswith("devid-rotate: devid rotate failed with exit code 2\n")


def test_under_crons_path_the_script_finds_devid_or_says_how(
    device_pki: DevicePki, pki_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = provision_at(monkeypatch, device_pki, 1, days_ago=340)[0]
    home = tmp_path / "home"
    home.mkdir()
    passed_on = {k: v for k, v in os.environ.items() if k in ("SOFTHSM2_CONF", "DEVID_PKCS11_PIN")}
    cron = {  # what cron gives a job: no DEVID, PATH=/usr/bin:/bin
        **passed_on,
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "DEVID_HOME": str(pki_home),
        "ROTATE_BEFORE": "30d",
        "ROTATE_LOG": "stderr",
    }

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(SCRIPT), "--dry-run"],
            capture_output=True, text=True, env=cron, timeout=120, check=False,
        )  # fmt: skip

    if not Path("/usr/local/bin/devid").exists():
        missing = run()
        assert missing.returncode == 3
        assert missing.stderr == (
            "devid-rotate: cannot find the devid command (devid); set DEVID=/path/to/devid\n"
        )
    local_bin = home / ".local" / "bin"  # where `pip install --user` puts it
    local_bin.mkdir(parents=True)
    (local_bin / "devid").symlink_to(Path(sys.executable).parent / "devid")
    found = run()
    assert found.returncode == 0, found.stderr
    assert f"devid-rotate: would renew {device.serial}" in found.stderr


def test_systemd_accepts_the_service_and_timer(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd", pytrace=False)
    devid_bin = Path(sys.executable).parent / "devid"
    for name in ("devid-rotate.service", "devid-rotate.timer"):
        text = (ROOT / "scripts" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/devid", str(devid_bin)))
    units = [str(tmp_path / "devid-rotate.service"), str(tmp_path / "devid-rotate.timer")]
    done = subprocess.run(
        [tool, "verify", "--man=no", *units], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
