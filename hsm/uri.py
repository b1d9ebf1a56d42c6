"""PKCS#11 URIs (RFC 7512): the names of tokens and of the keys on them.

A URI such as ``pkcs11:token=factory;object=device-key;type=private`` names a key in every
devid option that takes a key reference. The grammar is RFC 7512 section 2.3
(https://www.rfc-editor.org/rfc/rfc7512#section-2.3): path attributes separated by ``;``,
then an optional ``?`` and query attributes separated by ``&``, every value percent-encoded.

Parsing also accepts two dialects seen in the wild and reads them into the same value as the
canonical form: smallstep puts ``module-path`` (and sometimes ``pin-source``) in the path, and
libp11 accepts ``pin-value`` there. Printing always emits canonical RFC 7512.

A ``pin-value`` is a secret: ``str()``, ``repr()`` and every error message leave it out; only
``to_string(include_pin=True)`` writes it.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hsm.errors import UriError

__all__ = ["ObjectType", "Pkcs11Uri", "UriError", "format_uri", "parse_uri"]

SCHEME = "pkcs11:"


class ObjectType(StrEnum):
    """The ``type`` attribute: which PKCS#11 object class (``CKO_*``) is meant."""

    PUBLIC = "public"
    PRIVATE = "private"
    CERT = "cert"
    SECRET_KEY = "secret-key"
    DATA = "data"


# (name in the URI, field name), in the order the canonical form prints them.
_PATH_ATTRS = (
    ("library-manufacturer", "library_manufacturer"),
    ("library-description", "library_description"),
    ("library-version", "library_version"),
    ("slot-manufacturer", "slot_manufacturer"),
    ("slot-description", "slot_description"),
    ("slot-id", "slot_id"),
    ("token", "token"),
    ("manufacturer", "manufacturer"),
    ("serial", "serial"),
    ("model", "model"),
    ("object", "object_label"),
    ("type", "type"),
    ("id", "id"),
)
_QUERY_ATTRS = (
    ("module-name", "module_name"),
    ("module-path", "module_path"),
    ("pin-source", "pin_source"),
    ("pin-value", "pin_value"),
)
_FIELD = dict(_PATH_ATTRS + _QUERY_ATTRS)
_QUERY_NAMES = frozenset(name for name, _ in _QUERY_ATTRS)
_KNOWN = ", ".join(name for name, _ in _PATH_ATTRS + _QUERY_ATTRS)

# pk11-pchar and pk11-qchar: what may stand unencoded in a path or a query value.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PATH_SAFE = _UNRESERVED | frozenset(":[]@!$'()*+,=&")
_QUERY_SAFE = _UNRESERVED | frozenset(":[]@!$'()*+,=/?|")

_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_DIGITS = re.compile(r"[0-9]+")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)?")
_VENDOR_NAME = re.compile(r"x-[A-Za-z0-9_-]+")

Vendor = tuple[tuple[str, str], ...]


def _malformed(detail: str) -> UriError:
    return UriError(f"malformed PKCS#11 URI: {detail}")


