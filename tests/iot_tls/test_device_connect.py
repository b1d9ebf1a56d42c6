"""``devid device connect``: MQTT over mutual TLS with the key on SoftHSM, against mosquitto.

The broker runs on 127.0.0.1 with ``require_certificate true`` and the test CA as its
``cafile``; its log (``-v``) is the independent witness that the device connected under its
certificate's CN and that the message went through it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PIN, Result, run_tool, softhsm_module
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from iot_tls_support import Broker, TestCA, csr_signed_by, free_port, name, start_mosquitto, stop

import hsm
from devid.mqtt import Endpoint

BrokerFactory = Callable[..., Broker]


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def broker_factory(tmp_path: Path, ca: TestCA) -> Iterator[BrokerFactory]:
    started: list[Broker] = []

    def start(*, crl: Path | None = None) -> Broker:
        broker = start_mosquitto(tmp_path, ca, crl=crl)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        stop(broker.process)


def device(ca: TestCA, key: Any, cn: str, **kw: Any) -> Path:
    """A device certificate for token *key*, from a CSR the token signed."""
    return ca.issue(csr_signed_by(key, name(cn)), f"{cn}.pem", **kw)


def connect(devid: Callable[..., Result], broker: Broker, cert: Path, key: Any, ca: TestCA,
            *extra: str) -> Result:  # fmt: skip
    ref = key if isinstance(key, str) else key.reference
    args = ["--endpoint", broker.endpoint, "--cert", cert, "--key", ref, "--ca-file", ca.path]
    return devid("device", "connect", *args, "--timeout", "20", *extra)


def one_line_error(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: ")
    assert "Traceback" not in result.err
    return lines[0]


def openssl_verify(ca: TestCA, cert: Path, *options: str | Path) -> str:
    """What ``openssl verify`` says of *cert* (the reason the broker's OpenSSL refuses it)."""
    args = ["openssl", "verify", "-CAfile", str(ca.path), *map(str, options), str(cert)]
    done = run_tool(*args, check=False)
    assert done.returncode != 0
    return (done.stdout + done.stderr).decode()


def witnessed(broker: Broker, client_id: str, cn: str, topic: str) -> None:
    """The broker's own log shows the connection under the certificate's CN and the echo."""
    log = broker.log_text()
    assert re.search(
        rf"New client connected .* as {re.escape(client_id)} .*u'{re.escape(cn)}'", log
    )
    assert f"Received PUBLISH from {client_id}" in log and topic in log
    assert f"Sending PUBLISH to {client_id}" in log


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_token_key_connects_publishes_and_receives(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
    key_type: str,
) -> None:
    broker = broker_factory()
    key = token_key_factory(key_type)
    cn = f"dev-{key_type}"
    cert = device(ca, key, cn)

    result = connect(devid, broker, cert, key, ca, "--json")

    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] is True
    assert report["endpoint"] == broker.endpoint
    assert report["client_id"] == cn
    assert report["key"] == key.reference
    assert report["key_on_token"] is True
    assert report["key_type"] == key_type
    assert report["round_trip_ms"] >= 0 and report["connect_ms"] >= 0
    assert "pin" not in result.out.lower()
    witnessed(broker, cn, cn, report["topic"])


