"""Generating key pairs inside a token: the private half never leaves it.

The private key is created with ``TOKEN, PRIVATE, SENSITIVE=true, EXTRACTABLE=false``; the
token then reports ``ALWAYS_SENSITIVE``, ``NEVER_EXTRACTABLE`` and ``LOCAL``, which is what a
verifier checks. The public key is ``PRIVATE=false`` so tools that do not log in
(``ssh-keygen -D``) can list it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pkcs11
import pkcs11.exceptions as px
from asn1crypto import core
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from hsm.errors import KeyExists, translate
from hsm.keys import TokenPrivateKey, token_key
from hsm.module import TOKEN_LOCK
from hsm.objects import TokenKeyHandle, retry_stale, search_template
from hsm.session import find_token, session_for
from hsm.uri import Pkcs11Uri

_CURVE_OIDS = {"p256": "1.2.840.10045.3.1.7", "p384": "1.3.132.0.34", "p521": "1.3.132.0.35"}
_ED25519_PARAMS = core.ObjectIdentifier("1.3.101.112").dump()


@dataclass(frozen=True)
class TokenKeySpec:
    """What to generate: ``algorithm`` is rsa, ec or ed25519; ``size`` bits or a curve."""

    algorithm: str
    size: int | str

    def __post_init__(self) -> None:
        ok = (
            (self.algorithm == "rsa" and self.size in (2048, 3072, 4096))
            or (self.algorithm == "ec" and self.size in _CURVE_OIDS)
            or (self.algorithm == "ed25519" and self.size == "ed25519")
        )
        if not ok:
            raise ValueError(f"unsupported token key spec {self.algorithm}/{self.size}")


def _templates(label: str, key_id: bytes, *, decrypt: bool) -> tuple[dict[Any, Any], ...]:
    common = {Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id}
    private = {
        **common,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: decrypt,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    public = {
        **common,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: decrypt,
        Attribute.WRAP: False,
    }
    return public, private


def _has_private_key(session: pkcs11.Session, key_id: bytes) -> bool:
    try:
        wanted = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id}
        return any(True for _ in session.get_objects(wanted))
    except px.PKCS11Error as exc:
        raise translate(exc, "looking for the new key") from exc


def _generate(session: pkcs11.Session, spec: TokenKeySpec, pub: Any, priv: Any) -> None:
    caps = MechanismFlag.SIGN | MechanismFlag.VERIFY
    if spec.algorithm == "rsa":
        session.generate_keypair(
            KeyType.RSA,
            int(spec.size),
            store=True,
            capabilities=caps,
            public_template=pub,
            private_template=priv,
        )
        return
    if spec.algorithm == "ec":
        oid = core.ObjectIdentifier(_CURVE_OIDS[str(spec.size)]).dump()
        key_type, mechanism = KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
    else:
        # Ed25519 wants the DER OID 1.3.101.112 in CKA_EC_PARAMS; a curve name fails.
        oid, key_type, mechanism = (
            _ED25519_PARAMS,
            KeyType.EC_EDWARDS,
            (Mechanism.EC_EDWARDS_KEY_PAIR_GEN),
        )
    params = session.create_domain_parameters(key_type, {Attribute.EC_PARAMS: oid}, local=True)
    params.generate_keypair(
        store=True,
        capabilities=caps,
        mechanism=mechanism,
        public_template=pub,
        private_template=priv,
    )


def delete_objects(session: pkcs11.Session, uri: Pkcs11Uri) -> int:
    """Destroy the private key, public key and certificate objects *uri* names."""
    count = 0
    with TOKEN_LOCK:
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
            try:
                for obj in list(session.get_objects(search_template(uri, cls))):
                    obj.destroy()
                    count += 1
            except px.PKCS11Error as exc:
                raise translate(exc, "deleting objects") from exc
    return count


def generate_keypair(
    uri: Pkcs11Uri,
    spec: TokenKeySpec,
    *,
    label: str,
    replace: bool = False,
    decrypt: bool = False,
    drop_lone_public: bool = False,
) -> TokenPrivateKey:
    """Generate a non-extractable key pair labelled *label* on the token *uri* names.

    A label already on the token is refused (:class:`~hsm.errors.KeyExists`) unless
    *replace* is true, in which case the old objects (by their ``CKA_ID``) are destroyed
    once the new pair exists, so a failed generation keeps the old key. *decrypt* also
    allows RSA PKCS#1 v1.5 decryption (EC2 Windows passwords). *drop_lone_public* removes,
    once the new pair exists, public keys with the label but no private key: what a
    generation killed half-way leaves (SoftHSM writes the public key first); for labels
    the caller owns, such as provisioning's ``device-<id>``.
    """
    with TOKEN_LOCK:  # atomic: a module refresh in between would stale the session
        return _generate_keypair(
            uri, spec, label=label, replace=replace, decrypt=decrypt, lone=drop_lone_public
        )


def _generate_keypair(
    uri: Pkcs11Uri, spec: TokenKeySpec, *, label: str, replace: bool, decrypt: bool, lone: bool
) -> TokenPrivateKey:
    # Finding the token may re-initialise the module (another process rewrote the token
    # file), which ends every session: so it comes first, and each step below asks for its
    # session itself and is tried again if the session was lost all the same.
    token = find_token(uri)
    by_label = uri.with_(object_label=label, id=None, type=None)

    def search() -> list[tuple[Any, bytes]]:
        session = session_for(uri)
        with TOKEN_LOCK:
            try:
                return [
                    (obj.object_class, bytes(obj[Attribute.ID] or b""))
                    for obj in session.get_objects({Attribute.LABEL: label})  # all classes
                ]
            except px.PKCS11Error as exc:
                raise translate(exc, f"looking for objects labelled {label!r}") from exc

    labelled = retry_stale(search)
    old_ids = {key_id for cls, key_id in labelled if cls == ObjectClass.PRIVATE_KEY}
    if old_ids and not replace:
        raise KeyExists(
            f"a key labelled {label!r} is already on token {token.label!r}; "
            "choose another label or pass --force to replace it"
        )
    if lone and not old_ids:
        old_ids = {key_id for cls, key_id in labelled if cls == ObjectClass.PUBLIC_KEY}
    key_id = os.urandom(16)
    pub, priv = _templates(label, key_id, decrypt=decrypt)
    tried: list[bool] = []

    def generate() -> None:
        session = session_for(uri)
        with TOKEN_LOCK:
            if tried and _has_private_key(session, key_id):
                return  # the session was lost after the token made the pair: it is there
            tried.append(True)
            try:
                _generate(session, spec, pub, priv)
            except px.PKCS11Error as exc:
                raise translate(exc, f"generating {spec.algorithm} key {label!r}") from exc

    retry_stale(generate)
    for old_id in old_ids:  # only now: a failed generation must not lose the old key
        # Label and old CKA_ID: never the new pair, nor another key sharing a reused id.
        delete_objects(session_for(uri), by_label.with_(id=old_id))
    handle = TokenKeyHandle(
        uri=uri.with_(type=None), key_id=key_id, label=label, token_label=token.label
    )
    return token_key(handle)
