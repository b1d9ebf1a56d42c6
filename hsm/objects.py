"""Locating key objects on a token and reading their public halves into cryptography."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
import pkcs11.exceptions as px
from asn1crypto import core
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, KeyType, ObjectClass

from hsm.errors import (
    AmbiguousKey,
    KeyNotFound,
    MechanismUnsupported,
    SessionLost,
    StaleHandle,
    translate,
)
from hsm.module import TOKEN_LOCK, forget_sessions, generation
from hsm.session import session_for
from hsm.uri import Pkcs11Uri

T = TypeVar("T")
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ED25519_OID = "1.3.101.112"
#: curve OID -> cryptography curve; also the set of curves devid generates on tokens.
CURVES: dict[str, ec.EllipticCurve] = {
    "1.2.840.10045.3.1.7": ec.SECP256R1(),
    "1.3.132.0.34": ec.SECP384R1(),
    "1.3.132.0.35": ec.SECP521R1(),
}


def find_objects(session: pkcs11.Session, attrs: dict[Attribute, Any]) -> list[pkcs11.Object]:
    with TOKEN_LOCK:
        try:
            return list(session.get_objects(attrs))
        except px.PKCS11Error as exc:
            raise translate(exc, "searching the token") from exc


def search_template(uri: Pkcs11Uri, object_class: ObjectClass) -> dict[Attribute, Any]:
    attrs: dict[Attribute, Any] = {Attribute.CLASS: object_class}
    if uri.object_label is not None:
        attrs[Attribute.LABEL] = uri.object_label
    if uri.id is not None:
        attrs[Attribute.ID] = uri.id
    return attrs


def find_private(session: pkcs11.Session, uri: Pkcs11Uri) -> pkcs11.PrivateKey:
    """The one private key *uri* names (by ``object=`` label and/or ``id=``)."""
    if uri.object_label is None and uri.id is None:
        raise AmbiguousKey("the key URI names no key; add object=LABEL or id=%XX")
    found = find_objects(session, search_template(uri, ObjectClass.PRIVATE_KEY))
    if not found:
        raise KeyNotFound(f"no private key {_name(uri)} on token {uri.token or '?'}")
    if len(found) > 1:
        raise AmbiguousKey(f"{len(found)} private keys match {_name(uri)}; add id= to the URI")
    key = found[0]
    assert isinstance(key, pkcs11.PrivateKey)
    return key


def find_public(session: pkcs11.Session, key_id: bytes) -> pkcs11.PublicKey | None:
    found = find_objects(session, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id})
    key = found[0] if len(found) == 1 else None
    return key if isinstance(key, pkcs11.PublicKey) else None


def _name(uri: Pkcs11Uri) -> str:
    if uri.object_label is not None:
        return f"object={uri.object_label!r}"
    return f"id={uri.id.hex() if uri.id else ''}"


def read_attribute(obj: pkcs11.Object, attribute: Attribute, *, optional: bool = False) -> Any:
    """*obj*'s *attribute*; with *optional*, None where the object has none or hides it
    (sensitive), instead of an error."""
    with TOKEN_LOCK:
        try:
            return obj[attribute]
        except px.PKCS11Error as exc:
            if optional and isinstance(exc, px.AttributeTypeInvalid | px.AttributeSensitive):
                return None
            raise translate(exc, f"reading {attribute.name}") from exc
        except NotImplementedError:  # python-pkcs11 cannot decode this attribute's type
            if optional:
                return None
            raise


def _ec_point(raw: bytes) -> bytes:
    # CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40 section 2.3.3);
    # some modules return the bare point. Accept both.
    try:
        parsed = core.OctetString.load(raw)
        inner: bytes = parsed.native
        if parsed.contents == inner and len(parsed.dump()) == len(raw):
            return inner
    except ValueError:
        pass
    return raw


def curve_oid(params: bytes) -> str:
    """The curve OID in CKA_EC_PARAMS: an OID, or a curve name (PKCS#11 3.0 for Edwards)."""
    try:
        parsed = core.Asn1Value.load(params)
    except ValueError as exc:
        raise MechanismUnsupported("the key has EC parameters devid cannot read") from exc
    if parsed.tag == 6:
        return str(core.ObjectIdentifier.load(params).dotted)
    if parsed.tag == 19 and core.PrintableString.load(params).native == "edwards25519":
        return ED25519_OID
    raise MechanismUnsupported("the key has EC parameters devid cannot read")


#: short names devid shows for curve OIDs
CURVE_NAMES = {
    "1.2.840.10045.3.1.7": "p256",
    "1.3.132.0.34": "p384",
    "1.3.132.0.35": "p521",
    ED25519_OID: "ed25519",
}


def public_from_objects(priv: pkcs11.PrivateKey, pub: pkcs11.PublicKey | None) -> PublicKey:
    """A cryptography public key built from the token's attributes."""
    key_type = read_attribute(priv, Attribute.KEY_TYPE)
    if key_type == KeyType.RSA:
        source = pub if pub is not None else priv
        n = int.from_bytes(read_attribute(source, Attribute.MODULUS), "big")
        e = int.from_bytes(read_attribute(source, Attribute.PUBLIC_EXPONENT), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if pub is None:
        raise KeyNotFound("the token holds no public key object with this key's CKA_ID")
    point = _ec_point(read_attribute(pub, Attribute.EC_POINT))
    oid = curve_oid(read_attribute(pub, Attribute.EC_PARAMS))
    if key_type == KeyType.EC_EDWARDS and oid == ED25519_OID:
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    if key_type == KeyType.EC and oid in CURVES:
        return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[oid], point)
    raise MechanismUnsupported(f"unsupported key type on token ({key_type!r}, curve {oid})")


_STALE_ATTEMPTS = 3


def retry_stale(call: Callable[[], T], *, forget: Callable[[], None] | None = None) -> T:
    """*call()*, called again (after *forget()*) when it met a :class:`StaleHandle`; after
    a lost session (the module re-initialised), with new sessions."""
    for attempt in range(1, _STALE_ATTEMPTS + 1):
        seen = generation()
        try:
            return call()
        except StaleHandle as exc:
            if attempt == _STALE_ATTEMPTS:
                raise
            if isinstance(exc, SessionLost) and generation() == seen:
                forget_sessions()  # lost without a refresh here: do not reuse the session
            if forget is not None:
                forget()
    raise AssertionError("unreachable")


@dataclass
class TokenKeyHandle:
    """Where a token key lives; re-finds its object after a fork or module refresh."""

    uri: Pkcs11Uri
    key_id: bytes
    label: str
    token_label: str
    _cached: tuple[int, pkcs11.PrivateKey] | None = field(default=None, repr=False)

    def private_object(self) -> pkcs11.PrivateKey:
        gen = generation()
        if self._cached is not None and self._cached[0] == gen:
            return self._cached[1]
        session = session_for(self.uri)
        by_id = self.uri.with_(object_label=None, id=self.key_id)
        obj = find_private(session, by_id)
        self._cached = (gen, obj)
        return obj

    def remember(self, obj: pkcs11.PrivateKey) -> None:
        """Cache *obj*, just found by the caller, so the first use need not search again."""
        self._cached = (generation(), obj)

    def forget(self) -> None:
        """Drop the cached object: the next use finds it on the token again."""
        self._cached = None

    def reference(self) -> str:
        """The canonical URI naming this key (no PIN)."""
        return str(
            self.uri.with_(object_label=self.label, id=self.key_id, type="private", pin_value=None)
        )
