"""Key types, key references and loading keys from anything people keep them in.

A *key reference* is a file path or a ``pkcs11:`` URI (RFC 7512). :func:`load_signing_key`
turns either into a cryptography private key; token keys are :mod:`hsm.keys` objects that
sign on the token, so everything downstream treats both alike.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

import hsm
from devid.errors import BadInput, DevidError, PassphraseRequired
from devid.fsutil import PRIVATE_MODE, PUBLIC_MODE, refuse_existing, write_atomic

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "p256": ec.SECP256R1,
    "p384": ec.SECP384R1,
    "p521": ec.SECP521R1,
}
_CURVE_SHORT = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}


class KeyType(enum.Enum):
    """The key types devid generates, named as on the command line."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    EC_P521 = "ec-p521"
    ED25519 = "ed25519"

    @property
    def algorithm(self) -> str:
        """``rsa``, ``ec`` or ``ed25519``."""
        return self.value.split("-")[0]

    @property
    def size(self) -> int | str:
        """RSA modulus bits, EC curve short name, or ``ed25519``."""
        if self.algorithm == "rsa":
            return int(self.value.split("-")[1])
        return self.value.split("-")[-1]

    def generate(self) -> PrivateKey:
        """A new software key of this type."""
        if self.algorithm == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=int(self.size))
        if self.algorithm == "ec":
            return ec.generate_private_key(_CURVES[str(self.size)]())
        return ed25519.Ed25519PrivateKey.generate()

    def token_spec(self) -> hsm.TokenKeySpec:
        return hsm.TokenKeySpec(self.algorithm, self.size)

    @classmethod
    def parse(cls, text: str) -> KeyType:
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(k.value for k in cls)
            raise BadInput(f"unknown key type {text!r}; choose one of {names}") from None

    @classmethod
    def of(cls, key: PublicKey | PrivateKey) -> KeyType | None:
        """The type of *key*, or None when devid does not generate that type."""
        info = describe(key)
        name = f"{info.algorithm}-{info.size}" if info.algorithm != "ed25519" else "ed25519"
        try:
            return cls(name)
        except ValueError:
            return None


@dataclass(frozen=True)
class KeyDescription:
    """What a key is: ``algorithm`` (rsa/ec/ed25519), ``bits``, ``size`` (bits or curve)."""

    algorithm: str
    bits: int
    size: int | str


def describe(key: object) -> KeyDescription:
    """What *key* (public or private, of any type cryptography reads) is; devid only makes
    and uses RSA, EC and Ed25519 keys, but certificates and CSRs it shows may hold others."""
    public_key = getattr(key, "public_key", None)
    pub = public_key() if callable(public_key) else key
    if isinstance(pub, rsa.RSAPublicKey):
        return KeyDescription("rsa", pub.key_size, pub.key_size)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        short = _CURVE_SHORT.get(pub.curve.name, pub.curve.name)
        return KeyDescription("ec", pub.key_size, short)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return KeyDescription("ed25519", 256, "ed25519")
    if isinstance(pub, ed448.Ed448PublicKey):
        return KeyDescription("ed448", 456, "ed448")
    if isinstance(pub, dsa.DSAPublicKey):
        return KeyDescription("dsa", pub.key_size, pub.key_size)
    name = type(pub).__name__.removeprefix("_").removesuffix("PublicKey").lower() or "unknown"
    return KeyDescription(name, 0, name)


def is_token_ref(ref: str) -> bool:
    return ref[:7].lower() == "pkcs11:"


class PrivateFormat(enum.Enum):
    """How software private keys are written."""

    PKCS8 = "pkcs8"
    PKCS1 = "pkcs1"
    OPENSSH = "openssh"


#: cryptography's limit for BestAvailableEncryption (OpenSSL's PEM_BUFSIZE - 1)
MAX_PASSPHRASE = 1023


