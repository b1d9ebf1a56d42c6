"""Failures with tokens: the right HsmError class, one line, never a PIN, the documented
exit code from the CLI (0 ok, 1 not found, 2 bad input, 3 environment, 4 conflict).

PKCS#11 login belongs to the process and devid keeps one logged-in session per token, so
everything about PINs runs in a fresh process: ``devid_proc`` for the CLI, or a short
``python -c`` that loads the key and reports the exception class. Wrong PINs are kept to a
handful (SoftHSM 2.6 has no lockout by default, real tokens do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pkcs11.exceptions
import pytest
from conftest import ROOT, TEST_PIN, TOKEN_LABEL, Result, run_tool, softhsm_module, unique
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from pkcs11 import Attribute, KeyType

import hsm
from devid.keys import KeyType as DevidKeyType
from devid.keys import generate_key
from hsm.errors import (
    AmbiguousKey,
    HsmError,
    KeyExists,
    KeyNotFound,
    ModuleNotFound,
    StaleHandle,
    TokenNotFound,
    UriError,
    translate,
)
from hsm.module import TOKEN_LOCK
from hsm.session import session_for

WRONG_PIN = "wrong-pin-4711"


def assert_one_line(text: str, *secrets: str) -> None:
    """A clean error: one line, no traceback, none of *secrets* (PINs) in it."""
    assert text.strip(), "no error message"
    assert len(text.strip().splitlines()) == 1, text
    assert "Traceback" not in text
    for secret in secrets:
        assert secret not in text


def assert_cli_error(result: Result, code: int, *secrets: str) -> None:
    assert result.code == code, (result.code, result.err)
    assert_one_line(result.err, *secrets)
    assert result.err.startswith("devid: error: ")
    for secret in secrets:
        assert secret not in result.out


CHILD = """
import sys
import hsm
try:
    key = hsm.load_key(sys.argv[1])
except hsm.HsmError as exc:
    print(type(exc).__name__, exc.exit_code)
    print(exc)
else:
    print("loaded", 0)
    print(key.reference)
