"""An MQTT-over-mTLS connectivity check with the device key on its token (awscrt).

``devid device connect`` connects to a broker (AWS IoT Core or any MQTT 3.1.1 broker) with the
device certificate and its key, subscribes to a test topic, publishes one message, waits for
it to come back and reports the round-trip time. Token keys go through awscrt's PKCS#11 TLS,
which offers TLS 1.2 only and RSA/EC keys only; Ed25519 keys are refused up front.

Why a child process. awscrt signs from its own event-loop threads, which no Python lock can
serialise with this process's python-pkcs11 calls; python-pkcs11 initialises the module
without locking flags, so SoftHSM runs without its own locks (DESIGN.md), and awscrt's
session close would also log out devid's cached session. So the awscrt side
(:mod:`devid.mqtt_probe`) runs in a ``spawn``-ed child that never loads python-pkcs11: there
awscrt initialises the module itself and is its only caller, and a hung handshake is ended by
ending the child. This process only checks the key and certificate beforehand, and makes
one plain TLS handshake (:mod:`devid.brokercheck`) to tell an unreachable broker or an
untrusted broker certificate from a refused device certificate at once.

Exit codes: 2 for bad input (Ed25519 key, key not matching the certificate, unreadable
files); 3 when the broker cannot be reached or does not answer in time; 1 when it was reached
but refused: the TLS handshake (device certificate revoked, expired, from an unknown CA, or a
broker certificate this side does not trust), the MQTT CONNECT, or the echo.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import hsm
from devid.brokercheck import preflight_broker
from devid.errors import BadInput, CheckFailed, EnvironmentProblem
from devid.fsutil import read_input
from devid.keys import KeyType, PrivateFormat, PrivateKey, describe, private_key_bytes
from devid.mqtt_probe import ProbeRequest, ProbeResult, TokenKeySource, child_main
from devid.pki.certs import load_certificates
from hsm.module import resolve_module_path
from hsm.pin import resolve_pin

ED25519_REFUSED = "Ed25519 keys are not supported by awscrt's PKCS#11 TLS; use ec-p256 or rsa-2048"
DEFAULT_PORT = 8883
#: AWS IoT Core takes MQTT with client certificates on port 443 only with this ALPN name
AWS_IOT_ALPN_443 = "x-amzn-mqtt-ca"
#: time allowed for the child to start (spawn + importing awscrt) beyond --timeout
_STARTUP_ALLOWANCE = 20.0
_ENDPOINT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+))(?::(?P<port>\d+))?")
_TOPIC_UNSAFE = re.compile(r"[+#/\x00]")
#: MQTT strings carry a two-byte length (MQTT 3.1.1 section 1.5.3)
MAX_TOPIC_BYTES = 65535


@dataclass(frozen=True)
class Endpoint:
    """Where the broker listens: ``HOST[:PORT]`` or ``[IPv6]:PORT``; the port defaults to 8883."""

    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        match = _ENDPOINT.fullmatch(text.strip())
        port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
        if match is None or not 0 < port < 65536:
            raise BadInput(f"bad endpoint {text!r}; use HOST:PORT, e.g. broker.example.com:8883")
        return cls(match["v6"] or match["host"], port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ConnectReport:
    """A passed check: who connected where, and how long it took."""

    endpoint: str
    client_id: str
    topic: str
    key: str
    key_type: str
    key_on_token: bool
    certificate_subject: str
    certificate_not_after: str
    connect_ms: float
    round_trip_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}


def load_chain(path: Path, *, what: str) -> list[x509.Certificate]:
    """The certificates in a PEM file (several allowed) or a DER file."""
    return load_certificates(read_input(path, what=what), where=f"{what} {path}")


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _check_key(key: PrivateKey, leaf: x509.Certificate, cert_path: Path) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise BadInput(f"the key does not match the certificate {cert_path}")


def token_source(key: hsm.TokenPrivateKey) -> TokenKeySource:
    """What awscrt needs to find *key*: it selects the key by its label alone."""
    handle = key.handle
    if not handle.label:
        raise BadInput("awscrt finds token keys by label and this key has none; give it a label")
    same = hsm.list_keys(handle.uri.with_(object_label=handle.label, id=None, type="private"))
    if len(same) > 1:
        raise BadInput(
            f"awscrt finds token keys by label and {len(same)} private keys on token "
            f"{handle.token_label!r} are labelled {handle.label!r}; give this key a unique label"
        )
    return TokenKeySource(
        module_path=resolve_module_path(handle.uri.module_path),
        token_label=handle.token_label,
        key_label=handle.label,
        pin=resolve_pin(handle.uri, token_label=handle.token_label),
    )


def default_client_id(leaf: x509.Certificate) -> str:
    """The certificate's CN (AWS IoT policies often tie the client id to the thing name)."""
    names = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = str(names[0].value) if names else ""
    return value if 0 < len(value) <= 128 else f"devid-check-{secrets.token_hex(4)}"


