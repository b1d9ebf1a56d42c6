"""A real SSH login with a token-held RSA key, standing in for ``ssh git-codecommit...``.

devid rotates to the token key (upload to IAM on the moto server, ssh config with
``PKCS11Provider`` and the ``.pub`` it writes); an OpenSSH ``sshd`` started here on 127.0.0.1
authorises only the key body IAM holds; the OpenSSH client, reading the config devid wrote,
logs in with the key on the token (PIN through SSH_ASKPASS) and runs a command. paramiko
logs in the same way with devid's token key object.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import paramiko
import pytest
from conftest import TEST_PIN, MotoServer, Result, require_tool, run_tool
from ssh_support import HOST, SOFTHSM, ssh_resolved, write_key_pair

import hsm
from devid.paramiko_key import RSAKeyAdapter

Devid = Callable[..., Result]
StartSshd = Callable[[str], "Sshd"]


class Sshd:
    """An OpenSSH server on 127.0.0.1 that accepts only the keys in one authorized_keys file."""

    def __init__(self, directory: Path, authorized: str) -> None:
        self.directory = directory
        self.port = _free_port()
        self.log = directory / "sshd.log"
        host_key = directory / "host_ed25519"
        run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        keys = directory / "authorized_keys"
        keys.write_text(authorized)
        self.config = directory / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {keys}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        sshd = require_tool("sshd")
        if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
            Path("/run/sshd").mkdir(mode=0o755)  # sshd's privilege separation directory
        log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while b"Server listening" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def accepted(self) -> list[str]:
        """The ``Accepted publickey`` lines sshd logged."""
        return [ln for ln in self.log.read_text().splitlines() if "Accepted publickey" in ln]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_sshd(tmp_path: Path) -> Iterator[StartSshd]:
    started: list[Sshd] = []

    def start(authorized: str) -> Sshd:
        directory = tmp_path / f"sshd{len(started)}"
        directory.mkdir()
        server = Sshd(directory, authorized)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def rotated_to_token(
    devid: Devid,
    moto: MotoServer,
    iam_user: str,
    ssh_home: Path,
    token_key_factory: Callable[[str], Any],
) -> dict[str, Any]:
    """``devid ssh rotate`` to a new token RSA key; returns its report plus the IAM body."""
    token_key = token_key_factory("rsa-2048")
    config = ssh_home / ".ssh" / "config"
    result = devid(
        "ssh", "rotate", "--user", iam_user, "--key", token_key.reference,
        "--config", str(config), *moto.aws_args(), "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    iam = boto3.client("iam", endpoint_url=moto.url, region_name=moto.region)
    stored = iam.get_ssh_public_key(
        UserName=iam_user, SSHPublicKeyId=report["new_key"]["key_id"], Encoding="SSH"
    )
    return {
        **report,
        "body": stored["SSHPublicKey"]["SSHPublicKeyBody"],
        "key": token_key,
        "config_path": config,
    }


def _askpass(directory: Path) -> Path:
    script = directory / "askpass.sh"
    script.write_text(f"#!/bin/sh\necho '{TEST_PIN}'\n")
    script.chmod(0o700)
    return script


def _ssh_login(config: Path, port: int, askpass: Path) -> subprocess.CompletedProcess[str]:
    """``ssh -F <devid's config> git-codecommit.us-east-1.amazonaws.com echo ok`` on loopback."""
    ssh = require_tool("ssh")
    env = {
        **os.environ,  # SOFTHSM2_CONF from the softhsm fixture: ssh loads the module too
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": ":0",
    }
    assert "SOFTHSM2_CONF" in env
    options = ["HostName=127.0.0.1", f"Port={port}", "StrictHostKeyChecking=no",
               "UserKnownHostsFile=/dev/null", "BatchMode=no", "ConnectTimeout=20"]  # fmt: skip
    argv = [ssh, "-F", str(config), "-l", getpass.getuser()]
    for option in options:
        argv += ["-o", option]
    return subprocess.run(
        [*argv, HOST, "echo", "ok"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sha256(line: str, directory: Path) -> str:
    pub = directory / "check.pub"
    pub.write_text(line.strip() + "\n")
    return run_tool("ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)).stdout.decode().split()[1]


def test_devid_config_for_token_key(rotated_to_token: dict[str, Any], ssh_home: Path) -> None:
    label = rotated_to_token["key"].handle.label
    pub = ssh_home / ".ssh" / f"{label}.pub"
    resolved = ssh_resolved(rotated_to_token["config_path"])
    assert resolved["user"] == [rotated_to_token["new_key"]["key_id"]]
    assert resolved["pkcs11provider"] == [SOFTHSM]
    assert resolved["identityfile"] == [str(pub)]
    assert resolved["identitiesonly"] == ["yes"]
    assert pub.read_text().split()[:2] == rotated_to_token["body"].split()[:2]
    assert pub.stat().st_mode & 0o777 == 0o644


def test_openssh_logs_in_with_the_token_key(
    rotated_to_token: dict[str, Any], start_sshd: StartSshd, tmp_path: Path
) -> None:
    body = rotated_to_token["body"]
    server = start_sshd(body.strip() + "\n")

    done = _ssh_login(rotated_to_token["config_path"], server.port, _askpass(tmp_path))

    assert done.returncode == 0, f"{done.stderr}\n{server.log.read_text()}"
    assert done.stdout.strip() == "ok"
    (accepted,) = server.accepted()
    assert accepted.endswith(_sha256(body, tmp_path))


def test_openssh_login_fails_for_a_key_not_authorised(
    rotated_to_token: dict[str, Any], start_sshd: StartSshd, tmp_path: Path
) -> None:
    other = write_key_pair(tmp_path, "other")
    server = start_sshd(Path(f"{other}.pub").read_text())

    done = _ssh_login(rotated_to_token["config_path"], server.port, _askpass(tmp_path))

    assert done.returncode == 255
    assert server.accepted() == []


def test_paramiko_logs_in_with_the_token_key_object(
    rotated_to_token: dict[str, Any], start_sshd: StartSshd, tmp_path: Path
) -> None:
    body = rotated_to_token["body"]
    server = start_sshd(body.strip() + "\n")
    key = hsm.load_key(rotated_to_token["key"].reference)  # devid's token key, no private bytes

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1", port=server.port, username=getpass.getuser(),
            pkey=RSAKeyAdapter(key), look_for_keys=False, allow_agent=False, timeout=30,
        )  # fmt: skip
        _, stdout, _ = client.exec_command("echo ok", timeout=30)
        output = stdout.read().decode().strip()
    finally:
        client.close()

    assert output == "ok"
    (accepted,) = server.accepted()
    assert accepted.endswith(_sha256(body, tmp_path))
