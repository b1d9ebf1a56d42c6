"""Review fixes in the PKCS#11 parts: non-UTF-8 PIN files, ``delete`` honouring ``type=``,
``--force`` replacing a token key only once the new one exists, over-long token labels.

Objects on the token are cross-checked with pkcs11-tool (opensc).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pkcs11.exceptions as px
import pytest
from conftest import TEST_PIN, TOKEN_LABEL, Result, run_tool, softhsm_module, unique
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import hsm
import hsm.keygen
from hsm.certs import load_certificates, store_certificate
from hsm.errors import MechanismUnsupported

TOKEN = f"pkcs11:token={TOKEN_LABEL}"
# Not UTF-8 (a lone continuation byte, an invalid start byte); must never be echoed.
BINARY_PIN = b"\x80\xff\xfe-pinbody-\xc3"


def assert_one_error_line(result: Result, code: int, fragment: str) -> None:
    assert result.code == code, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.err and "unexpected" not in result.err
    assert "pinbody" not in result.err and "\\x80" not in result.err
    assert result.out == ""


def tool_ids(kind: str) -> list[str]:
    """CKA_IDs (hex) of the *kind* objects (privkey, pubkey, cert) pkcs11-tool lists."""
    listing = run_tool(
        "pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
        "--login", "--pin", TEST_PIN, "--list-objects", "--type", kind,
    ).stdout.decode()  # fmt: skip
    return [line.split(":", 1)[1].strip() for line in listing.splitlines() if "ID:" in line]


def self_signed(key: Any, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def assert_signs(key: Any) -> None:
    """*key* still signs on the token, and its public key verifies the signature."""
    signature = key.sign(b"still here", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"still here", ec.ECDSA(hashes.SHA256()))


# -- 1. a PIN file that is not UTF-8 ---------------------------------------------------------


def test_binary_pin_file_for_init_token_is_bad_input(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path
) -> None:
    (tmp_path / "binpin").write_bytes(BINARY_PIN)
    (tmp_path / "sopin").write_text("5678\n")
    label = unique("binpin")
    binpin, sopin = tmp_path / "binpin", tmp_path / "sopin"
    for user, so in ((binpin, sopin), (sopin, binpin)):  # the user PIN, then the SO PIN
        result = devid(
            "hsm", "init-token", "--label", label, "--pin-file", user, "--so-pin-file", so
        )
        assert_one_error_line(result, 2, "not UTF-8")
    assert label not in {t.label for t in hsm.list_tokens()}


def test_binary_pin_source_file_is_pin_required(
    devid_proc: Callable[..., Result], token_uri: str, tmp_path: Path
) -> None:
    (tmp_path / "binpin").write_bytes(BINARY_PIN)
    uri = f"{token_uri}?pin-source=file:{tmp_path / 'binpin'}"
    # A fresh process: the in-process session cache may already be logged in to the token.
    assert_one_error_line(devid_proc("hsm", "keys", uri), 3, "not UTF-8")


# -- 2. delete honours type= -------------------------------------------------------------------


def test_delete_type_cert_removes_only_the_certificate(
    devid: Callable[..., Result], token_key_factory: Callable[[str], Any]
) -> None:
    key = token_key_factory("ec-p256")
    label, key_id = key.handle.label, key.handle.key_id.hex()
    store_certificate(key, self_signed(key, "review"))
    assert key_id in tool_ids("cert")

    result = devid("hsm", "delete", f"{TOKEN};object={label};type=cert", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["deleted_objects"] == 1

    assert key_id not in tool_ids("cert")
    assert key_id in tool_ids("privkey") and key_id in tool_ids("pubkey")
    assert load_certificates(key) == []
    assert_signs(hsm.load_key(key.reference))
    # Nothing of that type left to delete: not found, the pair still untouched.
    again = devid("hsm", "delete", f"{TOKEN};object={label};type=cert")
    assert_one_error_line(again, 1, "type=cert")
    assert key_id in tool_ids("privkey")
    hsm.delete_key(key.reference)


def test_delete_type_public_and_unsupported_types(
    devid: Callable[..., Result], token_key_factory: Callable[[str], Any]
) -> None:
    key = token_key_factory("ec-p256")
    label, key_id = key.handle.label, key.handle.key_id.hex()
    for bad in ("secret-key", "data"):
        result = devid("hsm", "delete", f"{TOKEN};object={label};type={bad}")
        assert_one_error_line(result, 2, f"type={bad}")
    assert_one_error_line(devid("hsm", "delete", f"{TOKEN};type=cert"), 2, "names no object")
    assert key_id in tool_ids("pubkey")

    result = devid("hsm", "delete", f"{TOKEN};object={label};type=public")
    assert result.code == 0, result.err
    assert result.out.strip() == "deleted 1 objects"
    assert key_id not in tool_ids("pubkey")
    assert key_id in tool_ids("privkey")
    # type=private still deletes what is left of the pair.
    assert devid("hsm", "delete", f"{TOKEN};object={label};type=private").code == 0
    assert key_id not in tool_ids("privkey")


# -- 3. --force generates the new pair before destroying the old one -------------------------


def test_force_replaces_the_key_pair(
    devid: Callable[..., Result], token_key_factory: Callable[[str], Any]
) -> None:
    old = token_key_factory("ec-p256")
    label, old_id = old.handle.label, old.handle.key_id.hex()
    store_certificate(old, self_signed(old, "old"))
    old_public = old.public_key()

    result = devid("key", "generate", "ec-p256", "--token", TOKEN, "--label", label, "--force")
    assert result.code == 0, result.err

    new = hsm.load_key(f"{TOKEN};object={label}")  # exactly one private key: no ambiguity
    assert new.public_key() != old_public
    assert new.handle.key_id.hex() != old_id
    assert [k.id for k in hsm.list_keys(f"{TOKEN};object={label};type=private")] == [
        new.handle.key_id.hex()
    ]
    for kind in ("privkey", "pubkey", "cert"):
        assert old_id not in tool_ids(kind)
    assert new.handle.key_id.hex() in tool_ids("privkey")
    assert_signs(new)
    hsm.delete_key(new.reference)


@pytest.mark.parametrize(
    "failure",
    [
        MechanismUnsupported("generating: the token does not support this curve"),
        px.DomainParamsInvalid(),  # raw: generate_keypair translates it
    ],
    ids=["mechanism-unsupported", "pkcs11-error"],
)
def test_failed_replacement_keeps_the_old_key(
    devid: Callable[..., Result],
    token_key_factory: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    old = token_key_factory("ec-p256")
    label, old_id = old.handle.label, old.handle.key_id.hex()

    def broken(*_: object) -> None:
        raise failure

    monkeypatch.setattr(hsm.keygen, "_generate", broken)
    result = devid("key", "generate", "ec-p256", "--token", TOKEN, "--label", label, "--force")
    assert_one_error_line(result, 3, "does not support this curve")
    monkeypatch.undo()

    assert old_id in tool_ids("privkey") and old_id in tool_ids("pubkey")
    again = hsm.load_key(f"{TOKEN};object={label}")
    assert again.handle.key_id.hex() == old_id
    assert again.public_key() == old.public_key()
    assert_signs(again)
    hsm.delete_key(again.reference)


# -- 4. token labels longer than 32 bytes -----------------------------------------------------


def test_init_token_refuses_labels_over_32_bytes(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path
) -> None:
    (tmp_path / "pin").write_text("1234")
    (tmp_path / "so-pin").write_text("5678")
    pins = ("--pin-file", tmp_path / "pin", "--so-pin-file", tmp_path / "so-pin")
    too_long = ("x" * 33, "é" * 17)  # 33 characters; 17 characters but 34 UTF-8 bytes
    for label in too_long:
        assert_one_error_line(devid("hsm", "init-token", "--label", label, *pins), 2, "32 bytes")
    labels = {t.label for t in hsm.list_tokens()}
    assert not labels & set(too_long)
    assert not any(t.startswith("xxxxxxxx") or t.startswith("éééé") for t in labels)

    exact = unique("len32").ljust(32, "x")  # exactly 32 bytes is a valid label
    result = devid("hsm", "init-token", "--label", exact, *pins)
    assert result.code == 0, result.err
    assert exact in {t.label for t in hsm.list_tokens()}