"""


def load_in_child(
    uri: str, *, set_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> tuple[str, int, str]:
    """``hsm.load_key(uri)`` in a fresh process: (exception class or 'loaded', exit code, text)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(set_env or {})
    done = subprocess.run(
        [sys.executable, "-c", CHILD, uri],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, _, message = done.stdout.partition("\n")
    name, code = first.split()
    return name, int(code), message.strip()


@pytest.fixture(scope="module")
def key(token_uri: str) -> Iterator[Any]:
    made, _ = generate_key(DevidKeyType.EC_P256, token=token_uri, label=unique("errors"))
    yield made
    hsm.delete_key(made.reference)


def _openssh(public: Any) -> str:
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return " ".join(line.decode().split()[:2])


# --- malformed URIs (exit 2) ------------------------------------------------------------

MALFORMED = [
    "pkcs11:token=devid-test;object=%zz",
    "pkcs11:token=devid-test;id=%4",
    "pkcs11:bogus=1",
    "pkcs11:token=devid-test;;object=x",
    "pkcs11:token=a;token=b",
    "pkcs11:token=devid-test;type=bogus",
    "pkcs11:token=devid-test;slot-id=abc",
    "pkcs11:token=devid-test;object=%e2%28%a1",
    "pkcs11:token=devid-test;object=x?pin-value=s3cret-PIN-1&pin-value=s3cret-PIN-2",
    "pkcs11:token=devid-test;object=x?pin-value=%zzs3cret-PIN-1",
    "pkcs11:token=devid-test;object=%zz?pin-value=s3cret-PIN-1",
]


@pytest.mark.parametrize("uri", MALFORMED)
def test_malformed_uri_raises_uri_error(uri: str) -> None:
    with pytest.raises(UriError) as caught:
        hsm.load_key(uri)
    assert caught.value.exit_code == 2
    assert_one_line(str(caught.value), "s3cret-PIN", "s3cret")


@pytest.mark.parametrize("uri", MALFORMED[:3] + MALFORMED[-3:])
def test_malformed_uri_on_the_command_line(uri: str, devid: Callable[..., Result]) -> None:
    assert_cli_error(devid("key", "public", uri), 2, "s3cret")
    assert_cli_error(devid("hsm", "keys", uri), 2, "s3cret")


def test_control_characters_never_split_an_error_line(token_uri: str) -> None:
    """A percent-encoded newline in a label reaches the message escaped, not raw."""
    with pytest.raises(TokenNotFound) as caught:
        hsm.load_key("pkcs11:token=no%0Asuch%0Dtoken;object=x")
    assert_one_line(str(caught.value))
    with pytest.raises(KeyNotFound) as missing:
        hsm.load_key(f"{token_uri};object=two%0Alines")
    assert_one_line(str(missing.value))


# --- unknown token, missing module (exit 3) ---------------------------------------------


def test_unknown_token(token_uri: str, devid_proc: Callable[..., Result]) -> None:
    with pytest.raises(TokenNotFound) as caught:
        hsm.load_key("pkcs11:token=no-such-token;object=x")
    assert caught.value.exit_code == 3
    assert_one_line(str(caught.value))
    assert "no-such-token" in str(caught.value)
    result = devid_proc("key", "public", "pkcs11:token=no-such-token;object=x")
    assert_cli_error(result, 3)
    assert "devid hsm tokens" in result.err


def test_unknown_serial(token_uri: str) -> None:
    with pytest.raises(TokenNotFound):
        hsm.load_key(f"{token_uri};serial=0000000000000000;object=x")


def test_missing_module(key: Any, devid_proc: Callable[..., Result], tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFound) as caught:
        hsm.load_key(f"{key.reference}?module-path=/nonexistent/libpkcs11.so")
    assert caught.value.exit_code == 3
    assert_one_line(str(caught.value))
    not_a_module = tmp_path / "not-a-module.so"
    not_a_module.write_text("this is not a shared library\n")
    with pytest.raises(ModuleNotFound) as bad:
        hsm.load_key(f"{key.reference}?module-path={not_a_module}")
    assert_one_line(str(bad.value))
    result = devid_proc("key", "public", key.reference, env={"DEVID_PKCS11_MODULE": "/nonexistent"})
    assert_cli_error(result, 3)
    assert "/nonexistent" in result.err
    name, code, _ = load_in_child(key.reference, set_env={"DEVID_PKCS11_MODULE": "/nonexistent"})
    assert (name, code) == ("ModuleNotFound", 3)


# --- PINs -------------------------------------------------------------------------------


def test_wrong_pin(key: Any, devid_proc: Callable[..., Result]) -> None:
    name, code, message = load_in_child(key.reference, set_env={"DEVID_PKCS11_PIN": WRONG_PIN})
    assert (name, code) == ("PinIncorrect", 3)
    assert_one_line(message, WRONG_PIN)
    wrong = {"DEVID_PKCS11_PIN": WRONG_PIN}
    listing = f"pkcs11:token={TOKEN_LABEL};type=private"
    result = devid_proc("hsm", "keys", listing, env=wrong)
    assert_cli_error(result, 3, WRONG_PIN)
    assert "PIN" in result.err
    # pin-value in the URI is as secret as the environment variable.
    result = devid_proc("hsm", "keys", f"{listing}?pin-value=bad-pin-0815", env=wrong)
    assert_cli_error(result, 3, "bad-pin-0815", WRONG_PIN)


def test_no_pin_and_no_terminal(
    key: Any, devid_proc: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, code, message = load_in_child(key.reference, drop=("DEVID_PKCS11_PIN",))
    assert (name, code) == ("PinRequired", 3)
    assert_one_line(message)
    monkeypatch.delenv("DEVID_PKCS11_PIN")
    result = devid_proc("key", "public", key.reference)
    assert_cli_error(result, 3)
    assert "DEVID_PKCS11_PIN" in result.err and "pin-source" in result.err


def test_pin_source_file(
    key: Any, devid_proc: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "pin dir"
    folder.mkdir()
    pin_file = folder / "user.pin"
    pin_file.write_text(TEST_PIN + "\n")
    pin_file.chmod(0o600)
    source = "file:" + str(pin_file).replace(" ", "%20")
    monkeypatch.delenv("DEVID_PKCS11_PIN")
    result = devid_proc("key", "public", f"{key.reference}?pin-source={source}")
    assert result.code == 0, result.err
    assert _openssh(key.public_key()) == " ".join(result.out.split()[:2])
    assert result.err == ""
    name, _, reference = load_in_child(f"{key.reference}?pin-source={source}")
    assert name == "loaded"
    assert hsm.parse_uri(reference).pin_value is None


def test_pin_value_in_the_uri(
    key: Any, devid_proc: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DEVID_PKCS11_PIN")
    result = devid_proc("key", "fingerprint", f"{key.reference}?pin-value={TEST_PIN}", "--json")
    assert result.code == 0, result.err
    pub = tmp_path / "key.pub"
    pub.write_text(_openssh(key.public_key()) + "\n")
    expected = run_tool("ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)).stdout.split()[1]
    assert json.loads(result.out)["openssh_sha256"] == expected.decode()
    name, _, reference = load_in_child(
        f"{key.reference}?pin-value={TEST_PIN}", drop=("DEVID_PKCS11_PIN",)
    )
    assert name == "loaded"
    assert "pin-value" not in reference  # a key reference never carries the PIN


def test_unreadable_pin_file(key: Any, devid_proc: Callable[..., Result]) -> None:
    uri = f"{key.reference}?pin-source=file:/nonexistent/user.pin"
    name, code, message = load_in_child(uri, drop=("DEVID_PKCS11_PIN",))
    assert (name, code) == ("PinRequired", 3)
    assert_one_line(message)
    assert "/nonexistent/user.pin" in message
    assert_cli_error(devid_proc("key", "public", uri), 3)


# --- keys not found, ambiguous, existing ------------------------------------------------


def test_key_not_found(token_uri: str, devid_proc: Callable[..., Result]) -> None:
    uri = f"{token_uri};object=no-such-key"
    with pytest.raises(KeyNotFound) as caught:
        hsm.load_key(uri)
    assert caught.value.exit_code == 1
    assert_one_line(str(caught.value))
    assert "no-such-key" in str(caught.value)
    with pytest.raises(KeyNotFound):
        hsm.load_key(f"{token_uri};id=%00%01%02")
    assert_cli_error(devid_proc("key", "public", uri), 1)


def test_uri_naming_no_key_is_ambiguous(
    token_uri: str, key: Any, devid: Callable[..., Result]
) -> None:
    for uri in (token_uri, f"{token_uri};type=private"):
        with pytest.raises(AmbiguousKey) as caught:
            hsm.load_key(uri)
        assert caught.value.exit_code == 2
        assert_one_line(str(caught.value))
        assert_cli_error(devid("key", "public", uri), 2)


@pytest.fixture
def twins(token_uri: str) -> Any:
    """Two RSA key pairs sharing one label, made behind devid's back (python-pkcs11)."""
    label = unique("twin")
    ids = [os.urandom(8), os.urandom(8)]
    session = session_for(hsm.parse_uri(token_uri))
    with TOKEN_LOCK:
        for key_id in ids:
            session.generate_keypair(KeyType.RSA, 1024, id=key_id, label=label, store=True)
    yield label, ids
    for key_id in ids:
        hsm.delete_key(hsm.parse_uri(token_uri).with_(id=key_id))


def test_two_keys_with_one_label_are_ambiguous(
    token_uri: str, twins: Any, devid_proc: Callable[..., Result]
) -> None:
    label, ids = twins
    with pytest.raises(AmbiguousKey) as caught:
        hsm.load_key(f"{token_uri};object={label}")
    assert "2 private keys" in str(caught.value)
    assert "id=" in str(caught.value)  # says how to pick one
    assert_one_line(str(caught.value))
    assert_cli_error(devid_proc("key", "public", f"{token_uri};object={label}"), 2)
    for key_id in ids:
        by_id = hsm.parse_uri(token_uri).with_(object_label=label, id=key_id)
        assert hsm.load_key(by_id).handle.key_id == key_id


def test_existing_label_is_a_conflict(
    token_uri: str, key: Any, devid_proc: Callable[..., Result]
) -> None:
    label = key.handle.label
    spec = hsm.TokenKeySpec("ec", "p256")
    with pytest.raises(KeyExists) as caught:
        hsm.generate_keypair(hsm.parse_uri(token_uri), spec, label=label)
    assert caught.value.exit_code == 4
    assert_one_line(str(caught.value))
    result = devid_proc("key", "generate", "ec-p256", "--token", token_uri, "--label", label)
    assert_cli_error(result, 4)
    assert "--force" in result.err
    # Nothing was replaced: same key, one private and one public object under the label.
    assert hsm.load_key(key.reference).public_key() == key.public_key()
    objects = hsm.list_keys(f"{token_uri};object={label}")
    assert sorted(o.object_class for o in objects) == ["private", "public"]


def test_replace_puts_a_new_key_under_the_label(
    token_uri: str, devid_proc: Callable[..., Result]
) -> None:
    label = unique("replace")
    uri = hsm.parse_uri(token_uri)
    old = hsm.generate_keypair(uri, hsm.TokenKeySpec("ec", "p256"), label=label)
    new = hsm.generate_keypair(uri, hsm.TokenKeySpec("ec", "p384"), label=label, replace=True)
    assert new.handle.key_id != old.handle.key_id
    assert new.public_key() != old.public_key()
    objects = hsm.list_keys(f"{token_uri};object={label}")
    assert sorted(o.object_class for o in objects) == ["private", "public"]
    assert {o.id for o in objects} == {new.handle.key_id.hex()}
    with pytest.raises(KeyNotFound):
        hsm.load_key(old.reference)  # names the old id, which is gone
    result = devid_proc(
        "key", "generate", "ed25519", "--token", token_uri, "--label", label, "--force", "--json"
    )
    assert result.code == 0, result.err
    newest = hsm.load_key(json.loads(result.out)["reference"])
    assert newest.handle.label == label
    assert newest.handle.key_id not in (old.handle.key_id, new.handle.key_id)
    hsm.delete_key(newest.reference)


def _listed_ids(kind: str) -> set[str]:
    listing = run_tool(
        "pkcs11-tool",
        "--module",
        softhsm_module(),
        "--login",
        "--pin",
        TEST_PIN,
        "--token-label",
        TOKEN_LABEL,
        "--list-objects",
        "--type",
        kind,
    ).stdout.decode()
    return {line.split(":", 1)[1].strip() for line in listing.splitlines() if "ID:" in line}


def test_delete_removes_private_and_public_objects(
    token_uri: str, devid: Callable[..., Result]
) -> None:
    doomed, _ = generate_key(DevidKeyType.EC_P256, token=token_uri, label=unique("doomed"))
    neighbour, _ = generate_key(DevidKeyType.EC_P256, token=token_uri, label=unique("doomed"))
    key_id = doomed.handle.key_id.hex()
    assert key_id in _listed_ids("privkey") and key_id in _listed_ids("pubkey")
    result = devid("hsm", "delete", doomed.reference, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["deleted_objects"] == 2
    # Gone for devid, for python-pkcs11 and for another program.
    assert hsm.list_keys(f"{token_uri};object={doomed.handle.label}") == []
    session = session_for(hsm.parse_uri(token_uri))
    with TOKEN_LOCK:
        left = list(session.get_objects({Attribute.ID: doomed.handle.key_id}))
    assert left == []
    assert key_id not in _listed_ids("privkey") | _listed_ids("pubkey")
    with pytest.raises(KeyNotFound):
        hsm.load_key(doomed.reference)
    assert_cli_error(devid("hsm", "delete", doomed.reference), 1)
    # The neighbour is untouched.
    assert hsm.load_key(neighbour.reference).public_key() == neighbour.public_key()
    assert neighbour.handle.key_id.hex() in _listed_ids("privkey")
    hsm.delete_key(neighbour.reference)


def test_delete_refuses_a_uri_naming_no_key(token_uri: str, devid: Callable[..., Result]) -> None:
    """``devid hsm delete pkcs11:token=X`` must not wipe the token."""
    before = len(hsm.list_keys(token_uri))
    assert_cli_error(devid("hsm", "delete", token_uri), 2)
    assert_cli_error(devid("hsm", "delete", f"{token_uri};type=private"), 2)
    assert len(hsm.list_keys(token_uri)) == before


def test_every_hsm_error_is_one_line() -> None:
    """The root class itself keeps messages on one line, whatever a caller passes."""
    for cls in (HsmError, TokenNotFound, KeyExists, UriError):
        error = cls("label 'a\nb'\r\tend")
        assert "\n" not in str(error) and "\r" not in str(error)
        assert "a\\nb" in str(error)


def test_a_key_that_may_not_sign_says_so(
    token_uri: str, devid: Callable[..., Result], tmp_path: Path
) -> None:
    # CKA_SIGN false (a key another tool made for another use): python-pkcs11 gives the
    # object no sign() at all; devid says what is wrong in one line, no traceback
    label = unique("nosign")
    key_id = os.urandom(8)
    session = session_for(hsm.parse_uri(token_uri))
    with TOKEN_LOCK:
        session.generate_keypair(
            KeyType.RSA, 2048, id=key_id, label=label, store=True,
            private_template={Attribute.SIGN: False, Attribute.SENSITIVE: True},
        )  # fmt: skip
    uri = f"{token_uri};object={label}"
    try:
        key = hsm.load_key(uri)
        with pytest.raises(HsmError) as caught:
            key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
        assert "may not be used for this (its CKA_SIGN is false)" in str(caught.value)
        assert_one_line(str(caught.value))
        result = devid("csr", "create", "--key", uri, "--subject", "CN=x", "--out",
                       tmp_path / "x.csr")  # fmt: skip
        assert_cli_error(result, 3)
        assert "CKA_SIGN is false" in result.err
        assert not (tmp_path / "x.csr").exists()
    finally:
        hsm.delete_key(hsm.parse_uri(token_uri).with_(id=key_id))


@pytest.mark.parametrize(
    "code, expected",
    [("0x68", "may not be used for this"), ("0x1234", "the PKCS#11 module failed")],
)
def test_error_codes_python_pkcs11_does_not_name(code: str, expected: str) -> None:
    error = translate(pkcs11.exceptions.PKCS11Error(f"Unmapped error code {code}"), "signing")
    assert isinstance(error, StaleHandle) is (code == "0x68")
    assert str(error).startswith("signing: ") and expected in str(error)
