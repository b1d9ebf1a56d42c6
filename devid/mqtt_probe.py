"""The awscrt side of ``devid device connect``: connect, subscribe, publish, receive.

This module runs in a child process started with ``spawn`` (see :mod:`devid.mqtt` for why),
which never loads python-pkcs11: awscrt's ``Pkcs11Lib`` initialises the module itself and its
event-loop threads are the only callers. It reports what happened as a :class:`ProbeResult`
(error names as awscrt gives them) and never raises across the process boundary; the parent
decides what each failure means.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

#: payload prefix; a random nonce follows so only this run's message counts as the echo
PAYLOAD_PREFIX = b"devid connect check "


@dataclass(frozen=True)
class TokenKeySource:
    """Where awscrt finds the key: module, token label, key label (CKA_LABEL), PIN."""

    module_path: str
    token_label: str
    key_label: str
    pin: str = field(repr=False)


@dataclass(frozen=True)
class ProbeRequest:
    """One connectivity check; *token* for a token key, *key_pem* for a software key."""

    host: str
    port: int
    client_id: str
    topic: str
    cert_pem: bytes
    timeout: float
    ca_pem: bytes | None = None
    token: TokenKeySource | None = None
    key_pem: bytes | None = field(default=None, repr=False)
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    """What happened: the *stage* reached and, on failure, awscrt's error name and text."""

    ok: bool
    stage: str
    error: str = ""
    message: str = ""
    connect_ms: float = 0.0
    round_trip_ms: float = 0.0


class _Failed(Exception):
    def __init__(self, stage: str, error: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.error, self.message = stage, error, message


def _tls_context(request: ProbeRequest) -> Any:
    from awscrt import io

    if request.token is not None:
        source = request.token
        lib = io.Pkcs11Lib(file=source.module_path)  # DEFAULT: tolerates an initialised module
        options = io.TlsContextOptions.create_client_with_mtls_pkcs11(
            pkcs11_lib=lib,
            user_pin=source.pin,
            token_label=source.token_label,
            private_key_label=source.key_label,
            cert_file_contents=request.cert_pem,
        )
    else:
        options = io.TlsContextOptions.create_client_with_mtls(request.cert_pem, request.key_pem)
    if request.ca_pem is not None:
        options.override_default_trust_store(request.ca_pem)
    if request.alpn:
        options.alpn_list = list(request.alpn)
    return io.ClientTlsContext(options)


def _describe(exc: BaseException) -> tuple[str, str]:
    """awscrt's error name and text, or the exception's class name and text."""
    name = getattr(exc, "name", None)
    if name:
        return str(name), str(getattr(exc, "message", "") or name)
    if exc.args and type(exc.args[0]).__name__ == "ConnectReturnCode":
        return f"CONNACK_{exc.args[0].name}", f"the broker answered CONNACK {exc.args[0].name}"
    if isinstance(exc, TimeoutError):
        return "TIMEOUT", "no answer in time"
    return type(exc).__name__, str(exc)


def _wait(stage: str, future: Any, deadline: float) -> Any:
    try:
        return future.result(max(0.1, deadline - time.monotonic()))
    except Exception as exc:
        raise _Failed(stage, *_describe(exc)) from exc


def _connection(request: ProbeRequest, deadline: float) -> Any:
    from awscrt import io, mqtt

    try:
        tls = _tls_context(request)
    except Exception as exc:
        raise _Failed("tls-context", *_describe(exc)) from exc
    sockets = io.SocketOptions()
    sockets.connect_timeout_ms = max(100, int((deadline - time.monotonic()) * 1000))
    return mqtt.Connection(
        mqtt.Client(None, tls),
        host_name=request.host,
        port=request.port,
        client_id=request.client_id,
        clean_session=True,
        keep_alive_secs=60,
        socket_options=sockets,
    )


def _echo(request: ProbeRequest, connection: Any, deadline: float) -> float:
    """Subscribe, publish one message, wait for it to come back; the round trip in ms."""
    from awscrt import mqtt

    expected = PAYLOAD_PREFIX + secrets.token_hex(8).encode()
    received = threading.Event()

    def on_message(topic: str, payload: bytes, **_: Any) -> None:  # awscrt passes keywords
        if bytes(payload) == expected:
            received.set()

    future, _ = connection.subscribe(request.topic, mqtt.QoS.AT_LEAST_ONCE, callback=on_message)
    suback = _wait("subscribe", future, deadline)
    if suback.get("qos") is None:
        raise _Failed("subscribe", "SUBACK_FAILURE", f"the broker refused {request.topic!r}")
    start = time.monotonic()
    future, _ = connection.publish(request.topic, expected, mqtt.QoS.AT_LEAST_ONCE)
    _wait("publish", future, deadline)
    if not received.wait(max(0.1, deadline - time.monotonic())):
        raise _Failed("receive", "TIMEOUT", "the message did not come back in time")
    return (time.monotonic() - start) * 1000


def run_probe(request: ProbeRequest) -> ProbeResult:
    """Connect, echo one message, disconnect; every failure becomes a result."""
    deadline = time.monotonic() + request.timeout
    connection = None
    try:
        connection = _connection(request, deadline)
        start = time.monotonic()
        _wait("connect", connection.connect(), deadline)
        connect_ms = (time.monotonic() - start) * 1000
        round_trip_ms = _echo(request, connection, deadline)
    except _Failed as failed:
        return ProbeResult(False, failed.stage, failed.error, failed.message)
    except Exception as exc:
        return ProbeResult(False, "internal", *_describe(exc))
    finally:
        if connection is not None:
            _disconnect(connection)
    return ProbeResult(True, "done", connect_ms=connect_ms, round_trip_ms=round_trip_ms)


def _disconnect(connection: Any) -> None:
    with contextlib.suppress(Exception):  # best effort: the check is over either way
        connection.disconnect().result(2)


def child_main(request: ProbeRequest, channel: Connection) -> None:
    """Entry point of the child process: run the probe and send the result back."""
    try:
        channel.send(run_probe(request))
    finally:
        channel.close()
