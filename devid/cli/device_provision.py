"""``devid device provision``: give one device, or a batch file of devices, its identity."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from devid.cli._common import emit, examples, json_option, passphrase_file_option, secret
from devid.cli._pki import days_option, store_from, store_option
from devid.cli.device import device
from devid.errors import BadInput
from devid.fsutil import read_input
from devid.keys import KeyType
from devid.provision import Progress, ProvisionResult, provision_batch

HEADER = "device_id"
#: Batch files list many devices: allow far more than a key or certificate file.
BATCH_LIMIT = 64 << 20


def _jsonl_ids(lines: list[str], where: str) -> list[str]:
    ids = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where} line {number}: not JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise BadInput(f"{where} line {number}: JSON nested too deeply") from exc
        if not isinstance(item, dict) or not isinstance(item.get(HEADER), str):
            raise BadInput(f'{where} line {number}: expected {{"{HEADER}": "..."}}')
        ids.append(item[HEADER])
    return ids


def _csv_ids(text: str, where: str) -> list[str]:
    rows = [
        (number, row)
        for number, row in enumerate(csv.reader(io.StringIO(text)), 1)
        if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
    ]
    column = 0
    if rows and HEADER in [cell.strip().lower() for cell in rows[0][1]]:
        column = [cell.strip().lower() for cell in rows[0][1]].index(HEADER)
        rows = rows[1:]
    ids = []
    for number, row in rows:
        value = row[column].strip() if column < len(row) else ""
        if not value:
            raise BadInput(f"{where} line {number}: no device id in column {column + 1}")
        ids.append(value)
    return ids


def read_device_ids(path: Path) -> list[str]:
    """Device ids from a CSV file (first column, or the ``device_id`` column when a header
    names one; ``#`` lines skipped) or a JSONL file (``{"device_id": ...}`` per line)."""
    try:
        text = read_input(path, what="batch file", limit=BATCH_LIMIT).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not a text file (CSV or JSONL of device ids)") from exc
    if "\x00" in text:
        raise BadInput(f"{path}: not a text file (CSV or JSONL of device ids)")
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    try:
        ids = _jsonl_ids(lines, str(path)) if first.startswith("{") else _csv_ids(text, str(path))
    except csv.Error as exc:
        raise BadInput(f"{path}: malformed CSV ({exc})") from exc
    if not ids:
        raise BadInput(f"{path} lists no device ids")
    return ids


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Progress | None]:
    # Only on a terminal: elsewhere (cron, logs, pipes) click would print the bare label
    # without a newline, in front of whatever comes next on stderr.
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label="provisioning", file=sys.stderr) as bar:
        shown = 0

        def update(done: int, _total: int) -> None:
            nonlocal shown
            bar.update(done - shown)
            shown = done

        yield update


def _line(result: ProvisionResult) -> str:
    state = "already provisioned" if result.skipped else "provisioned"
    return (
        f"{result.device_id}: {state}, serial {result.serial}, "
        f"certificate {result.certificate_path}, key {result.key_reference}"
    )


@device.command()
@click.argument("device_id", required=False)
@click.option(
    "--batch",
    type=click.Path(dir_okay=False, path_type=Path),
    help='CSV (first column or a device_id column) or JSONL ({"device_id": ...}) of ids.',
)
@click.option("--token", required=True, metavar="URI", help="The device token (pkcs11: URI).")
@click.option("--ca", "ca_name", required=True, metavar="NAME", help="The issuing CA.")
@click.option(
    "--key-type",
    type=click.Choice([k.value for k in KeyType]),
    default=KeyType.EC_P256.value,
    show_default=True,
    help="Device key type (AWS IoT takes RSA-2048+ and EC P-256/384/521, not Ed25519).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the device folders (default: DEVID_HOME/devices).",
)
@click.option(
    "--profile", default="device", show_default=True, metavar="NAME|FILE.toml", help="Profile."
)
@days_option("Validity in days (default: the profile's).")
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Processes for --batch (each opens the token itself).",
)
@passphrase_file_option
@store_option
@json_option
@examples(
    """
devid device provision dev-0001 --token 'pkcs11:token=factory' --ca fleet-issuing
devid device provision dev-0002 --token 'pkcs11:token=factory' --ca fleet-issuing \\
    --key-type rsa-2048 --out /srv/devices --json
devid device provision --batch line-7.csv --token 'pkcs11:token=factory' \\
    --ca fleet-issuing --workers 2
"""
)
def provision(
    device_id: str | None,
    batch: Path | None,
    token: str,
    ca_name: str,
    key_type: str,
    out_dir: Path | None,
    profile: str,
    days: int | None,
    workers: int,
    passphrase_file: str | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Give DEVICE_ID (or every device in --batch) a key on the token and a certificate.

    Per device: a non-extractable key labelled device-<id> is generated on the token, a CSR
    (CN=<id>) is signed on the token, the CA issues (SANs urn:devid:<id> and <id> with the
    device profile), and OUT/<id>/cert.pem (the certificate) and chain.pem (the certificate
    and the CA's intermediates) are written and the certificate is stored on the token
    beside the key (same CKA_ID). The inventory records it last.

    Re-running is safe: devices already done are skipped and nothing is issued twice; a key
    left by an interrupted run is reused. A batch shows a progress bar on stderr (on a
    terminal, not with --json). --passphrase-file is for the CA key when it is an encrypted file.
    """
    if (device_id is None) == (batch is None):
        raise BadInput("give either DEVICE_ID or --batch FILE")
    ids = read_device_ids(batch) if batch is not None else [str(device_id)]
    passphrase = secret(
        file=passphrase_file, env="DEVID_PASSPHRASE", prompt=None, what="passphrase"
    )
    with (
        store_from(store_url) as store,
        _progress_bar(len(ids), batch is not None and not as_json) as progress,
    ):
        results = provision_batch(
            ids,
            token=token,
            ca=ca_name,
            key_type=KeyType(key_type),
            out_dir=out_dir,
            store=store,
            profile=profile,
            days=days,
            workers=workers,
            progress=progress,
            ca_passphrase=passphrase,
        )
    if batch is None:
        emit(results[0].as_dict(), as_json=as_json, text=_line(results[0]))
        return
    skipped = sum(r.skipped for r in results)
    summary = (
        f"{len(results)} devices: {len(results) - skipped} provisioned, {skipped} already done"
    )
    emit([r.as_dict() for r in results], as_json=as_json, text=summary)
