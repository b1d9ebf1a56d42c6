"""Helpers shared by the ``devid ssh`` tests: key files, boto3's view of IAM, ``ssh -G``.

Not a conftest.py: the other test folders import helpers with ``from conftest import ...``,
which a second conftest module would shadow. Fixtures live in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import run_tool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HOST = "git-codecommit.us-east-1.amazonaws.com"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def _private(kind: str, bits: int) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def write_key_pair(directory: Path, name: str, kind: str = "rsa", bits: int = 2048) -> Path:
    """An OpenSSH private key file *name* (mode 0600) and ``name.pub`` in *directory*."""
    key = _private(kind, bits)
    path = directory / name
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.with_name(name + ".pub").write_bytes(public + b" " + name.encode() + b"\n")
    return path


def registered_ids(iam: Any, user: str) -> list[str]:
    """The SSH key ids IAM holds for *user*, straight from boto3."""
    keys = iam.list_ssh_public_keys(UserName=user)["SSHPublicKeys"]
    return [k["SSHPublicKeyId"] for k in keys]


def statuses(iam: Any, user: str) -> dict[str, str]:
    keys = iam.list_ssh_public_keys(UserName=user)["SSHPublicKeys"]
    return {k["SSHPublicKeyId"]: k["Status"] for k in keys}


def ssh_keygen_md5(path: Path) -> str:
    """``ssh-keygen -l -E md5`` of a key file, without the ``MD5:`` prefix."""
    out = run_tool("ssh-keygen", "-l", "-E", "md5", "-f", str(path)).stdout.decode()
    return out.split()[1].removeprefix("MD5:")


def ssh_resolved(config: Path, host: str = HOST) -> dict[str, list[str]]:
    """What ``ssh -G -F config host`` resolves (connects to nothing): option -> values."""
    out = run_tool("ssh", "-G", "-F", str(config), host).stdout.decode()
    resolved: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        resolved.setdefault(name, []).append(value)
    return resolved
