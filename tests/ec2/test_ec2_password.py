"""``devid ec2 password``: Windows administrator passwords encrypted by openssl (PKCS#1 v1.5),
decrypted with a file key and with a token key; wrong keys and bad data fail cleanly."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoServer, Result, run_tool, unique
from ec2_support import openssl_rsa, ssh_keygen

PASSWORD = "Zq9$kL2;mN_4-xR!"  # printable ASCII, like the passwords EC2Launch sets


def encrypt_to(public_pem: Path, text: str = PASSWORD) -> str:
    """Password data as EC2 makes it: RSA PKCS#1 v1.5 to the key pair's public key, base64."""
    ciphertext = run_tool(
        "openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", str(public_pem),
        "-pkeyopt", "rsa_padding_mode:pkcs1", input=text.encode(),
    ).stdout  # fmt: skip
    return base64.b64encode(ciphertext).decode()


def public_pem_of(key: Path) -> Path:
    out = key.with_suffix(".pub.pem")
    run_tool("openssl", "pkey", "-in", str(key), "-pubout", "-out", str(out))
    return out


def one_error(result: Result, code: int, needle: str) -> None:
    assert result.code == code, (result.code, result.err)
    assert result.out == ""
    assert result.err.startswith("devid: error: ") and result.err.count("\n") == 1
    assert needle in result.err


@pytest.fixture
def token_windows_key(devid: Callable[..., Result], token_uri: str, tmp_path: Path) -> str:
    """An RSA token key made for EC2 Windows (DECRYPT capability), by the CLI."""
    made = devid("key", "generate", "rsa-2048", "--token", token_uri, "--label",
                 unique("win"), "--for", "ec2-windows", "--json")  # fmt: skip
    assert made.code == 0, made.err
    return str(json.loads(made.out)["reference"])


@pytest.mark.parametrize("bits", [2048, 4096])
def test_file_key(tmp_path: Path, devid: Callable[..., Result], bits: int) -> None:
    key = openssl_rsa(tmp_path / "win.pem", bits, traditional=True)
    data = encrypt_to(public_pem_of(key))
    result = devid("ec2", "password", "--key", key, "--password-data", data)
    assert result.code == 0, result.err
    assert result.out == PASSWORD + "\n"
    assert PASSWORD not in result.err
    result = devid("ec2", "password", "--key", key, "--password-data", data, "--json")
    assert json.loads(result.out) == {"password": PASSWORD}


def test_token_key(tmp_path: Path, devid: Callable[..., Result], token_windows_key: str) -> None:
    pem = tmp_path / "token.pub.pem"
    exported = devid("key", "public", token_windows_key, "--format", "pem", "--out", pem)
    assert exported.code == 0, exported.err
    data = encrypt_to(pem)
    result = devid("ec2", "password", "--key", token_windows_key, "--password-data", data)
    assert result.code == 0, result.err
    assert result.out == PASSWORD + "\n"


def test_password_data_from_stdin_end_to_end(
    tmp_path: Path, devid_proc: Callable[..., Result]
) -> None:
    key = openssl_rsa(tmp_path / "win.pem")
    data = encrypt_to(public_pem_of(key))
    result = devid_proc("ec2", "password", "--key", key, "--password-data", "-", "--json",
                        input=data + "\n")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"password": PASSWORD}
    assert result.err == ""


def test_wrong_file_key(tmp_path: Path, devid: Callable[..., Result]) -> None:
    key = openssl_rsa(tmp_path / "right.pem")
    other = openssl_rsa(tmp_path / "other.pem")
    data = encrypt_to(public_pem_of(key))
    result = devid("ec2", "password", "--key", other, "--password-data", data)
    one_error(result, 1, "the password data was not encrypted to this key")


def test_wrong_token_key(
    tmp_path: Path, devid: Callable[..., Result], token_windows_key: str
) -> None:
    key = openssl_rsa(tmp_path / "right.pem")
    data = encrypt_to(public_pem_of(key))
    result = devid("ec2", "password", "--key", token_windows_key, "--password-data", data)
    one_error(result, 1, "not encrypted to this key")


def test_token_key_without_decrypt_capability(
    tmp_path: Path, devid: Callable[..., Result], token_key_factory: Callable[..., Any]
) -> None:
    key = token_key_factory("rsa-2048")
    pem = tmp_path / "token.pub.pem"
    assert devid("key", "public", key.reference, "--format", "pem", "--out", pem).code == 0
    result = devid("ec2", "password", "--key", key.reference, "--password-data", encrypt_to(pem))
    one_error(result, 2, "--for ec2-windows")


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        ("not base64 at all!", 2, "not base64"),
        (base64.b64encode(b"short").decode(), 1, "not encrypted to this key"),
    ],
    ids=["not-base64", "wrong-length"],
)
def test_bad_password_data(
    tmp_path: Path, devid: Callable[..., Result], data: str, code: int, needle: str
) -> None:
    key = openssl_rsa(tmp_path / "k.pem")
    one_error(devid("ec2", "password", "--key", key, "--password-data", data), code, needle)


def test_ed25519_key_is_refused(tmp_path: Path, devid: Callable[..., Result]) -> None:
    key = ssh_keygen(tmp_path / "ed")
    data = base64.b64encode(bytes(256)).decode()
    one_error(devid("ec2", "password", "--key", key, "--password-data", data), 2, "RSA")


def test_exactly_one_source(tmp_path: Path, devid: Callable[..., Result]) -> None:
    key = openssl_rsa(tmp_path / "k.pem")
    one_error(devid("ec2", "password", "--key", key), 2, "exactly one")


def _run_instance(moto: MotoServer, image: str) -> str:
    ec2: Any = moto.client("ec2")
    answer = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    return str(answer["Instances"][0]["InstanceId"])


def _image(moto: MotoServer, *, windows: bool) -> str:
    ec2: Any = moto.client("ec2")
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    return str(next(i["ImageId"] for i in images if (i.get("Platform") == "windows") is windows))


def test_instance_password_data_from_moto(
    tmp_path: Path, devid: Callable[..., Result], moto: MotoServer
) -> None:
    # moto answers GetPasswordData with random text, not ciphertext: devid must say it
    # cannot decrypt it (exit 1), never print something as a password.
    key = openssl_rsa(tmp_path / "k.pem")
    aws = moto.aws_args()
    windows = _run_instance(moto, _image(moto, windows=True))
    result = devid("ec2", "password", "--key", key, "--instance-id", windows, *aws)
    one_error(result, 1, "not encrypted to this key")
    linux = _run_instance(moto, _image(moto, windows=False))
    result = devid("ec2", "password", "--key", key, "--instance-id", linux, *aws)
    one_error(result, 1, "no password data")
    result = devid("ec2", "password", "--key", key, "--instance-id", "i-0123456789abcdef0", *aws)
    one_error(result, 1, "no instance")