@dataclass(frozen=True, repr=False)
class Pkcs11Uri:
    """One parsed PKCS#11 URI; ``None`` means the attribute is absent (``""`` is present).

    Vendor attributes are ``(name, value)`` pairs, kept sorted so that equal URIs compare
    equal whatever order they were written in.
    """

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    object_label: str | None = None
    type: ObjectType | None = None
    id: bytes | None = None
    slot_id: int | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: str | None = None
    module_path: str | None = None
    module_name: str | None = None
    pin_source: str | None = None
    pin_value: str | None = None
    vendor_attrs: Vendor = ()
    vendor_query_attrs: Vendor = ()

    def __post_init__(self) -> None:
        if self.type is not None:
            object.__setattr__(self, "type", _object_type(self.type))
        if self.slot_id is not None and self.slot_id < 0:
            raise _malformed(f"slot-id must not be negative, got {self.slot_id}")
        if self.library_version is not None and not _VERSION.fullmatch(self.library_version):
            raise _malformed(
                f"library-version must be digits with one optional '.', "
                f"got {self.library_version!r}"
            )
        names = [name for name, _ in self.vendor_attrs + self.vendor_query_attrs]
        for name in names:
            if not _VENDOR_NAME.fullmatch(name):
                raise _malformed(f"vendor attribute {name!r} is not 'x-' + [A-Za-z0-9_-]+")
        if len(set(names)) != len(names):
            raise _malformed("a vendor attribute appears twice")
        object.__setattr__(self, "vendor_attrs", tuple(sorted(self.vendor_attrs)))
        object.__setattr__(self, "vendor_query_attrs", tuple(sorted(self.vendor_query_attrs)))

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """Same as `parse_uri`."""
        return parse_uri(text)

    def to_string(self, *, include_pin: bool = False) -> str:
        """Canonical RFC 7512 text; ``pin-value`` only when asked for by name."""
        path = [f"{name}={_encode(self, name, _PATH_SAFE)}" for name in self._present(_PATH_ATTRS)]
        path += [f"{name}={_quote(value, _PATH_SAFE)}" for name, value in self.vendor_attrs]
        query = [
            f"{name}={_encode(self, name, _QUERY_SAFE)}"
            for name in self._present(_QUERY_ATTRS)
            if include_pin or name != "pin-value"
        ]
        query += [f"{name}={_quote(value, _QUERY_SAFE)}" for name, value in self.vendor_query_attrs]
        text = SCHEME + ";".join(path)
        return f"{text}?{'&'.join(query)}" if query else text

    def with_(self, **changes: Any) -> Pkcs11Uri:
        """A copy with some fields changed, e.g. ``uri.with_(pin_value=None)``."""
        return dataclasses.replace(self, **changes)

    @property
    def is_private_key_ref(self) -> bool:
        """Whether this names one private key: an object or id, and no other type.

        A missing ``type`` counts: smallstep's and OpenSSL's key URIs often leave it out, and in
        a ``--key`` option the private key is the only sensible reading.
        """
        named = self.object_label is not None or self.id is not None
        return named and self.type in (None, ObjectType.PRIVATE)

    def _present(self, attrs: tuple[tuple[str, str], ...]) -> list[str]:
        return [name for name, field in attrs if getattr(self, field) is not None]

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        pin = ", pin_value=<hidden>" if self.pin_value is not None else ""
        return f"Pkcs11Uri({self.to_string()!r}{pin})"


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse RFC 7512 text (or the smallstep/libp11 dialects) into a `Pkcs11Uri`.

    Raises `UriError` saying what is wrong and where; the message never holds a PIN.
    Characters RFC 7512 wants percent-encoded (a space, say) are taken as they stand.
    """
    if text[: len(SCHEME)].lower() != SCHEME:
        raise _malformed("it must start with 'pkcs11:'")
    path, _, query = text[len(SCHEME) :].partition("?")
    fields: dict[str, Any] = {}
    vendor: dict[str, list[tuple[str, str]]] = {"path": [], "query": []}
    seen: set[str] = set()
    for where, pairs in (
        ("path", _pairs(path, ";", "path")),
        ("query", _pairs(query, "&", "query")),
    ):
        for name, raw in pairs:
            if name in seen:
                raise _malformed(f"duplicate attribute {name!r} (RFC 7512 allows each once)")
            seen.add(name)
            if name.startswith("x-"):
                vendor[where].append((name, _text(raw, name)))
            elif name in _FIELD and (where == "path" or name in _QUERY_NAMES):
                fields[_FIELD[name]] = _decode(name, raw)
            elif name in _FIELD:
                raise _malformed(f"{name!r} is a path attribute: put it before the '?'")
            else:
                raise _malformed(
                    f"unknown attribute {name!r} in the {where} "
                    f"(known: {_KNOWN}; vendor attributes start with 'x-')"
                )
    return Pkcs11Uri(
        **fields,
        vendor_attrs=tuple(vendor["path"]),
        vendor_query_attrs=tuple(vendor["query"]),
    )


def format_uri(uri: Pkcs11Uri, *, include_pin: bool = False) -> str:
    """Same as `Pkcs11Uri.to_string`."""
    return uri.to_string(include_pin=include_pin)


def _pairs(component: str, sep: str, where: str) -> list[tuple[str, str]]:
    """Split one component into (name, raw value) pairs; values stay percent-encoded."""
    if not component:
        return []
    pairs = []
    for number, item in enumerate(component.split(sep), start=1):
        name, eq, raw = item.partition("=")
        # Neither message quotes the item: without an '=' it may be a PIN typed in the wrong place.
        if not eq:
            raise _malformed(f"{where} attribute {number} has no '=' (expected name=value)")
        if not name:
            raise _malformed(f"{where} attribute {number} has an empty name")
        pairs.append((name, raw))
    return pairs


def _decode(name: str, raw: str) -> Any:
    """The field value for one attribute: bytes for id, int for slot-id, text otherwise."""
    if name == "id":
        return _unquote(raw, name)
    value = _text(raw, name)
    if name == "slot-id":
        if not _DIGITS.fullmatch(value):
            raise _malformed(f"slot-id must be a decimal integer, got {value!r}")
        return int(value)
    if name == "type":
        return _object_type(value)
    return value


def _object_type(value: str) -> ObjectType:
    try:
        return ObjectType(value)
    except ValueError:
        known = ", ".join(ObjectType)
        raise _malformed(f"type must be one of {known}, got {value!r}") from None


def _text(raw: str, name: str) -> str:
    try:
        return _unquote(raw, name).decode("utf-8")
    except UnicodeDecodeError:
        # Not chained: the original exception holds the raw bytes, which may be a PIN.
        raise _malformed(f"the value of {name!r} is not UTF-8 once percent-decoded") from None


def _unquote(raw: str, name: str) -> bytes:
    parts = _PCT.split(raw)  # text, hex, text, hex, ..., text
    for text in parts[::2]:
        if "%" in text:
            bad = "" if name == "pin-value" else f" {text[text.index('%') :][:3]!r}"
            raise _malformed(f"bad percent escape{bad} in {name!r} (expected %XX, X hex)")
    return b"".join(bytes.fromhex(p) if i % 2 else p.encode() for i, p in enumerate(parts))


def _encode(uri: Pkcs11Uri, name: str, safe: frozenset[str]) -> str:
    value = getattr(uri, _FIELD[name])
    if name == "id":
        return _quote(value, frozenset())  # binary: every byte as %XX, like RFC 7512's examples
    if isinstance(value, int):
        return str(value)
    return _quote(str(value), safe)


def _quote(value: str | bytes, safe: frozenset[str]) -> str:
    data = value.encode() if isinstance(value, str) else value
    return "".join(chr(b) if chr(b) in safe else f"%{b:02X}" for b in data)
