"""The ca / csr / cert / crl commands end to end: token CAs, key references, JSON, verify."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PIN, run_tool
from pki_support import make_pki, ok_json, one_error_line


def _csr(devid: Callable[..., Any], tmp_path: Path, key: str | Path, cn: str, *extra: str) -> Path:
    path = tmp_path / f"{cn}.csr"
    args = ["--key", str(key), "--subject", f"CN={cn}", "--out", str(path), *extra]
    ok_json(devid, "csr", "create", *args)
    return path


def test_token_ca_key_reference_never_holds_the_pin(
    devid: Callable[..., Any], pki_home: Path, token_ref: Callable[[str], str]
) -> None:
    ref = token_ref("ec-p256")
    with_pin = f"{ref}{'&' if '?' in ref else '?'}pin-value={TEST_PIN}"
    created = ok_json(devid, "ca", "init", "tok", "--key", with_pin, "--subject", "CN=Tok,O=Acme")
    folder = pki_home / "cas" / "tok"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.pem",
        "chain.pem",
        "config.toml",
        "key.ref",
    ]
    for path in folder.iterdir():
        assert "pin-value" not in path.read_text()
    assert (folder / "key.ref").read_text().strip() == created["key_ref"]
    assert created["key_ref"].startswith("pkcs11:") and "pin-value" not in json.dumps(created)
    # The CA certificate is self-signed by the token key: openssl checks it.
    run_tool("openssl", "verify", "-CAfile", str(folder / "ca.pem"), str(folder / "ca.pem"))
    listed = ok_json(devid, "ca", "list")
    assert [c["name"] for c in listed] == ["tok"] and listed[0]["root"] is True
    shown = ok_json(devid, "ca", "show", "tok")
    assert shown["in_inventory"] is True and shown["chain"] == ["CN=Tok,O=Acme"]
    text = devid("ca", "show", "tok")
    assert text.code == 0 and "CN=Tok,O=Acme" in text.out


def test_intermediate_folder_chain_and_parent_record(
    devid: Callable[..., Any],
    pki_home: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
) -> None:
    root_pem, issuing_pem = make_pki(
        devid, key_file("rsa-2048"), token_ref("ec-p256"), "--days", "30",
        "--crl-url", "http://pki.example.com/issuing.crl",
    )  # fmt: skip
    chain = (pki_home / "cas" / "issuing" / "chain.pem").read_bytes()
    assert chain == issuing_pem.read_bytes() + root_pem.read_bytes()
    run_tool("openssl", "verify", "-CAfile", str(root_pem), str(issuing_pem))
    shown = ok_json(devid, "ca", "show", "issuing")
    assert shown["parent"] == "root" and shown["crl_url"] == "http://pki.example.com/issuing.crl"
    # The intermediate's certificate is recorded as issued by the root (its CRL can revoke it).
    under_root = ok_json(devid, "cert", "list", "--ca", "root")
    assert [r["serial"] for r in under_root] == [shown["serial"]]
    assert under_root[0]["profile"] == "intermediate"


def test_profile_file_overrides_subject_sans_and_validity(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    make_pki(devid, key_file("ec-p256"), key_file("ec-p256"), "--crl-url", "http://c.example/i.crl")
    profile = tmp_path / "acme.toml"
    profile.write_text(
        'base = "device"\ndays = 7\nsubject = "CN={device_id},O=Acme,C=DE"\n'
        'san = ["dns:{device_id}.devices.example.com"]\ndevice_uri = "urn:acme:{device_id}"\n'
        'device_dns = ""\n'
    )
    csr = _csr(devid, tmp_path, key_file("ec-p256"), "ignored")
    out = tmp_path / "d.pem"
    ok_json(
        devid, "cert", "issue", "--ca", "issuing", "--csr", str(csr), "--profile", str(profile),
        "--device-id", "sn-42", "--out", str(out),
    )  # fmt: skip
    text = run_tool("openssl", "x509", "-in", str(out), "-noout", "-text").stdout.decode()
    # RFC 4514 text lists the most specific RDN first; the DER (and openssl) the other way.
    assert "Subject: C = DE, O = Acme, CN = sn-42" in text
    assert "DNS:sn-42.devices.example.com" in text and "URI:urn:acme:sn-42" in text
    assert "DNS:sn-42," not in text + ","
    assert "URI:http://c.example/i.crl" in text
    shown = ok_json(devid, "cert", "show", str(out))
    days = (_time(shown["not_after"]) - _time(shown["not_before"])).days
    assert days == 7  # includes the one minute of backdating, not a whole day


def _time(text: str) -> Any:
    import datetime as dt

    return dt.datetime.fromisoformat(text)


def test_csr_show_reports_what_openssl_reports(
    devid: Callable[..., Any], tmp_path: Path, key_file: Callable[[str], Path]
) -> None:
    csr = _csr(devid, tmp_path, key_file("rsa-2048"), "dev-s", "--san", "ip:2001:db8::1", "--pss")
    shown = ok_json(devid, "csr", "show", str(csr))
    assert shown["signature_valid"] is True and shown["sans"] == ["ip:2001:db8::1"]
    text = run_tool("openssl", "req", "-in", str(csr), "-noout", "-text").stdout.decode()
    assert "IP Address:2001:DB8:0:0:0:0:0:1" in text
    assert shown["key"]["bits"] == 2048 and "Public-Key: (2048 bit)" in text
    assert shown["signature_algorithm"] == "rsassaPss" and "rsassaPss" in text
    args = ["--key", str(key_file("ec-p256")), "--subject", "CN=x", "--out", str(tmp_path / "x")]
    refused = devid("csr", "create", *args, "--pss")
    assert refused.code == 2 and "RSA" in one_error_line(refused)


def test_cert_verify_is_wired_to_verify_chain(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
) -> None:
    root_pem, issuing_pem = make_pki(devid, key_file("ec-p256"), token_ref("ec-p256"))
    csr = _csr(devid, tmp_path, key_file("ec-p256"), "dev-v")
    full = tmp_path / "full.pem"
    leaf = tmp_path / "leaf.pem"
    base = ["cert", "issue", "--ca", "issuing", "--csr", str(csr)]
    ok_json(devid, *base, "--out", str(full), "--chain")
    ok_json(devid, *base, "--out", str(leaf))

    # Intermediates after the leaf in PATH, or in --untrusted.
    bundle = ["--ca-bundle", str(root_pem)]
    good = ok_json(devid, "cert", "verify", str(full), *bundle, "--purpose", "client")
    assert good["ok"] is True and len(good["chain"]) == 3
    good = devid("cert", "verify", str(leaf), *bundle, "--untrusted", str(issuing_pem))
    assert good.code == 0 and "OK" in good.out

    missing = devid("cert", "verify", str(leaf), "--ca-bundle", str(root_pem))
    assert missing.code == 1
    one_error_line(missing)
    server = devid("cert", "verify", str(full), *bundle, "--purpose", "server", "--json")
    assert server.code == 1 and json.loads(server.out)["ok"] is False
    one_error_line(server)
    later = devid("cert", "verify", str(full), "--ca-bundle", str(root_pem), "--at", "+800d")
    assert later.code == 1
    assert devid("cert", "verify", str(full), *bundle, "--at", "someday").code == 2


def test_cert_verify_trusts_only_the_roots_in_the_bundle_as_openssl_does(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    root_pem, issuing_pem = make_pki(devid, key_file("ec-p256"), key_file("ec-p256"))
    leaf = tmp_path / "leaf.pem"
    csr = _csr(devid, tmp_path, key_file("ec-p256"), "dev-t")
    ok_json(devid, "cert", "issue", "--ca", "issuing", "--csr", str(csr), "--out", str(leaf))

    def both(path: Path, *bundle: Path) -> tuple[int, int]:
        """(devid's exit code, openssl verify -CAfile's) with *bundle* as the trusted file."""
        trusted = tmp_path / "bundle.pem"
        trusted.write_bytes(b"".join(p.read_bytes() for p in bundle))
        ours = devid("cert", "verify", str(path), "--ca-bundle", str(trusted)).code
        theirs = run_tool("openssl", "verify", "-CAfile", str(trusted), str(path), check=False)
        return ours, theirs.returncode

    assert both(leaf, root_pem, issuing_pem) == (0, 0)  # the intermediate helps build the path
    assert both(leaf, root_pem, leaf) == (1, 2)  # a certificate in the bundle is not trusted
    assert both(leaf, issuing_pem)[1] == 2  # openssl: no root; devid: says so, exit 2
    refused = devid("cert", "verify", str(leaf), "--ca-bundle", str(leaf))
    assert refused.code == 2
    assert "holds no root (self-signed) certificate to trust" in one_error_line(refused)


def test_help_texts_end_with_examples(devid: Callable[..., Any]) -> None:
    commands = [
        ["ca", "init"], ["ca", "list"], ["ca", "show"], ["csr", "create"], ["csr", "show"],
        ["cert", "issue"], ["cert", "show"], ["cert", "list"], ["cert", "revoke"],
        ["cert", "verify"], ["crl", "generate"],
    ]  # fmt: skip
    for command in commands:
        result = devid(*command, "--help")
        assert result.code == 0 and "EXAMPLES" in result.out, command
        examples = result.out.split("EXAMPLES", 1)[1].split("Options:")[0].strip()
        assert examples.startswith(f"devid {command[0]} "), command


def test_end_to_end_in_a_fresh_process(
    devid_proc: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
) -> None:
    env = {"DEVID_HOME": str(pki_home)}
    ca_key = token_ref("ec-p256")
    assert devid_proc("ca", "init", "p", "--key", ca_key, env=env).code == 0
    csr = tmp_path / "d.csr"
    args = ["--key", token_ref("ec-p256"), "--subject", "CN=d-1", "--out", str(csr)]
    made = devid_proc("csr", "create", *args, env=env)
    assert made.code == 0, made.err
    out = tmp_path / "d.pem"
    args = ["--ca", "p", "--csr", str(csr), "--out", str(out), "--json"]
    issued = devid_proc("cert", "issue", *args, env=env)
    assert issued.code == 0, issued.err
    serial = json.loads(issued.out)["serial"]
    args = [serial, "--ca", "p", "--reason", "cessation-of-operation"]
    revoked = devid_proc("cert", "revoke", *args, env=env)
    assert revoked.code == 0, revoked.err
    crl = tmp_path / "p.crl"
    assert devid_proc("crl", "generate", "--ca", "p", "--out", str(crl), "--der", env=env).code == 0
    text = run_tool("openssl", "crl", "-inform", "DER", "-in", str(crl), "-noout", "-text").stdout
    assert serial.upper() in text.decode().replace(":", "")
    assert "Cessation Of Operation" in text.decode()


@pytest.mark.parametrize("bad", ["", "pkcs11:token=devid-test;object=absent-key"])
def test_ca_init_with_a_missing_key(
    devid: Callable[..., Any], pki_home: Path, token_uri: str, bad: str
) -> None:
    result = devid("ca", "init", "x", "--key", bad or str(pki_home / "missing.pem"))
    assert result.code in (1, 2, 3)
    one_error_line(result)
    assert not (pki_home / "cas" / "x").exists()


def test_recorded_key_reference_drops_the_pin(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, key_file: Callable[[str], Path]
) -> None:
    ok_json(devid, "ca", "init", "k", "--key", str(key_file("ec-p256")))
    csr = _csr(devid, tmp_path, key_file("ec-p256"), "dev-k")
    device_key = "pkcs11:token=factory;object=dev-k?pin-value=987654"
    args = ["--ca", "k", "--csr", str(csr), "--out", str(tmp_path / "k.pem")]
    issued = ok_json(devid, "cert", "issue", *args, "--key-ref", device_key)
    assert issued["key_ref"] == "pkcs11:token=factory;object=dev-k"
    listed = devid("cert", "list", "--json")
    assert "987654" not in listed.out and "987654" not in listed.err
