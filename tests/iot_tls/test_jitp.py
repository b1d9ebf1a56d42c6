"""``devid iot jitp check|template``: do a device's subject fields cover a JITP template?

Certificates are built here with cryptography's builders; ``openssl x509 -subject`` is the
independent reader of what each subject holds. The templates follow the structure of the
JITP example in the AWS IoT developer guide (Parameters, a thing named by CommonName with
the SerialNumber as an attribute and the Country as a thing group, an activated
certificate, a policy).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Result, run_tool
from cryptography.hazmat.primitives.asymmetric import ec
from iot_tls_support import TestCA, csr_signed_by, name

CN = "AWS::IoT::Certificate::CommonName"
SERIAL = "AWS::IoT::Certificate::SerialNumber"
COUNTRY = "AWS::IoT::Certificate::Country"
CERT_ID = "AWS::IoT::Certificate::Id"

DOCS_LIKE_TEMPLATE: dict[str, Any] = {
    "Parameters": {p: {"Type": "String"} for p in (CN, SERIAL, COUNTRY, CERT_ID)},
    "Resources": {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Ref": CN},
                "AttributePayload": {"version": "v1", "serialNumber": {"Ref": SERIAL}},
                "ThingTypeName": "lightBulb-versionA",
                "ThingGroups": ["v1-lightbulbs", {"Ref": COUNTRY}],
            },
            "OverrideSettings": {
                "AttributePayload": "MERGE",
                "ThingTypeName": "REPLACE",
                "ThingGroups": "DO_NOTHING",
            },
        },
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {"CertificateId": {"Ref": CERT_ID}, "Status": "ACTIVE"},
        },
        "policy": {
            "Type": "AWS::IoT::Policy",
            "Properties": {
                "PolicyDocument": json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["iot:Publish"],
                                "Resource": ["arn:aws:iot:us-east-1:123456789012:topic/foo/bar"],
                            }
                        ],
                    }
                )
            },
        },
    },
}


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def cert_with(ca: TestCA, filename: str, cn: str, **fields: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    return ca.issue(csr_signed_by(key, name(cn, **fields)), filename)


def openssl_subject(cert: Path) -> str:
    out = run_tool("openssl", "x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "RFC2253")
    return out.stdout.decode().strip().removeprefix("subject=")


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def error_line(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("devid: error: "), result.err
    return lines[0]


def test_certificate_with_all_fields_passes(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    cert = cert_with(ca, "full.pem", "bulb-0001", serialNumber="SN-0001", C="DE")
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)

    result = devid("iot", "jitp", "check", template, "--cert", cert, "--json")

    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] is True
    assert set(report["parameters"]) == {CN, SERIAL, COUNTRY, CERT_ID}
    seen_by_openssl = openssl_subject(cert)
    for param, attribute in ((CN, "CN"), (SERIAL, "serialNumber"), (COUNTRY, "C")):
        assert f"{attribute}={report['parameters'][param]}" in seen_by_openssl


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"serialNumber": "SN-2"}, [COUNTRY]),
        ({"C": "DE"}, [SERIAL]),
        ({}, [SERIAL, COUNTRY]),
    ],
)
def test_missing_fields_fail_and_are_named(
    devid: Callable[..., Result],
    ca: TestCA,
    tmp_path: Path,
    fields: dict[str, str],
    missing: list[str],
) -> None:
    cert = cert_with(ca, "partial.pem", "bulb-0002", **fields)
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)

    result = devid("iot", "jitp", "check", template, "--cert", cert, "--json")

    assert result.code == 1
    assert json.loads(result.out)["missing"] == missing
    line = error_line(result)
    for param in missing:
        assert param in line
    for param in {SERIAL, COUNTRY} - set(missing):
        assert param not in line
    assert ("serialNumber=" in openssl_subject(cert)) == (SERIAL not in missing)


def test_certificate_without_common_name_fails(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    cert = cert_with(ca, "nocn.pem", "", serialNumber="SN-3", C="DE")
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)
    result = devid("iot", "jitp", "check", template, "--cert", cert)
    assert result.code == 1
    assert f"{CN} (CN=)" in error_line(result)
    assert "MISSING" in result.out


def test_references_in_sub_and_join_count_even_undeclared(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    template = {
        "Parameters": {CN: {"Type": "String"}},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Fn::Join": ["-", [{"Ref": CN}, "x"]]},
                    "ThingGroups": [{"Fn::Sub": "country-${" + COUNTRY + "}-${!Literal}"}],
                },
            }
        },
    }
    path = write_json(tmp_path / "t.json", template)
    cert = cert_with(ca, "cn-only.pem", "bulb-0004")
    result = devid("iot", "jitp", "check", path, "--cert", cert, "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["missing"] == [COUNTRY]
    assert any(COUNTRY in w and "not declared" in w for w in report["warnings"])
    assert "Literal" not in json.dumps(report["parameters"])


def test_registration_config_wrapper_is_accepted(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    wrapper = {
        "templateBody": json.dumps(DOCS_LIKE_TEMPLATE),
        "roleArn": "arn:aws:iam::123456789012:role/JITPRole",
    }
    path = write_json(tmp_path / "reg.json", wrapper)
    cert = cert_with(ca, "c.pem", "bulb-0005", serialNumber="5")
    result = devid("iot", "jitp", "check", path, "--cert", cert)
    assert result.code == 1
    assert COUNTRY in error_line(result)


def test_thing_name_aws_would_refuse_fails(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    cert = cert_with(ca, "dotted.pem", "bulb.0006", serialNumber="6", C="DE")
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)
    result = devid("iot", "jitp", "check", template, "--cert", cert)
    assert result.code == 1
    assert "thing name would be 'bulb.0006'" in error_line(result)


def test_unknown_and_unfillable_parameters_fail(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    template = {
        "Parameters": {
            CN: {"Type": "String"},
            "AWS::IoT::Certificate::Locality": {"Type": "String"},
            "Location": {"Type": "String"},
            "Fleet": {"Type": "String", "Default": "alpha"},
        },
        "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}},
    }
    path = write_json(tmp_path / "t.json", template)
    cert = cert_with(ca, "c.pem", "bulb-0007")
    result = devid("iot", "jitp", "check", path, "--cert", cert, "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["unknown"] == ["AWS::IoT::Certificate::Locality"]
    assert report["unfillable"] == ["Location"]


def test_subject_option(devid: Callable[..., Result], tmp_path: Path) -> None:
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)
    ok = devid("iot", "jitp", "check", template, "--subject", "CN=b-8,serialNumber=8,C=FR")
    assert ok.code == 0, ok.err
    assert "OK" in ok.out
    bad = devid("iot", "jitp", "check", template, "--subject", "CN=b-8,C=FR")
    assert bad.code == 1
    assert SERIAL in error_line(bad)


def test_profile_subject_template(devid: Callable[..., Result], tmp_path: Path) -> None:
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)
    profile = tmp_path / "fleet.toml"
    profile.write_text('base = "device"\nsubject = "CN={device_id},O=Acme,C=DE"\n')
    result = devid(
        "iot", "jitp", "check", template, "--profile", profile, "--device-id", "bulb-9", "--json"
    )
    assert result.code == 1
    report = json.loads(result.out)
    assert report["parameters"][CN] == "bulb-9"
    assert report["parameters"][COUNTRY] == "DE"
    assert report["missing"] == [SERIAL]


def test_builtin_profile_without_subject_is_bad_input(
    devid: Callable[..., Result], tmp_path: Path
) -> None:
    template = write_json(tmp_path / "t.json", DOCS_LIKE_TEMPLATE)
    result = devid("iot", "jitp", "check", template, "--profile", "device")
    assert result.code == 2
    assert "--cert" in error_line(result)


@pytest.mark.parametrize(
    ("content", "options"),
    [
        ("not json", ["--subject", "CN=x"]),
        ('{"Parameters": {}}', ["--subject", "CN=x"]),
        ('{"templateBody": "{nope", "roleArn": "r"}', ["--subject", "CN=x"]),
        ('{"Resources": {}}', []),
        ('{"Resources": {}}', ["--subject", "CN=x", "--profile", "device"]),
    ],
)
def test_bad_input(
    devid: Callable[..., Result], tmp_path: Path, content: str, options: list[str]
) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    result = devid("iot", "jitp", "check", path, *options)
    assert result.code == 2
    error_line(result)


def test_starter_template_passes_for_cn_and_serial(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    out = tmp_path / "jitp.json"
    written = devid("iot", "jitp", "template", "--out", out, "--json")
    assert written.code == 0, written.err
    assert set(json.loads(written.out)["parameters"]) == {CN, SERIAL, CERT_ID}
    body = json.loads(out.read_text())
    policy = json.loads(body["Resources"]["policy"]["Properties"]["PolicyDocument"])
    assert policy["Version"] == "2012-10-17"

    good = cert_with(ca, "good.pem", "sensor-0042", serialNumber="0042")
    assert devid("iot", "jitp", "check", out, "--cert", good).code == 0
    cn_only = cert_with(ca, "cn.pem", "sensor-0043")
    failed = devid("iot", "jitp", "check", out, "--cert", cn_only)
    assert failed.code == 1
    assert SERIAL in error_line(failed)

    again = devid("iot", "jitp", "template", "--out", out)
    assert again.code == 4
    assert devid("iot", "jitp", "template", "--out", out, "--force").code == 0


def test_starter_template_registration_config(
    devid: Callable[..., Result], ca: TestCA, tmp_path: Path
) -> None:
    role = "arn:aws:iam::123456789012:role/JITPRole"
    result = devid("iot", "jitp", "template", "--role-arn", role)
    assert result.code == 0, result.err
    wrapper = json.loads(result.out)
    assert wrapper["roleArn"] == role
    assert isinstance(wrapper["templateBody"], str)
    path = write_json(tmp_path / "reg.json", wrapper)
    good = cert_with(ca, "good.pem", "sensor-0044", serialNumber="0044")
    assert devid("iot", "jitp", "check", path, "--cert", good).code == 0


@pytest.mark.parametrize(
    "role",
    [
        "bogus",
        "",
        "arn:aws:iam::123456789012:user/JITPRole",  # a user, not a role
        "arn:aws:iam::12345:role/JITPRole",  # the account id is 12 digits
        "arn:aws:iot:us-east-1:123456789012:role/JITPRole",
    ],
)
def test_starter_template_refuses_what_is_not_a_role_arn(
    devid: Callable[..., Result], tmp_path: Path, role: str
) -> None:
    """The same check register-ca makes of --role-arn, before anything is written."""
    out = tmp_path / "reg.json"
    for extra in ([], ["--out", str(out)]):
        result = devid("iot", "jitp", "template", "--role-arn", role, *extra)
        assert result.code == 2, result.err
        assert f"{role!r} is not an IAM role ARN" in error_line(result)
        assert result.out == ""
    assert not out.exists()