def check_topic(topic: str) -> str:
    """*topic* if MQTT allows it as a PUBLISH topic name, else exit 2 saying why.

    A topic name is 1 to 65535 bytes of UTF-8 without U+0000 (MQTT 3.1.1 section 1.5.3),
    and the wildcards ``#`` and ``+`` are for subscription filters only (section 4.7.1):
    a broker drops the connection of a client that publishes to one.
    """
    shown = topic if len(topic) <= 80 else topic[:77] + "..."
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput(f"topic {shown!r} is not valid UTF-8") from None
    wildcards = "".join(w for w in "#+" if w in topic)
    if wildcards:
        raise BadInput(
            f"topic {shown!r} contains the wildcard {' and '.join(wildcards)}, which MQTT "
            "allows only in subscriptions; the test topic is published to",
            hint="give a plain topic name such as devid/check/dev1",
        )
    if "\x00" in topic:
        raise BadInput(f"topic {shown!r} contains a NUL character, which MQTT does not allow")
    if not 0 < size <= MAX_TOPIC_BYTES:
        raise BadInput(f"a topic must be 1 to {MAX_TOPIC_BYTES} bytes of UTF-8, not {size}")
    return topic


def default_topic(client_id: str) -> str:
    safe = client_id if not _TOPIC_UNSAFE.search(client_id) else secrets.token_hex(6)
    return f"devid/check/{safe}"


def _key_type(key: PrivateKey) -> str:
    known = KeyType.of(key)
    info = describe(key)
    return known.value if known else f"{info.algorithm}-{info.size}"


def _request(
    endpoint: Endpoint,
    chain: list[x509.Certificate],
    key: PrivateKey,
    *,
    ca_pem: bytes | None,
    client_id: str,
    topic: str | None,
    timeout: float,
) -> ProbeRequest:
    token = isinstance(key, hsm.TokenPrivateKey)
    return ProbeRequest(
        host=endpoint.host,
        port=endpoint.port,
        client_id=client_id,
        topic=topic or default_topic(client_id),
        cert_pem=_pem(chain),
        timeout=timeout,
        ca_pem=ca_pem,
        token=token_source(key) if isinstance(key, hsm.TokenPrivateKey) else None,
        key_pem=None if token else private_key_bytes(key, PrivateFormat.PKCS8),
        alpn=(AWS_IOT_ALPN_443,) if endpoint.port == 443 else (),
    )


