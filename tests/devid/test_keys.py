"""devid.keys: key types, software key files and token keys, checked with openssl/ssh-keygen."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_tool, unique
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import hsm
from devid.errors import BadInput, Conflict
from devid.keys import (
    KeyType,
    PrivateFormat,
    PrivateKey,
    PublicKey,
    describe,
    generate_key,
    is_token_ref,
    private_key_bytes,
    write_private_key,
)
from devid.loading import load_signing_key

FAST_TYPES = [k for k in KeyType if k is not KeyType.RSA_4096]  # RSA-4096 is slow to make
PASSPHRASE = b"keys test passphrase"
# What `openssl pkey -noout -text` says about each type (its own wording).
OPENSSL_SAYS = {
    KeyType.RSA_2048: "Private-Key: (2048 bit, 2 primes)",
    KeyType.RSA_3072: "Private-Key: (3072 bit, 2 primes)",
    KeyType.EC_P256: "ASN1 OID: prime256v1",
    KeyType.EC_P384: "ASN1 OID: secp384r1",
    KeyType.EC_P521: "ASN1 OID: secp521r1",
    KeyType.ED25519: "ED25519 Private-Key:",
}


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def openssl_public_der(path: Path, *passin: str) -> bytes:
    args = ["openssl", "pkey", "-in", str(path), *passin, "-pubout", "-outform", "DER"]
    return run_tool(*args).stdout


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def keys() -> dict[KeyType, PrivateKey]:
    return {k: k.generate() for k in FAST_TYPES}


def test_key_type_names_and_parts() -> None:
    assert [k.value for k in KeyType] == [
        "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521", "ed25519"
    ]  # fmt: skip
    assert (KeyType.RSA_4096.algorithm, KeyType.RSA_4096.size) == ("rsa", 4096)
    assert (KeyType.EC_P521.algorithm, KeyType.EC_P521.size) == ("ec", "p521")
    assert (KeyType.ED25519.algorithm, KeyType.ED25519.size) == ("ed25519", "ed25519")


def test_key_type_parse() -> None:
    assert KeyType.parse("EC-P384") is KeyType.EC_P384
    with pytest.raises(BadInput, match="unknown key type 'dsa'; choose one of rsa-2048") as info:
        KeyType.parse("dsa")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("key_type", FAST_TYPES, ids=lambda k: k.value)
def test_generated_key_is_what_openssl_says(
    keys: dict[KeyType, PrivateKey], tmp_path: Path, key_type: KeyType
) -> None:
    key = keys[key_type]
    path = tmp_path / "key.pem"
    path.write_bytes(private_key_bytes(key))
    text = run_tool("openssl", "pkey", "-in", str(path), "-noout", "-text").stdout.decode()
    assert OPENSSL_SAYS[key_type] in text
    assert KeyType.of(key) is key_type
    assert KeyType.of(key.public_key()) is key_type
    assert spki(key.public_key()) == openssl_public_der(path)


@pytest.mark.parametrize(
    ("kind", "algorithm", "bits"),
    [("rsa-1024", "rsa", 1024), ("rsa-3072", "rsa", 3072), ("ec-p521", "ec", 521),
     ("ed25519", "ed25519", 256)],
)  # fmt: skip
def test_describe_openssl_keys(
    openssl_key: Callable[[str], Path], kind: str, algorithm: str, bits: int
) -> None:
    key = load_signing_key(str(openssl_key(kind)))
    info = describe(key)
    assert (info.algorithm, info.bits) == (algorithm, bits)
    assert describe(key.public_key()) == info
    # devid does not make RSA-1024 keys, so it has no KeyType for one
    assert (KeyType.of(key) is None) == (kind == "rsa-1024")


def test_key_type_of_an_unsupported_curve() -> None:
    key = ec.generate_private_key(ec.SECP224R1())
    assert KeyType.of(key) is None


@pytest.mark.parametrize("key_type", FAST_TYPES, ids=lambda k: k.value)
def test_openssh_format_read_by_ssh_keygen(
    keys: dict[KeyType, PrivateKey], tmp_path: Path, key_type: KeyType
) -> None:
    key = keys[key_type]
    path = tmp_path / "id"
    write_private_key(key, path, fmt=PrivateFormat.OPENSSH)
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    line = run_tool("ssh-keygen", "-y", "-P", "", "-f", str(path)).stdout
    assert serialization.load_ssh_public_key(line) == key.public_key()


@pytest.mark.parametrize(
    ("key_type", "header", "tool"),
    [(KeyType.RSA_2048, b"RSA PRIVATE KEY", "rsa"), (KeyType.EC_P384, b"EC PRIVATE KEY", "ec")],
)
def test_pkcs1_format_is_traditional_openssl(
    keys: dict[KeyType, PrivateKey], tmp_path: Path, key_type: KeyType, header: bytes, tool: str
) -> None:
    path = tmp_path / "key.pem"
    write_private_key(keys[key_type], path, fmt=PrivateFormat.PKCS1)
    assert path.read_bytes().startswith(b"-----BEGIN " + header + b"-----")
    run_tool("openssl", tool, "-in", str(path), "-check", "-noout")
    assert openssl_public_der(path) == spki(keys[key_type].public_key())


def test_ed25519_has_no_pkcs1_form(keys: dict[KeyType, PrivateKey], tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no PKCS#1"):
        write_private_key(keys[KeyType.ED25519], tmp_path / "k", fmt=PrivateFormat.PKCS1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key_type", [KeyType.RSA_2048, KeyType.ED25519], ids=lambda k: k.value)
def test_encrypted_files_open_with_the_passphrase(
    keys: dict[KeyType, PrivateKey], tmp_path: Path, key_type: KeyType
) -> None:
    key = keys[key_type]
    pass_file = tmp_path / "pass"
    pass_file.write_bytes(PASSPHRASE)
    pem = write_private_key(key, tmp_path / "k.pem", passphrase=PASSPHRASE)
    assert pem.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert openssl_public_der(pem, "-passin", f"file:{pass_file}") == spki(key.public_key())
    bad = run_tool("openssl", "pkey", "-in", str(pem), "-passin", "pass:wrong", check=False)
    assert bad.returncode != 0
    ossh = write_private_key(key, tmp_path / "k", fmt=PrivateFormat.OPENSSH, passphrase=PASSPHRASE)
    line = run_tool("ssh-keygen", "-y", "-P", PASSPHRASE.decode(), "-f", str(ossh)).stdout
    assert serialization.load_ssh_public_key(line) == key.public_key()
    assert run_tool("ssh-keygen", "-y", "-P", "", "-f", str(ossh), check=False).returncode != 0


def test_write_private_key_mode_and_no_overwrite(
    keys: dict[KeyType, PrivateKey], tmp_path: Path
) -> None:
    path = tmp_path / "k.pem"
    write_private_key(keys[KeyType.EC_P256], path)
    assert mode_of(path) == 0o600
    before = path.read_bytes()
    with pytest.raises(Conflict, match="exists; pass --force") as info:
        write_private_key(keys[KeyType.EC_P384], path)
    assert info.value.exit_code == 4
    assert path.read_bytes() == before
    write_private_key(keys[KeyType.EC_P384], path, force=True)
    assert openssl_public_der(path) == spki(keys[KeyType.EC_P384].public_key())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_generate_key_to_file(tmp_path: Path) -> None:
    out = tmp_path / "new.pem"
    key, ref = generate_key(KeyType.EC_P256, out=out)
    assert ref == str(out)
    assert mode_of(out) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert openssl_public_der(out) == spki(key.public_key())


def test_generate_key_refuses_before_any_work(tmp_path: Path) -> None:
    existing = tmp_path / "existing.pem"
    existing.write_bytes(b"keep me")
    with pytest.raises(Conflict):
        generate_key(KeyType.EC_P256, out=existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(BadInput, match="either --out PATH or --token URI"):
        generate_key(KeyType.EC_P256)
    with pytest.raises(BadInput, match="either --out PATH or --token URI"):
        generate_key(KeyType.EC_P256, out=tmp_path / "a", token="pkcs11:token=x", label="l")
    with pytest.raises(BadInput, match="needs --label"):
        generate_key(KeyType.EC_P256, token="pkcs11:token=x")
    with pytest.raises(BadInput, match="no PKCS#1 form"):
        generate_key(KeyType.ED25519, out=tmp_path / "ed", fmt=PrivateFormat.PKCS1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.pem"]


def test_generate_key_on_token(token_uri: str, tmp_path: Path) -> None:
    label = unique("keys-test")
    key, ref = generate_key(KeyType.EC_P256, token=token_uri, label=label)
    assert is_token_ref(ref)
    parsed = hsm.parse_uri(ref)
    assert (parsed.token, parsed.object_label, parsed.type) == ("devid-test", label, "private")
    assert spki(load_signing_key(ref).public_key()) == spki(key.public_key())
    with pytest.raises(hsm.HsmError) as info:
        generate_key(KeyType.EC_P256, token=token_uri, label=label)
    assert info.value.exit_code == 4
    replaced, ref2 = generate_key(KeyType.EC_P256, token=token_uri, label=label, force=True)
    assert spki(replaced.public_key()) != spki(key.public_key())
    assert spki(load_signing_key(ref2).public_key()) == spki(replaced.public_key())
    with pytest.raises(hsm.NotExtractable):
        private_key_bytes(replaced)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("pkcs11:token=a", True), ("PKCS11:token=a", True), ("pkcs11.pem", False),
     ("./pkcs11:x", False), ("", False)],
)  # fmt: skip
def test_is_token_ref(ref: str, expected: bool) -> None:
    assert is_token_ref(ref) is expected


def test_token_spec_for_every_type() -> None:
    specs: dict[str, Any] = {k.value: k.token_spec() for k in KeyType}
    assert specs["rsa-3072"] == hsm.TokenKeySpec("rsa", 3072)
    assert specs["ec-p521"] == hsm.TokenKeySpec("ec", "p521")
    assert specs["ed25519"] == hsm.TokenKeySpec("ed25519", "ed25519")
