"""Shared fixtures: a real SoftHSM2 token, key factories, and the CLI run in-process.

SoftHSM reads ``SOFTHSM2_CONF`` when the module is initialised, so the session fixture sets
it (to a fresh directory) before any test touches a token. Tools the tests cross-check with
are required: a missing one fails the test with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_PIN = "1234"
TEST_SO_PIN = "0000"
TOKEN_LABEL = "devid-test"

INSTALL = {
    "softhsm2-util": "softhsm2",
    "pkcs11-tool": "opensc",
    "openssl": "openssl",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "sshd": "openssh-server",
    "puttygen": "putty-tools",
    "mosquitto": "mosquitto",
}


def require_tool(name: str) -> str:
    """The path of *name*, or fail (not skip) saying how to install it."""
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found is None:
        pytest.fail(f"{name} not found: apt-get install {INSTALL.get(name, name)}", pytrace=False)
    return found


def softhsm_module() -> str:
    path = "/usr/lib/softhsm/libsofthsm2.so"
    if not Path(path).exists():
        pytest.fail("SoftHSM2 not found: apt-get install softhsm2", pytrace=False)
    return path


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SoftHSM2 configuration in a fresh directory, active for the whole session."""
    softhsm_module()
    require_tool("softhsm2-util")
    import hsm

    # Not under pytest's basetemp: pytest prunes old basetemps, and a concurrent pytest run
    # (another checkout, a helper) would delete the token directory under a running suite.
    directory = Path(tempfile.mkdtemp(prefix="devid-softhsm-"))
    conf = hsm.softhsm_config(str(directory))
    old = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", "DEVID_PKCS11_PIN")}
    os.environ["SOFTHSM2_CONF"] = conf
    os.environ["DEVID_PKCS11_PIN"] = TEST_PIN
    os.environ.pop("DEVID_PKCS11_MODULE", None)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def token_uri(softhsm: Path) -> str:
    """``pkcs11:token=devid-test``: one initialised token shared by the session."""
    import hsm

    hsm.init_softhsm_token(TOKEN_LABEL, so_pin=TEST_SO_PIN, user_pin=TEST_PIN)
    return f"pkcs11:token={TOKEN_LABEL}"


