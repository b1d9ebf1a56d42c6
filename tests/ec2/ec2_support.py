"""Helpers for the EC2 tests: keys made by the real tools and AWS's own fingerprint pipelines.

Nothing here asks devid for an expected value: keys come from ``openssl genpkey``,
``ssh-keygen`` and ``puttygen``, and fingerprints from the commands AWS documents.
"""

from __future__ import annotations

import base64
from pathlib import Path

from conftest import run_tool

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "ec2"
MOTO_PUBLIC_KEY = VECTORS / "moto_rsa_public_key.pub"
MOTO_PUBLISHED_FINGERPRINT = "6a:49:07:1c:7e:bd:d2:bd:96:25:fe:b5:74:83:ae:fd"


def _digest_line(out: bytes) -> str:
    # "SHA1(stdin)= aa:bb:..." / "MD5(stdin)= ..."
    return out.decode().strip().split("= ", 1)[1]


class Pipelines:
    """AWS's documented check commands (DESIGN.md section 2), run for real."""

    @staticmethod
    def created(key: Path) -> str:
        """openssl pkcs8 -in K -inform PEM -outform DER -topk8 -nocrypt | openssl sha1 -c"""
        der = run_tool(
            "openssl", "pkcs8", "-in", str(key), "-inform", "PEM", "-outform", "DER",
            "-topk8", "-nocrypt",
        ).stdout  # fmt: skip
        return _digest_line(run_tool("openssl", "sha1", "-c", input=der).stdout)

    @staticmethod
    def imported(key: Path, *, public: bool = False) -> str:
        """openssl rsa -in K -pubout -outform DER | openssl md5 -c"""
        args = ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"]
        der = run_tool(*args, *(["-pubin"] if public else [])).stdout
        return _digest_line(run_tool("openssl", "md5", "-c", input=der).stdout)

    @staticmethod
    def ed25519(key: Path) -> str:
        """ssh-keygen -l -f K, base64 padded with '=' as EC2 shows it."""
        field = run_tool("ssh-keygen", "-l", "-f", str(key)).stdout.decode().split()[1]
        value = field.removeprefix("SHA256:")
        padded = value + "=" * (-len(value) % 4)
        assert len(base64.b64decode(padded)) == 32
        return padded


def openssl_rsa(path: Path, bits: int = 2048, *, traditional: bool = False) -> Path:
    """An RSA key made by openssl (PKCS#8 PEM, or PKCS#1 'traditional' PEM)."""
    run_tool(
        "openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}",
        "-out", str(path),
    )  # fmt: skip
    if traditional:
        run_tool("openssl", "rsa", "-in", str(path), "-out", str(path), "-traditional")
    path.chmod(0o600)
    return path


def openssl_ec(path: Path, curve: str = "P-256") -> Path:
    run_tool(
        "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}",
        "-out", str(path),
    )  # fmt: skip
    return path


def ssh_keygen(path: Path, key_type: str = "ed25519", *, passphrase: str = "") -> Path:
    """A key pair made by ssh-keygen: *path* and *path*.pub.

    RSA keys are 2048-bit (ssh-keygen's default, 3072, is not one EC2 imports) and written
    as PEM so that AWS's openssl pipelines can read them; Ed25519 keys in OpenSSH format.
    """
    rsa = ["-b", "2048", "-m", "PEM"] if key_type == "rsa" else []
    run_tool("ssh-keygen", "-q", "-t", key_type, *rsa, "-N", passphrase, "-C", "test",
             "-f", str(path))  # fmt: skip
    return path


def public_line(path: Path) -> str:
    """'type base64' of a key file, as ssh-keygen (or puttygen for PPK) reads it."""
    if path.read_bytes().startswith(b"PuTTY-User-Key-File"):
        out = run_tool("puttygen", str(path), "-O", "public-openssh").stdout
    else:
        out = run_tool("ssh-keygen", "-y", "-f", str(path)).stdout
    return " ".join(out.decode().split()[:2])