def private_key_bytes(
    key: PrivateKey, fmt: PrivateFormat = PrivateFormat.PKCS8, *, passphrase: bytes | None = None
) -> bytes:
    """PEM (PKCS#8, or PKCS#1/SEC1 "traditional") or OpenSSH encoding of a software key."""
    if passphrase is not None and len(passphrase) > MAX_PASSPHRASE:
        raise BadInput(
            f"the passphrase is {len(passphrase)} bytes; key files take at most {MAX_PASSPHRASE}"
        )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    if fmt is PrivateFormat.OPENSSH:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )
    if fmt is PrivateFormat.PKCS1:
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raise BadInput("ed25519 keys have no PKCS#1/traditional form; use pkcs8 or openssh")
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
        )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_private_key(
    key: PrivateKey,
    path: Path,
    *,
    fmt: PrivateFormat = PrivateFormat.PKCS8,
    passphrase: bytes | None = None,
    force: bool = False,
) -> Path:
    """Write a software key with mode 0600, atomically, refusing to overwrite unless *force*."""
    return write_atomic(
        path, private_key_bytes(key, fmt, passphrase=passphrase), mode=PRIVATE_MODE, force=force
    )


def generate_key(
    key_type: KeyType,
    *,
    out: Path | None = None,
    token: str | None = None,
    label: str | None = None,
    fmt: PrivateFormat = PrivateFormat.PKCS8,
    passphrase: bytes | None = None,
    force: bool = False,
    decrypt: bool = False,
) -> tuple[PrivateKey, str]:
    """Generate a key into a file (*out*) or on a token (*token* URI + *label*).

    In the OpenSSH format the public key also goes to ``<out>.pub``, as ``ssh-keygen``
    does (what ``ssh``, ``ssh-add -L`` and ``devid ssh register`` read beside the key).
    Returns the key and its reference (the path, or the key's canonical ``pkcs11:`` URI).
    """
    if (out is None) == (token is None):
        raise BadInput("give either --out PATH or --token URI (with --label)")
    if token is not None:
        if not label:
            raise BadInput("a token key needs --label NAME")
        tkey = hsm.generate_keypair(
            hsm.parse_uri(token),
            key_type.token_spec(),
            label=label,
            replace=force,
            decrypt=decrypt,
        )
        return tkey, tkey.reference
    assert out is not None
    if fmt is PrivateFormat.PKCS1 and key_type is KeyType.ED25519:
        raise BadInput("ed25519 keys have no PKCS#1 form; use pkcs8 or openssh")
    refuse_existing(Path(out), force=force)
    pub = public_key_file(Path(out)) if fmt is PrivateFormat.OPENSSH else None
    if pub is not None:
        refuse_existing(pub, force=force)  # both checked before anything is written
    key = key_type.generate()
    if pub is None:
        write_private_key(key, Path(out), fmt=fmt, passphrase=passphrase, force=force)
        return key, str(out)
    # The .pub first: if it cannot be written, the private key file (maybe an old key
    # being replaced with --force) is untouched; if the private key then fails, the old
    # .pub comes back.
    old_pub = pub.read_bytes() if pub.is_file() else None
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_atomic(pub, line + b"\n", mode=PUBLIC_MODE, force=force)
    try:
        write_private_key(key, Path(out), fmt=fmt, passphrase=passphrase, force=force)
    except BaseException:
        if old_pub is None:
            pub.unlink(missing_ok=True)
        else:
            write_atomic(pub, old_pub, mode=PUBLIC_MODE, force=True)
        raise
    return key, str(out)


def public_key_file(private: Path) -> Path:
    """Where OpenSSH keeps the public half of the private key file *private*."""
    return private.with_name(private.name + ".pub")


__all__ = [
    "DevidError",
    "KeyDescription",
    "KeyType",
    "PassphraseRequired",
    "PrivateFormat",
    "PrivateKey",
    "PublicKey",
    "describe",
    "generate_key",
    "is_token_ref",
    "private_key_bytes",
    "write_private_key",
]
