"""Certificate objects on a token, stored next to their key (same ``CKA_ID``).

Tools that pair keys with certificates by ``CKA_ID`` (OpenSSL's pkcs11 engine, p11-kit,
``pkcs11-tool``) then find the device certificate beside the device key.
"""

from __future__ import annotations

from typing import Any

import pkcs11.exceptions as px
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, CertificateType, ObjectClass

from hsm.errors import translate
from hsm.keys import TokenPrivateKey
from hsm.module import TOKEN_LOCK
from hsm.session import session_for


def _template(cert: x509.Certificate, key_id: bytes, label: str) -> dict[Attribute, Any]:
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.SUBJECT: cert.subject.public_bytes(),
        Attribute.ISSUER: cert.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: core.Integer(cert.serial_number).dump(),
        Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
    }


def store_certificate(key: TokenPrivateKey, cert: x509.Certificate, *, replace: bool = True) -> int:
    """Write *cert* to the token holding *key*, with the key's ``CKA_ID`` and label.

    With *replace* (the default, as rotation needs), certificate objects already carrying
    that ``CKA_ID`` are destroyed first, after the new one is written. Returns how many old
    certificate objects were replaced.
    """
    handle = key.handle
    session = session_for(handle.uri)
    with TOKEN_LOCK:
        try:
            old = list(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: handle.key_id}
                )
            )
            session.create_object(_template(cert, handle.key_id, handle.label))
            if replace:
                for obj in old:
                    obj.destroy()
        except px.PKCS11Error as exc:
            raise translate(exc, f"storing the certificate for {handle.label!r}") from exc
    return len(old) if replace else 0


def load_certificates(key: TokenPrivateKey) -> list[x509.Certificate]:
    """The certificates on the token that share *key*'s ``CKA_ID``."""
    handle = key.handle
    session = session_for(handle.uri)
    with TOKEN_LOCK:
        try:
            found = [
                bytes(obj[Attribute.VALUE])
                for obj in session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: handle.key_id}
                )
            ]
        except px.PKCS11Error as exc:
            raise translate(exc, f"reading certificates for {handle.label!r}") from exc
    return [x509.load_der_x509_certificate(der) for der in found]
