"""Durations, names, SANs, name constraints and profiles, checked without a CA."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from devid.durations import format_duration, parse_duration, parse_instant, parse_threshold
from devid.errors import BadInput, CheckFailed
from devid.pki.certs import parse_serial, serial_hex
from devid.pki.crl import parse_reason
from devid.pki.names import general_name_text, parse_name, parse_name_constraints, parse_san
from devid.pki.profiles import PROFILES, KeyRules, profile_from_mapping


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("10m", 600), ("2w", 14 * 86400), ("45s", 45),
     ("1d12h", 129600), (" 1h 30m ", 5400), ("1.5h", 5400)],
)  # fmt: skip
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "-3d", "3d-", "1h+2m", "30 days"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadInput, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips(seconds: int) -> None:
    span = dt.timedelta(seconds=seconds)
    assert parse_duration(format_duration(span)) == span


def test_thresholds_and_instants() -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=300)
    assert parse_threshold("33%").renew_at(start, end) == end - dt.timedelta(days=99)
    assert parse_threshold("30d").renew_at(start, end) == end - dt.timedelta(days=30)
    assert str(parse_threshold("33%")) == "33%" and str(parse_threshold("720h")) == "4w2d"
    for bad in ("0%", "101%", "x%"):
        with pytest.raises(BadInput):
            parse_threshold(bad)
    assert parse_instant("2030-01-01T00:00:00Z") == start
    assert parse_instant("2030-01-01T00:00:00") == start  # no zone means UTC
    assert parse_instant("+2d", now=start) == start + dt.timedelta(days=2)
    assert parse_instant("-1h", now=start) == start - dt.timedelta(hours=1)
    with pytest.raises(BadInput):
        parse_instant("tomorrow")


def test_names_and_sans() -> None:
    name = parse_name("CN=dev1,O=Acme\\, Inc.,C=DE")
    assert name.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "Acme, Inc."
    assert parse_san("dns:*.example.com") == x509.DNSName("*.example.com")
    assert parse_san("URI:urn:dev:ops:1") == x509.UniformResourceIdentifier("urn:dev:ops:1")
    assert parse_san("ip:2001:db8::1") == x509.IPAddress(ipaddress.ip_address("2001:db8::1"))
    assert parse_san("email:ops@example.com") == x509.RFC822Name("ops@example.com")
    for text in ("dns:a..b", "dns:-a.example", "ip:10.0.0.0/8", "uri:", "mail:x@y", "dns"):
        with pytest.raises(BadInput):
            parse_san(text)
    for text in ("dns:x.example", "uri:urn:a:b", "ip:10.1.2.3", "email:a@b.c"):
        assert general_name_text(parse_san(text)) == text


def test_name_constraints() -> None:
    nc = parse_name_constraints(
        ["permit:dns:example.com", "exclude:ip:10.0.0.0/8", "permit:email:example.com",
         "permit:uri:.example.com", "permit:dns:example.com"]
    )  # fmt: skip
    assert nc.permitted == (
        x509.DNSName("example.com"),
        x509.RFC822Name("example.com"),
        x509.UniformResourceIdentifier(".example.com"),
    )
    assert nc.excluded == (x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),)
    assert nc.extension() is not None and parse_name_constraints([]).extension() is None
    bad_ones = ("permit:ip:10.0.0.1/8", "allow:dns:x", "permit:x400:y", "permit:dns",
                "permit:uri:http://example.com/", "exclude:email:not an address",
                "permit:dns:.example.com")  # fmt: skip
    for bad in bad_ones:
        with pytest.raises(BadInput):
            parse_name_constraints([bad])


def test_key_rules() -> None:
    rules = KeyRules()
    rules.check(ec.generate_private_key(ec.SECP256R1()).public_key(), profile="p")
    rules.check(ed25519.Ed25519PrivateKey.generate().public_key(), profile="p")
    with pytest.raises(CheckFailed, match="P-256"):
        rules.check(ec.generate_private_key(ec.SECP192R1()).public_key(), profile="p")
    with pytest.raises(CheckFailed, match="2048"):
        rules.check(rsa.generate_private_key(65537, 1024).public_key(), profile="p")
    with pytest.raises(CheckFailed, match="Ed25519"):
        KeyRules(allow_ed25519=False).check(
            ed25519.Ed25519PrivateKey.generate().public_key(), profile="p"
        )


def test_profiles() -> None:
    device = PROFILES["device"]
    assert not device.ca and device.extended_key_usage == (x509.ExtendedKeyUsageOID.CLIENT_AUTH,)
    rsa_usage = device.key_usage_extension(rsa.generate_private_key(65537, 2048).public_key())
    ec_usage = device.key_usage_extension(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert rsa_usage.digital_signature and rsa_usage.key_encipherment
    assert ec_usage.digital_signature and not ec_usage.key_encipherment
    assert device.extra_sans("dev-1") == [
        x509.UniformResourceIdentifier("urn:devid:dev-1"),
        x509.DNSName("dev-1"),
    ]
    assert device.extra_sans("dev:1") == [x509.UniformResourceIdentifier("urn:devid:dev:1")]
    assert (
        PROFILES["intermediate"].ca
        and PROFILES["intermediate"]
        .key_usage_extension(ec.generate_private_key(ec.SECP256R1()).public_key())
        .key_cert_sign
    )
    custom = profile_from_mapping({"base": "client", "days": 30, "allow_ed25519": False})
    assert custom.days == 30 and not custom.keys.allow_ed25519 and not custom.device_sans
    for bad in ({"days": 0}, {"days": "7"}, {"subject": "nonsense"}, {"san": ["foo:bar"]},
                {"base": "nope"}, {"san": "dns:x"}):  # fmt: skip
        with pytest.raises(BadInput):
            profile_from_mapping(bad)


def test_serials_and_reasons() -> None:
    assert serial_hex(0xABC) == "0abc"
    for text in ("0ABC", "0x0abc", "0a:bc", "serial=0ABC", " abc "):
        assert parse_serial(text) == 0xABC
    with pytest.raises(BadInput):
        parse_serial("xyz")
    assert parse_reason("keyCompromise") is x509.ReasonFlags.key_compromise
    assert parse_reason("cessation-of-operation") is x509.ReasonFlags.cessation_of_operation
    with pytest.raises(BadInput):
        parse_reason("remove-from-crl")


def test_subjects_take_the_attribute_names_jitp_templates_use() -> None:
    name = parse_name("CN=dev-1,serialNumber=0042,O=Acme")
    serial = name.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    assert [a.value for a in serial] == ["0042"]
    assert parse_name("serialnumber=7").get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    with pytest.raises(BadInput) as info:
        parse_name("CN=x,bogusAttr=1")
    assert not str(info.value).rstrip().endswith(":")  # says why, not an empty reason
