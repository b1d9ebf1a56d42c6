"""Helpers for the mTLS tests: a throw-away CA built with cryptography's builders, CRLs, a
mosquitto broker on 127.0.0.1, a Python ``ssl`` server, and the OpenSSL pkcs11 engine config.

Device keys are token keys: each device certificate is issued from a CSR the token key
signed, so the chain of trust starts on the token. Nothing here asks devid for an expected
value; the PKI deliberately does not use devid.pki.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool, run_tool, softhsm_module
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(pem(cert))
    return path


def name(cn: str, **extra: str) -> x509.Name:
    oids = {
        "C": NameOID.COUNTRY_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "ST": NameOID.STATE_OR_PROVINCE_NAME,
        "serialNumber": NameOID.SERIAL_NUMBER,
        "dnQualifier": NameOID.DN_QUALIFIER,
    }
    attrs = [x509.NameAttribute(oids[k], v) for k, v in extra.items()]
    if cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def csr_signed_by(key: Any, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A CSR signed by *key* (a token key signs on the token), checked like a CA would."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)
    assert csr.is_signature_valid
    return csr


class TestCA:
    """A root CA with a software P-256 key that issues device and server certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, cn: str = "devid test CA") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = name(cn, O="devid tests")
        public = self.key.public_key()
        self.cert = (
            self._builder(subject, public, NOW - HOUR, NOW + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = write_pem(directory / f"{cn.replace(' ', '-')}.pem", self.cert)

    def _builder(
        self, subject: x509.Name, public: Any, start: dt.datetime, end: dt.datetime
    ) -> x509.CertificateBuilder:
        issuer = getattr(self, "cert", None)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer else subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        filename: str,
        *,
        server: bool = False,
        expired: bool = False,
    ) -> Path:
        """Issue a client (or server) certificate for *csr* and write it as PEM."""
        start, end = (
            (NOW - 48 * HOUR, NOW - 24 * HOUR) if expired else (NOW - HOUR, NOW + 24 * HOUR)
        )
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(csr.subject, csr.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return write_pem(self.directory / filename, builder.sign(self.key, hashes.SHA256()))

    def crl(self, revoked: list[Path], filename: str = "crl.pem") -> Path:
        """A CRL listing the certificates in *revoked*, signed by this CA."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(NOW - HOUR)
            .next_update(NOW + 24 * HOUR)
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for path in revoked:
            serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
            entry = x509.RevokedCertificateBuilder().serial_number(serial)
            builder = builder.add_revoked_certificate(entry.revocation_date(NOW - HOUR).build())
        crl = builder.sign(self.key, hashes.SHA256())
        path = self.directory / filename
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        run_tool("openssl", "crl", "-in", str(path), "-CAfile", str(self.path), "-noout")
        return path

    def server(self, filename: str = "server") -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1/localhost and its software key file."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_path = self.directory / f"{filename}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert = self.issue(csr_signed_by(key, name("localhost")), f"{filename}.pem", server=True)
        return cert, key_path


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- mosquitto ---------------------------------------------------------------------------


@dataclass
class Broker:
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited at start:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"mosquitto did not listen on port {port}:\n{log.read_text(errors='replace')}")


def start_mosquitto(directory: Path, ca: TestCA, *, crl: Path | None = None) -> Broker:
    """mosquitto on 127.0.0.1 that requires client certificates from *ca* (TLS 1.2)."""
    exe = require_tool("mosquitto")
    cert, key = ca.server()
    port = free_port()
    lines = [
        "per_listener_settings true",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "require_certificate true",
        "use_identity_as_username true",
        f"cafile {ca.path}",
        f"certfile {cert}",
        f"keyfile {key}",
        "tls_version tlsv1.2",
        "persistence false",
        # As root mosquitto drops to user 'mosquitto', who cannot read pytest's 0700 tmp dirs.
        f"user {pwd.getpwuid(os.geteuid()).pw_name}",
    ]
    if crl is not None:
        lines.append(f"crlfile {crl}")
    conf = directory / f"mosquitto-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = directory / f"mosquitto-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([exe, "-c", str(conf), "-v"], stdout=out, stderr=out)
    _wait_for_port(port, process, log)
    return Broker("127.0.0.1", port, log, process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- OpenSSL with the libp11 engine ------------------------------------------------------


def engine_path() -> Path:
    """The libp11 engine in OpenSSL's engines directory, or fail with the install hint."""
    out = run_tool("openssl", "version", "-e").stdout.decode()
    directory = out.split(":", 1)[1].strip().strip('"')
    path = Path(directory) / "pkcs11.so"
    if not path.exists():
        pytest.fail(
            f"OpenSSL pkcs11 engine not found at {path}: apt-get install libengine-pkcs11-openssl",
            pytrace=False,
        )
    return path


def engine_config(directory: Path) -> Path:
    """An openssl.cnf loading the pkcs11 engine with SoftHSM as its module."""
    conf = directory / "openssl-pkcs11.cnf"
    conf.write_text(
        "openssl_conf = openssl_init\n\n"
        "[openssl_init]\nengines = engine_section\n\n"
        "[engine_section]\npkcs11 = pkcs11_section\n\n"
        "[pkcs11_section]\nengine_id = pkcs11\n"
        f"dynamic_path = {engine_path()}\nMODULE_PATH = {softhsm_module()}\ninit = 0\n"
    )
    return conf


def engine_env(conf: Path) -> dict[str, str]:
    return {**os.environ, "OPENSSL_CONF": str(conf), "SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"]}


@dataclass
class Handshake:
    """What the server saw: the client certificate on success, the error otherwise."""

    peer_der: bytes | None = None
    error: str | None = None


class TlsServer:
    """A one-connection Python ``ssl`` server that requires a client certificate from *ca*.

    ``VERIFY_CRL_CHECK_LEAF`` with *crl* rejects revoked clients; expired ones fail the
    default verification.
    """

    def __init__(self, ca: TestCA, *, crl: Path | None = None) -> None:
        cert, key = ca.server("tls-server")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cafile=ca.path)
        if crl is not None:
            self.context.load_verify_locations(cafile=crl)
            self.context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(60)
        self.port = int(self.listener.getsockname()[1])
        self.result = Handshake()
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.result.error = f"accept: {exc}"
            return
        with conn:
            conn.settimeout(30)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    self.result.peer_der = tls.getpeercert(binary_form=True)
                    tls.sendall(b"devid-tls-ok\n")
            except (ssl.SSLError, OSError) as exc:
                self.result.error = str(exc)

    def close(self) -> Handshake:
        self.thread.join(60)
        self.listener.close()
        return self.result
