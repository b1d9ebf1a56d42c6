"""``devid device``: commands about one device and its identity (connectivity check)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from devid import mqtt
from devid.cli._common import emit, examples, json_option, load_key_ref, passphrase_file_option
from devid.errors import BadInput


@click.group()
def device() -> None:
    """Devices: give a device its identity and check that it works.

    A device's key is usually on its own PKCS#11 token (a pkcs11: URI); a key file works too.
    """


_FILE = click.Path(dir_okay=False, path_type=Path)
#: The longest --timeout: an hour is far beyond any broker round trip.
MAX_TIMEOUT = 3600.0


@device.command()
@click.option("--endpoint", required=True, metavar="HOST:PORT", help="MQTT broker (port 8883).")
@click.option("--cert", "cert_path", required=True, type=_FILE, help="Device certificate (PEM).")
@click.option("--key", "key_ref", required=True, metavar="REF", help="pkcs11: URI or key file.")
@click.option("--ca-file", type=_FILE, help="CA certificates that sign the broker's certificate.")
@click.option("--client-id", help="MQTT client id (default: the certificate's CN).")
@click.option("--topic", help="Test topic (default: devid/check/CLIENT_ID).")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait in all."
)
@passphrase_file_option
@json_option
@examples(
    """
devid device connect --endpoint abc123-ats.iot.eu-west-1.amazonaws.com:8883 \\
    --cert device.pem --key 'pkcs11:token=factory;object=device-key' --ca-file AmazonRootCA1.pem
devid device connect --endpoint broker.local:8883 --cert dev.pem --key dev.key --json
"""
)
def connect(
    endpoint: str,
    cert_path: Path,
    key_ref: str,
    ca_file: Path | None,
    client_id: str | None,
    topic: str | None,
    timeout: float,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Connect to an MQTT broker over mutual TLS, publish one message and receive it back.

    The check a technician runs after provisioning: the device certificate and its key
    (usually on the token, via awscrt's PKCS#11 TLS: TLS 1.2, RSA or EC keys; Ed25519 is
    not supported there) connect, subscribe to a test topic, publish, and report the
    round-trip time. The PIN comes from the URI's pin-source, DEVID_PKCS11_PIN or a prompt.

    Exit codes: 0 echoed; 1 the broker refused (TLS handshake: certificate revoked, expired
    or from an unknown CA; an untrusted broker certificate; MQTT CONNECT or the echo);
    2 bad input (Ed25519 key, key not matching the certificate); 3 broker unreachable or
    no answer within --timeout.
    """
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise BadInput(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    key = load_key_ref(key_ref, passphrase_file)
    report = mqtt.connect_check(
        mqtt.Endpoint.parse(endpoint),
        cert_path=cert_path,
        key=key,
        key_reference=getattr(key, "reference", key_ref),
        ca_file=ca_file,
        client_id=client_id,
        topic=topic,
        timeout=timeout,
    )
    text = (
        f"ok: {report.client_id} connected to {report.endpoint} "
        f"({report.key_type} key {'on the token' if report.key_on_token else 'from a file'}); "
        f"connect {report.connect_ms:.1f} ms, round trip {report.round_trip_ms:.1f} ms"
    )
    emit(report.as_dict(), as_json=as_json, text=text)
