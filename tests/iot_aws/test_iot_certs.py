"""``devid iot register-cert|create-from-csr|status|list`` against a moto server.

Every certificate id devid prints is compared with ``openssl x509 -fingerprint -sha256``.
moto's CreateCertificateFromCsr certifies a key of its own (DESIGN.md section 3): devid must
notice, write nothing and leave nothing behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from iot_aws_support import (
    Devid,
    SigningIot,
    free_endpoint,
    issue_device,
    make_ca,
    make_csr,
    ok_json,
    one_error_line,
    openssl_iot_id,
    registrations,
    snapshot,
)

from devid.iot import create_from_csr


def _iot(moto: MotoServer) -> Any:
    return moto.client("iot")


def _listed(moto: MotoServer) -> list[dict[str, Any]]:
    return list(_iot(moto).list_certificates()["certificates"])


@pytest.fixture
def fleet(devid: Devid, pki_home: Path, moto: MotoServer, key_file: Callable[[str], Path]) -> Path:
    """CA ``fleet`` registered in moto (DEFAULT mode); returns its ca.pem."""
    ca_pem = make_ca(devid, "fleet", key_file("ec-p256"))
    ok_json(devid, "iot", "register-ca", "--ca", "fleet", *moto.aws_args())
    return ca_pem


def test_register_cert_with_its_ca(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    cert = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-1", tmp_path / "d.pem")
    out = ok_json(
        devid, "iot", "register-cert", str(cert), "--ca", "fleet", "--activate", *moto.aws_args()
    )
    expected = openssl_iot_id(cert)
    assert out["aws_iot_certificate_id"] == expected == out["aws_certificate_id"]
    assert out["certificate_id_matches"] is True
    assert out["status"] == "ACTIVE"
    assert out["ca_certificate_id"] == openssl_iot_id(fleet)

    described = _iot(moto).describe_certificate(certificateId=expected)["certificateDescription"]
    assert described["status"] == "ACTIVE"
    by_ca = _iot(moto).list_certificates_by_ca(caCertificateId=openssl_iot_id(fleet))
    assert [c["certificateId"] for c in by_ca["certificates"]] == [expected]

    [row] = [r for r in registrations(pki_home) if r["kind"] == "certificate"]
    assert (row["certificate_id"], row["arn"], row["status"]) == (
        expected,
        out["certificate_arn"],
        "ACTIVE",
    )
    assert (row["kind"], row["ca"], row["serial"]) == ("certificate", "fleet", out["serial"])
    assert int(out["serial"], 16) == x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def test_register_cert_takes_the_ca_from_the_inventory(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    cert = issue_device(devid, "fleet", openssl_key("rsa-2048"), "sensor-2", tmp_path / "d.pem")
    out = ok_json(devid, "iot", "register-cert", str(cert), *moto.aws_args())
    assert out["ca"] == "fleet"
    assert out["status"] == "INACTIVE"
    assert out["ca_certificate_id"] == openssl_iot_id(fleet)
    described = _iot(moto).describe_certificate(certificateId=openssl_iot_id(cert))
    assert described["certificateDescription"]["status"] == "INACTIVE"


def test_register_cert_without_ca(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    make_ca(devid, "sni", key_file("ec-p256"))
    ok_json(devid, "iot", "register-ca", "--ca", "sni", "--mode", "sni-only", *moto.aws_args())
    cert = issue_device(devid, "sni", openssl_key("ec-p384"), "sensor-3", tmp_path / "d.pem")
    out = ok_json(
        devid, "iot", "register-cert", str(cert), "--without-ca", "--activate", *moto.aws_args()
    )
    assert out["aws_iot_certificate_id"] == openssl_iot_id(cert) == out["aws_certificate_id"]
    assert out["ca"] == "sni"  # the issuer the inventory knows, though registered without it
    assert out["ca_certificate_id"] is None
    listed = _listed(moto)
    assert [(c["certificateId"], c["status"]) for c in listed] == [(openssl_iot_id(cert), "ACTIVE")]
    [row] = [r for r in registrations(pki_home) if r["kind"] == "certificate"]
    assert (row["certificate_id"], row["ca"], row["serial"]) == (
        openssl_iot_id(cert),
        "sni",
        out["serial"],
    )


def test_register_cert_without_ca_records_an_unregistered_issuer(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    """The issuing CA is in the inventory but not in AWS IoT: registered, issuer recorded."""
    make_ca(devid, "root", key_file("ec-p256"))
    cert = issue_device(devid, "root", openssl_key("ec-p256"), "dev3", tmp_path / "dev3.pem")
    out = ok_json(devid, "iot", "register-cert", str(cert), "--without-ca", *moto.aws_args())
    assert (out["ca"], out["ca_certificate_id"], out["status"]) == ("root", None, "INACTIVE")
    [row] = registrations(pki_home)
    assert (row["kind"], row["certificate_id"], row["ca"], row["serial"]) == (
        "certificate",
        openssl_iot_id(cert),
        "root",
        out["serial"],
    )
    assert [c["certificateId"] for c in _listed(moto)] == [openssl_iot_id(cert)]


def test_register_cert_without_ca_refuses_a_default_mode_issuer(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    """RegisterCertificateWithoutCA is for SNI_ONLY CAs; fleet is registered in DEFAULT mode.

    moto's DescribeCACertificate has no certificateMode: devid's record of the registration
    (same ARN) says DEFAULT.
    """
    cert = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-16", tmp_path / "d.pem")
    described = _iot(moto).describe_ca_certificate(certificateId=openssl_iot_id(fleet))
    assert described["certificateDescription"]["certificateId"] == openssl_iot_id(fleet)
    before = snapshot(pki_home)
    for extra in ([], ["--activate", "--json"]):
        result = devid("iot", "register-cert", str(cert), "--without-ca", *extra, *moto.aws_args())
        assert result.code == 2, result.err
        line = one_error_line(result)
        assert "CA fleet is registered in AWS IoT in DEFAULT mode" in line
        assert "--without-ca needs it in SNI_ONLY mode" in line and "--ca fleet" in line
        assert result.out == ""
    assert _listed(moto) == []
    assert snapshot(pki_home) == before


def test_register_cert_refusals(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    make_ca(devid, "other", key_file("ec-p256"))
    ok_json(devid, "iot", "register-ca", "--ca", "other", *moto.aws_args())
    good = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-4", tmp_path / "g.pem")
    weak = issue_device(devid, "fleet", openssl_key("ed25519"), "sensor-5", tmp_path / "w.pem")
    before = snapshot(pki_home)

    cases = [
        (["--ca", "fleet"], str(good), 1, "CA fleet is not registered in AWS IoT"),
        (["--ca", "other"], str(good), 1, "is not signed by the CA CN=other"),
        (["--ca", "fleet"], str(weak), 1, "ed25519 keys are not accepted by AWS IoT"),
        (["--ca", "fleet", "--without-ca"], str(good), 2, "not both"),
    ]
    for options, path, code, message in cases:
        result = devid("iot", "register-cert", path, *options, *moto.aws_args())
        assert result.code == code, (options, result.err)
        assert message in one_error_line(result), options
    assert _listed(moto) == []
    assert snapshot(pki_home) == before


def test_create_from_csr_refuses_a_certificate_for_another_key(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    csr = make_csr(openssl_key("ec-p256"), "/CN=sensor-6", tmp_path / "d.csr")
    out = tmp_path / "d.pem"
    before = snapshot(pki_home)
    result = devid(
        "iot", "create-from-csr", str(csr), "--out", str(out), "--activate", *moto.aws_args()
    )
    assert result.code == 1
    line = one_error_line(result)
    assert "AWS returned a certificate for a different key than the CSR's; not installed" in line
    assert "was deleted from AWS IoT" in line
    assert not out.exists()
    assert _listed(moto) == []
    assert snapshot(pki_home) == before


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("ed25519", "ed25519 keys are not accepted by AWS IoT"),
        ("rsa-1024", "rsa-1024 keys are too small for AWS IoT"),
    ],
)
def test_create_from_csr_preflight_sends_nothing(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
    kind: str,
    reason: str,
) -> None:
    csr = make_csr(openssl_key(kind), "/CN=sensor-7", tmp_path / "d.csr")
    out = tmp_path / "d.pem"
    before = snapshot(pki_home)
    result = devid("iot", "create-from-csr", str(csr), "--out", str(out), *moto.aws_args())
    assert result.code == 1
    assert reason in one_error_line(result)
    assert not out.exists()
    assert _listed(moto) == []
    assert snapshot(pki_home) == before


def test_status_transitions(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    cert = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-8", tmp_path / "d.pem")
    ok_json(devid, "iot", "register-cert", str(cert), *moto.aws_args())
    cert_id = openssl_iot_id(cert)

    def aws_status() -> str:
        desc = _iot(moto).describe_certificate(certificateId=cert_id)
        return str(desc["certificateDescription"]["status"])

    steps = [
        (str(cert), "active"),
        (cert_id, "inactive"),
        (cert_id.upper(), "ACTIVE"),
        (str(cert), "revoked"),
    ]
    previous = "INACTIVE"
    for target, wanted in steps:
        out = ok_json(devid, "iot", "status", target, wanted, *moto.aws_args())
        assert out["aws_iot_certificate_id"] == cert_id
        assert out["certificate_id_matches"] is True
        assert (out["previous_status"], out["status"]) == (previous, wanted.upper())
        assert aws_status() == wanted.upper()
        [row] = [r for r in registrations(pki_home) if r["certificate_id"] == cert_id]
        assert row["status"] == wanted.upper()
        previous = wanted.upper()

    before = snapshot(pki_home)
    final = devid("iot", "status", cert_id, "active", *moto.aws_args())
    assert final.code == 4
    assert "REVOKED, which is final" in one_error_line(final)
    for pending in ("pending_activation", "PENDING_TRANSFER", "register_inactive"):
        refused = devid("iot", "status", cert_id, pending, *moto.aws_args())
        assert refused.code == 2
        assert "cannot be set" in one_error_line(refused)
    assert aws_status() == "REVOKED"
    assert snapshot(pki_home) == before


def test_status_with_a_bad_store_changes_nothing_in_aws(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    cert = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-9", tmp_path / "d.pem")
    ok_json(devid, "iot", "register-cert", str(cert), "--activate", *moto.aws_args())
    result = devid("iot", "status", cert, "inactive", "--store", "bogus://x", *moto.aws_args())
    assert result.code == 2 and "unsupported store URL" in one_error_line(result)
    desc = _iot(moto).describe_certificate(certificateId=openssl_iot_id(cert))
    assert desc["certificateDescription"]["status"] == "ACTIVE"


def test_status_of_an_unknown_certificate(
    devid: Devid, pki_home: Path, moto: MotoServer, fleet: Path
) -> None:
    result = devid("iot", "status", "ab" * 32, "inactive", *moto.aws_args())
    assert result.code == 1
    assert "is not registered in AWS IoT" in one_error_line(result)
    bad = devid("iot", "status", "not-an-id", "inactive", *moto.aws_args())
    assert bad.code == 2


def test_list_shows_local_ids(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
) -> None:
    one = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-9", tmp_path / "1.pem")
    two = issue_device(devid, "fleet", openssl_key("rsa-2048"), "sensor-10", tmp_path / "2.pem")
    ok_json(devid, "iot", "register-cert", str(one), "--activate", *moto.aws_args())
    ok_json(devid, "iot", "register-cert", str(two), *moto.aws_args())
    make_ca(devid, "sni", key_file("ec-p256"))
    three = issue_device(devid, "sni", openssl_key("ec-p256"), "sensor-11", tmp_path / "3.pem")
    ok_json(devid, "iot", "register-cert", str(three), "--without-ca", *moto.aws_args())
    before = snapshot(pki_home)

    listed = ok_json(devid, "iot", "list", *moto.aws_args())["certificates"]
    ids = {openssl_iot_id(p): p for p in (one, two, three)}
    assert {c["aws_iot_certificate_id"] for c in listed} == set(ids)
    for item in listed:
        assert item["aws_certificate_id"] == item["aws_iot_certificate_id"]
        assert item["certificate_id_matches"] is True
        assert item["recorded_by_devid"] is True
    status = {c["aws_iot_certificate_id"]: c["status"] for c in listed}
    assert status[openssl_iot_id(one)] == "ACTIVE"
    assert status[openssl_iot_id(two)] == "INACTIVE"

    by_ca = ok_json(devid, "iot", "list", "--ca", "fleet", *moto.aws_args())["certificates"]
    assert {c["ca_certificate_id"] for c in by_ca} == {openssl_iot_id(fleet)}
    assert {c["aws_iot_certificate_id"] for c in by_ca} == {
        openssl_iot_id(one),
        openssl_iot_id(two),
    }
    text = devid("iot", "list", *moto.aws_args())
    assert text.code == 0
    assert all(openssl_iot_id(p) in text.out for p in (one, two, three))
    assert snapshot(pki_home) == before


def test_unreachable_endpoint(
    devid: Devid,
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    openssl_key: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_ca(devid, "fleet", key_file("ec-p256"))
    cert = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-12", tmp_path / "d.pem")
    csr = make_csr(openssl_key("ec-p256"), "/CN=sensor-13", tmp_path / "n.csr")
    out = tmp_path / "n.pem"
    aws = ["--endpoint-url", free_endpoint(monkeypatch), "--region", "us-east-1"]
    before = snapshot(pki_home)
    for args in (
        ["register-cert", str(cert), "--ca", "fleet"],
        ["register-cert", str(cert), "--without-ca"],
        ["create-from-csr", str(csr), "--out", str(out)],
        ["status", str(cert), "inactive"],
        ["list"],
    ):
        result = devid("iot", *args, *aws)
        assert result.code == 3, (args, result.err)
        assert "cannot reach AWS endpoint" in one_error_line(result)
    assert not out.exists()
    assert snapshot(pki_home) == before


def test_create_from_csr_keeps_a_certificate_for_the_csr_key(
    moto: MotoServer, tmp_path: Path, openssl_key: Callable[[str], Path]
) -> None:
    csr_path = make_csr(openssl_key("rsa-2048"), "/CN=sensor-14", tmp_path / "d.csr")
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    iot = _iot(moto)
    seen: list[str] = []

    def keep(cert: x509.Certificate) -> None:  # runs before activation
        path = tmp_path / "kept.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        cert_id = openssl_iot_id(path)
        seen.append(
            iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"]
        )

    cert, made = create_from_csr(SigningIot(iot), csr, activate=True, keep=keep)
    assert cert.public_key() == csr.public_key()
    assert seen == ["INACTIVE"]
    assert made.local_id == openssl_iot_id(tmp_path / "kept.pem") == made.certificate_id
    desc = iot.describe_certificate(certificateId=made.certificate_id)["certificateDescription"]
    assert desc["status"] == "ACTIVE" == made.status


def test_created_is_iso_8601_in_utc(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    fleet: Path,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    """``created`` is printed like every other devid time: ISO 8601, UTC (not str(datetime))."""
    cert = issue_device(devid, "fleet", openssl_key("ec-p256"), "sensor-15", tmp_path / "d.pem")
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ok_json(devid, "iot", "register-cert", str(cert), *moto.aws_args())
    status = ok_json(devid, "iot", "status", str(cert), "active", *moto.aws_args())
    [listed] = ok_json(devid, "iot", "list", *moto.aws_args())["certificates"]
    for created in (status["created"], listed["created"]):
        assert "T" in created and " " not in created, created
        when = dt.datetime.fromisoformat(created)
        assert when.utcoffset() == dt.timedelta(0), created
        assert before <= when <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
