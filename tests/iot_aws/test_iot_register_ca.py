"""``devid iot register-ca`` against a moto server (real HTTP, real boto3).

moto ignores the verification certificate and the certificate mode (DESIGN.md section 3), so
what AWS would check is asserted on devid's side: openssl verifies the verification
certificate devid sent, and wrong codes / wrong CAs must be refused before AWS is called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoServer, run_tool
from cryptography import x509
from iot_aws_support import (
    Devid,
    free_endpoint,
    issue_device,
    make_ca,
    ok_json,
    one_error_line,
    openssl_iot_id,
    openssl_sign,
    registrations,
    snapshot,
)

from devid.errors import CheckFailed
from devid.iot_ca import CaRegistration, make_verification_certificate, register_ca
from devid.pki.ca import load_ca


def _registered(moto: MotoServer, ca_pem: Path) -> bool:
    """Whether moto holds the CA (moto has no ListCACertificates; ask by openssl's id)."""
    import botocore.exceptions

    try:
        _describe_ca(moto, openssl_iot_id(ca_pem))
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return False
    return True


def _describe_ca(moto: MotoServer, cert_id: str) -> dict[str, Any]:
    return moto.client("iot").describe_ca_certificate(certificateId=cert_id)  # type: ignore[attr-defined]


def _same_certificate(pem_text: str, path: Path) -> bool:
    return x509.load_pem_x509_certificate(pem_text.encode()) == x509.load_pem_x509_certificate(
        path.read_bytes()
    )


def _check_verification(out: dict[str, Any], proof: Path, ca_pem: Path) -> None:
    """openssl: the verification certificate chains to the CA and its CN is the code."""
    run_tool("openssl", "verify", "-partial_chain", "-CAfile", str(ca_pem), str(proof))
    subject = (
        run_tool("openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(proof))
        .stdout.decode()
        .strip()
    )
    assert subject == f"subject=CN={out['registration_code']}"
    assert out["verification_certificate"]["aws_iot_certificate_id"] == openssl_iot_id(proof)


@pytest.mark.parametrize("where", ["file", "token"])
def test_default_mode_proves_the_ca_key(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    token_ref: Callable[[str], str],
    where: str,
) -> None:
    key = key_file("ec-p256") if where == "file" else token_ref("ec-p256")
    ca_pem = make_ca(devid, "fleet", key)
    before = snapshot(pki_home)
    proof = tmp_path / "verification.pem"
    out = ok_json(
        devid,
        "iot",
        "register-ca",
        "--ca",
        "fleet",
        "--verification-out",
        str(proof),
        *moto.aws_args(),
    )

    expected = openssl_iot_id(ca_pem)
    assert out["aws_iot_certificate_id"] == expected
    assert out["aws_certificate_id"] == expected
    assert out["certificate_id_matches"] is True
    assert (out["mode"], out["status"], out["auto_registration"]) == ("DEFAULT", "ACTIVE", False)
    _check_verification(out, proof, ca_pem)

    described = _describe_ca(moto, expected)["certificateDescription"]
    assert described["status"] == "ACTIVE"
    assert described["certificateArn"] == out["certificate_arn"]
    assert _same_certificate(described["certificatePem"], ca_pem)

    after = snapshot(pki_home)
    assert after.get("certificates") == before.get("certificates")  # verification cert not recorded
    [row] = registrations(pki_home)
    assert (row["kind"], row["ca"], row["status"], row["mode"]) == (
        "ca",
        "fleet",
        "ACTIVE",
        "DEFAULT",
    )
    assert (row["certificate_id"], row["arn"]) == (expected, out["certificate_arn"])


def test_sni_only_mode_sends_no_verification(
    devid: Devid, pki_home: Path, moto: MotoServer, key_file: Callable[[str], Path]
) -> None:
    ca_pem = make_ca(devid, "fleet", key_file("rsa-2048"))
    out = ok_json(
        devid,
        "iot",
        "register-ca",
        "--ca",
        "fleet",
        "--mode",
        "sni-only",
        "--auto-register",
        *moto.aws_args(),
    )
    assert out["mode"] == "SNI_ONLY"
    assert out["auto_registration"] is True
    assert out["registration_code"] is None and out["verification_certificate"] is None
    described = _describe_ca(moto, openssl_iot_id(ca_pem))["certificateDescription"]
    assert described["status"] == "ACTIVE"
    assert registrations(pki_home)[0]["mode"] == "SNI_ONLY"


def test_jitp_template_is_checked_and_sent(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-1", tmp_path / "d1.pem")
    role = "arn:aws:iam::123456789012:role/JITPRole"
    reg = tmp_path / "reg.json"
    ok_json(devid, "iot", "jitp", "template", "--role-arn", role, "--out", str(reg))
    out = ok_json(
        devid, "iot", "register-ca", "--ca", "fleet", "--jitp-template", str(reg), *moto.aws_args()
    )
    assert out["jitp"] is True and out["auto_registration"] is True
    described = _describe_ca(moto, out["aws_iot_certificate_id"])
    assert described["registrationConfig"]["roleArn"] == role
    sent = json.loads(described["registrationConfig"]["templateBody"])
    assert sent == json.loads(json.loads(reg.read_text())["templateBody"])


def test_jitp_template_missing_subject_field_is_refused(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    ca_pem = make_ca(devid, "fleet", key_file("ec-p256"))
    csr = tmp_path / "d.csr"
    run_tool(
        "openssl",
        "req",
        "-new",
        "-key",
        str(openssl_key("ec-p256")),
        "-subj",
        "/CN=sensor-2",
        "-out",
        str(csr),
    )
    ok_json(
        devid, "cert", "issue", "--ca", "fleet", "--csr", str(csr), "--out", str(tmp_path / "d.pem")
    )
    reg = tmp_path / "reg.json"
    role = "arn:aws:iam::123456789012:role/JITPRole"
    ok_json(devid, "iot", "jitp", "template", "--role-arn", role, "--out", str(reg))
    before = snapshot(pki_home)
    result = devid(
        "iot", "register-ca", "--ca", "fleet", "--jitp-template", str(reg), *moto.aws_args()
    )
    assert result.code == 1
    assert "AWS::IoT::Certificate::SerialNumber" in one_error_line(result)
    assert not _registered(moto, ca_pem)
    assert snapshot(pki_home) == before


def test_root_whose_devices_come_from_an_intermediate_is_refused(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    root_pem = make_ca(devid, "root", key_file("ec-p384"))
    issuing_pem = make_ca(devid, "issuing", key_file("ec-p256"), parent="root")
    issue_device(devid, "issuing", openssl_key("ec-p256"), "sensor-1", tmp_path / "d1.pem")
    before = snapshot(pki_home)

    result = devid("iot", "register-ca", "--ca", "root", *moto.aws_args())
    assert result.code == 1
    line = one_error_line(result)
    assert "devices are issued by intermediate issuing" in line
    assert "register issuing instead" in line
    assert not _registered(moto, root_pem)
    assert snapshot(pki_home) == before

    forced = devid("iot", "register-ca", "--ca", "root", "--force", *moto.aws_args())
    assert forced.code == 0, forced.err
    assert "devid: warning: devices are issued by intermediate issuing" in forced.err
    assert _registered(moto, root_pem)
    assert ok_json(devid, "iot", "register-ca", "--ca", "issuing", *moto.aws_args())
    assert _registered(moto, issuing_pem)


def test_registering_twice_is_a_conflict(
    devid: Devid, pki_home: Path, moto: MotoServer, key_file: Callable[[str], Path]
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    ok_json(devid, "iot", "register-ca", "--ca", "fleet", *moto.aws_args())
    before = snapshot(pki_home)
    result = devid("iot", "register-ca", "--ca", "fleet", *moto.aws_args())
    assert result.code == 4
    assert "already registered in AWS IoT" in one_error_line(result)
    assert snapshot(pki_home) == before


@pytest.mark.parametrize("mode", ["default", "sni-only"])
def test_a_verification_out_that_cannot_be_written_stops_before_aws(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    key_file: Callable[[str], Path],
    tmp_path: Path,
    mode: str,
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    before = snapshot(pki_home)
    out = tmp_path / "no-such-folder" / "verification.pem"
    if mode == "sni-only":
        out = tmp_path / "verification.pem"  # a folder that exists: the mode is the problem
    result = devid("iot", "register-ca", "--ca", "fleet", "--mode", mode,
                   "--verification-out", out, *moto.aws_args())  # fmt: skip
    assert result.code == 2
    expected = "no such folder" if mode == "default" else "SNI_ONLY mode uses no verification"
    assert expected in one_error_line(result)
    assert not _registered(moto, pki_home / "cas" / "fleet" / "ca.pem")
    assert snapshot(pki_home) == before


# Bad input: moto accepts any verification certificate, so devid must refuse these itself.


def test_wrong_registration_code_is_refused_before_registering(
    devid: Devid, pki_home: Path, moto: MotoServer, key_file: Callable[[str], Path]
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    ca = load_ca("fleet")
    key = ca.signing_key()
    client = moto.client("iot")
    with pytest.raises(CheckFailed, match="not the registration code"):
        register_ca(
            client,
            CaRegistration(ca.certificate),
            verification=lambda code: make_verification_certificate(
                ca.certificate, key, code[::-1]
            ),
        )
    assert not _registered(moto, ca.directory / "ca.pem")


def test_verification_certificate_from_another_ca_is_refused(
    devid: Devid, pki_home: Path, moto: MotoServer, key_file: Callable[[str], Path]
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    make_ca(devid, "other", key_file("ec-p256"))
    fleet, other = load_ca("fleet"), load_ca("other")
    other_key = other.signing_key()
    client = moto.client("iot")
    with pytest.raises(CheckFailed, match="verification certificate is not signed by the CA"):
        register_ca(
            client,
            CaRegistration(fleet.certificate),
            verification=lambda code: make_verification_certificate(
                other.certificate, other_key, code
            ),
        )
    assert not _registered(moto, fleet.directory / "ca.pem")


def test_supplied_verification_certificate_is_checked(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
) -> None:
    fleet_key, other_key = key_file("ec-p256"), key_file("ec-p256")
    fleet_pem = make_ca(devid, "fleet", fleet_key)
    other_pem = make_ca(devid, "other", other_key)
    before = snapshot(pki_home)
    stale = openssl_sign(fleet_pem, fleet_key, "/CN=0000-not-the-code", tmp_path / "v1.pem")
    result = devid(
        "iot", "register-ca", "--ca", "fleet", "--verification-cert", str(stale), *moto.aws_args()
    )
    assert result.code == 1
    assert "not the registration code" in one_error_line(result)

    foreign = openssl_sign(other_pem, other_key, "/CN=anything", tmp_path / "v2.pem")
    result = devid(
        "iot", "register-ca", "--ca", "fleet", "--verification-cert", str(foreign), *moto.aws_args()
    )
    assert result.code == 1
    assert "verification certificate is not signed by the CA" in one_error_line(result)
    assert not _registered(moto, fleet_pem)
    assert snapshot(pki_home) == before


def test_unreachable_endpoint(
    devid: Devid,
    pki_home: Path,
    key_file: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    before = snapshot(pki_home)
    endpoint = free_endpoint(monkeypatch)
    result = devid(
        "iot",
        "register-ca",
        "--ca",
        "fleet",
        "--endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
    )
    assert result.code == 3
    assert "cannot reach AWS endpoint" in one_error_line(result)
    assert snapshot(pki_home) == before