def test_text_output_and_client_id_and_topic(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory()
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-text")
    result = connect(devid, broker, cert, key, ca, "--client-id", "tech-1", "--topic", "t/x")
    assert result.code == 0, result.err
    assert result.out.startswith("ok: tech-1 connected to ")
    witnessed(broker, "tech-1", "dev-text", "t/x")


def test_revoked_certificate_is_refused(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
) -> None:
    key = token_key_factory("ec-p256")
    good = device(ca, key, "dev-good")
    revoked = device(ca, key, "dev-revoked")
    crl = ca.crl([revoked])
    broker = broker_factory(crl=crl)

    assert connect(devid, broker, good, key, ca).code == 0
    result = connect(devid, broker, revoked, key, ca)

    assert result.code == 1
    assert "refused the TLS handshake" in one_line_error(result)
    assert "certificate verify failed" in broker.log_text()
    assert "certificate revoked" in openssl_verify(ca, revoked, "-crl_check", "-CRLfile", crl)


def test_expired_certificate_is_refused(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory()
    key = token_key_factory("ec-p256")
    expired = device(ca, key, "dev-expired", expired=True)
    result = connect(devid, broker, expired, key, ca)
    assert result.code == 1
    assert "refused the TLS handshake" in one_line_error(result)
    assert "certificate verify failed" in broker.log_text()
    assert "certificate has expired" in openssl_verify(ca, expired)


def test_unknown_ca_certificate_is_refused(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
    tmp_path: Path,
) -> None:
    broker = broker_factory()
    key = token_key_factory("ec-p256")
    stranger = TestCA(tmp_path, "stranger CA")
    result = connect(devid, broker, device(stranger, key, "dev-stranger"), key, ca)
    assert result.code == 1
    assert "refused the TLS handshake" in one_line_error(result)
    assert "certificate verify failed" in broker.log_text()


def test_untrusted_broker_certificate_is_named(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
    tmp_path: Path,
) -> None:
    broker = broker_factory()
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-distrust")
    other = TestCA(tmp_path, "other CA")
    args = ["--endpoint", broker.endpoint, "--cert", cert, "--key", key.reference]
    result = devid("device", "connect", *args, "--ca-file", other.path)
    assert result.code == 1
    assert "broker's certificate is not trusted" in one_line_error(result)


def test_unreachable_endpoint_is_an_environment_problem(
    devid: Callable[..., Result], token_key_factory: Callable[..., Any], ca: TestCA
) -> None:
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-nowhere")
    port = free_port()  # bound and released: nothing listens there
    args = ["--endpoint", f"127.0.0.1:{port}", "--cert", cert, "--key", key.reference]
    result = devid("device", "connect", *args, "--ca-file", ca.path, "--timeout", "5")
    assert result.code == 3
    assert f"cannot reach 127.0.0.1:{port}" in one_line_error(result)


def test_ed25519_key_is_refused_up_front(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
) -> None:
    key = token_key_factory("ed25519")
    cert = device(ca, key, "dev-ed25519")
    args = ["--endpoint", "127.0.0.1:1", "--cert", cert, "--key", key.reference]
    result = devid("device", "connect", *args)
    assert result.code == 2
    assert "Ed25519 keys are not supported by awscrt's PKCS#11 TLS" in one_line_error(result)


def test_key_not_matching_certificate_is_bad_input(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
) -> None:
    cert = device(ca, token_key_factory("ec-p256"), "dev-a")
    other = token_key_factory("ec-p256")
    args = ["--endpoint", "127.0.0.1:1", "--cert", cert, "--key", other.reference]
    result = devid("device", "connect", *args)
    assert result.code == 2
    assert "does not match the certificate" in one_line_error(result)


def test_software_key_file_connects(
    devid: Callable[..., Result], ca: TestCA, broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    broker = broker_factory()
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = tmp_path / "device.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    pass_file = tmp_path / "pass"
    pass_file.write_text("s3cret\n")
    cert = device(ca, key, "dev-file")
    result = connect(
        devid, broker, cert, str(key_path), ca, "--passphrase-file", pass_file, "--json"
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["key_on_token"] is False and report["key"] == str(key_path)
    witnessed(broker, "dev-file", "dev-file", report["topic"])


def test_end_to_end_as_a_subprocess(
    devid_proc: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    ca: TestCA,
    broker_factory: BrokerFactory,
    tmp_path: Path,
) -> None:
    """``python -m devid`` with the PIN only in a pin-source file named by the URI."""
    broker = broker_factory()
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-proc")
    pin_file = tmp_path / "pin"
    pin_file.write_text("1234\n")
    uri = str(hsm.parse_uri(key.reference).with_(pin_source=f"file:{pin_file}"))
    args = ["--endpoint", broker.endpoint, "--cert", cert, "--key", uri, "--ca-file", ca.path]
    result = devid_proc("device", "connect", *args, "--json", env={"DEVID_PKCS11_PIN": ""})
    assert result.code == 0, result.err
    assert json.loads(result.out)["ok"] is True
    witnessed(broker, "dev-proc", "dev-proc", json.loads(result.out)["topic"])


def test_silent_endpoint_times_out_as_an_environment_problem(
    devid: Callable[..., Result], token_key_factory: Callable[..., Any], ca: TestCA
) -> None:
    """A port that completes TCP but never speaks TLS: no answer within --timeout."""
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-silent")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts
        port = silent.getsockname()[1]
        args = ["--endpoint", f"127.0.0.1:{port}", "--cert", cert, "--key", key.reference]
        result = devid("device", "connect", *args, "--ca-file", ca.path, "--timeout", "3")
    assert result.code == 3
    assert f"no answer from 127.0.0.1:{port} within 3 s" in one_line_error(result)


def test_label_shared_by_two_token_keys_is_refused(
    devid: Callable[..., Result],
    token_key_factory: Callable[..., Any],
    token_uri: str,
    ca: TestCA,
) -> None:
    """awscrt selects the key by label only; a second key with that label (made by
    pkcs11-tool) would make the choice ambiguous, so devid refuses before connecting."""
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-twin")
    token = str(hsm.parse_uri(token_uri).token)
    run_tool(
        "pkcs11-tool", "--module", softhsm_module(), "--token-label", token,
        "--login", "--pin", TEST_PIN, "--keypairgen", "--key-type", "EC:prime256v1",
        "--label", key.handle.label, "--id", "d0d0d0d0",
    )  # fmt: skip
    args = ["--endpoint", "127.0.0.1:1", "--cert", cert, "--key", key.reference]
    result = devid("device", "connect", *args)
    assert result.code == 2
    assert "give this key a unique label" in one_line_error(result)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("broker.example.com:8883", "broker.example.com", 8883),
        ("broker.example.com", "broker.example.com", 8883),
        ("127.0.0.1:1883", "127.0.0.1", 1883),
        ("[::1]:443", "::1", 443),
    ],
)
def test_endpoint_forms(text: str, host: str, port: int) -> None:
    parsed = Endpoint.parse(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert Endpoint.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["host:0", "host:65536", "host:x", "a b:1", "[::1", ""])
def test_bad_endpoint_is_bad_input(
    devid: Callable[..., Result], token_key_factory: Callable[..., Any], ca: TestCA, text: str
) -> None:
    key = token_key_factory("ec-p256")
    cert = device(ca, key, "dev-endpoint")
    result = devid("device", "connect", "--endpoint", text, "--cert", cert, "--key", key.reference)
    assert result.code == 2
    assert "endpoint" in one_line_error(result)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("a/#", "contains the wildcard #"),
        ("#", "contains the wildcard #"),
        ("+", "contains the wildcard +"),
        ("x/+/y", "contains the wildcard +"),
        ("+/#", "contains the wildcard # and +"),
        ("", "must be 1 to 65535 bytes of UTF-8, not 0"),
        ("a\x00b", "contains a NUL character"),
        ("x" * 65536, "must be 1 to 65535 bytes of UTF-8, not 65536"),
        ("caf\udce9", "is not valid UTF-8"),  # a Latin-1 byte from argv, surrogate-escaped
    ],
)
def test_topic_mqtt_cannot_publish_to_is_refused_before_connecting(
    devid: Callable[..., Result],
    ca: TestCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    topic: str,
    reason: str,
) -> None:
    """MQTT 3.1.1 sections 1.5.3 and 4.7: a PUBLISH topic name holds no wildcard and no NUL
    and is 1..65535 bytes of UTF-8. Refused as bad input; no connection is attempted."""
    attempts: list[str] = []
    monkeypatch.setattr("devid.mqtt.preflight_broker", lambda *a, **k: attempts.append("tls"))
    monkeypatch.setattr("devid.mqtt.run_in_child", lambda *a, **k: attempts.append("mqtt"))
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = tmp_path / "device.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert = device(ca, key, "dev-topic")
    with socket.create_server(("127.0.0.1", 0)) as listener:  # nothing may connect here
        listener.setblocking(False)
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        args = ["--endpoint", endpoint, "--cert", cert, "--key", key_path, "--ca-file", ca.path]
        result = devid("device", "connect", *args, "--topic", topic, "--timeout", "5")
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.code == 2, result.err
    line = one_line_error(result)
    assert reason in line and "publish and subscribe" not in line
    assert result.out == ""
    assert attempts == []
