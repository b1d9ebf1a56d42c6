"""devid's CAs, CSRs, certificates and CRLs, checked by openssl (a real peer).

The intermediate CA's key and the device keys live on the SoftHSM token, so every
signature openssl checks here was made on the token through cryptography's builders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_tool
from pki_support import make_pki, ok_json

import hsm


def _openssl_text(path: Path, kind: str = "x509") -> str:
    return run_tool("openssl", kind, "-in", str(path), "-noout", "-text").stdout.decode()


def _issue_device(
    devid: Callable[..., Any], tmp_path: Path, key_ref: str, device_id: str, *extra: str
) -> dict[str, Any]:
    csr = tmp_path / f"{device_id}.csr"
    ok_json(
        devid,
        "csr",
        "create",
        "--key",
        key_ref,
        "--subject",
        f"CN={device_id},O=Acme",
        "--out",
        str(csr),
    )
    out = tmp_path / f"{device_id}.pem"
    issued: dict[str, Any] = ok_json(
        devid, "cert", "issue", "--ca", "issuing", "--csr", str(csr), "--out", str(out), *extra
    )
    return issued


@pytest.mark.parametrize("device_type", ["ec-p256", "rsa-2048", "ec-p384"])
def test_openssl_verify_accepts_device_certificates(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
    device_type: str,
) -> None:
    root_pem, issuing_pem = make_pki(devid, key_file("ec-p384"), token_ref("ec-p256"))
    issued = _issue_device(devid, tmp_path, token_ref(device_type), "dev-1", "--chain")
    device_pem = Path(issued["path"])

    done = run_tool(
        "openssl", "verify", "-CAfile", str(root_pem), "-untrusted", str(issuing_pem),
        "-purpose", "sslclient", str(device_pem),
    )  # fmt: skip
    assert done.stdout.decode().strip() == f"{device_pem}: OK"
    # --chain put the intermediate after the leaf: openssl builds the path from it alone.
    done = run_tool(
        "openssl", "verify", "-CAfile", str(root_pem), "-untrusted", str(device_pem),
        "-purpose", "sslclient", str(device_pem),
    )  # fmt: skip
    assert done.stdout.decode().strip().endswith(": OK")

    text = _openssl_text(device_pem)
    assert "CA:FALSE" in text
    assert "TLS Web Client Authentication" in text
    assert "URI:urn:devid:dev-1" in text and "DNS:dev-1" in text
    assert "Digital Signature" in text
    assert ("Key Encipherment" in text) == device_type.startswith("rsa")


@pytest.mark.parametrize(
    ("key_type", "pss", "openssl_algorithm"),
    [
        ("rsa-2048", False, "sha256WithRSAEncryption"),
        ("rsa-2048", True, "rsassaPss"),
        ("ec-p256", False, "ecdsa-with-SHA256"),
        ("ec-p384", False, "ecdsa-with-SHA384"),
        ("ed25519", False, "ED25519"),
    ],
)
def test_openssl_req_verify_accepts_token_signed_csrs(
    devid: Callable[..., Any],
    token_key_factory: Callable[..., Any],
    tmp_path: Path,
    key_type: str,
    pss: bool,
    openssl_algorithm: str,
) -> None:
    key = token_key_factory(key_type)
    csr = tmp_path / "device.csr"
    try:
        args = ["--key", key.reference, "--subject", "CN=dev-7,O=Acme,C=DE", "--out", str(csr)]
        args += ["--san", "uri:urn:devid:dev-7", "--san", "dns:dev-7.example.com"]
        shown = ok_json(devid, "csr", "create", *args, *(["--pss"] if pss else []))
    finally:
        if key_type == "ed25519":  # one Ed25519 key upsets the libp11 engine for the token
            hsm.delete_key(key.reference)
    done = run_tool("openssl", "req", "-verify", "-in", str(csr), "-noout")
    assert "verify OK" in (done.stdout + done.stderr).decode()
    text = _openssl_text(csr, "req")
    assert openssl_algorithm in text
    assert "URI:urn:devid:dev-7" in text and "DNS:dev-7.example.com" in text
    assert "C=DE" in text.replace(" ", "")
    assert shown["signature_valid"] is True


def test_openssl_crl_verify_lists_the_revoked_serial(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
) -> None:
    root_pem, issuing_pem = make_pki(devid, key_file("ec-p256"), token_ref("rsa-2048"))
    revoked = _issue_device(devid, tmp_path, str(key_file("ec-p256")), "dev-r")
    kept = _issue_device(devid, tmp_path, str(key_file("ec-p256")), "dev-k")
    done_revoke = ok_json(
        devid, "cert", "revoke", revoked["path"], "--ca", "issuing", "--reason", "key-compromise"
    )
    assert done_revoke["reason"] == "key-compromise"  # spelled as --reason takes it
    crl = tmp_path / "issuing.crl"
    info = ok_json(devid, "crl", "generate", "--ca", "issuing", "--out", str(crl))
    assert info["revoked"] == 1

    done = run_tool(
        "openssl", "crl", "-in", str(crl), "-CAfile", str(issuing_pem), "-verify", "-noout", "-text"
    )
    assert "verify OK" in (done.stdout + done.stderr).decode()
    text = done.stdout.decode()
    revoked_serial = run_tool("openssl", "x509", "-in", revoked["path"], "-noout", "-serial")
    kept_serial = run_tool("openssl", "x509", "-in", kept["path"], "-noout", "-serial")
    assert revoked_serial.stdout.decode().strip().split("=")[1] in text
    assert kept_serial.stdout.decode().strip().split("=")[1] not in text
    assert "Key Compromise" in text
    assert "X509v3 CRL Number" in text and "Authority Key Identifier" in text

    # openssl, checking the leaf against the CRL, refuses the revoked one only.
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(root_pem.read_bytes() + issuing_pem.read_bytes())
    base = ["openssl", "verify", "-CAfile", str(bundle), "-CRLfile", str(crl), "-crl_check"]
    assert run_tool(*base, kept["path"]).returncode == 0
    refused = run_tool(*base, revoked["path"], check=False)
    assert refused.returncode != 0
    assert "revoked" in (refused.stdout + refused.stderr).decode()

    # A second CRL has the next number.
    again = ok_json(devid, "crl", "generate", "--ca", "issuing", "--out", str(crl), "--force")
    assert again["number"] == info["number"] + 1


def test_cert_show_fingerprint_matches_openssl(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
) -> None:
    make_pki(devid, key_file("ec-p256"), token_ref("ec-p256"))
    issued = _issue_device(devid, tmp_path, str(key_file("rsa-2048")), "dev-f")
    shown = ok_json(devid, "cert", "show", issued["path"])

    out = run_tool("openssl", "x509", "-in", issued["path"], "-noout", "-fingerprint", "-sha256")
    openssl_fp = out.stdout.decode().strip().split("=", 1)[1]
    assert shown["sha256_fingerprint"] == openssl_fp
    assert shown["aws_iot_certificate_id"] == openssl_fp.replace(":", "").lower()
    der = run_tool("openssl", "x509", "-in", issued["path"], "-outform", "DER").stdout
    assert shown["aws_iot_certificate_id"] == hashlib.sha256(der).hexdigest()
    serial = run_tool("openssl", "x509", "-in", issued["path"], "-noout", "-serial")
    assert int(serial.stdout.decode().strip().split("=")[1], 16) == int(shown["serial"], 16)
    assert int(shown["serial"], 16).bit_length() >= 64
    # The inventory holds the same identifiers.
    listed = ok_json(devid, "cert", "list", "--ca", "issuing")
    assert [r["aws_iot_certificate_id"] for r in listed] == [shown["aws_iot_certificate_id"]]


def test_name_constraints_and_path_length_as_openssl_sees_them(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
) -> None:
    root_pem, issuing_pem = make_pki(
        devid, key_file("ec-p256"), token_ref("ec-p256"),
        "--path-len", "0", "--name-constraint", "permit:dns:example.com",
        "--name-constraint", "exclude:dns:bad.example.com",
    )  # fmt: skip
    text = _openssl_text(issuing_pem)
    assert "pathlen:0" in text
    assert "Permitted:" in text and "DNS:example.com" in text
    assert "Excluded:" in text and "DNS:bad.example.com" in text

    profile = tmp_path / "fleet.toml"
    profile.write_text('base = "device"\ndevice_dns = "{device_id}.example.com"\ndays = 30\n')
    base = ["openssl", "verify", "-CAfile", str(root_pem), "-untrusted", str(issuing_pem)]
    good = _issue_device(
        devid, tmp_path, str(key_file("ec-p256")), "dev-g", "--profile", str(profile)
    )
    assert run_tool(*base, good["path"]).returncode == 0
    assert "dns:dev-g.example.com" in good["sans"]
    # a name in the excluded subtree: devid refuses what openssl would reject
    # (tests/pki/test_name_constraints.py shows openssl's refusal of the same certificate)
    excluded = tmp_path / "excluded.toml"
    excluded.write_text('device_dns = "{device_id}.bad.example.com"\n')
    csr = tmp_path / "dev-b.csr"
    ok_json(devid, "csr", "create", "--key", str(key_file("ec-p256")), "--subject", "CN=dev-b",
            "--out", str(csr))  # fmt: skip
    refused = devid("cert", "issue", "--ca", "issuing", "--csr", str(csr), "--profile",
                    str(excluded), "--out", str(tmp_path / "dev-b.pem"))  # fmt: skip
    assert refused.code == 2
    assert "dns:dev-b.bad.example.com is in the excluded subtree" in refused.err
    assert not (tmp_path / "dev-b.pem").exists()

    # Path length 0: devid refuses to put another CA under it.
    result = devid("ca", "init", "deeper", "--parent", "issuing", "--key", str(key_file("ec-p256")))
    assert result.code == 2 and "path length 0" in result.err


def test_server_profile_is_for_servers_only(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    root_pem, issuing_pem = make_pki(devid, key_file("ec-p256"), key_file("ec-p256"))
    csr = tmp_path / "gw.csr"
    ok_json(
        devid, "csr", "create", "--key", str(key_file("ec-p256")), "--subject", "CN=gw",
        "--san", "dns:gw.example.com", "--san", "ip:192.0.2.7", "--out", str(csr),
    )  # fmt: skip
    out = tmp_path / "gw.pem"
    ok_json(
        devid,
        "cert",
        "issue",
        "--ca",
        "issuing",
        "--csr",
        str(csr),
        "--profile",
        "server",
        "--out",
        str(out),
    )
    base = ["openssl", "verify", "-CAfile", str(root_pem), "-untrusted", str(issuing_pem)]
    assert run_tool(*base, "-purpose", "sslserver", str(out)).returncode == 0
    assert run_tool(*base, "-purpose", "sslclient", str(out), check=False).returncode != 0
    done = run_tool(
        *base, "-verify_ip", "192.0.2.7", "-verify_hostname", "gw.example.com", str(out)
    )
    assert done.returncode == 0
