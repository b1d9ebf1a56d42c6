"""``devid rotate``: renew the inventory's certificates that are due, in place."""

from __future__ import annotations

import shlex

import click

from devid import rotate as rotation
from devid.cli._common import aws_options, emit, examples, json_option, passphrase_file_option
from devid.cli._pki import days_option, key_loader, store_from, store_option
from devid.durations import parse_duration, parse_instant, parse_threshold
from devid.errors import BadInput, DevidError
from devid.rotate import Outcome, RotationAction, RotationOptions


def _text(action: RotationAction) -> str:
    who = action.device_id or action.path or action.ca
    if action.outcome is Outcome.WOULD_RENEW:
        return f"would renew {action.serial} ({who}), due since {action.renew_at:%Y-%m-%d %H:%M}Z"
    if action.outcome is Outcome.FAILED:
        return f"failed {action.serial} ({who}): {action.reason}"
    if action.outcome is Outcome.SKIPPED:
        return f"skipped {action.serial} ({who}): {action.reason}"
    if action.outcome is Outcome.WOULD_RETIRE_IN_AWS:
        new = action.new_serial
        why = f": {action.reason}" if action.reason else ""
        return f"would retire {action.serial} in AWS IoT, replaced by {new} ({who}){why}"
    if action.outcome is Outcome.RETIRED_IN_AWS:
        new = action.new_serial
        return f"retired {action.serial} in AWS IoT, replaced by {new} ({who}): {action.reason}"
    pending = "not run successfully since its renewal"
    if action.outcome is Outcome.WOULD_RELOAD:
        return f"would run --exec for {action.serial} ({who}): {pending}"
    if action.outcome is Outcome.RELOADED:
        return f"ran --exec for {action.serial} ({who}): {pending}"
    line = f"renewed {action.serial} -> {action.new_serial} ({who})"
    if action.old_key_kept:
        line += f"; new key {action.new_key_ref}, old key kept: {action.old_key_kept}"
    if action.reason:
        line += f"; {action.reason}"
    return line


