"""Every fingerprint AWS and OpenSSH show for a key, computed from the key itself.

- OpenSSH: SHA-256 (unpadded base64, ``SHA256:`` prefix) and MD5 (colon hex, ``MD5:``
  prefix) of the SSH wire blob, as ``ssh-keygen -l -E sha256|md5`` prints them.
- IAM (CodeCommit SSH keys): MD5 of the SSH wire blob, colon hex without prefix. Which
  bytes IAM hashes is not documented; this is the OpenSSH-MD5 form (DESIGN.md section 2).
- EC2, imported key: RSA -> MD5 of the DER SubjectPublicKeyInfo, colon hex (not OpenSSH's
  MD5); Ed25519 -> SHA-256 of the SSH wire blob, base64 *with* ``=`` padding, no prefix.
- EC2, created RSA key: SHA-1 of the DER PKCS#8 PrivateKeyInfo (needs the private key).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

import hsm
from devid.keys import PrivateKey, PublicKey, describe


def ssh_wire_blob(key: PublicKey) -> bytes:
    """The SSH public-key blob (RFC 4253 section 6.6) that OpenSSH fingerprints."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def openssh_sha256(key: PublicKey) -> str:
    return blob_sha256(ssh_wire_blob(key))


def blob_sha256(blob: bytes) -> str:
    """The OpenSSH SHA256 fingerprint of an SSH public-key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def openssh_md5(key: PublicKey) -> str:
    return "MD5:" + iam_md5(key)


def iam_md5(key: PublicKey) -> str:
    """The CodeCommit/IAM form: MD5 of the SSH wire blob, 16 lower-case hex pairs."""
    return colon_hex(hashlib.md5(ssh_wire_blob(key), usedforsecurity=False).digest())


def ec2_imported(key: PublicKey) -> str | None:
    """The fingerprint EC2 shows for *key* once imported; None for types EC2 refuses."""
    if isinstance(key, rsa.RSAPublicKey):
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return colon_hex(hashlib.md5(spki, usedforsecurity=False).digest())
    if isinstance(key, ed25519.Ed25519PublicKey):
        return base64.b64encode(hashlib.sha256(ssh_wire_blob(key)).digest()).decode()
    return None


def ec2_created(key: PrivateKey) -> str | None:
    """The fingerprint EC2 shows for an RSA key pair it created; None if not computable."""
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    try:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    except hsm.NotExtractable:  # a token key: the private key cannot be read, by design
        return None
    return colon_hex(hashlib.sha1(der, usedforsecurity=False).digest())


@dataclass(frozen=True)
class Fingerprints:
    type: str
    bits: int
    openssh_sha256: str
    openssh_md5: str
    iam_md5: str
    ec2: str | None
    ec2_created: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprints(key: PublicKey | PrivateKey) -> Fingerprints:
    """All fingerprints of *key*; ``ec2_created`` only for a readable RSA private key."""
    private = None if isinstance(key, PublicKey) else key
    public: PublicKey = key if isinstance(key, PublicKey) else key.public_key()
    info = describe(public)
    return Fingerprints(
        type=info.algorithm,
        bits=info.bits,
        openssh_sha256=openssh_sha256(public),
        openssh_md5=openssh_md5(public),
        iam_md5=iam_md5(public),
        ec2=ec2_imported(public),
        ec2_created=ec2_created(private) if private is not None else None,
    )
