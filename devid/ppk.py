"""PuTTY private key files (PPK), versions 2 and 3.

The format is PuTTY's manual, appendix C "PPK file format"
(https://the.earth.li/~sgtatham/putty/0.78/htmldoc/AppendixC.html). A PPK file holds the SSH
public key blob in clear, the private half (optionally AES-256-CBC encrypted) and a MAC over
the header fields, the public blob and the plaintext private blob, so neither the comment nor
the public half can be edited without the passphrase.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf import argon2

from devid.errors import BadInput, PassphraseRequired
from devid.keys import PrivateKey, PublicKey

# Argon2id parameters for files devid encrypts: puttygen 0.78's defaults (8 MiB, one lane);
# puttygen times the passes to ~100 ms and chose 21 on the machine the vectors were made on.
ARGON2_MEMORY_KIB = 8192
ARGON2_PASSES = 21
ARGON2_PARALLELISM = 1
ARGON2_SALT_BYTES = 16

# Refuse Argon2 parameters no sane file carries, so a hostile file cannot stall the loader.
_ARGON2_MAX_MEMORY_KIB = 1 << 20
_ARGON2_MAX_PASSES = 1000
_ARGON2_MAX_PARALLELISM = 64

_CURVES: dict[str, ec.EllipticCurve] = {
    "ecdsa-sha2-nistp256": ec.SECP256R1(),
    "ecdsa-sha2-nistp384": ec.SECP384R1(),
    "ecdsa-sha2-nistp521": ec.SECP521R1(),
}
_ALGORITHMS = ("ssh-rsa", "ssh-ed25519", *_CURVES)
_PRIVATE_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
_PUBLIC_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
_MAGIC = b"PuTTY-User-Key-File-"
_NONE, _AES = b"none", b"aes256-cbc"
_AES_BLOCK = 16
_V2_MAC_KEY_PREFIX = b"putty-private-key-file-mac-key"


class _Deriver(Protocol):
    def derive(self, key_material: bytes) -> bytes: ...


class _Argon2(Protocol):
    def __call__(
        self, *, salt: bytes, length: int, iterations: int, lanes: int, memory_cost: int
    ) -> _Deriver: ...


# cryptography added Argon2id in 44 and the other two flavours later: offer what is installed.
_ARGON2: dict[str, _Argon2] = {
    name: getattr(argon2, name)
    for name in ("Argon2id", "Argon2i", "Argon2d")
    if hasattr(argon2, name)
}


def is_ppk(data: bytes) -> bool:
    """True if ``data`` starts like a PPK version 2 or 3 file."""
    return data.startswith((_MAGIC + b"2:", _MAGIC + b"3:"))


def load_ppk(data: bytes, passphrase: bytes | None = None) -> tuple[PrivateKey, str]:
    """Parse a PPK v2/v3 file into a private key and its comment.

    Raises ``PassphraseRequired`` for an encrypted file without a passphrase and ``BadInput``
    for a wrong passphrase, an unsupported key type or a damaged file.
    """
    ppk = _parse(data)
    encrypted = ppk.encryption != _NONE
    if encrypted and passphrase is None:
        raise PassphraseRequired("PPK file is encrypted: a passphrase is needed")
    secrets = _derive(ppk.version, passphrase if encrypted else None, ppk.kdf)
    private = _aes(secrets, ppk.private, decrypt=True) if encrypted else ppk.private
    fields = (ppk.algorithm.encode(), ppk.encryption, ppk.comment, ppk.public, private)
    if not hmac.compare_digest(_mac(ppk.version, secrets.mac_key, fields), ppk.mac):
        if encrypted:
            raise BadInput("wrong passphrase for PPK file")
        raise BadInput("PPK file is corrupt: MAC mismatch (the file was edited or damaged)")
    key = _private_key(ppk.algorithm, ppk.public, private)
    # PuTTY stores the comment as bytes; keep undecodable ones readable rather than refuse.
    return key, ppk.comment.decode("utf-8", "replace")


def load_public(data: bytes) -> PublicKey:
    """The public key of a PPK v2/v3 file, encrypted or not, without a passphrase.

    PuTTY keeps the public blob in clear. Without the passphrase the MAC cannot be checked,
    so the answer is as trustworthy as a ``.pub`` file lying beside a key: fine for showing
    fingerprints and matching keys, not a proof that the private half fits.
    """
    ppk = _parse(data)
    return _public_key(ppk.algorithm, ppk.public)


def dump_ppk(
    key: PrivateKey, *, comment: str = "", version: int = 3, passphrase: bytes | None = None
) -> bytes:
    """Write ``key`` as a PPK file; an empty or absent passphrase writes it unencrypted."""
    if version not in (2, 3):
        raise ValueError(f"PPK version must be 2 or 3, not {version!r}")
    if not isinstance(key, _PRIVATE_TYPES):
        raise TypeError(f"cannot write a {type(key).__name__} as a PPK file")
    note = comment.encode("utf-8")
    if b"\r" in note or b"\n" in note:
        raise BadInput("a PPK comment cannot contain a line break")
    algorithm, public = _public_blob(key)
    private = _private_blob(key)
    kdf = _fresh_argon2() if passphrase and version == 3 else None
    secrets = _derive(version, passphrase or None, kdf)
    encryption = _AES if passphrase else _NONE
    if passphrase:
        private = _pad(private)
    mac = _mac(version, secrets.mac_key, (algorithm, encryption, note, public, private))
    stored = _aes(secrets, private, decrypt=False) if passphrase else private
    lines = [
        b"%s%d: %s" % (_MAGIC, version, algorithm),
        b"Encryption: " + encryption,
        b"Comment: " + note,
        *_base64_block(b"Public-Lines", public),
        *(_argon2_lines(kdf) if kdf else []),
        *_base64_block(b"Private-Lines", stored),
        b"Private-MAC: " + mac.hex().encode(),
    ]
    return b"\n".join(lines) + b"\n"


# --- outer (text) layer ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Argon2Params:
    flavour: str
    memory: int
    passes: int
    parallelism: int
    salt: bytes


@dataclass(frozen=True)
class _PpkFile:
    version: int
    algorithm: str
    encryption: bytes
    comment: bytes
    public: bytes
    kdf: _Argon2Params | None
    private: bytes
    mac: bytes


class _Lines:
    """The file's lines in order; PuTTY writes LF but accepts CR+LF and CR alone."""

    def __init__(self, data: bytes) -> None:
        self._lines = data.splitlines()
        self._pos = 0

    def next(self, missing: str) -> bytes:
        if self._pos >= len(self._lines):
            raise BadInput(f"PPK file is truncated: {missing}")
        self._pos += 1
        return self._lines[self._pos - 1]

    def field(self, name: str) -> bytes:
        line = self.next(f"no '{name}' line")
        key, colon, value = line.partition(b":")
        if not colon or key != name.encode():
            raise BadInput(f"PPK file is corrupt: expected a '{name}:' line")
        return value.removeprefix(b" ")

    def number(self, name: str) -> int:
        value = self.field(name).strip()
        if not value.isdigit() or len(value) > 9:
            raise BadInput(f"PPK file is corrupt: '{name}' is not a number")
        return int(value)

    def hex(self, name: str) -> bytes:
        value = self.field(name).strip()
        try:
            return bytes.fromhex(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadInput(f"PPK file is corrupt: '{name}' is not hexadecimal") from exc

    def base64_block(self, name: str) -> bytes:
        count = self.number(name)
        missing = f"fewer lines than '{name}' says"
        text = b"".join(self.next(missing).strip() for _ in range(count))
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise BadInput(f"PPK file is corrupt: bad base64 after '{name}'") from exc


def _parse(data: bytes) -> _PpkFile:
    if not is_ppk(data):
        if data.startswith(_MAGIC):
            shown = data[len(_MAGIC) :].split(b":")[0][:8].decode("ascii", "replace")
            raise BadInput(f"unsupported PPK version '{shown}' (devid reads versions 2 and 3)")
        raise BadInput("not a PuTTY key file: no 'PuTTY-User-Key-File-2/3' header")
    version = data[len(_MAGIC)] - ord("0")
    lines = _Lines(data)
    algorithm = lines.field(f"PuTTY-User-Key-File-{version}").strip().decode("ascii", "replace")
    if algorithm not in _ALGORITHMS:
        raise BadInput(
            f"unsupported PPK key type '{algorithm}' (devid reads {', '.join(_ALGORITHMS)})"
        )
    encryption = lines.field("Encryption").strip()
    if encryption not in (_NONE, _AES):
        shown = encryption.decode("ascii", "replace")
        raise BadInput(f"unsupported PPK encryption '{shown}' (devid reads none and aes256-cbc)")
    comment = lines.field("Comment")
    public = lines.base64_block("Public-Lines")
    kdf = _read_argon2(lines) if version == 3 and encryption != _NONE else None
    private = lines.base64_block("Private-Lines")
    mac = lines.hex("Private-MAC")
    if len(mac) != (20 if version == 2 else 32):
        raise BadInput(
            f"PPK file is corrupt: 'Private-MAC' has the wrong length for version {version}"
        )
    return _PpkFile(version, algorithm, encryption, comment, public, kdf, private, mac)


def _read_argon2(lines: _Lines) -> _Argon2Params:
    flavour = lines.field("Key-Derivation").strip().decode("ascii", "replace")
    params = _Argon2Params(
        flavour=flavour,
        memory=lines.number("Argon2-Memory"),
        passes=lines.number("Argon2-Passes"),
        parallelism=lines.number("Argon2-Parallelism"),
        salt=lines.hex("Argon2-Salt"),
    )
    if flavour not in ("Argon2id", "Argon2i", "Argon2d"):
        raise BadInput(f"unsupported PPK key derivation '{flavour}'")
    if flavour not in _ARGON2:
        raise BadInput(f"PPK key derivation {flavour} needs a newer cryptography package")
    if not (
        8 * params.parallelism <= params.memory <= _ARGON2_MAX_MEMORY_KIB
        and 1 <= params.passes <= _ARGON2_MAX_PASSES
        and 1 <= params.parallelism <= _ARGON2_MAX_PARALLELISM
        and len(params.salt) >= 8
    ):
        raise BadInput(
            f"PPK file has implausible Argon2 parameters (memory {params.memory} KiB, "
            f"passes {params.passes}, parallelism {params.parallelism}, "
            f"salt {len(params.salt)} bytes)"
        )
    return params


def _base64_block(name: bytes, blob: bytes) -> list[bytes]:
    text = base64.b64encode(blob)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return [b"%s: %d" % (name, len(lines)), *lines]


def _fresh_argon2() -> _Argon2Params:
    salt = os.urandom(ARGON2_SALT_BYTES)
    return _Argon2Params("Argon2id", ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_PARALLELISM, salt)


def _argon2_lines(kdf: _Argon2Params) -> list[bytes]:
    return [
        b"Key-Derivation: " + kdf.flavour.encode(),
        b"Argon2-Memory: %d" % kdf.memory,
        b"Argon2-Passes: %d" % kdf.passes,
        b"Argon2-Parallelism: %d" % kdf.parallelism,
        b"Argon2-Salt: " + kdf.salt.hex().encode(),
    ]


# --- key derivation, encryption, MAC (appendix C.4 and C.5.1) --------------------------------


@dataclass(frozen=True)
class _Secrets:
    cipher_key: bytes = b""
    iv: bytes = b""
    mac_key: bytes = b""


def _derive(version: int, passphrase: bytes | None, kdf: _Argon2Params | None) -> _Secrets:
    """Key material; ``passphrase`` is None exactly when the file is unencrypted."""
    if version == 2:
        secret = passphrase or b""
        mac_key = _sha1(_V2_MAC_KEY_PREFIX + secret)
        if passphrase is None:
            return _Secrets(mac_key=mac_key)
        cipher_key = (_sha1(b"\0\0\0\0" + secret) + _sha1(b"\0\0\0\1" + secret))[:32]
        return _Secrets(cipher_key, bytes(_AES_BLOCK), mac_key)
    if passphrase is None or kdf is None:
        return _Secrets()  # v3 unencrypted: the MAC is keyed with the empty string
    try:
        kdf_function = _ARGON2[kdf.flavour](
            salt=kdf.salt,
            length=32 + 16 + 32,
            iterations=kdf.passes,
            lanes=kdf.parallelism,
            memory_cost=kdf.memory,
        )
        out = kdf_function.derive(passphrase)
    except ValueError as exc:
        raise BadInput(f"PPK file has unusable Argon2 parameters: {exc}") from exc
    return _Secrets(out[:32], out[32:48], out[48:])


def _sha1(data: bytes) -> bytes:
    # SHA-1 is what PPK v2 key derivation and the padding rule are defined with.
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303
    digest.update(data)
    return digest.finalize()


def _pad(blob: bytes) -> bytes:
    # PuTTY pads to the AES block with the leading bytes of SHA-1(unpadded blob), adding
    # nothing when the blob is already a whole number of blocks.
    return blob + _sha1(blob)[: -len(blob) % _AES_BLOCK]


def _aes(secrets: _Secrets, data: bytes, *, decrypt: bool) -> bytes:
    if not data or len(data) % _AES_BLOCK:
        raise BadInput("PPK file is corrupt: encrypted private data is not whole AES blocks")
    cipher = Cipher(algorithms.AES(secrets.cipher_key), modes.CBC(secrets.iv))
    context = cipher.decryptor() if decrypt else cipher.encryptor()
    return context.update(data) + context.finalize()


def _mac(version: int, key: bytes, fields: Iterable[bytes]) -> bytes:
    digest = hashlib.sha1 if version == 2 else hashlib.sha256
    return hmac.new(key, b"".join(_string(field) for field in fields), digest).digest()


# --- key blobs (appendix C.3) ----------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(value: int) -> bytes:
    return _string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


class SshReader:
    """Reads SSH wire types (RFC 4251 section 5) from one blob, the *what* of a *source*
    (a truncated or negative value is :class:`BadInput` saying so)."""

    def __init__(self, data: bytes, what: str, *, source: str = "PPK file") -> None:
        self._data, self._pos, self._what, self._source = data, 0, what, source

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise BadInput(f"{self._source} is corrupt: the {self._what} is truncated")
        taken, self._pos = self._data[self._pos : end], end
        return taken

    def uint32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def string(self) -> bytes:
        return self._take(self.uint32())

    def mpint(self) -> int:
        raw = self.string()
        if raw[:1] >= b"\x80":
            raise BadInput(f"{self._source} is corrupt: negative number in the {self._what}")
        return int.from_bytes(raw, "big")


def _public_blob(key: PrivateKey) -> tuple[bytes, bytes]:
    if isinstance(key, ec.EllipticCurvePrivateKey) and not any(
        curve.name == key.curve.name for curve in _CURVES.values()
    ):
        raise BadInput(f"PPK cannot hold an EC key on curve {key.curve.name}")
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    algorithm, text = line.split(b" ")[:2]
    return algorithm, base64.b64decode(text)


def _private_blob(key: PrivateKey) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        return b"".join(_mpint(v) for v in (numbers.d, numbers.p, numbers.q, numbers.iqmp))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _mpint(key.private_numbers().private_value)
    return _string(key.private_bytes_raw())


def _public_key(algorithm: str, blob: bytes) -> PublicKey:
    inner = SshReader(blob, "public key").string().decode("ascii", "replace")
    if inner != algorithm:
        raise BadInput(f"PPK file is corrupt: header says {algorithm}, public key is {inner}")
    try:
        key = serialization.load_ssh_public_key(algorithm.encode() + b" " + base64.b64encode(blob))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadInput(f"PPK file is corrupt: unreadable {algorithm} public key") from exc
    if not isinstance(key, _PUBLIC_TYPES):
        raise BadInput(f"unsupported PPK key type '{algorithm}'")
    return key


def _private_key(algorithm: str, public_blob: bytes, private_blob: bytes) -> PrivateKey:
    public = _public_key(algorithm, public_blob)
    reader = SshReader(private_blob, "private key data")
    key: PrivateKey
    try:
        if isinstance(public, rsa.RSAPublicKey):
            key = _rsa_key(public, reader)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            key = ec.derive_private_key(reader.mpint(), public.curve)
        else:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(reader.string())
    except ValueError as exc:
        raise _mismatch() from exc
    if key.public_key() != public:
        raise _mismatch()
    return key


def _rsa_key(public: rsa.RSAPublicKey, reader: SshReader) -> rsa.RSAPrivateKey:
    d, p, q, iqmp = (reader.mpint() for _ in range(4))
    numbers = public.public_numbers()
    if p < 2 or q < 2 or p * q != numbers.n or iqmp != pow(q, -1, p):
        raise _mismatch()
    dmp1, dmq1 = rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, numbers).private_key()


def _mismatch() -> BadInput:
    return BadInput("PPK file is corrupt: the private key does not match the public key")