_counter = iter(range(1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@pytest.fixture
def token_key_factory(token_uri: str) -> Callable[[str], object]:
    """Generate a token key of a devid key type, with a unique label."""
    from devid.keys import KeyType, generate_key

    def make(key_type: str, **kwargs: object) -> object:
        key, _ = generate_key(
            KeyType(key_type),
            token=token_uri,
            label=unique(key_type),
            **kwargs,  # type: ignore[arg-type]
        )
        return key

    return make


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def devid(capfd: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the CLI in-process: ``devid("key", "fingerprint", path)`` -> Result."""
    from devid.cli import run

    def call(*args: str) -> Result:
        capfd.readouterr()
        code = run([str(a) for a in args])
        captured = capfd.readouterr()
        return Result(code, captured.out, captured.err)

    return call


@pytest.fixture
def devid_proc(softhsm: Path) -> Callable[..., Result]:
    """Run ``python -m devid`` as a subprocess (end to end, fresh process, no terminal)."""

    def call(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        full_env = {**os.environ, **(env or {})}
        done = subprocess.run(
            [sys.executable, "-m", "devid", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            input=input,
            timeout=120,
            stdin=None if input is not None else subprocess.DEVNULL,
            cwd=ROOT,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return call


def run_tool(
    *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run a cross-check tool (openssl, ssh-keygen, ...), requiring it to be installed."""
    require_tool(args[0])
    done = subprocess.run(list(args), capture_output=True, input=input, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done


@dataclass
class MotoServer:
    url: str
    region: str = "us-east-1"

    def aws_args(self) -> list[str]:
        return ["--endpoint-url", self.url, "--region", self.region]

    def client(self, service: str) -> object:
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name=self.region)

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10
        ).read()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto(tmp: Path, config: dict[str, object] | None) -> Iterator[MotoServer]:
    import json
    import time
    import urllib.request

    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.fail("moto_server not found: pip install 'moto[server]' (scripts/setup does)")
    port = _free_port()
    log = (tmp / f"moto-{port}.log").open("wb")
    # moto 5.2's POST /moto-api/config ignores the "iot" section (use_valid_cert): set the
    # whole config inside the server process before it starts.
    boot = (
        "import json, sys; from moto.core.config import default_user_config; "
        "default_user_config.update(json.loads(sys.argv.pop(1))); "
        "from moto.server import main; main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", boot, json.dumps(config or {}), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"moto_server did not start; see {log.name}")
                time.sleep(0.1)
        if config:
            req = urllib.request.Request(
                f"{url}/moto-api/config",
                data=json.dumps(config).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=10).read()
        yield MotoServer(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real moto server on 127.0.0.1 (real HTTP), IoT configured with valid certificates."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    os.environ.pop("AWS_PROFILE", None)
    yield from _start_moto(tmp_path_factory.mktemp("moto"), {"iot": {"use_valid_cert": True}})


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session moto server, emptied before the test."""
    moto_server.reset()
    return moto_server


_GENPKEY_ARGS = {
    "rsa-1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa-3072": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    "rsa-4096": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
    "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "ec-p521": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    "ed25519": ["-algorithm", "ED25519"],
}


@pytest.fixture(scope="session")
def openssl_key(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``openssl_key("rsa-2048")``: a PEM PKCS#8 key made by ``openssl genpkey``.

    One key per kind per session (RSA-4096 is slow to make); treat the file as read-only.
    """
    directory = tmp_path_factory.mktemp("openssl-keys")
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            path = directory / f"{kind}.pem"
            run_tool("openssl", "genpkey", *_GENPKEY_ARGS[kind], "-out", str(path))
            made[kind] = path
        return made[kind]

    return make


@pytest.fixture
def iam_user(moto: MotoServer) -> str:
    """A new IAM user on the moto server (for the SSH-key tests); returns its name."""
    import boto3

    name = unique("iam-user")
    boto3.client("iam", endpoint_url=moto.url, region_name=moto.region).create_user(UserName=name)
    return name


@pytest.fixture
def ssh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with an empty ``~/.ssh`` (0700): ~/.ssh/config is the test's own."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    return home


# --- PKI (issue 5): a private DEVID_HOME, key files and token key references -----------------


@pytest.fixture
def pki_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DEVID_HOME in the test's directory (CAs, the default inventory); DEVID_STORE unset."""
    home = tmp_path / "devid-home"
    monkeypatch.setenv("DEVID_HOME", str(home))
    monkeypatch.delenv("DEVID_STORE", raising=False)
    monkeypatch.delenv("DEVID_PASSPHRASE", raising=False)
    return home


@pytest.fixture
def key_file(tmp_path: Path) -> Callable[[str], Path]:
    """``key_file("ec-p256")``: a new software key file of a devid key type."""
    from devid.keys import KeyType, generate_key

    def make(key_type: str) -> Path:
        path = tmp_path / f"{unique(key_type)}.key"
        generate_key(KeyType(key_type), out=path)
        return path

    return make


@pytest.fixture
def token_ref(token_key_factory: Callable[..., object]) -> Callable[[str], str]:
    """``token_ref("ec-p256")``: a new token key, as its ``pkcs11:`` reference."""

    def make(key_type: str) -> str:
        return str(token_key_factory(key_type).reference)  # type: ignore[attr-defined]

    return make


# --- device provisioning and rotation (issue 5): a root and an issuing CA ---------------------


@dataclass
class DevicePki:
    root: Path  # root CA certificate (PEM); its key is a file
    issuing: Path  # issuing CA certificate (PEM), signed by the root; its key is on the token
    token: str  # the token URI device keys go on


def _private_key_ids(token_uri: str) -> set[str]:
    import hsm

    return {k.id for k in hsm.list_keys(token_uri) if k.object_class == "private"}


@pytest.fixture
def device_pki(
    pki_home: Path, token_uri: str, key_file: Callable[[str], Path], token_ref: Callable[[str], str]
) -> Iterator[DevicePki]:
    """CAs ``root`` and ``issuing`` in a private DEVID_HOME, made 400 days ago (so tests can
    issue certificates that are due for renewal today).

    Keys the test leaves on the session token are deleted afterwards: OpenSSH uses at most
    100 keys from a PKCS#11 module, and the SSH tests' keys must stay among them.
    """
    import datetime as dt

    import hsm
    from devid.pki.ca import CaRequest, init_ca
    from devid.store import open_store

    before = _private_key_ids(token_uri)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    store = open_store()
    try:
        root = init_ca(CaRequest("root", str(key_file("ec-p256"))), store=store, now=past)
        issuing = init_ca(
            CaRequest("issuing", token_ref("ec-p256"), parent="root"), store=store, now=past
        )
    finally:
        store.close()
    yield DevicePki(root.directory / "ca.pem", issuing.directory / "ca.pem", token_uri)
    for key_id in _private_key_ids(token_uri) - before:
        hsm.delete_key(hsm.parse_uri(token_uri).with_(id=bytes.fromhex(key_id)))
