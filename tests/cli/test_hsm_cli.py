"""`devid hsm tokens|keys|delete|init-token`, cross-checked with pkcs11-tool (opensc).

PINs come from files or the environment and must never show up in anything devid prints.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN_LABEL, Result, run_tool, softhsm_module, unique

TOKEN = f"pkcs11:token={TOKEN_LABEL}"


def ok(result: Result) -> str:
    assert result.code == 0, result.err
    assert result.err == ""
    return result.out


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


def assert_one_error_line(result: Result, code: int, fragment: str = "") -> None:
    assert result.code == code, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("devid: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.err
    assert result.out == ""


def pkcs11_tool(*args: str, check: bool = True) -> Any:
    return run_tool("pkcs11-tool", "--module", softhsm_module(), *args, check=check)


def slots_by_label() -> dict[str, dict[str, str]]:
    """``pkcs11-tool -L``: token label -> the fields printed for its slot."""
    tokens: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in pkcs11_tool("-L").stdout.decode().splitlines():
        if line.startswith("Slot "):
            current = {}
        elif ":" in line:
            name, value = (part.strip() for part in line.split(":", 1))
            current[name] = value
            if name == "token label":
                tokens[value] = current
    return tokens


def pkcs11_tool_objects(token: str, pin: str = "1234") -> str:
    args = ["--token-label", token, "--login", "--pin", pin, "--list-objects"]
    return str(pkcs11_tool(*args).stdout.decode())


def object_block(listing: str, label: str, kind: str) -> str:
    """The lines pkcs11-tool prints for the *kind* object ("Private Key") labelled *label*."""
    blocks = listing.split("\n")
    found: list[list[str]] = []
    for line in blocks:
        if not line.startswith(" "):
            found.append([line])
        elif found:
            found[-1].append(line)
    for block in found:
        if block[0].startswith(kind) and f"  label:      {label}" in block:
            return "\n".join(block)
    raise AssertionError(f"pkcs11-tool lists no {kind} labelled {label}:\n{listing}")


# -- tokens ---------------------------------------------------------------------------------


def test_tokens_json_matches_pkcs11_tool(devid: Callable[..., Result], token_uri: str) -> None:
    tokens = as_json(devid("hsm", "tokens", "--json"))
    mine = [t for t in tokens if t["label"] == TOKEN_LABEL]
    assert len(mine) == 1
    token = mine[0]
    assert set(token) == {"label", "serial", "manufacturer", "model", "slot_id", "uri"}
    seen = slots_by_label()[TOKEN_LABEL]
    assert token["serial"] == seen["serial num"]
    assert token["manufacturer"] == seen["token manufacturer"]
    assert token["model"] == seen["token model"]
    assert token["uri"] == f"{TOKEN};serial={token['serial']}"
    text = ok(devid("hsm", "tokens"))
    assert any(line.startswith(TOKEN_LABEL) and token["uri"] in line for line in text.splitlines())


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key_type", "size", "tool_type"),
    [("ec-p256", "ec", "p256", "EC"), ("rsa-2048", "rsa", "2048", "RSA"),
     ("ed25519", "ed25519", "ed25519", "EC_EDWARDS")],
)  # fmt: skip
def test_keys_json_shows_a_non_extractable_generated_key(
    devid: Callable[..., Result],
    token_key_factory: Callable[[str], Any],
    kind: str,
    key_type: str,
    size: str,
    tool_type: str,
) -> None:
    key = token_key_factory(kind)
    label = key.handle.label
    found = as_json(devid("hsm", "keys", f"{TOKEN};object={label}", "--json"))
    by_class = {k["object_class"]: k for k in found}
    assert sorted(by_class) == ["private", "public"]
    private, public = by_class["private"], by_class["public"]
    assert private["id"] == public["id"] == key.handle.key_id.hex()
    assert (private["key_type"], private["size"]) == (key_type, size)
    assert private["sensitive"] is True
    assert private["always_sensitive"] is True
    assert private["extractable"] is False
    assert private["never_extractable"] is True
    assert private["local"] is True
    assert public["local"] is True
    assert public["sensitive"] is None  # not meaningful for a public key
    # The private entry's URI is a key reference the rest of devid accepts.
    assert ok(devid("key", "public", private["uri"])) == ok(devid("key", "public", key.reference))
    # pkcs11-tool sees the same flags on the same object.
    block = object_block(
        pkcs11_tool_objects(TOKEN_LABEL), label, f"Private Key Object; {tool_type}"
    )
    assert "Access:     sensitive, always sensitive, never extractable, local" in block
    assert f"ID:         {private['id']}" in block


def test_keys_filter_and_text(
    devid: Callable[..., Result], token_key_factory: Callable[..., Any]
) -> None:
    label = token_key_factory("ec-p256").handle.label
    only_private = as_json(devid("hsm", "keys", f"{TOKEN};object={label};type=private", "--json"))
    assert [k["object_class"] for k in only_private] == ["private"]
    text = ok(devid("hsm", "keys", f"{TOKEN};object={label}"))
    assert "sensitive always_sensitive not_extractable never_extractable local" in text
    assert ok(devid("hsm", "keys", f"{TOKEN};object=no-such-label")) == "(no objects)\n"
    assert as_json(devid("hsm", "keys", f"{TOKEN};object=no-such-label", "--json")) == []


def test_keys_bad_uris(devid: Callable[..., Result], token_uri: str) -> None:
    assert_one_error_line(devid("hsm", "keys", "pkcs11:token=no-such-token"), 3, "no PKCS#11 token")
    assert_one_error_line(devid("hsm", "keys", f"{TOKEN};id=%zz"), 2, "malformed PKCS#11 URI")
    assert_one_error_line(devid("hsm", "keys", "not-a-uri"), 2)


# -- delete ---------------------------------------------------------------------------------


def test_delete_json_then_gone_everywhere(
    devid: Callable[..., Result], token_key_factory: Callable[[str], Any]
) -> None:
    key = token_key_factory("rsa-2048")
    label = key.handle.label
    uri = f"{TOKEN};object={label}"
    assert label in pkcs11_tool_objects(TOKEN_LABEL)
    data = as_json(devid("hsm", "delete", uri, "--json"))
    assert data == {"deleted_objects": 2, "uri": uri}
    assert as_json(devid("hsm", "keys", uri, "--json")) == []
    assert f"label:      {label}\n" not in pkcs11_tool_objects(TOKEN_LABEL)
    assert_one_error_line(devid("key", "public", key.reference), 1, "no private key")
    assert_one_error_line(devid("hsm", "delete", uri, "--json"), 1, "no private key")


def test_delete_refuses_uris_naming_no_single_key(
    devid: Callable[..., Result], token_key_factory: Callable[[str], Any]
) -> None:
    token_key_factory("ec-p256")
    before = as_json(devid("hsm", "keys", TOKEN, "--json"))
    assert_one_error_line(devid("hsm", "delete", TOKEN), 2, "names no key")
    assert_one_error_line(
        devid("hsm", "delete", f"{TOKEN};object=x;bogus=1"), 2, "unknown attribute"
    )
    assert as_json(devid("hsm", "keys", TOKEN, "--json")) == before


# -- init-token -----------------------------------------------------------------------------


def new_pins() -> tuple[str, str]:
    return f"user-{secrets.token_hex(6)}", f"so-{secrets.token_hex(6)}"


def assert_token_pins(label: str, pin: str, so_pin: str) -> None:
    """The token logs in with *pin*, refuses others, and *so_pin* is its SO PIN."""
    pkcs11_tool("--token-label", label, "--login", "--pin", pin, "--list-objects")
    wrong = pkcs11_tool("--token-label", label, "--login", "--pin", pin + "x", "--list-objects",
                        check=False)  # fmt: skip
    assert wrong.returncode != 0
    # Only the SO PIN may re-initialise the user PIN; set it to the same value again.
    pkcs11_tool("--token-label", label, "--login", "--login-type", "so", "--so-pin", so_pin,
                "--init-pin", "--new-pin", pin)  # fmt: skip


def assert_no_pin_shown(result: Result, *pins: str) -> None:
    for pin in pins:
        assert pin not in result.out
        assert pin not in result.err


def test_init_token_with_pin_files(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path
) -> None:
    label = unique("init-files")
    pin, so_pin = new_pins()
    (tmp_path / "pin").write_text(pin + "\n")
    (tmp_path / "so-pin").write_text(so_pin + "\n")
    result = devid("hsm", "init-token", "--label", label, "--pin-file", tmp_path / "pin",
                   "--so-pin-file", tmp_path / "so-pin", "--json")  # fmt: skip
    assert_no_pin_shown(result, pin, so_pin)
    info = as_json(result)
    assert info["label"] == label
    assert info["serial"] == slots_by_label()[label]["serial num"]
    assert info["uri"] == f"pkcs11:token={label};serial={info['serial']}"
    assert_token_pins(label, pin, so_pin)


def test_init_token_with_pins_from_environment(
    devid_proc: Callable[..., Result], softhsm: Path
) -> None:
    label = unique("init-env")
    pin, so_pin = new_pins()
    env = {"DEVID_PKCS11_PIN": pin, "DEVID_PKCS11_SO_PIN": so_pin}
    result = devid_proc("hsm", "init-token", "--label", label, env=env)
    assert_no_pin_shown(result, pin, so_pin)
    assert result.code == 0, result.err
    assert result.out.startswith(f"pkcs11:token={label};serial=")
    assert_token_pins(label, pin, so_pin)
    # The new token is usable with that PIN right away.
    made = devid_proc("key", "generate", "ec-p256", "--token", f"pkcs11:token={label}",
                      "--label", "first", env=env)  # fmt: skip
    assert made.code == 0, made.err
    assert_no_pin_shown(made, pin, so_pin)


def test_init_token_without_any_pin_source_fails(
    devid: Callable[..., Result],
    devid_proc: Callable[..., Result],
    softhsm: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEVID_PKCS11_PIN")
    monkeypatch.delenv("DEVID_PKCS11_SO_PIN", raising=False)
    label = unique("init-nopin")
    # A subprocess with stdin from /dev/null, and in-process where stdin is no terminal either.
    for result in (devid_proc("hsm", "init-token", "--label", label),
                   devid("hsm", "init-token", "--label", label)):  # fmt: skip
        assert_one_error_line(result, 2, "no PIN")
    assert label not in slots_by_label()


def test_init_token_with_only_the_user_pin_fails(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEVID_PKCS11_SO_PIN", raising=False)
    label = unique("init-half")
    pin, _ = new_pins()
    (tmp_path / "pin").write_text(pin)
    result = devid("hsm", "init-token", "--label", label, "--pin-file", tmp_path / "pin")
    assert_one_error_line(result, 2, "no PIN")
    assert_no_pin_shown(result, pin)
    assert label not in slots_by_label()


def test_init_token_refuses_an_existing_label(
    devid: Callable[..., Result], token_uri: str, tmp_path: Path
) -> None:
    pin, so_pin = new_pins()
    (tmp_path / "pin").write_text(pin)
    (tmp_path / "so-pin").write_text(so_pin)
    result = devid("hsm", "init-token", "--label", TOKEN_LABEL, "--pin-file", tmp_path / "pin",
                   "--so-pin-file", tmp_path / "so-pin")  # fmt: skip
    assert_one_error_line(result, 4, "exists already")
    assert_no_pin_shown(result, pin, so_pin)
    # The session token still answers to its own PIN.
    pkcs11_tool_objects(TOKEN_LABEL)


def test_init_token_missing_pin_file(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path
) -> None:
    label = unique("init-missing")
    result = devid("hsm", "init-token", "--label", label, "--pin-file", tmp_path / "nope",
                   "--so-pin-file", tmp_path / "nope")  # fmt: skip
    assert_one_error_line(result, 2, "PIN file")
    assert label not in slots_by_label()


def test_init_token_runs_no_other_program(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PINs must not reach any command line (softhsm2-util takes them only as arguments):
    # C_InitToken and C_InitPIN run in devid's own process.
    import subprocess

    def no_programs(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"init-token started a program: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    label = unique("init-inproc")
    pin, so_pin = new_pins()
    (tmp_path / "pin").write_text(pin)
    (tmp_path / "so-pin").write_text(so_pin)
    result = devid("hsm", "init-token", "--label", label, "--pin-file", tmp_path / "pin",
                   "--so-pin-file", tmp_path / "so-pin")  # fmt: skip
    monkeypatch.undo()
    assert result.code == 0, result.err
    assert_no_pin_shown(result, pin, so_pin)
    assert_token_pins(label, pin, so_pin)


@pytest.mark.parametrize("which", ["pin", "so-pin"])
def test_init_token_refuses_a_short_pin_before_changing_anything(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path, which: str
) -> None:
    # SoftHSM takes PINs of 4 to 255 bytes; a refused user PIN after C_InitToken would leave
    # a token nobody can log in to, so both are checked first
    label = unique("init-short")
    pin, so_pin = new_pins()
    (tmp_path / "pin").write_text("123" if which == "pin" else pin)
    (tmp_path / "so-pin").write_text("123" if which == "so-pin" else so_pin)
    before = set(slots_by_label())
    result = devid("hsm", "init-token", "--label", label, "--pin-file", tmp_path / "pin",
                   "--so-pin-file", tmp_path / "so-pin")  # fmt: skip
    assert_one_error_line(result, 2, "must be 4 to 255 bytes long")
    assert set(slots_by_label()) == before  # no token was initialised


@pytest.mark.parametrize("label", ["", " ", "hunt ", " hunt", "devid-test "])
def test_init_token_refuses_labels_with_blanks_at_the_ends(
    devid: Callable[..., Result], softhsm: Path, tmp_path: Path, label: str
) -> None:
    # token labels are blank-padded in CK_TOKEN_INFO: "devid-test " would become a second
    # token every 'token=devid-test' URI matches
    before = set(slots_by_label())
    pin, so_pin = new_pins()
    (tmp_path / "pin").write_text(pin)
    (tmp_path / "so-pin").write_text(so_pin)
    result = devid("hsm", "init-token", "--label", label, "--pin-file", tmp_path / "pin",
                   "--so-pin-file", tmp_path / "so-pin")  # fmt: skip
    assert_one_error_line(result, 2, "starts or ends with a blank")
    assert set(slots_by_label()) == before
