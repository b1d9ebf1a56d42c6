"""Token administration: list tokens and keys, load and delete keys, initialise SoftHSM tokens."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import pkcs11
import pkcs11.exceptions as px
from pkcs11 import Attribute, KeyType, ObjectClass

from hsm.errors import (
    AmbiguousKey,
    HsmError,
    KeyExists,
    KeyNotFound,
    UriError,
    translate,
)
from hsm.inittoken import init_token
from hsm.keygen import delete_objects
from hsm.keys import TokenPrivateKey, token_key
from hsm.module import TOKEN_LOCK, library, refresh, resolve_module_path
from hsm.objects import (
    CURVE_NAMES,
    TokenKeyHandle,
    curve_oid,
    find_objects,
    find_private,
    read_attribute,
    retry_stale,
    search_template,
)
from hsm.session import _initialised, find_token, session_for, token_serial
from hsm.uri import ObjectType, Pkcs11Uri, parse_uri

TOKEN_LABEL_BYTES = 32  # CK_TOKEN_INFO.label is 32 bytes, UTF-8, blank-padded


@dataclass(frozen=True)
class TokenInfo:
    label: str
    serial: str
    manufacturer: str
    model: str
    slot_id: int
    uri: str


@dataclass(frozen=True)
class KeyInfo:
    label: str
    id: str
    object_class: str
    key_type: str
    size: str
    sensitive: bool | None
    always_sensitive: bool | None
    extractable: bool | None
    never_extractable: bool | None
    local: bool | None
    uri: str


def list_tokens(module_path: str | None = None) -> list[TokenInfo]:
    """Every initialised token the module offers."""
    refresh(module_path)
    lib = library(module_path)
    with TOKEN_LOCK:
        try:
            tokens = [t for t in lib.get_tokens() if _initialised(t)]
        except px.PKCS11Error as exc:
            raise translate(exc, "listing tokens") from exc
    infos = []
    for t in tokens:
        uri = Pkcs11Uri(token=t.label, serial=token_serial(t), module_path=module_path)
        infos.append(
            TokenInfo(
                t.label,
                token_serial(t),
                t.manufacturer_id.strip(),
                t.model.strip(),
                t.slot.slot_id,
                str(uri),
            )
        )
    return infos


def load_key(uri: Pkcs11Uri | str) -> TokenPrivateKey:
    """The token private key *uri* names, as a cryptography private key."""
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    with TOKEN_LOCK:  # atomic: a module refresh between the steps would stale the handles
        return retry_stale(lambda: _load_key(parsed))


def _load_key(parsed: Pkcs11Uri) -> TokenPrivateKey:
    session = session_for(parsed)
    obj = find_private(session, parsed)
    key_id = bytes(_get(obj, Attribute.ID) or b"")
    label = str(_get(obj, Attribute.LABEL) or "")
    token = find_token(parsed)
    base = parsed.with_(type=None, object_label=None, id=None)
    handle = TokenKeyHandle(uri=base, key_id=key_id, label=label, token_label=token.label)
    handle.remember(obj)
    return token_key(handle)


def _get(obj: pkcs11.Object, attribute: Attribute) -> Any:
    return read_attribute(obj, attribute, optional=True)


def _size(obj: pkcs11.Object, key_type: Any) -> str:
    if key_type == KeyType.RSA:
        modulus = _get(obj, Attribute.MODULUS)
        return str(len(modulus) * 8) if modulus else str(_get(obj, Attribute.MODULUS_BITS) or "")
    params = _get(obj, Attribute.EC_PARAMS)
    oid = curve_oid(params) if params else ""
    return CURVE_NAMES.get(oid, oid)


def list_keys(uri: Pkcs11Uri | str) -> list[KeyInfo]:
    """Private keys, public keys and certificates on the token (filtered by the URI)."""
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    with TOKEN_LOCK:  # atomic: a module refresh in between would stale the session
        return retry_stale(lambda: _list_keys(parsed))


def _list_keys(parsed: Pkcs11Uri) -> list[KeyInfo]:
    session = session_for(parsed)
    base = parsed.with_(object_label=None, id=None, type=None, pin_value=None, pin_source=None)
    wanted = {
        "private": ObjectClass.PRIVATE_KEY,
        "public": ObjectClass.PUBLIC_KEY,
        "cert": ObjectClass.CERTIFICATE,
    }
    infos: list[KeyInfo] = []
    for type_name, cls in wanted.items():
        if parsed.type is not None and parsed.type != type_name:
            continue
        for obj in find_objects(session, search_template(parsed, cls)):
            infos.append(_info(obj, type_name, base))
    return infos


def _info(obj: pkcs11.Object, type_name: str, base: Pkcs11Uri) -> KeyInfo:
    label = str(_get(obj, Attribute.LABEL) or "")
    key_id = bytes(_get(obj, Attribute.ID) or b"")
    key_type = _get(obj, Attribute.KEY_TYPE) if type_name != "cert" else None
    names: dict[Any, str] = {KeyType.RSA: "rsa", KeyType.EC: "ec", KeyType.EC_EDWARDS: "ed25519"}
    private = type_name == "private"
    return KeyInfo(
        label=label,
        id=key_id.hex(),
        object_class=type_name,
        key_type=names.get(key_type, "x509" if key_type is None else str(key_type)),
        size=_size(obj, key_type) if key_type is not None else "",
        sensitive=_get(obj, Attribute.SENSITIVE) if private else None,
        always_sensitive=_get(obj, Attribute.ALWAYS_SENSITIVE) if private else None,
        extractable=_get(obj, Attribute.EXTRACTABLE) if private else None,
        never_extractable=_get(obj, Attribute.NEVER_EXTRACTABLE) if private else None,
        local=_get(obj, Attribute.LOCAL) if type_name != "cert" else None,
        uri=str(base.with_(object_label=label, id=key_id, type=type_name)),
    )


def delete_key(uri: Pkcs11Uri | str) -> int:
    """Delete the key pair (and certificate) *uri* names; returns the number of objects.

    With ``type=cert`` or ``type=public`` only the objects of that class *uri* names go.
    """
    parsed = parse_uri(uri) if isinstance(uri, str) else uri
    with TOKEN_LOCK:  # atomic: a module refresh in between would stale the session
        return retry_stale(lambda: _delete_key(parsed))


_ONLY = {ObjectType.CERT: ObjectClass.CERTIFICATE, ObjectType.PUBLIC: ObjectClass.PUBLIC_KEY}


def _delete_key(parsed: Pkcs11Uri) -> int:
    if parsed.type not in (None, ObjectType.PRIVATE, *_ONLY):
        raise UriError(f"cannot delete type={parsed.type}; use private, public or cert")
    session = session_for(parsed)
    if parsed.type is not None and parsed.type in _ONLY:
        return _delete_only(session, parsed, _ONLY[parsed.type])
    key = find_private(session, parsed)  # fails clearly on none / ambiguous
    key_id = bytes(_get(key, Attribute.ID) or b"")
    return delete_objects(session, parsed.with_(object_label=None, id=key_id, type=None))


def _delete_only(session: pkcs11.Session, parsed: Pkcs11Uri, cls: ObjectClass) -> int:
    if parsed.object_label is None and parsed.id is None:
        raise AmbiguousKey("the URI names no object; add object=LABEL or id=%XX")
    with TOKEN_LOCK:
        try:
            found = list(session.get_objects(search_template(parsed, cls)))
            for obj in found:
                obj.destroy()
        except px.PKCS11Error as exc:
            raise translate(exc, f"deleting type={parsed.type} objects") from exc
    if not found:
        raise KeyNotFound(f"no type={parsed.type} object matches on token {parsed.token or '?'}")
    return len(found)


def init_softhsm_token(label: str, *, so_pin: str, user_pin: str) -> TokenInfo:
    """Initialise a new token labelled *label* in the first free slot of the module
    (``DEVID_PKCS11_MODULE``, else SoftHSM2) and set its user PIN.

    ``C_InitToken`` and ``C_InitPIN`` are called in this process (:mod:`hsm.inittoken`), so
    the PINs never appear in a command line.
    """
    if len(label.encode("utf-8")) > TOKEN_LABEL_BYTES:
        raise UriError(
            f"the token label {label!r} is too long: PKCS#11 token labels hold at most "
            f"{TOKEN_LABEL_BYTES} bytes (UTF-8)"
        )
    if not label.strip() or label != label.strip():
        # CK_TOKEN_INFO pads labels with blanks, so modules and tools strip them: a label
        # with blanks at either end could never be named again, or would match another's
        raise UriError(f"the token label {label!r} is empty or starts or ends with a blank")
    path = resolve_module_path(None)
    refresh(path)  # see tokens other processes made since this one loaded the module
    if any(t.label == label for t in list_tokens()):
        raise KeyExists(f"a token labelled {label!r} exists already")
    init_token(path, label, so_pin=so_pin.encode("utf-8"), user_pin=user_pin.encode("utf-8"))
    refresh(path)
    for info in list_tokens():
        if info.label == label:
            return info
    raise HsmError(f"token {label!r} was initialised but the module does not list it")


def softhsm_config(directory: str) -> str:
    """Write a SoftHSM2 config keeping tokens under *directory*; returns the config path."""
    tokens = os.path.join(directory, "tokens")
    os.makedirs(tokens, mode=0o700, exist_ok=True)
    conf = os.path.join(directory, "softhsm2.conf")
    if not os.path.exists(conf):
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                "log.level = ERROR\nslots.removable = false\n"
            )
        os.replace(tmp, conf)
    return conf
