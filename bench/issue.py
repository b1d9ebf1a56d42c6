#!/usr/bin/env python3
"""Benchmark devid's batch issuance and device provisioning against bare loops and openssl.

One run measures, in a private SoftHSM/DEVID_HOME under a temporary directory:

* issuance, certs/s, for a software P-256 CA and a P-256 CA on a SoftHSM token:
  devid ``issue_many`` (1 process, and N spawned processes each with its own token session),
  a bare ``CertificateBuilder.sign`` loop with the same key and extensions (with and without
  the CSR signature check), and one ``openssl x509 -req`` process per certificate;
* provisioning, devices/s: ``devid.provision.provision_batch`` (key on the token, CSR signed
  there, issue, record, files, certificate object on the token) with 1 and N workers, against
  bench/provision_baseline.sh doing the same with pkcs11-tool and openssl.

Repetitions are interleaved (the order rotates each time) so slow spells of a shared machine
hit every variant alike; the report gives median, min and max per variant.

Usage: .venv/bin/python bench/issue.py [--quick] [--json PATH] [--markdown bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import bench_env as env  # noqa: E402
import bench_loops as loops  # noqa: E402
from bench_report import Measurement, Target, machine, markdown, report, write_markdown  # noqa: E402

QUICK = {
    "count": 20,
    "openssl_count": 5,
    "openssl_token_count": 3,
    "provision_count": 3,
    "reps": 2,
    "provision_reps": 1,
}
Job = Callable[[int], float]  # repetition number -> seconds of the timed part


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=1000, help="certificates per repetition")
    p.add_argument("--openssl-count", type=int, default=100, help="openssl x509 runs per rep")
    p.add_argument(
        "--openssl-token-count",
        type=int,
        default=30,
        help="openssl x509 runs per rep with the CA key on the token (engine)",
    )
    p.add_argument(
        "--provision-count",
        type=int,
        default=60,
        help="devices per provisioning rep (devid and the shell script alike: "
        "SoftHSM slows down as a token fills, so both get tokens as full)",
    )
    p.add_argument("--reps", type=int, default=5, help="repetitions of every issuance variant")
    p.add_argument("--provision-reps", type=int, default=3, help="repetitions of provisioning")
    p.add_argument("--workers", type=int, default=2, help="processes for the parallel variants")
    p.add_argument("--only", choices=["issue", "provision"], help="run one half only")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--markdown", type=Path, help="write the report into this Markdown file")
    p.add_argument("--profile", type=Path, help="write a cProfile of one devid batch here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    sizes = (args.count, args.openssl_count, args.openssl_token_count, args.provision_count)
    if min(*sizes, args.workers, args.reps, args.provision_reps) < 1:
        p.error("counts, repetitions and workers must be at least 1")
    return args


def run_interleaved(jobs: list[tuple[Measurement, Job]], reps: int) -> None:
    """Each repetition runs every job once; the starting job rotates from one rep to the next."""
    for rep in range(reps):
        shift = rep % len(jobs)
        for measurement, job in jobs[shift:] + jobs[:shift]:
            gc.collect()
            measurement.seconds.append(job(rep))
            print(
                f"  rep {rep + 1}/{reps} {measurement.key}: {measurement.rates[-1]:,.1f} "
                f"{measurement.unit}",
                file=sys.stderr,
                flush=True,
            )


class Bench:
    """The private world and the jobs timed in it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = env.make_root()
        env.isolate(self.root)
        self.soft, self.token = env.make_cas(self.root)
        self.stores = self.root / "stores"
        self.stores.mkdir()
        self.breakdown: dict[str, float] = {}

    def store(self, key: str, rep: int, ca_name: str) -> str:
        return loops.prepare_store(self.stores / f"{key}-{rep}.sqlite", ca_name)

    # --- issuance -------------------------------------------------------------------------

    def issuance(self) -> list[Measurement]:
        from devid.pki.ca import load_ca

        a = self.args
        csrs = env.device_csrs(a.count)
        ders = loops.der_list(csrs)
        files = list(
            env.write_csr_files(
                csrs[: max(a.openssl_count, a.openssl_token_count)], self.root / "csr"
            )
        )
        jobs: list[tuple[Measurement, Job]] = []
        group = None
        if a.workers > 1:
            from bench_workers import WorkerGroup

            group = WorkerGroup(a.workers, [self.soft.name, self.token.name])
        try:
            if group is not None:
                jobs += self.calibration_jobs(group)
            for ca in (self.soft, self.token):
                key = load_ca(ca.name).signing_key()
                self.check_same_certificates(ca, key, csrs[0])
                jobs += self.issue_jobs(ca, key, csrs, ders, files, group)
            for _, job in jobs:  # warm-up, untimed: imports, caches, first token calls
                job(-1)
            for m, _ in jobs:
                m.seconds.clear()
            run_interleaved(jobs, a.reps)
            self.breakdown = self.cpu_breakdown(csrs)
            if a.profile:
                self.profile(csrs, a.profile)
        finally:
            if group is not None:
                group.__exit__()
        return [m for m, _ in jobs]

    def calibration_jobs(self, group: Any) -> list[tuple[Measurement, Job]]:
        """Plain ECDSA signing in 1 and N worker processes: the parallelism on offer."""
        count = 20 * self.args.count
        jobs: list[tuple[Measurement, Job]] = []
        for processes in sorted({1, self.args.workers}):
            title = f"calibration: ECDSA P-256 sign, {processes} process"
            title += "es" if processes > 1 else ""
            what = "software key, no certificate: how much CPU the processes get"
            m = Measurement(f"calibration.p{processes}", title, "signs/s", count, what)
            jobs.append((m, partial(_spin, group, count, processes)))
        return jobs

    def issue_jobs(
        self, ca: env.Ca, key: Any, csrs: Any, ders: Any, files: Any, group: Any
    ) -> list[tuple[Measurement, Job]]:
        from devid.pki.ca import load_ca

        a, where = self.args, "token" if ca is self.token else "soft"
        label = "CA key on the token" if ca is self.token else "software CA key"
        cert = load_ca(ca.name).certificate
        n = a.count
        out: list[tuple[Measurement, Job]] = []

        def measure(key_: str, title: str, count: int, what: str, job: Job) -> None:
            out.append(
                (Measurement(f"{where}.{key_}", f"{title} ({label})", "certs/s", count, what), job)
            )

        measure(
            "bare",
            "bare CertificateBuilder.sign loop",
            n,
            "build + sign, same extensions, no CSR check, nothing recorded",
            lambda r: loops.bare_issue(cert, key, csrs, check_csr=False),
        )
        if ca is self.soft:
            measure(
                "bare_check",
                "bare loop + CSR signature check",
                n,
                "as the bare loop, plus csr.is_signature_valid",
                lambda r: loops.bare_issue(cert, key, csrs, check_csr=True),
            )
        measure(
            "devid",
            "devid issue_many, 1 process",
            n,
            "checks, plans, signs, records; one inventory transaction",
            lambda r: loops.devid_issue(
                ca.name, key, csrs, self.store(f"{where}-devid", r, ca.name)
            ),
        )
        if group is not None:
            measure(
                f"devid_w{a.workers}",
                f"devid issue_many, {a.workers} processes",
                n,
                "each spawned process issues a share with its own session and connection",
                lambda r: group.issue(ca.name, self.store(f"{where}-w", r, ca.name), ders),
            )
        count = a.openssl_token_count if ca is self.token else a.openssl_count
        measure(
            "openssl",
            "openssl x509 -req per certificate",
            count,
            "one openssl process per certificate (it checks the CSR too)",
            self.openssl_job(ca, files[:count], where),
        )
        return out

    def openssl_job(self, ca: env.Ca, files: Any, where: str) -> Job:
        """The openssl loop; for the token CA through the libp11 engine (PIN in the URI)."""
        commands = loops.openssl_commands(
            files, ca.cert_path, ca.key_ref, self.root / f"openssl-{where}", engine=ca is self.token
        )
        run_env = None
        if ca is self.token:
            pin_uri = f"{ca.key_ref};pin-value={env.PIN}"
            commands = [[pin_uri if x == ca.key_ref else x for x in c] for c in commands]
            run_env = loops.with_env(OPENSSL_CONF=str(env.engine_config(self.root)))
        return lambda r: loops.openssl_issue(commands, run_env)

    def cpu_breakdown(self, csrs: Any) -> dict[str, float]:
        """Per-step CPU cost of devid's issuance (software CA): the lowest of --reps runs."""
        from devid.pki.ca import load_ca

        key = load_ca(self.soft.name).signing_key()
        runs = [
            loops.cpu_breakdown(
                self.soft.name, key, csrs, self.store("breakdown", r, self.soft.name)
            )
            for r in range(self.args.reps)
        ]
        return {step: round(min(run[step] for run in runs), 1) for step in runs[0]}

    def profile(self, csrs: Any, path: Path) -> None:
        """cProfile of one devid batch (software CA, 1 process), as text in *path*."""
        import cProfile
        import io
        import pstats

        from devid.pki.ca import load_ca

        key = load_ca(self.soft.name).signing_key()
        url = self.store("profile", 0, self.soft.name)
        profiler = cProfile.Profile()
        profiler.runcall(loops.devid_certificates, self.soft.name, key, csrs, url)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
        path.write_text(out.getvalue())

    def check_same_certificates(self, ca: env.Ca, key: Any, csr: Any) -> None:
        """The bare loop and devid must produce the same extensions, or the race is unfair."""
        from cryptography import x509

        from devid.pki.ca import load_ca

        bare = loops.bare_certificates(load_ca(ca.name).certificate, key, [csr])[0]
        url = self.store(f"check-{ca.name}", 0, ca.name)
        issued = loops.devid_certificates(ca.name, key, [csr], url)[0].certificate

        def shape(cert: x509.Certificate) -> list[tuple[str, bool, str]]:
            return sorted(
                (e.oid.dotted_string, e.critical, type(e.value).__name__) for e in cert.extensions
            )

        san = x509.SubjectAlternativeName
        same_sans = (
            bare.extensions.get_extension_for_class(san).value
            == issued.extensions.get_extension_for_class(san).value
        )
        if shape(bare) != shape(issued) or not same_sans or bare.subject != issued.subject:
            raise AssertionError(f"bare {shape(bare)} != devid {shape(issued)}")

    # --- provisioning ---------------------------------------------------------------------

    def provisioning(self) -> list[Measurement]:
        a = self.args
        jobs: list[tuple[Measurement, Job]] = []
        for workers in sorted({1, a.workers}):
            m = Measurement(
                f"provision.devid_w{workers}",
                f"devid provision_batch, {workers} worker{'s' if workers > 1 else ''}",
                "devices/s",
                a.provision_count,
                "token keygen, CSR on token, issue (software CA), record, files, cert on token",
            )
            jobs.append((m, self.provision_job(workers)))
        m = Measurement(
            "provision.shell",
            "shell script: pkcs11-tool + openssl",
            "devices/s",
            a.provision_count,
            "bench/provision_baseline.sh, one device after another",
        )
        jobs.append((m, self.shell_job))
        run_interleaved(jobs, a.provision_reps)
        return [m for m, _ in jobs]

    def provision_job(self, workers: int) -> Job:
        def job(rep: int) -> float:
            from devid.provision import provision_batch
            from devid.store import open_store

            label = f"bench-prov-w{workers}-{rep}"
            token = env.new_token(label)
            url = self.store(f"prov-w{workers}", rep, self.soft.name)
            ids = [f"w{workers}r{rep}-{i:05d}" for i in range(self.args.provision_count)]
            start = time.perf_counter()
            store = open_store(url)
            try:
                results = provision_batch(
                    ids,
                    token=token,
                    ca=self.soft.name,
                    store=store,
                    out_dir=self.root / "devices" / label,
                    workers=workers,
                )
            finally:
                store.close()
            elapsed = time.perf_counter() - start
            assert len(results) == len(ids) and not any(r.skipped for r in results)
            env.delete_token(label)
            return elapsed

        return job

    def shell_job(self, rep: int) -> float:
        label = f"bench-shell-{rep}"
        env.new_token(label)
        out = self.root / "shell" / label
        command = [
            "bash",
            str(HERE / "provision_baseline.sh"),
            "--token",
            label,
            "--ca-cert",
            str(self.soft.cert_path),
            "--ca-key",
            self.soft.key_ref,
            "--out",
            str(out),
            "--count",
            str(self.args.provision_count),
            "--prefix",
            f"s{rep}",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"provision_baseline.sh failed: {done.stderr.strip()}")
        assert len(list(out.glob("*/cert.pem"))) == self.args.provision_count
        env.delete_token(label)
        return elapsed

    def close(self) -> None:
        if self.args.keep:
            print(f"kept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def _spin(group: Any, count: int, processes: int, _rep: int) -> float:
    return float(group.spin(count, processes))


def targets(results: dict[str, Measurement], workers: int) -> list[Target]:
    out: list[Target] = []

    def med(key: str) -> float | None:
        return results[key].median if key in results else None

    for where in ("soft", "token"):
        bare, one, many = (
            med(f"{where}.bare"),
            med(f"{where}.devid"),
            med(f"{where}.devid_w{workers}"),
        )
        ossl = med(f"{where}.openssl")
        if bare is None or one is None:
            continue
        best = max(one, many or 0.0)
        how = f"best of devid 1/{workers} processes" if many else "devid, 1 process"
        who = "token" if where == "token" else "software"
        out.append(
            Target(
                f"{who} CA: devid batch vs bare loop",
                best / bare,
                0.85,
                f"{how} vs bare loop (1 process)",
            )
        )
        out.append(
            Target(
                f"{who} CA: devid 1 process vs bare loop (context)",
                one / bare,
                0.85,
                "same number of processes on both sides",
            )
        )
        if ossl:
            out.append(
                Target(
                    f"{who} CA: devid batch vs openssl loop",
                    best / ossl,
                    50.0,
                    f"{how} vs openssl x509 -req per certificate",
                )
            )
    shell = med("provision.shell")
    devid = [m.median for k, m in results.items() if k.startswith("provision.devid")]
    if shell and devid:
        out.append(
            Target(
                "provisioning: devid vs shell script",
                max(devid) / shell,
                None,
                "best devid provision_batch vs provision_baseline.sh",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        env.check_tools()
    except env.MissingTool as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 3
    info = machine()
    bench = Bench(args)
    try:
        measured: list[Measurement] = []
        if args.only in (None, "issue"):
            measured += bench.issuance()
        if args.only in (None, "provision"):
            measured += bench.provisioning()
    finally:
        bench.close()
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    params = {
        k: v for k, v in vars(args).items() if k not in ("json", "markdown", "keep", "profile")
    }
    doc = report(info, params, measured, targets({m.key: m for m in measured}, args.workers))
    doc["cpu_us_per_cert"] = bench.breakdown
    text = markdown(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.markdown:
        write_markdown(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
