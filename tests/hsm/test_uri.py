"""hsm.uri: RFC 7512 examples, the smallstep and libp11 dialects, errors, and round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm.errors import HsmError, UriError
from hsm.uri import ObjectType, Pkcs11Uri, format_uri, parse_uri

PIN = "S3cret-PIN-4711"

# RFC 7512 section 3.3, every example (the long ones joined onto one line, as the RFC says).
RFC_EXAMPLES = {
    "pkcs11:": Pkcs11Uri(),
    "pkcs11:object=my-pubkey;type=public": Pkcs11Uri(
        object_label="my-pubkey", type=ObjectType.PUBLIC
    ),
    "pkcs11:object=my-key;type=private?pin-source=file:/etc/token": Pkcs11Uri(
        object_label="my-key", type=ObjectType.PRIVATE, pin_source="file:/etc/token"
    ),
    "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
    "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial="
    "?pin-source=file:/etc/token_pin": Pkcs11Uri(
        token="The Software PKCS#11 Softtoken",
        manufacturer="Snake Oil, Inc.",
        model="1.0",
        object_label="my-certificate",
        type=ObjectType.CERT,
        id=bytes.fromhex("69953e5cf4bdec91"),
        serial="",
        pin_source="file:/etc/token_pin",
    ),
    "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11": Pkcs11Uri(
        object_label="my-sign-key", type=ObjectType.PRIVATE, module_name="mypkcs11"
    ),
    "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1": Pkcs11Uri(
        object_label="my-sign-key", type=ObjectType.PRIVATE, module_path="/mnt/libmypkcs11.so.1"
    ),
    "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc."
    "?pin-value=the-pin": Pkcs11Uri(
        token="Software PKCS#11 softtoken", manufacturer="Snake Oil, Inc.", pin_value="the-pin"
    ),
    "pkcs11:slot-description=Sun%20Metaslot": Pkcs11Uri(slot_description="Sun Metaslot"),
    "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;"
    "library-version=1.23": Pkcs11Uri(
        library_manufacturer="Snake Oil, Inc.",
        library_description="Soft Token Library",
        library_version="1.23",
    ),
    "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;"
    "id=%01%02%03%Ba%dd%Ca%fe%04%05%06": Pkcs11Uri(
        token="My token% created by Joe",
        library_version="3",
        id=bytes.fromhex("010203baddcafe040506"),
    ),
    "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert": (
        Pkcs11Uri(
            token="A name with a substring %;", object_label="my-certificate", type=ObjectType.CERT
        )
    ),
    "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;"
    "object=my-certificate;type=cert": Pkcs11Uri(
        token="Name with a small A with acute: \u00e1",
        object_label="my-certificate",
        type=ObjectType.CERT,
    ),
}

# The RFC's last example names vendor attributes without an "x-" prefix. RFC 7512 allows
# that; we do not, so that a typo such as "tokn" fails instead of matching every token.
RFC_VENDOR_EXAMPLE = (
    "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a"
    "?pin-source=file:/etc/token_pin&vendor-bbb=value-b"
)


@pytest.mark.parametrize(("text", "expected"), RFC_EXAMPLES.items())
def test_rfc_examples_parse(text: str, expected: Pkcs11Uri) -> None:
    assert parse_uri(text) == expected
    assert Pkcs11Uri.parse(text) == expected


@pytest.mark.parametrize("uri", RFC_EXAMPLES.values())
def test_rfc_examples_round_trip(uri: Pkcs11Uri) -> None:
    assert parse_uri(uri.to_string(include_pin=True)) == uri


def test_rfc_vendor_example_without_x_prefix_is_refused() -> None:
    with pytest.raises(UriError, match=r"unknown attribute 'vendor-aaa' in the path"):
        parse_uri(RFC_VENDOR_EXAMPLE)


def test_rfc_vendor_example_with_x_prefix() -> None:
    text = RFC_VENDOR_EXAMPLE.replace("vendor-", "x-vendor-")
    uri = parse_uri(text)
    assert uri.vendor_attrs == (("x-vendor-aaa", "value-a"),)
    assert uri.vendor_query_attrs == (("x-vendor-bbb", "value-b"),)
    assert str(uri) == text


def test_percent_encoded_id_is_bytes() -> None:
    uri = parse_uri("pkcs11:token=factory;id=%01%02")
    assert uri.id == b"\x01\x02"
    assert str(uri) == "pkcs11:token=factory;id=%01%02"


def test_id_is_always_fully_encoded() -> None:
    assert str(Pkcs11Uri(id=b"AB~")) == "pkcs11:id=%41%42%7E"
    assert parse_uri("pkcs11:id=AB").id == b"AB"


def test_scheme_is_case_insensitive() -> None:
    assert parse_uri("PKCS11:token=t") == parse_uri("Pkcs11:token=t") == Pkcs11Uri(token="t")


def test_slot_id_is_an_int() -> None:
    assert parse_uri("pkcs11:slot-id=1234567").slot_id == 1234567


def test_type_accepts_a_plain_string() -> None:
    uri = Pkcs11Uri(object_label="k").with_(type="private")
    assert uri.type is ObjectType.PRIVATE


def test_smallstep_dialect() -> None:
    smallstep = "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=smallstep;id=%10%00"
    canonical = "pkcs11:token=smallstep;id=%10%00?module-path=/usr/lib/softhsm/libsofthsm2.so"
    assert parse_uri(smallstep) == parse_uri(canonical)
    assert str(parse_uri(smallstep)) == canonical


def test_smallstep_dialect_pin_source_in_path() -> None:
    uri = parse_uri("pkcs11:module-path=/m.so;pin-source=file:/run/pin;token=t?pin-value=1234")
    assert uri == parse_uri(
        "pkcs11:token=t?module-path=/m.so&pin-source=file:/run/pin&pin-value=1234"
    )


def test_libp11_dialect_pin_value_in_path() -> None:
    libp11 = f"pkcs11:token=factory;object=device-key;type=private;pin-value={PIN}"
    canonical = f"pkcs11:token=factory;object=device-key;type=private?pin-value={PIN}"
    assert parse_uri(libp11) == parse_uri(canonical)
    assert parse_uri(libp11).pin_value == PIN


def test_canonical_order() -> None:
    text = (
        "pkcs11:id=%01;type=private;object=o;model=m;serial=s;manufacturer=mf;token=t;"
        "slot-id=7;slot-description=sd;slot-manufacturer=sm;library-version=2.1;"
        "library-description=ld;library-manufacturer=lm"
        "?pin-value=p&pin-source=file:/p&module-path=/m.so&module-name=mod"
    )
    assert parse_uri(text).to_string(include_pin=True) == (
        "pkcs11:library-manufacturer=lm;library-description=ld;library-version=2.1;"
        "slot-manufacturer=sm;slot-description=sd;slot-id=7;token=t;manufacturer=mf;serial=s;"
        "model=m;object=o;type=private;id=%01"
        "?module-name=mod&module-path=/m.so&pin-source=file:/p&pin-value=p"
    )


def test_format_encodes_only_what_rfc_7512_reserves() -> None:
    uri = Pkcs11Uri(token="a b;c&d/e?f", pin_source="a b;c&d/e?f|g")
    assert str(uri) == "pkcs11:token=a%20b%3Bc&d%2Fe%3Ff?pin-source=a%20b%3Bc%26d/e?f|g"
    assert format_uri(uri) == str(uri)


def test_lower_case_escapes_are_accepted_and_printed_upper_case() -> None:
    assert str(parse_uri("pkcs11:token=%c3%a1")) == "pkcs11:token=%C3%A1"


def test_empty_value_is_present_not_absent() -> None:
    uri = parse_uri("pkcs11:serial=;token=")
    assert (uri.serial, uri.token, uri.model) == ("", "", None)
    assert str(uri) == "pkcs11:token=;serial="


def test_vendor_attributes_are_sorted() -> None:
    a = parse_uri("pkcs11:x-b=2;x-a=1")
    assert a == parse_uri("pkcs11:x-a=1;x-b=2")
    assert str(a) == "pkcs11:x-a=1;x-b=2"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (Pkcs11Uri(object_label="k"), True),
        (Pkcs11Uri(id=b"\x01", type=ObjectType.PRIVATE), True),
        (Pkcs11Uri(object_label="k", type=ObjectType.PUBLIC), False),
        (Pkcs11Uri(token="t", type=ObjectType.PRIVATE), False),
    ],
)
def test_is_private_key_ref(uri: Pkcs11Uri, expected: bool) -> None:
    assert uri.is_private_key_ref is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token=t", r"must start with 'pkcs11:'"),
        ("pkcs11;token=t", r"must start with 'pkcs11:'"),
        ("", r"must start with 'pkcs11:'"),
        ("pkcs11:tokn=t", r"unknown attribute 'tokn' in the path \(known: .*token.*'x-'\)"),
        ("pkcs11:token=t?pin=1234", r"unknown attribute 'pin' in the query"),
        ("pkcs11:object=o?token=t", r"'token' is a path attribute: put it before the '\?'"),
        ("pkcs11:token=a;token=b", r"duplicate attribute 'token'"),
        ("pkcs11:module-path=/a;token=t?module-path=/b", r"duplicate attribute 'module-path'"),
        ("pkcs11:x-a=1?x-a=2", r"duplicate attribute 'x-a'"),
        ("pkcs11:token=%zz", r"bad percent escape '%zz' in 'token'"),
        ("pkcs11:token=100%", r"bad percent escape '%' in 'token'"),
        ("pkcs11:id=%0", r"bad percent escape '%0' in 'id'"),
        ("pkcs11:token=%FF", r"value of 'token' is not UTF-8"),
        ("pkcs11:type=key", r"type must be one of public, private, cert, secret-key, data"),
        ("pkcs11:type=", r"type must be one of"),
        ("pkcs11:slot-id=abc", r"slot-id must be a decimal integer, got 'abc'"),
        ("pkcs11:slot-id=-1", r"slot-id must be a decimal integer"),
        ("pkcs11:slot-id=", r"slot-id must be a decimal integer"),
        ("pkcs11:library-version=1.2.3", r"library-version must be digits"),
        ("pkcs11:=foo", r"path attribute 1 has an empty name"),
        ("pkcs11:token=t?=foo", r"query attribute 1 has an empty name"),
        ("pkcs11:token=t;object", r"path attribute 2 has no '='"),
        ("pkcs11:token=t;;object=o", r"path attribute 2 has no '='"),
        ("pkcs11:x-=1", r"vendor attribute 'x-' is not"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(UriError, match=message) as caught:
        parse_uri(text)
    assert str(caught.value).startswith("malformed PKCS#11 URI: ")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, HsmError)


def test_constructor_checks_like_the_parser() -> None:
    with pytest.raises(UriError, match="slot-id must not be negative"):
        Pkcs11Uri(slot_id=-1)
    with pytest.raises(UriError, match="type must be one of"):
        Pkcs11Uri().with_(type="key")
    with pytest.raises(UriError, match="vendor attribute 'vendor-a' is not"):
        Pkcs11Uri(vendor_attrs=(("vendor-a", "1"),))
    with pytest.raises(UriError, match="appears twice"):
        Pkcs11Uri(vendor_attrs=(("x-a", "1"),), vendor_query_attrs=(("x-a", "2"),))


# --- the PIN never shows -------------------------------------------------------------------


def test_pin_value_is_left_out_of_str_and_repr() -> None:
    uri = parse_uri(f"pkcs11:token=factory;object=k?pin-value={PIN}")
    assert uri.pin_value == PIN
    for shown in (str(uri), repr(uri), format_uri(uri), f"{uri}", f"{uri!r}"):
        assert PIN not in shown
        assert "pin-value" not in shown.replace("pin_value=<hidden>", "")
    assert str(uri) == "pkcs11:token=factory;object=k"
    assert repr(uri) == "Pkcs11Uri('pkcs11:token=factory;object=k', pin_value=<hidden>)"
    assert uri.to_string(include_pin=True).endswith(f"?pin-value={PIN}")


@pytest.mark.parametrize(
    "text",
    [
        f"pkcs11:token=t?pin-value={PIN}%zz",
        f"pkcs11:token=t?pin-value=%zz{PIN}",
        f"pkcs11:token=t?pin-value={PIN}%",
        f"pkcs11:token=t?pin-value={PIN}%FF",
        f"pkcs11:token=t?pin-value={PIN}&pin-value={PIN}",
        f"pkcs11:token=t;pin-value={PIN}?pin-value={PIN}",
        f"pkcs11:token=t?{PIN}",
        f"pkcs11:token=t;{PIN}",
        f"pkcs11:token=t?pin-value={PIN}&tokn=x",
        f"pkcs11:tokn=x;pin-value={PIN}",
        f"pkcs11/token=t?pin-value={PIN}",
    ],
)
def test_pin_value_never_in_error_messages(text: str) -> None:
    with pytest.raises(UriError) as caught:
        parse_uri(text)
    assert PIN not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or PIN not in str(caught.value.__context__)


# --- properties ----------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=20)
_maybe_text = st.none() | _text
_vendor = st.lists(
    st.tuples(st.from_regex(r"\Ax-[A-Za-z0-9_-]{1,8}\Z"), _text),
    max_size=4,
    unique_by=lambda pair: pair[0],
)

uris = st.builds(
    lambda vendor, split, **fields: Pkcs11Uri(
        **fields, vendor_attrs=tuple(vendor[:split]), vendor_query_attrs=tuple(vendor[split:])
    ),
    vendor=_vendor,
    split=st.integers(min_value=0, max_value=4),
    token=_maybe_text,
    manufacturer=_maybe_text,
    serial=_maybe_text,
    model=_maybe_text,
    object_label=_maybe_text,
    type=st.none() | st.sampled_from(ObjectType),
    id=st.none() | st.binary(max_size=20),
    slot_id=st.none() | st.integers(min_value=0, max_value=2**64),
    slot_description=_maybe_text,
    slot_manufacturer=_maybe_text,
    library_manufacturer=_maybe_text,
    library_description=_maybe_text,
    library_version=st.none() | st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3})?\Z"),
    module_path=_maybe_text,
    module_name=_maybe_text,
    pin_source=_maybe_text,
    pin_value=_maybe_text,
)

# What RFC 7512 lets stand unencoded, plus the delimiters and %XX escapes.
_RFC_CHARS = re.compile(r"pkcs11:[A-Za-z0-9\-._~:\[\]@!$'()*+,=&;/?|%]*")


@given(uris)
def test_round_trip(uri: Pkcs11Uri) -> None:
    assert parse_uri(uri.to_string(include_pin=True)) == uri


@given(uris)
def test_without_pin_round_trips_to_the_uri_minus_its_pin(uri: Pkcs11Uri) -> None:
    assert parse_uri(str(uri)) == uri.with_(pin_value=None)
    assert "pin-value" not in str(uri)
    assert "pin-value" not in repr(uri)


@given(uris)
def test_output_is_canonical_and_only_rfc_characters(uri: Pkcs11Uri) -> None:
    text = uri.to_string(include_pin=True)
    assert _RFC_CHARS.fullmatch(text)
    assert parse_uri(text).to_string(include_pin=True) == text


@given(st.text(max_size=60))
def test_parse_either_succeeds_or_raises_uri_error(text: str) -> None:
    try:
        parse_uri("pkcs11:" + text)
    except UriError as err:
        assert "\n" not in str(err)