def _command(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    try:
        parts = tuple(shlex.split(text))
    except ValueError as exc:
        raise BadInput(f"--exec: {exc}") from exc
    if not parts:
        raise BadInput("--exec is empty")
    return parts


@click.command()
@click.option("--ca", "ca_name", metavar="NAME", help="Only certificates this CA issued.")
@click.option(
    "--before",
    required=True,
    metavar="DURATION|PERCENT",
    help="Renew this long before notAfter (30d) or when this share of the lifetime is left (33%).",
)
@click.option("--rekey", is_flag=True, help="Renew with a new token key (<label>-r<N>).")
@click.option("--jitter", metavar="DURATION", help="First sleep a random time up to this (10m).")
@click.option("--dry-run", is_flag=True, help="Report what would be renewed; change nothing.")
@click.option(
    "--exec",
    "exec_text",
    metavar="CMD",
    help="Run CMD (no shell) after each renewal, with DEVID_CERT_PATH, DEVID_SERIAL, ... set.",
)
@click.option("--at", "at_text", metavar="TIME", help="Decide what is due at TIME (ISO, +30d).")
@days_option("Validity of the new certificates (default: the old ones' lifetime).")
@click.option("--iot", is_flag=True, help="Also move each renewed certificate in AWS IoT.")
@click.option("--revoke-old", is_flag=True, help="With --iot: REVOKE the old one (else INACTIVE).")
@aws_options
@passphrase_file_option
@store_option
@json_option
@examples(
    """
devid rotate --before 30d
devid rotate --ca fleet-issuing --before 33% --jitter 10m --exec 'systemctl reload mosquitto'
devid rotate --before 30d --at 2030-01-01 --dry-run --json
devid rotate --before 30d --rekey
devid rotate --ca fleet-issuing --before 30d --iot --revoke-old --region eu-central-1
"""
)
def rotate(
    ca_name: str | None,
    before: str,
    rekey: bool,
    jitter: str | None,
    dry_run: bool,
    exec_text: str | None,
    at_text: str | None,
    days: int | None,
    iot: bool,
    revoke_old: bool,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    passphrase_file: str | None,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Renew the current certificates in the inventory that are due, where they are installed.

    A certificate is due when less than --before is left until its notAfter (30d), or less
    than that share of its lifetime (33%). Each is renewed with its recorded key (a token
    key signs the CSR on the token; a key file is read with --passphrase-file or
    DEVID_PASSPHRASE), or with --rekey with a new token key of the same type labelled
    <label>-r<N>; the old key is kept on the token (reported; delete it later with
    'devid hsm delete'). The new certificate replaces the old file atomically (and a
    device's chain.pem beside it, and the certificate object on the token), the old one
    is recorded as superseded; if installing fails, everything is put back.

    --exec runs after each renewal with DEVID_CERT_PATH, DEVID_SERIAL, DEVID_OLD_SERIAL,
    DEVID_DEVICE_ID, DEVID_KEY_REF, DEVID_CA and DEVID_NOT_AFTER in its environment; its
    output goes to stderr. If it fails (or the run stops before it), the renewal stays and
    is reported (exit 3), and the next run with --exec runs it again for that certificate
    ("reloaded") before renewing anything; a renewal made meanwhile without --exec passes
    the owed reload on to its new certificate. --at changes only which certificates count
    as due; new certificates are always valid from now. A second run right after does
    nothing.

    Exit codes: 0 every due certificate renewed (or none due, or "skipped": another run
    renewed it meanwhile, or with --iot the old certificate waits for a reload); otherwise
    the code of the first failure (1 check failed,
    2 bad input, 3 environment or --exec failed), after the others were still tried; 1 when
    the inventory does not exist or --ca names no CA in it. --json prints the list of
    actions ("renewed", "would-renew", "reloaded", "would-reload", "retired-in-aws",
    "would-retire-in-aws", "skipped", "failed").

    --iot: before a renewed certificate is installed anywhere, it is registered in AWS IoT
    (with its CA when the CA is registered), gets the old one's things and policies and is
    activated; if that fails, the renewal is abandoned and nothing local changes; if the
    local install fails after it, that is taken back in AWS IoT too. After the install the
    old one is set INACTIVE (REVOKED with --revoke-old) — unless a reload command is owed
    for the device's current certificate (--exec failed, or was not given after a failure):
    then the old one stays active until a run's reload succeeds. If retiring fails or waits,
    a later run with --iot does it first ("retired-in-aws"). So a device always has an
    active certificate it can present.
    A certificate that is not ACTIVE in AWS IoT (revoked or deactivated there) is not
    renewed (exit 1). Certificates not registered in AWS IoT are left alone there.
    """
    if revoke_old and not iot:
        raise BadInput("--revoke-old goes with --iot")
    options = RotationOptions(
        threshold=parse_threshold(before),
        ca=ca_name,
        rekey=rekey,
        dry_run=dry_run,
        days=days,
        exec_command=_command(exec_text),
        at=parse_instant(at_text) if at_text else None,
        jitter=parse_duration(jitter) if jitter else None,
    )
    with store_from(store_url, create=False) as store:
        in_aws = None
        if iot and not dry_run:
            from devid.aws import AwsOptions
            from devid.iot_rotate import IotRotation

            aws = AwsOptions(profile, region, endpoint_url)
            in_aws = IotRotation(store, aws, revoke_old=revoke_old, ca=ca_name)
        actions = rotation.rotate(
            store,
            options,
            loader=key_loader(passphrase_file),
            before_install=in_aws.before_install if in_aws else None,
        )
        if in_aws is not None:
            actions = in_aws.finish(actions)
        elif iot:  # a dry run: what the inventory says is still to retire, before the rest
            from devid.iot_rotate import planned_retirements

            actions = planned_retirements(store, ca=ca_name) + actions
    lines = [_text(a) for a in actions] or [f"nothing to renew (before {options.threshold})"]
    emit([a.as_dict() for a in actions], as_json=as_json, text=lines)
    failed = [a for a in actions if a.exit_code]
    if failed:
        error = DevidError(f"{len(failed)} of {len(actions)} certificates: {failed[0].reason}")
        error.exit_code = failed[0].exit_code
        raise error
