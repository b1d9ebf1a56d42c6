"""``devid device provision DEVICE_ID``: key on the token, certificate checked by openssl.

The token is read back with pkcs11-tool, certificates are verified with openssl and the
inventory is read with sqlite3: devid's own answers are never the only witness.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import TEST_PIN, TOKEN_LABEL, DevicePki, run_tool, softhsm_module, unique
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from provision_support import (
    cert_public_key_der,
    certificate_rows,
    ok_json,
    one_error_line,
    openssl_serial,
    openssl_verify,
    token_objects,
    token_public_key_der,
)

from devid.keys import KeyType, generate_key


def _provision(devid: Callable[..., Any], pki: DevicePki, device_id: str, *extra: str) -> Any:
    return ok_json(
        devid, "device", "provision", device_id, "--token", pki.token, "--ca", "issuing", *extra
    )


def test_provisioned_device_verifies_and_its_certificate_sits_beside_the_key(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path
) -> None:
    device_id = unique("dev")
    result = _provision(devid, device_pki, device_id)

    cert, chain = Path(result["certificate_path"]), Path(result["chain_path"])
    assert cert == pki_home / "devices" / device_id / "cert.pem"
    assert sorted(p.name for p in cert.parent.iterdir()) == ["cert.pem", "chain.pem"]
    assert openssl_verify(device_pki, cert).strip() == f"{cert}: OK"
    # chain.pem is what the device presents: its certificate, then the intermediate.
    done = run_tool(
        "openssl", "verify", "-CAfile", str(device_pki.root), "-untrusted", str(chain),
        "-purpose", "sslclient", str(chain),
    )  # fmt: skip
    assert done.stdout.decode().strip().endswith(": OK")
    text = run_tool("openssl", "x509", "-in", str(cert), "-noout", "-text").stdout.decode()
    assert f"URI:urn:devid:{device_id}" in text and f"DNS:{device_id}" in text
    assert f"CN={device_id}" in text.replace(" = ", "=")
    assert "TLS Web Client Authentication" in text
    assert result["serial"] == openssl_serial(cert)

    objects = token_objects(f"device-{device_id}")
    by_class = {o["class"]: o for o in objects}
    assert sorted(by_class) == ["Certificate", "Private Key", "Public Key"], objects
    key_id = by_class["Private Key"]["ID"]
    assert by_class["Certificate"]["ID"] == key_id == by_class["Public Key"]["ID"]
    assert by_class["Certificate"]["serial"].lower().lstrip("0") == result["serial"].lstrip("0")
    access = [a.strip() for a in by_class["Private Key"]["Access"].split(",")]
    assert {"sensitive", "always sensitive", "never extractable", "local"} <= set(access)
    assert token_public_key_der(key_id) == cert_public_key_der(cert)

    rows = certificate_rows(pki_home, device_id)
    assert len(rows) == 1
    assert rows[0]["serial"] == result["serial"] and rows[0]["status"] == "issued"
    assert rows[0]["key_ref"] == result["key_reference"] and rows[0]["path"] == str(cert)
    assert (
        f"id={''.join('%' + key_id[i : i + 2].upper() for i in range(0, len(key_id), 2))}"
        in (result["key_reference"])
    )
    assert "pin" not in result["key_reference"]
    assert result["iot_certificate_id"] == _sha256_der(cert)
    assert result["skipped"] is False


def _sha256_der(cert: Path) -> str:
    der = run_tool("openssl", "x509", "-in", str(cert), "-outform", "DER").stdout
    out = run_tool("openssl", "dgst", "-sha256", "-r", input=der).stdout.decode()
    return out.split()[0]


def test_rerun_skips_restores_missing_files_and_never_issues_twice(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    device_id = unique("dev")
    out = tmp_path / "fleet"
    first = _provision(devid, device_pki, device_id, "--out", str(out), "--days", "30")
    again = _provision(devid, device_pki, device_id, "--out", str(out))
    assert again["skipped"] is True and again["serial"] == first["serial"]
    assert again["key_reference"] == first["key_reference"]

    Path(first["certificate_path"]).unlink()
    restored = _provision(devid, device_pki, device_id, "--out", str(out))
    assert restored["skipped"] is True
    assert openssl_serial(Path(first["certificate_path"])) == first["serial"]
    # a damaged cert.pem is put back from the inventory too
    Path(first["certificate_path"]).write_bytes(b"garbage\n")
    repaired = _provision(devid, device_pki, device_id, "--out", str(out))
    assert repaired["skipped"] is True
    assert openssl_serial(Path(first["certificate_path"])) == first["serial"]
    assert len(certificate_rows(pki_home, device_id)) == 1
    assert len(token_objects(f"device-{device_id}")) == 3

    text = devid("device", "provision", device_id, "--token", device_pki.token, "--ca", "issuing")
    assert text.code == 0 and "already provisioned" in text.out and text.err == ""


def test_a_key_left_by_an_interrupted_run_is_reused(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path
) -> None:
    device_id = unique("dev")
    key, _ = generate_key(KeyType.EC_P256, token=device_pki.token, label=f"device-{device_id}")

    result = _provision(devid, device_pki, device_id)
    assert result["key_reference"] == key.reference  # type: ignore[union-attr]
    key_id = token_objects(f"device-{device_id}")[0]["ID"]
    assert token_public_key_der(key_id) == cert_public_key_der(Path(result["certificate_path"]))
    assert len(certificate_rows(pki_home, device_id)) == 1


def test_a_key_of_another_type_with_the_label_is_refused(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path
) -> None:
    device_id = unique("dev")
    generate_key(KeyType.EC_P384, token=device_pki.token, label=f"device-{device_id}")

    result = devid("device", "provision", device_id, "--token", device_pki.token, "--ca", "issuing")
    assert result.code == 4
    assert "is not ec-p256" in one_error_line(result)
    assert certificate_rows(pki_home, device_id) == []
    assert not (pki_home / "devices" / device_id).exists()


def test_an_imported_key_with_the_label_is_refused(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    device_id = unique("dev")
    der = tmp_path / "imported.der"
    run_tool("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-outform", "DER", "-out", str(der))  # fmt: skip
    tool = ["pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
            "--login", "--pin", TEST_PIN]  # fmt: skip
    label = f"device-{device_id}"
    run_tool(*tool, "--write-object", str(der), "--type", "privkey", "--label", label,
             "--id", "0badbeef")  # fmt: skip
    try:
        result = devid(
            "device", "provision", device_id, "--token", device_pki.token, "--ca", "issuing"
        )
        assert result.code == 4
        assert "not generated on the token" in one_error_line(result)
        assert certificate_rows(pki_home, device_id) == []
    finally:  # a private key without a public key object would trouble other tests
        run_tool(*tool, "--delete-object", "--type", "privkey", "--label", label)
    assert token_objects(label) == []


def test_a_recorded_device_whose_key_is_gone_is_not_issued_again(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path
) -> None:
    device_id = unique("dev")
    first = _provision(devid, device_pki, device_id)
    assert devid("hsm", "delete", first["key_reference"]).code == 0

    result = devid("device", "provision", device_id, "--token", device_pki.token, "--ca", "issuing")
    assert result.code == 4
    assert "its key is not on the token" in one_error_line(result)
    assert len(certificate_rows(pki_home, device_id)) == 1
    assert token_objects(f"device-{device_id}") == []


def test_a_lone_public_key_left_by_a_killed_generation_is_removed(
    devid: Callable[..., Any], device_pki: DevicePki, pki_home: Path, tmp_path: Path
) -> None:
    # SoftHSM writes the public key first: a kill in between leaves it alone under the
    # device's label; provisioning must not leave a second public key beside the new pair
    device_id = unique("dev")
    stray = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = tmp_path / "stray.der"
    der.write_bytes(
        stray.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    run_tool("pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL, "--login",
             "--pin", TEST_PIN, "--write-object", str(der), "--type", "pubkey",
             "--label", f"device-{device_id}", "--id", "99")  # fmt: skip
    result = _provision(devid, device_pki, device_id)
    objects = token_objects(f"device-{device_id}")
    assert sorted(o["class"] for o in objects) == ["Certificate", "Private Key", "Public Key"]
    key_id = next(o["ID"] for o in objects if o["class"] == "Public Key")
    assert key_id != "99"
    assert token_public_key_der(key_id) == cert_public_key_der(Path(result["certificate_path"]))
