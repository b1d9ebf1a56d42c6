"""bench/issue.py runs end to end in its tiny mode and writes a well-formed report.

Only the shape of the report is checked (every benchmark present, every rate a positive
number): speed targets are the benchmark's business, never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, require_tool

ISSUANCE = ("bare", "devid", "devid_w2", "openssl")
PROVISIONING = ("provision.devid_w1", "provision.devid_w2", "provision.shell")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    for tool in ("openssl", "pkcs11-tool", "softhsm2-util"):
        require_tool(tool)
    out = tmp_path_factory.mktemp("bench")
    doc_path, md_path = out / "report.json", out / "RESULTS.md"
    md_path.write_text("# Results\n\nHand-written notes stay.\n")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "issue.py"),
            "--quick",
            "--json",
            str(doc_path),
            "--markdown",
            str(md_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(doc_path.read_text()), md_path.read_text()


def test_every_benchmark_has_positive_rates(quick_report: tuple[dict, str]) -> None:
    doc, _ = quick_report
    results = doc["results"]
    expected = [f"{where}.{name}" for where in ("soft", "token") for name in ISSUANCE]
    expected += ["soft.bare_check", "calibration.p1", "calibration.p2", *PROVISIONING]
    assert sorted(results) == sorted(expected)
    for key, result in results.items():
        assert result["repetitions"] >= 1, key
        assert len(result["rates"]) == result["repetitions"] == len(result["seconds"]), key
        assert all(r > 0 for r in result["rates"]), key
        assert result["min"] <= result["median"] <= result["max"], key
        assert result["unit"] in ("certs/s", "devices/s", "signs/s"), key


def test_targets_are_reported_with_their_basis(quick_report: tuple[dict, str]) -> None:
    doc, _ = quick_report
    names = [t["name"] for t in doc["targets"]]
    assert "software CA: devid batch vs bare loop" in names
    assert "token CA: devid batch vs openssl loop" in names
    for target in doc["targets"]:
        assert target["value"] > 0
        assert target["met"] in (True, False, None)
        assert (target["met"] is None) == (target["needed"] is None)
        assert target["basis"]


def test_machine_is_described(quick_report: tuple[dict, str]) -> None:
    doc, _ = quick_report
    machine = doc["machine"]
    for field in (
        "date_utc",
        "cpu",
        "memory",
        "python",
        "cryptography",
        "openssl_cli",
        "softhsm",
        "python_pkcs11",
        "loadavg_start",
        "loadavg_end",
    ):
        assert machine[field], field
    assert machine["nproc"] >= 1
    assert doc["parameters"]["quick"] is True


def test_markdown_keeps_what_was_written_around_the_results(
    quick_report: tuple[dict, str],
) -> None:
    _, text = quick_report
    assert text.startswith("# Results\n\nHand-written notes stay.\n")
    assert text.count("<!-- bench:begin") == 1 and text.count("<!-- bench:end -->") == 1
    assert "| devid issue_many, 1 process (software CA key) |" in text
    assert "| shell script: pkcs11-tool + openssl |" in text


def test_shell_baseline_is_valid_bash() -> None:
    script = Path(ROOT / "bench" / "provision_baseline.sh")
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
