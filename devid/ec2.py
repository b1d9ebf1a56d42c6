"""EC2 key pairs over boto3: create, import, list, delete, match, and Windows passwords.

EC2 shows three different fingerprints (DESIGN.md section 2): created RSA key pairs get the
SHA-1 of the PKCS#8 private key, imported RSA keys the MD5 of the DER public key, Ed25519
keys the padded base64 SHA-256 of the SSH blob. :func:`match` tries every form devid can
compute for a local key, and then the public key itself where DescribeKeyPairs returns it
(endpoints such as moto compute other fingerprints, so the public key is the robust test).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

import hsm
from devid import fsutil, ppk
from devid.aws import aws_errors
from devid.errors import (
    BadInput,
    CheckFailed,
    Conflict,
    DevidError,
    EnvironmentProblem,
    NotFound,
    PassphraseRequired,
)
from devid.fingerprint import ec2_created, ec2_imported
from devid.keys import PrivateFormat, PrivateKey, PublicKey, private_key_bytes
from devid.loading import looks_private, parse_private_key, parse_public_key
from devid.localkeys import candidate_key_file
from devid.pubformat import openssh_line
from hsm.errors import TokenFailure

NAME_MAX = 255
NOT_THIS_KEY = "the password data was not encrypted to this key"


class KeyPairType(enum.Enum):
    RSA = "rsa"
    ED25519 = "ed25519"


class KeyFormat(enum.Enum):
    """``pem``: PKCS#1 for RSA, OpenSSH for Ed25519 (as AWS returns them); ``ppk``: PuTTY."""

    PEM = "pem"
    PPK = "ppk"


@dataclass(frozen=True)
class KeyPair:
    """A key pair as EC2 describes it; ``fingerprint`` is EC2's own value."""

    name: str
    key_pair_id: str
    key_type: str
    fingerprint: str
    public_key: PublicKey | None = field(default=None, compare=False)

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> KeyPair:
        public: PublicKey | None = None
        text = item.get("PublicKey")
        if text:
            try:
                public = parse_public_key(str(text).encode(), where="EC2's public key")
            except DevidError:
                public = None  # a form devid cannot read: matching falls back to fingerprints
        return cls(
            name=str(item.get("KeyName", "")),
            key_pair_id=str(item.get("KeyPairId", "")),
            key_type=str(item.get("KeyType", "")),
            fingerprint=str(item.get("KeyFingerprint", "")),
            public_key=public,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key_pair_id": self.key_pair_id,
            "type": self.key_type,
            "fingerprint": self.fingerprint,
        }


def check_name(name: str) -> None:
    """EC2 key pair names: 1 to 255 ASCII characters."""
    if not name or len(name) > NAME_MAX or not name.isascii() or not name.isprintable():
        raise BadInput(f"a key pair name is 1 to {NAME_MAX} printable ASCII characters")


def _codes(name: str) -> dict[str, DevidError]:
    return {
        "InvalidKeyPair.Duplicate": Conflict(f"key pair {name!r} already exists in this Region"),
        "InvalidKeyPair.NotFound": NotFound(f"no key pair named {name!r} in this Region"),
        "InvalidKeyPair.Format": CheckFailed("EC2 did not accept the public key"),
    }


def describe(ec2: Any, name: str | None = None) -> list[KeyPair]:
    """Key pairs in the Region (or just *name*), with their public keys where EC2 has them."""
    args: dict[str, Any] = {"IncludePublicKey": True}
    if name is not None:
        args["KeyNames"] = [name]
    with aws_errors("DescribeKeyPairs", _codes(name or "")):
        answer = ec2.describe_key_pairs(**args)
    return [KeyPair.from_api(item) for item in answer.get("KeyPairs", [])]


def get(ec2: Any, name: str) -> KeyPair:
    found = describe(ec2, name)
    if not found:
        raise NotFound(f"no key pair named {name!r} in this Region")
    return found[0]


