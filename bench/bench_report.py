"""Numbers and words: rates from timings, the machine description, the JSON and Markdown report."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin (written by bench/issue.py --markdown) -->"
END = "<!-- bench:end -->"


@dataclass
class Measurement:
    """One benchmark: *count* items per repetition, the seconds each repetition took."""

    key: str
    title: str
    unit: str  # "certs/s" or "devices/s"
    count: int
    what: str
    seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.count / s for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def as_dict(self) -> dict[str, Any]:
        rates = self.rates
        return {
            "title": self.title,
            "unit": self.unit,
            "count": self.count,
            "repetitions": len(rates),
            "what": self.what,
            "seconds": [round(s, 6) for s in self.seconds],
            "rates": [round(r, 2) for r in rates],
            "median": round(self.median, 2),
            "min": round(min(rates), 2),
            "max": round(max(rates), 2),
            "spread_pct": round(100 * (max(rates) - min(rates)) / self.median, 1),
        }


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    needed: float | None  # None: reported, no target set
    basis: str

    @property
    def met(self) -> bool | None:
        return None if self.needed is None else self.value >= self.needed

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "needed": self.needed,
            "met": self.met,
            "basis": self.basis,
        }


def _first_line(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except OSError:
        return "not found"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def _cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else platform.processor()


def _memory() -> str:
    text = Path("/proc/meminfo").read_text()
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
    return f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else "?"


def _deb(package: str) -> str:
    return _first_line(["dpkg-query", "-W", "-f", "${Version}", package]) or "?"


def machine() -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": metadata.version("cryptography"),
        "cryptography_openssl": backend.openssl_version_text(),
        "python_pkcs11": metadata.version("python-pkcs11"),
        "openssl_cli": _first_line(["openssl", "version"]),
        "softhsm": _first_line(["softhsm2-util", "--version"]),
        "opensc": _deb("opensc"),
        "libp11_engine": _deb("libengine-pkcs11-openssl"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def report(
    info: dict[str, Any], params: dict[str, Any], results: list[Measurement], targets: list[Target]
) -> dict[str, Any]:
    return {
        "machine": info,
        "parameters": params,
        "results": {m.key: m.as_dict() for m in results},
        "targets": [t.as_dict() for t in targets],
    }


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def markdown(doc: dict[str, Any]) -> str:
    info, params = doc["machine"], doc["parameters"]
    lines = [
        f"### Run of {info['date_utc']} UTC" + (" (quick mode)" if params.get("quick") else ""),
        "",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}",
        f"- Python {info['python']}, cryptography {info['cryptography']} "
        f"({info['cryptography_openssl']}), python-pkcs11 {info['python_pkcs11']}",
        f"- {info['openssl_cli']}; SoftHSM {info['softhsm']}; OpenSC {info['opensc']}; "
        f"libp11 engine {info['libp11_engine']}",
        f"- Load average at start {info['loadavg_start']}, at end {info.get('loadavg_end')}",
        f"- Parameters: {json.dumps(params, sort_keys=True)}",
        "",
        "| benchmark | per rep | reps | median | min | max | spread |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"].values():
        lines.append(
            f"| {r['title']} | {r['count']} | {r['repetitions']} | "
            f"**{_fmt(r['median'])}** {r['unit']} | {_fmt(r['min'])} | {_fmt(r['max'])} | "
            f"{r['spread_pct']}% |"
        )
    breakdown = doc.get("cpu_us_per_cert") or {}
    if breakdown:
        title = "CPU per certificate, devid issuance step by step, software CA"
        lines += ["", f"{title} (µs, lowest of the reps):", "", "| step | µs |", "|---|---:|"]
        lines += [f"| {step} | {us} |" for step, us in breakdown.items()]
    lines += ["", "| target | measured | needed | met | basis |", "|---|---:|---:|---|---|"]
    for t in doc["targets"]:
        met = {True: "yes", False: "**no**", None: "(no target)"}[t["met"]]
        needed = "—" if t["needed"] is None else f"≥ {t['needed']}x"
        lines.append(f"| {t['name']} | {t['value']:.2f}x | {needed} | {met} | {t['basis']} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    """Put *text* between the markers in *path*, keeping what is written around them."""
    block = f"{BEGIN}\n{text}{END}\n"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + block + tail.lstrip("\n")
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block
    path.write_text(new)
