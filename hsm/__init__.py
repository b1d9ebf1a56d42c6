"""devid's PKCS#11 backend: RFC 7512 URIs, token sessions and token-held keys.

Token keys are cryptography private keys (:mod:`hsm.keys`) whose ``sign()`` runs on the
token and whose export methods raise :class:`~hsm.errors.NotExtractable`.
"""

from __future__ import annotations

from hsm.admin import (
    KeyInfo,
    TokenInfo,
    delete_key,
    init_softhsm_token,
    list_keys,
    list_tokens,
    load_key,
    softhsm_config,
)
from hsm.errors import HsmError, NotExtractable, UriError
from hsm.keygen import TokenKeySpec, generate_keypair
from hsm.keys import (
    TokenECPrivateKey,
    TokenEd25519PrivateKey,
    TokenPrivateKey,
    TokenRSAPrivateKey,
)
from hsm.uri import Pkcs11Uri, parse_uri

__all__ = [
    "HsmError",
    "KeyInfo",
    "NotExtractable",
    "Pkcs11Uri",
    "TokenECPrivateKey",
    "TokenEd25519PrivateKey",
    "TokenInfo",
    "TokenKeySpec",
    "TokenPrivateKey",
    "TokenRSAPrivateKey",
    "UriError",
    "delete_key",
    "generate_keypair",
    "init_softhsm_token",
    "list_keys",
    "list_tokens",
    "load_key",
    "parse_uri",
    "softhsm_config",
]