def import_key(ec2: Any, name: str, key: PublicKey) -> KeyPair:
    """ImportKeyPair with the OpenSSH public key line; the policy check is the caller's."""
    check_name(name)
    with aws_errors("ImportKeyPair", _codes(name)):
        answer = ec2.import_key_pair(KeyName=name, PublicKeyMaterial=openssh_line(key))
    # ImportKeyPair's answer has no KeyType: it follows from the key.
    key_type = KeyPairType.RSA if isinstance(key, rsa.RSAPublicKey) else KeyPairType.ED25519
    return dataclasses.replace(KeyPair.from_api(answer), key_type=key_type.value)


def delete(ec2: Any, name: str) -> KeyPair:
    """Delete *name*; unlike EC2 itself, a missing key pair is an error (NotFound)."""
    pair = get(ec2, name)
    with aws_errors("DeleteKeyPair", _codes(name)):
        ec2.delete_key_pair(KeyName=name)
    return pair


def devid_fingerprint(key: PrivateKey) -> str | None:
    """The fingerprint EC2 shows for a key pair it created with this private key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return ec2_created(key)
    return ec2_imported(key.public_key())


# --- CreateKeyPair ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    key_pair: KeyPair
    path: Path
    key: PrivateKey
    key_format: KeyFormat
    converted: bool  # devid converted what AWS returned into the format asked for


def create(
    ec2: Any,
    name: str,
    key_type: KeyPairType,
    key_format: KeyFormat,
    out: Path,
    *,
    force: bool = False,
    ppk_version: int = 3,
) -> Created:
    """CreateKeyPair and save the private key to *out* (0600, atomic) before anything else.

    If saving fails for any reason, the new key pair is deleted again so that no key pair
    whose private key nobody has is left in AWS; the error says whether that worked.
    """
    check_name(name)
    fsutil.refuse_existing(out, force=force)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"cannot write {out}: {parent} is not a directory")
    with aws_errors("CreateKeyPair", _codes(name)):
        answer = ec2.create_key_pair(
            KeyName=name, KeyType=key_type.value, KeyFormat=key_format.value
        )
    # CreateKeyPair's answer has no KeyType: it is the one asked for.
    pair = dataclasses.replace(KeyPair.from_api(answer), key_type=key_type.value)
    material = str(answer.get("KeyMaterial", ""))
    try:
        data, key, converted = _material(material, key_format, name, ppk_version)
        fsutil.write_atomic(out, data, mode=fsutil.PRIVATE_MODE, force=force)
    except DevidError as exc:
        raise type(exc)(f"{exc.message}; {_roll_back(ec2, name)}", hint=exc.hint) from exc
    except BaseException:
        _roll_back(ec2, name)
        raise
    return Created(pair, out, key, key_format, converted)


def _material(
    text: str, key_format: KeyFormat, name: str, ppk_version: int
) -> tuple[bytes, PrivateKey, bool]:
    data = text.encode()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    is_ppk = ppk.is_ppk(data)
    try:
        key = ppk.load_ppk(data)[0] if is_ppk else parse_private_key(data, where="key material")
    except DevidError as exc:
        raise EnvironmentProblem(f"AWS returned key material devid cannot read ({exc})") from exc
    if key_format is KeyFormat.PPK and not is_ppk:
        # moto (and any endpoint that ignores KeyFormat) returns PEM: convert here.
        return ppk.dump_ppk(key, comment=name, version=ppk_version), key, True
    if key_format is KeyFormat.PEM and is_ppk:
        # PEM as AWS returns it: PKCS#1 for RSA, OpenSSH for Ed25519.
        fmt = (
            PrivateFormat.OPENSSH
            if isinstance(key, ed25519.Ed25519PrivateKey)
            else (PrivateFormat.PKCS1)
        )
        return private_key_bytes(key, fmt), key, True
    return data, key, False


def _roll_back(ec2: Any, name: str) -> str:
    try:
        with aws_errors("DeleteKeyPair"):
            ec2.delete_key_pair(KeyName=name)
    except DevidError as exc:
        return (
            f"deleting the new key pair {name!r} failed too ({exc}); "
            f"delete it with 'devid ec2 delete {name}'"
        )
    return f"the new key pair {name!r} was deleted again, so none is left in AWS"


# --- Windows administrator password ------------------------------------------------------------


def password_data(ec2: Any, instance_id: str) -> str:
    """GetPasswordData: the base64 ciphertext, or NotFound when there is none (yet)."""
    codes: dict[str, DevidError] = {
        "InvalidInstanceID.NotFound": NotFound(f"no instance {instance_id!r} in this Region"),
        "InvalidInstanceID.Malformed": BadInput(f"{instance_id!r} is not an instance id"),
    }
    with aws_errors("GetPasswordData", codes):
        answer = ec2.get_password_data(InstanceId=instance_id)
    data = str(answer.get("PasswordData") or "").strip()
    if not data:
        raise NotFound(
            f"instance {instance_id} has no password data: not a Windows instance, or not "
            "ready yet (AWS makes it available a few minutes after launch)"
        )
    return data


def decrypt_password(key: PrivateKey, data: str) -> str:
    """The Windows password: base64 -> RSA PKCS#1 v1.5 decrypt (file or token) -> ASCII."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BadInput("Windows passwords are encrypted to an RSA key; this key is not RSA")
    try:
        ciphertext = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("the password data is not base64") from exc
    size = (key.key_size + 7) // 8
    if len(ciphertext) != size:
        raise CheckFailed(
            f"{NOT_THIS_KEY} (it is {len(ciphertext)} bytes; an rsa-{key.key_size} "
            f"ciphertext is {size})"
        )
    plain = _decrypt(key, ciphertext)
    if not _believable_password(plain):
        raise CheckFailed(NOT_THIS_KEY)
    return plain.decode("ascii")


