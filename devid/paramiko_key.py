"""Any cryptography RSA private key, a token key included, as a paramiko client key.

paramiko's ``RSAKey(key=...)`` already signs through the key object it is given (PKCS#1
v1.5 with SHA-256/512 for ``rsa-sha2-256``/``rsa-sha2-512``), so a token key signs on the
token. It only reads the public numbers through ``private_numbers()``, which a token key
refuses by design; this subclass reads them from the public key instead. paramiko is an
optional dependency (``pip install paramiko``).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from devid.errors import BadInput, EnvironmentProblem

try:
    import paramiko
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise EnvironmentProblem("paramiko is not installed: pip install paramiko") from exc


class RSAKeyAdapter(paramiko.RSAKey):  # type: ignore[misc]  # paramiko has no type hints
    """A paramiko ``RSAKey`` that signs with *key* and never asks it for private numbers."""

    def __init__(self, key: Any) -> None:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise BadInput(f"paramiko login needs an RSA private key, not {type(key).__name__}")
        super().__init__(key=key)

    @property
    def public_numbers(self) -> rsa.RSAPublicNumbers:
        key: rsa.RSAPrivateKey = self.key
        return key.public_key().public_numbers()


__all__ = ["RSAKeyAdapter"]
