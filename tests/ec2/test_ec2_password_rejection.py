"""``devid ec2 password`` with a wrong key under OpenSSL's PKCS#1 v1.5 "implicit rejection".

OpenSSL 3.2+ does not fail to decrypt with a wrong RSA key: it returns a deterministic random
plaintext of random length. devid must take only what can be a password EC2 generated
(printable ASCII without whitespace, 8 to 127 characters) and refuse the rest.
"""

from __future__ import annotations

import base64
import os
import secrets
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from test_ec2_password import encrypt_to, one_error, public_pem_of

from devid.ec2 import NOT_THIS_KEY, decrypt_password
from devid.errors import CheckFailed

# About 1 in 250 wrong-key plaintexts passed the old check: 20000 tries miss with p < 1e-20.
TRIES = 20_000


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def _old_check_passes(plain: bytes) -> bool:
    """What decrypt_password accepted before: non-empty printable UTF-8."""
    try:
        text = plain.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and text.isprintable()


def _wrong_key_plaintext_the_old_check_took(
    right: rsa.RSAPrivateKey, wrong: rsa.RSAPrivateKey
) -> tuple[bytes, bytes]:
    """(ciphertext to *right*, what *wrong* decrypts it to) that the old check let through."""
    for _ in range(TRIES):
        password = base64.b64encode(os.urandom(24))  # 32 characters, like EC2's passwords
        ciphertext = right.public_key().encrypt(password, padding.PKCS1v15())
        try:
            plain = wrong.decrypt(ciphertext, padding.PKCS1v15())
        except ValueError:  # refused with an error (devid says "not this key"): look on
            continue
        if _old_check_passes(plain):
            return ciphertext, plain
    raise AssertionError(
        f"no wrong-key plaintext passed the old check in {TRIES} tries: does cryptography's "
        "OpenSSL still do implicit rejection (3.2+)? Revisit devid.ec2.decrypt_password"
    )


def test_a_wrong_key_plaintext_is_never_a_password(
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    tmp_path: Path,
    devid: Callable[..., Result],
) -> None:
    right, wrong = keys
    ciphertext, plain = _wrong_key_plaintext_the_old_check_took(right, wrong)
    data = base64.b64encode(ciphertext).decode()

    with pytest.raises(CheckFailed, match=NOT_THIS_KEY):
        decrypt_password(wrong, data)

    wrong_file = tmp_path / "wrong.pem"
    wrong_file.write_bytes(
        wrong.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = devid("ec2", "password", "--key", wrong_file, "--password-data", data)
    one_error(result, 1, NOT_THIS_KEY)
    assert plain.decode() not in result.out


@pytest.mark.parametrize(
    "plain",
    [
        b"b",
        b"7chars!",
        b"has a space",
        b"tab\tinside-it",
        b"line\nbreak-in-it",
        "pässwörd-ünïcode".encode(),
        b"\x7fdelete-char",
        b"x" * 128,
    ],
    ids=["one-char", "seven-chars", "space", "tab", "newline", "non-ascii", "del", "too-long"],
)
def test_implausible_plaintexts_are_refused(
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey], plain: bytes
) -> None:
    key = keys[0]
    data = base64.b64encode(key.public_key().encrypt(plain, padding.PKCS1v15())).decode()
    with pytest.raises(CheckFailed, match=NOT_THIS_KEY):
        decrypt_password(key, data)


@pytest.mark.parametrize("length", [8, 32, 127])
def test_passwords_ec2_could_set_are_accepted(
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey], length: int
) -> None:
    key = keys[0]
    password = "".join(secrets.choice(string.printable[:94]) for _ in range(length))
    data = base64.b64encode(key.public_key().encrypt(password.encode(), padding.PKCS1v15()))
    assert decrypt_password(key, data.decode()) == password


def test_a_real_32_character_password_decrypts(
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    tmp_path: Path,
    devid: Callable[..., Result],
) -> None:
    key_file = tmp_path / "win.pem"
    key_file.write_bytes(
        keys[0].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    password = "Kx7%bQ2@z!Lm9&Pw-4rT;8vN(3sYe*6J"
    assert len(password) == 32
    data = encrypt_to(public_pem_of(key_file), password)  # openssl pkeyutl, as EC2 does
    result = devid("ec2", "password", "--key", key_file, "--password-data", data)
    assert result.code == 0, result.err
    assert result.out == password + "\n"