# Passwords EC2 generates for Windows: printable ASCII without spaces, 8 to 127 characters
# (in practice 32 or so; Windows itself allows at most 127).
_PASSWORD_LENGTHS = range(8, 128)
_PASSWORD_BYTES = frozenset(range(0x21, 0x7F))


def _believable_password(plain: bytes) -> bool:
    """Whether *plain* can be a password EC2 generated, not an implicit-rejection plaintext.

    OpenSSL 3.2+ answers a wrong key not with an error but with a deterministic random
    plaintext of random length, 0 to k-11 bytes ("implicit rejection", OpenSSL 3.2 CHANGES,
    draft-irtf-cfrg-rsa-guidance). Checking only for printable UTF-8 let about 1 in 400 of
    those through (short strings like "b"). With 8 to 127 bytes out of 94 values each, an
    rsa-2048 wrong key passes with probability about
    (1/246) * sum over L=8..127 of (94/256)^L, roughly 2e-6 (less for larger keys).
    """
    return len(plain) in _PASSWORD_LENGTHS and all(b in _PASSWORD_BYTES for b in plain)


def _decrypt(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    if isinstance(key, hsm.TokenRSAPrivateKey):
        return _token_decrypt(key, ciphertext)
    try:
        return key.decrypt(ciphertext, padding.PKCS1v15())
    except ValueError:
        raise CheckFailed(NOT_THIS_KEY) from None


def _token_decrypt(key: hsm.TokenRSAPrivateKey, ciphertext: bytes) -> bytes:
    if not _token_can_decrypt(key):
        raise BadInput(
            f"token key {key.handle.label!r} was made without the DECRYPT capability; make "
            "one with 'devid key generate rsa-2048 --token URI --label L --for ec2-windows'"
        )
    try:
        return key.decrypt(ciphertext, padding.PKCS1v15())
    except hsm.HsmError as exc:
        if isinstance(exc, TokenFailure):
            # SoftHSM says CKR_GENERAL_ERROR (others CKR_ENCRYPTED_DATA_INVALID) for bad padding.
            raise CheckFailed(f"{NOT_THIS_KEY} (the token could not decrypt it)") from exc
        raise


def _token_can_decrypt(key: hsm.TokenRSAPrivateKey) -> bool:
    from pkcs11 import Attribute
    from pkcs11.exceptions import PKCS11Error

    from hsm.module import TOKEN_LOCK

    with TOKEN_LOCK:
        obj = key.handle.private_object()
        try:
            return bool(obj[Attribute.DECRYPT])
        except PKCS11Error:  # unreadable: let the token decide when asked to decrypt
            return True


# --- matching local keys to key pairs ----------------------------------------------------------

# Files in ~/.ssh that hold keys of other people or hosts, or no key at all.
_ENCRYPTED = "encrypted; its .pub file is matched if present, or name it with --match"


class MatchMethod(enum.Enum):
    IMPORTED_FINGERPRINT = "imported-fingerprint"  # MD5 of the SPKI / padded SHA-256
    CREATED_FINGERPRINT = "created-fingerprint"  # SHA-1 of the PKCS#8 private key
    PUBLIC_KEY = "public-key"  # the public key DescribeKeyPairs returned


@dataclass(frozen=True)
class LocalKey:
    """A key on this machine (file or token) with the fingerprints EC2 would show for it."""

    ref: str
    public: PublicKey = field(compare=False)
    ec2_imported: str | None
    ec2_created: str | None

    @classmethod
    def of(cls, ref: str, key: PublicKey | PrivateKey) -> LocalKey:
        if isinstance(key, PublicKey):
            return cls(ref, key, ec2_imported(key), None)
        created = ec2_created(key)  # None for token keys: the private key cannot be read
        return cls(ref, key.public_key(), ec2_imported(key.public_key()), created)


@dataclass(frozen=True)
class Skipped:
    ref: str
    reason: str


@dataclass(frozen=True)
class Match:
    key_pair: KeyPair
    local: LocalKey
    method: MatchMethod


def _norm(fingerprint: str) -> str:
    text = fingerprint.strip().removeprefix("SHA256:")
    return text.lower() if ":" in text else text.rstrip("=")


def match(pair: KeyPair, local: LocalKey) -> MatchMethod | None:
    """How *local* is known to be *pair*'s key, or None; fingerprints first, as EC2 shows."""
    shown = _norm(pair.fingerprint)
    if local.ec2_imported and _norm(local.ec2_imported) == shown:
        return MatchMethod.IMPORTED_FINGERPRINT
    if local.ec2_created and _norm(local.ec2_created) == shown:
        return MatchMethod.CREATED_FINGERPRINT
    if pair.public_key is not None and _same_key(pair.public_key, local.public):
        return MatchMethod.PUBLIC_KEY
    return None


def _same_key(a: PublicKey, b: PublicKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)


def match_all(pairs: list[KeyPair], local: list[LocalKey]) -> tuple[list[Match], list[LocalKey]]:
    """Every (key pair, local key) that match, and the local keys that match nothing."""
    found = [
        Match(pair, key, method)
        for pair in pairs
        for key in local
        if (method := match(pair, key)) is not None
    ]
    matched = {m.local.ref for m in found}
    return found, [key for key in local if key.ref not in matched]


def key_from_bytes(
    ref: str, data: bytes, *, passphrase: bytes | None = None
) -> LocalKey | Skipped | None:
    """A local key from a file's bytes; Skipped when it is a key devid cannot open, None
    when it is no key at all. An encrypted PPK still gives its (clear) public key."""
    if not looks_private(data):
        try:
            return LocalKey.of(ref, parse_public_key(data, where=ref))
        except DevidError:
            return None
    try:
        return LocalKey.of(ref, parse_private_key(data, passphrase=None, where=ref))
    except PassphraseRequired:
        if passphrase:
            return LocalKey.of(ref, parse_private_key(data, passphrase=passphrase, where=ref))
        if ppk.is_ppk(data):
            return LocalKey.of(ref, ppk.load_public(data))
        return Skipped(ref, _ENCRYPTED)
    except DevidError as exc:
        return Skipped(ref, str(exc))


def scan(directory: Path) -> tuple[list[LocalKey], list[Skipped]]:
    """The keys in *directory* (not recursive), as ``devid ec2 list`` looks in ~/.ssh."""
    keys: list[LocalKey] = []
    skipped: list[Skipped] = []
    if not directory.is_dir():
        return keys, skipped
    for path in sorted(directory.iterdir()):
        if not candidate_key_file(path):
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(str(path), f"cannot read: {exc.strerror}"))
            continue
        found = key_from_bytes(str(path), data)
        if isinstance(found, LocalKey):
            keys.append(found)
        elif isinstance(found, Skipped):
            skipped.append(found)
    return keys, skipped
