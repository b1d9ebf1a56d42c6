"""Provisioning in several spawned processes, each with its own token session and CA key.

PKCS#11 sessions and logins belong to a process and SoftHSM runs without locks under
python-pkcs11 (DESIGN.md), so workers are processes started with ``spawn``, never threads or
``fork``. Each worker opens the token, the CA key and the inventory once and issues its own
batches; the inventory's UNIQUE constraint keeps serials unique across them. After the first
failure the other workers finish the chunk they are in and take no new one.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from devid.errors import DevidError, EnvironmentProblem
from devid.provision import ProvisionOptions, ProvisionResult, chunks, open_run, provision_ids
from devid.store import open_store
from hsm.errors import HsmError

_worker: dict[str, Any] = {}
_PR_SET_PDEATHSIG = 1


def _init_worker(options: ProvisionOptions, stop: Any, parent: int) -> None:
    _die_with(parent)
    _worker.update(options=options, stop=stop)


def _die_with(parent: int) -> None:
    """End this worker when the provisioning command (*parent*) dies, even by SIGKILL:
    otherwise it would go on issuing certificates nobody waits for, then hang. Linux's
    PR_SET_PDEATHSIG has the kernel send SIGTERM; elsewhere the parent's exit closes the
    pool's pipes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)


def _work(device_ids: list[str]) -> list[ProvisionResult]:
    """Provision a chunk in a worker; after any worker failed, do nothing more."""
    stop = _worker["stop"]
    if stop.is_set():
        return []
    try:
        if "run" not in _worker:
            options: ProvisionOptions = _worker["options"]
            _worker["run"] = open_run(options, open_store(options.store_url))
        return provision_ids(_worker["run"], device_ids, lambda _n: None)
    except DevidError as exc:
        stop.set()
        raise type(exc)(str(exc)) from None  # the hint folded in: survives pickling
    except BaseException:
        stop.set()
        raise


def in_workers(
    options: ProvisionOptions, device_ids: list[str], workers: int, step: Callable[[int], None]
) -> list[ProvisionResult]:
    """Provision *device_ids* in up to *workers* spawned processes, in input order."""
    size = max(1, min(options.batch_size, math.ceil(len(device_ids) / workers)))
    parts = list(chunks(device_ids, size))
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results: list[ProvisionResult] = []
    failure: BaseException | None = None
    with ProcessPoolExecutor(
        min(workers, len(parts)), mp_context=context, initializer=_init_worker,
        initargs=(options, stop, os.getpid()),
    ) as pool:  # fmt: skip
        try:
            for future in as_completed([pool.submit(_work, part) for part in parts]):
                try:
                    part = future.result()
                except (DevidError, HsmError) as exc:
                    failure = failure or exc
                    continue
                except BrokenProcessPool as exc:
                    stop.set()
                    raise EnvironmentProblem(
                        "a provisioning worker process died; run the command again "
                        "(devices already done are skipped)"
                    ) from exc
                results += part
                step(len(part))
        except BaseException:  # Ctrl-C, SIGTERM: workers finish the chunk in hand, then stop
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failure is not None:
        raise failure
    order = {device_id: n for n, device_id in enumerate(device_ids)}
    return sorted(results, key=lambda r: order[r.device_id])
