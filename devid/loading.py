"""Loading keys from a key reference or from the bytes people keep them in.

Private keys: PEM PKCS#1/PKCS#8/SEC1, DER, OpenSSH, PuTTY PPK (encrypted or not), or a
``pkcs11:`` URI. Public keys: all of those plus an OpenSSH line, RFC 4716, PEM/DER
SubjectPublicKeyInfo, PEM PKCS#1 public key, bare base64 DER, a certificate or a CSR.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import hsm
from devid import ppk
from devid.errors import BadInput
from devid.fsutil import read_input
from devid.keys import PassphraseRequired, PrivateKey, PublicKey, is_token_ref

PassphraseSource = Callable[[], bytes]

_SUPPORTED_PRIVATE = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
_SUPPORTED_PUBLIC = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
_WRONG_PASSPHRASE = ("password", "decrypt", "checksum")
#: How encrypted PEM keys announce themselves: RFC 1421 header, PKCS#8 EncryptedPrivateKeyInfo
_ENCRYPTED_PEM = (b"Proc-Type: 4,ENCRYPTED", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
_RFC4716 = re.compile(
    rb"---- BEGIN SSH2 PUBLIC KEY ----\r?\n(?P<body>.*?)---- END SSH2 PUBLIC KEY ----", re.S
)


def _check_private(key: object, where: str) -> PrivateKey:
    if not isinstance(key, _SUPPORTED_PRIVATE):
        raise BadInput(
            f"{where}: unsupported key type {type(key).__name__}; use RSA, EC or Ed25519"
        )
    return key


def _check_public(key: object, where: str) -> PublicKey:
    if not isinstance(key, _SUPPORTED_PUBLIC):
        raise BadInput(
            f"{where}: unsupported key type {type(key).__name__}; use RSA, EC or Ed25519"
        )
    return key


def parse_private_key(
    data: bytes, *, passphrase: bytes | None = None, where: str = "key"
) -> PrivateKey:
    """A software private key from *data* in any supported encoding."""
    if ppk.is_ppk(data):
        try:
            key, _ = ppk.load_ppk(data, passphrase)
        except PassphraseRequired:
            raise
        except BadInput as exc:  # say which file, as for the other forms
            raise BadInput(f"{where}: {exc.message}", hint=exc.hint) from exc
        return key
    _check_dek_info(data, where)
    loaders: list[Callable[..., object]] = []
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        loaders.append(serialization.load_ssh_private_key)
    elif b"-----BEGIN" in data:
        loaders.append(serialization.load_pem_private_key)
    else:
        loaders.append(serialization.load_der_private_key)
    for loader in loaders:
        try:
            return _check_private(_no_panic(loader, data, passphrase, where), where)
        except TypeError as exc:
            if passphrase is None:
                raise PassphraseRequired(f"{where} is encrypted; a passphrase is needed") from exc
            # Not encrypted: a passphrase from DEVID_PASSPHRASE or a file is simply not
            # needed (openssl and ssh-keygen ignore it too), so load the key without it.
            return parse_private_key(data, where=where)
        except UnsupportedAlgorithm as exc:
            cipher = _UNSUPPORTED_CIPHER.search(str(exc))
            if cipher:  # the key is fine; the cipher its file is encrypted with is not
                raise BadInput(
                    f"{where}: encrypted with {cipher['name']}, a cipher devid cannot read",
                    hint="re-encrypt it: ssh-keygen -p -Z aes256-ctr -f FILE",
                ) from exc
            raise BadInput(f"{where}: unsupported key algorithm") from exc
        except InvalidTag as exc:  # an AES-GCM OpenSSH key opened with the wrong passphrase
            raise BadInput(f"{where}: wrong passphrase") from exc
        except ValueError as exc:
            # cryptography says "Incorrect password, could not decrypt key" for PEM and
            # "Corrupt data: broken checksum" for an OpenSSH key decrypted with the wrong one.
            if passphrase is not None and any(w in str(exc).lower() for w in _WRONG_PASSPHRASE):
                raise BadInput(f"{where}: wrong passphrase") from exc
            if passphrase is not None and any(mark in data for mark in _ENCRYPTED_PEM):
                # A wrong passphrase passes the CBC padding check by chance (about 1 in 250)
                # and the garbage it decrypts to does not parse as a key.
                raise BadInput(f"{where}: wrong passphrase (or a damaged file)") from exc
    raise BadInput(f"{where} is not a private key devid can read (PEM, DER, OpenSSH or PPK)")


_UNSUPPORTED_CIPHER = re.compile(r"Unsupported cipher: b?'?(?P<name>[^']+)'?")

#: IV lengths of the ciphers traditional encrypted PEM (RFC 1421 DEK-Info) names
_DEK_IV_BYTES = {"AES-128-CBC": 16, "AES-192-CBC": 16, "AES-256-CBC": 16, "DES-EDE3-CBC": 8,
                 "DES-CBC": 8}  # fmt: skip
_DEK_INFO = re.compile(rb"^DEK-Info:[ \t]*([A-Za-z0-9-]+),([0-9A-Fa-f]*)[ \t]*\r?$", re.MULTILINE)


def _check_dek_info(data: bytes, where: str) -> None:
    """Refuse an encrypted PEM whose DEK-Info IV does not fit its cipher: cryptography's
    Rust code panics on a short one instead of raising an error."""
    match = _DEK_INFO.search(data)
    if match is None:
        return
    cipher, iv = match.group(1).decode().upper(), match.group(2)
    expected = _DEK_IV_BYTES.get(cipher)
    if expected is not None and len(iv) != 2 * expected:
        raise BadInput(
            f"{where}: malformed encrypted PEM (the DEK-Info IV of {cipher} must be "
            f"{expected} bytes, not {len(iv) / 2:g})"
        )


def _no_panic(
    loader: Callable[..., object], data: bytes, passphrase: bytes | None, where: str
) -> object:
    """*loader(data, password=...)*; a panic inside cryptography's Rust code (pyo3's
    PanicException, a BaseException) on malformed input becomes one bad-input line."""
    try:
        return loader(data, password=passphrase)
    except Exception:
        raise
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise BadInput(
            f"{where}: malformed private key (cryptography could not parse it)"
        ) from None


def load_signing_key(
    ref: str,
    *,
    passphrase: bytes | None = None,
    ask_passphrase: PassphraseSource | None = None,
) -> PrivateKey:
    """The private key *ref* names: a file path or a ``pkcs11:`` URI.

    An encrypted file without *passphrase* calls *ask_passphrase* once when given, else
    raises :class:`~devid.keys.PassphraseRequired`.
    """
    if is_token_ref(ref):
        return hsm.load_key(ref)
    data = read_input(ref, what="key file")
    return open_private_key(data, where=ref, passphrase=passphrase, ask_passphrase=ask_passphrase)


def open_private_key(
    data: bytes,
    *,
    where: str,
    passphrase: bytes | None = None,
    ask_passphrase: PassphraseSource | None = None,
) -> PrivateKey:
    """:func:`parse_private_key`, calling *ask_passphrase* once when *data* is encrypted and
    no *passphrase* was given."""
    try:
        return parse_private_key(data, passphrase=passphrase, where=where)
    except PassphraseRequired:
        if ask_passphrase is None or passphrase is not None:
            raise
        return parse_private_key(data, passphrase=ask_passphrase(), where=where)


def _ssh_line(data: bytes, where: str) -> PublicKey | None:
    text = data.strip()
    if not text.startswith((b"ssh-", b"ecdsa-sha2-")):
        return None
    try:
        return _check_public(serialization.load_ssh_public_key(text.splitlines()[0]), where)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadInput(f"{where}: malformed OpenSSH public key ({exc})") from exc
    except NotImplementedError as exc:  # e.g. a compressed EC point
        raise BadInput(f"{where}: unsupported OpenSSH public key ({exc})") from exc


def _rfc4716(data: bytes, where: str) -> PublicKey | None:
    match = _RFC4716.search(data)
    if match is None:
        return None
    lines, body = match.group("body").splitlines(), []
    continued = False
    for line in lines:
        # Header lines are "Tag: value" and may continue with a trailing backslash.
        if continued or b":" in line:
            continued = line.endswith(b"\\")
            continue
        body.append(line.strip())
    try:
        blob = base64.b64decode(b"".join(body), validate=True)
        name = blob[4 : 4 + int.from_bytes(blob[:4], "big")]
        key = serialization.load_ssh_public_key(name + b" " + base64.b64encode(blob))
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
        raise BadInput(f"{where}: malformed RFC 4716 public key") from exc
    return _check_public(key, where)


def _der_private_public(der: bytes) -> object:
    return serialization.load_der_private_key(der, None).public_key()


def _der_cert_public(der: bytes) -> object:
    return x509.load_der_x509_certificate(der).public_key()


def _der_csr_public(der: bytes) -> object:
    return x509.load_der_x509_csr(der).public_key()


def _from_der(der: bytes, where: str) -> PublicKey | None:
    parsers: tuple[Callable[[bytes], object], ...] = (
        serialization.load_der_public_key,
        _der_cert_public,
        _der_csr_public,
        _der_private_public,
    )
    for parse in parsers:
        try:
            return _check_public(parse(der), where)
        except TypeError as exc:  # an encrypted DER PKCS#8 key: the public half needs it
            raise PassphraseRequired(f"{where} is encrypted; a passphrase is needed") from exc
        except (ValueError, UnsupportedAlgorithm):
            continue
    return None


def _from_pem(data: bytes, where: str) -> PublicKey | None:
    if b"-----BEGIN CERTIFICATE-----" in data:
        return _check_public(x509.load_pem_x509_certificate(data).public_key(), where)
    if b"-----BEGIN CERTIFICATE REQUEST-----" in data:
        return _check_public(x509.load_pem_x509_csr(data).public_key(), where)
    if b"PUBLIC KEY-----" in data:  # SPKI and PKCS#1 "RSA PUBLIC KEY" alike
        return _check_public(serialization.load_pem_public_key(data), where)
    return None


def parse_public_key(data: bytes, *, where: str = "key") -> PublicKey:
    """A public key from *data* in any common form (see the module docstring)."""
    try:
        for attempt in (_ssh_line, _rfc4716, _from_pem):
            found = attempt(data, where)
            if found is not None:
                return found
    except ValueError as exc:
        raise BadInput(f"{where}: malformed PEM ({exc})") from exc
    if ppk.is_ppk(data):
        return _check_public(ppk.load_public(data), where)
    if b"-----BEGIN" in data:
        return parse_private_key(data, where=where).public_key()
    stripped = data.strip()
    der: bytes | None = data
    if re.fullmatch(rb"[A-Za-z0-9+/=\s]+", stripped):
        try:
            der = base64.b64decode(b"".join(stripped.split()), validate=True)
        except binascii.Error:
            der = None
    found = _from_der(der, where) if der else None
    if found is None:
        raise BadInput(f"{where} holds no public key devid can read")
    return found


def looks_private(data: bytes) -> bool:
    """True if *data* holds a private key (PEM, OpenSSH, PPK or DER), encrypted or not."""
    if ppk.is_ppk(data) or b"PRIVATE KEY-----" in data:
        return True
    try:
        serialization.load_der_private_key(data, None)
    except TypeError:  # an encrypted DER PKCS#8 key
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def load_public_key(ref: str) -> PublicKey:
    """The public key of *ref*: a token URI or a file in any form :func:`parse_public_key` reads."""
    if is_token_ref(ref):
        return hsm.load_key(ref).public_key()
    return parse_public_key(read_input(ref, what="key file"), where=ref)