def connect_check(
    endpoint: Endpoint,
    *,
    cert_path: Path,
    key: PrivateKey,
    key_reference: str,
    ca_file: Path | None = None,
    client_id: str | None = None,
    topic: str | None = None,
    timeout: float = 30.0,
) -> ConnectReport:
    """Run the check within *timeout* seconds in all; raise a DevidError saying why it failed."""
    if topic is not None:
        check_topic(topic)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raise BadInput(ED25519_REFUSED)
    chain = load_chain(cert_path, what="certificate")
    _check_key(key, chain[0], cert_path)
    ca_pem = _pem(load_chain(ca_file, what="CA file")) if ca_file else None
    client = client_id or default_client_id(chain[0])
    request = _request(
        endpoint, chain, key, ca_pem=ca_pem, client_id=client, topic=topic, timeout=timeout
    )
    started = time.monotonic()
    preflight_broker(endpoint.host, endpoint.port, ca_pem=ca_pem, timeout=timeout)
    remaining = timeout - (time.monotonic() - started)
    result = (
        run_in_child(replace(request, timeout=remaining))
        if remaining > 0
        else ProbeResult(False, "connect", "TIMEOUT", "no answer in time")
    )
    if not result.ok:
        raise failure(result, endpoint, request)
    return ConnectReport(
        endpoint=str(endpoint),
        client_id=client,
        topic=request.topic,
        key=key_reference,
        key_type=_key_type(key),
        key_on_token=request.token is not None,
        certificate_subject=chain[0].subject.rfc4514_string(),
        certificate_not_after=chain[0].not_valid_after_utc.isoformat(),
        connect_ms=round(result.connect_ms, 3),
        round_trip_ms=round(result.round_trip_ms, 3),
    )


def run_in_child(request: ProbeRequest) -> ProbeResult:
    """Run :func:`devid.mqtt_probe.run_probe` in a spawned child; end it if it hangs."""
    if importlib.util.find_spec("awscrt") is None:
        raise EnvironmentProblem("awscrt is not installed: pip install awscrt")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=child_main, args=(request, sender), daemon=True)
    child.start()
    sender.close()
    try:
        if receiver.poll(request.timeout + _STARTUP_ALLOWANCE):
            result = receiver.recv()
            if isinstance(result, ProbeResult):
                return result
        return ProbeResult(False, "connect", "TIMEOUT", "the awscrt worker did not answer")
    except EOFError as exc:
        child.join(5)
        raise EnvironmentProblem(
            f"the awscrt worker ended without an answer (exit code {child.exitcode})"
        ) from exc
    finally:
        receiver.close()
        _end(child)


def _end(child: Any) -> None:
    child.join(5)
    if child.is_alive():
        child.terminate()
        child.join(5)
    if child.is_alive():
        child.kill()
        child.join()


#: awscrt errors that mean the broker was never reached
_UNREACHABLE = (
    "AWS_IO_SOCKET_CONNECTION_REFUSED",
    "AWS_IO_SOCKET_TIMEOUT",
    "AWS_IO_SOCKET_NO_ROUTE_TO_HOST",
    "AWS_IO_SOCKET_NETWORK_DOWN",
    "AWS_IO_SOCKET_INVALID_ADDRESS",
    "AWS_IO_DNS_",
)


def failure(result: ProbeResult, endpoint: Endpoint, request: ProbeRequest) -> Exception:
    """The error a failed probe stands for (see the module docstring for the exit codes)."""
    name, detail = result.error, result.message
    if result.stage == "tls-context":
        return EnvironmentProblem(f"awscrt could not set up TLS with this key: {detail} ({name})")
    if result.stage == "internal":
        return EnvironmentProblem(f"the awscrt worker failed: {name}: {detail}")
    if result.stage == "connect":
        if name == "TIMEOUT":
            return EnvironmentProblem(
                f"no answer from {endpoint} within {request.timeout:g} s",
                hint="check the endpoint and any firewall, or raise --timeout",
            )
        if name.startswith(_UNREACHABLE):
            return EnvironmentProblem(f"cannot reach {endpoint}: {detail}")
        if name.startswith("CONNACK_"):
            return CheckFailed(f"{endpoint} refused the MQTT connection: {detail}")
        return CheckFailed(
            f"{endpoint} refused the TLS handshake ({name}): the broker did not accept the "
            "device certificate (revoked, expired, or not from a CA it trusts)"
        )
    return CheckFailed(
        f"connected to {endpoint}, but the {result.stage} step failed: {detail} ({name})",
        hint=f"does the broker's policy let {request.client_id!r} publish and subscribe to "
        f"{request.topic!r}? (--topic)",
    )
