"""Token-held private keys that cryptography's builders can sign with.

Each class subclasses cryptography's own private-key ABC, so ``CertificateBuilder.sign``,
``CertificateSigningRequestBuilder.sign`` and ``SSHCertificateBuilder.sign`` accept it and
call :meth:`sign`, which runs on the token. Every export method raises
:class:`~hsm.errors.NotExtractable`. ``sign()`` parameter names match cryptography's.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pkcs11.exceptions as px
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.hazmat.primitives.asymmetric import padding as pad
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.utils import Buffer
from pkcs11 import MGF, Mechanism

from hsm.errors import MechanismUnsupported, NotExtractable, StaleHandle, translate
from hsm.module import TOKEN_LOCK
from hsm.objects import (
    PublicKey,
    TokenKeyHandle,
    find_public,
    public_from_objects,
    retry_stale,
)
from hsm.session import session_for

# DER DigestInfo prefixes, RFC 8017 section 9.2 note 1: hashing on the host and sending
# DigestInfo || H with CKM_RSA_PKCS works for every hash and for Prehashed input.
_DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_HASH = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}


def _digest(data: bytes, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, utils.Prehashed):
        return bytes(data), algorithm._algorithm
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise MechanismUnsupported(f"unsupported hash for a token key: {algorithm!r}")
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


class _TokenKey:
    """What every token key shares: where it lives and how to refuse export."""

    def __init__(self, handle: TokenKeyHandle, public: Any) -> None:
        self._handle = handle
        self._public = public

    @property
    def handle(self) -> TokenKeyHandle:
        return self._handle

    @property
    def reference(self) -> str:
        """The canonical ``pkcs11:`` URI for this key (never with a PIN)."""
        return self._handle.reference()

    def _run(self, what: str, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
        def once() -> bytes:
            # Find the object under the same lock as the call: a module refresh in another
            # thread in between would leave a stale object handle.
            obj: Any = self._handle.private_object()
            # python-pkcs11 gives the object no sign()/decrypt() when it read CKA_SIGN /
            # CKA_DECRYPT as false: a key made by another tool for another use, or a read
            # racing another process's rewrite of the token file (as with 0x68, hsm.errors),
            # so the key is found again before this is final
            operation = getattr(obj, "decrypt" if what == "decrypt" else "sign", None)
            if operation is None:
                raise StaleHandle(
                    f"{what} with token key {self._handle.label!r}: the key may not be used "
                    f"for this (its CKA_{'DECRYPT' if what == 'decrypt' else 'SIGN'} is false)"
                )
            try:
                out = operation(data, mechanism=mechanism, mechanism_param=param)
            except px.PKCS11Error as exc:
                raise translate(exc, f"{what} with token key {self._handle.label!r}") from exc
            return bytes(out)

        with TOKEN_LOCK:
            return retry_stale(once, forget=self._handle.forget)

    def _refuse(self, *_: object, **__: object) -> NoReturn:
        raise NotExtractable(
            f"key {self._handle.label!r} is on token {self._handle.token_label!r} and is not "
            "extractable; use its pkcs11: URI instead of exporting it"
        )

    private_bytes = _refuse
    private_numbers = _refuse
    private_bytes_raw = _refuse

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Any:
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.reference}>"


class TokenRSAPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA private key on a token: PKCS#1 v1.5 and PSS signatures, PKCS#1 v1.5 decrypt."""

    _public: rsa.RSAPublicKey

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(
        self,
        data: Buffer,
        padding: AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        if isinstance(algorithm, utils.NoDigestInfo):
            return self._run("signing", bytes(data), Mechanism.RSA_PKCS)
        digest, hash_alg = _digest(bytes(data), algorithm)
        if hash_alg.name not in _DIGEST_INFO:
            raise MechanismUnsupported(f"{hash_alg.name} is not supported for token RSA keys")
        if isinstance(padding, pad.PSS):
            mech, _ = _PSS_HASH[hash_alg.name]
            mgf = _pss_mgf(padding)
            salt = _pss_salt_length(padding, self.key_size, hash_alg)
            return self._run("signing", digest, Mechanism.RSA_PKCS_PSS, (mech, mgf, salt))
        if isinstance(padding, pad.PKCS1v15):
            return self._run("signing", _DIGEST_INFO[hash_alg.name] + digest, Mechanism.RSA_PKCS)
        raise MechanismUnsupported(f"unsupported RSA padding {padding.name}")

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if not isinstance(padding, pad.PKCS1v15):
            raise MechanismUnsupported("token RSA keys decrypt with PKCS#1 v1.5 padding only")
        return self._run("decrypt", ciphertext, Mechanism.RSA_PKCS)


def _pss_mgf(pss: pad.PSS) -> MGF:
    # The MGF1 hash is the padding's own, which may differ from the message hash (the
    # AlgorithmIdentifier cryptography writes into a certificate or CSR names both).
    mgf_hash: Any = getattr(pss.mgf, "_algorithm", None)
    if not isinstance(pss.mgf, pad.MGF1) or mgf_hash is None or mgf_hash.name not in _PSS_HASH:
        raise MechanismUnsupported("token RSA-PSS keys need MGF1 with SHA-1 or SHA-2")
    return _PSS_HASH[mgf_hash.name][1]


def _pss_salt_length(pss: pad.PSS, key_size: int, hash_alg: hashes.HashAlgorithm) -> int:
    salt: Any = pss._salt_length
    if isinstance(salt, int):
        return salt
    if salt is pad.PSS.DIGEST_LENGTH:
        return hash_alg.digest_size
    if salt is pad.PSS.MAX_LENGTH:
        em_len = (key_size - 1 + 7) // 8
        return em_len - hash_alg.digest_size - 2
    raise MechanismUnsupported("PSS salt length AUTO is only valid when verifying")


class TokenECPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An EC private key on a token: ECDSA, hashed on the host, signature DER-encoded."""

    _public: ec.EllipticCurvePublicKey

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise MechanismUnsupported("token EC keys sign with ECDSA only")
        digest, _ = _digest(bytes(data), signature_algorithm.algorithm)
        # SoftHSM has no CKM_ECDSA_SHA256: hash here, sign the digest, get raw r || s.
        raw = self._run("signing", digest, Mechanism.ECDSA)
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return utils.encode_dss_signature(r, s)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise MechanismUnsupported("ECDH with token keys is not supported by devid")


class TokenEd25519PrivateKey(_TokenKey, ed25519.Ed25519PrivateKey):
    """An Ed25519 private key on a token (CKM_EDDSA). OpenSSH and awscrt cannot use these."""

    _public: ed25519.Ed25519PublicKey

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def sign(self, data: Buffer) -> bytes:
        return self._run("signing", bytes(data), Mechanism.EDDSA)


TokenPrivateKey = TokenRSAPrivateKey | TokenECPrivateKey | TokenEd25519PrivateKey


def token_key(handle: TokenKeyHandle) -> TokenPrivateKey:
    """Wrap the key *handle* names in the class matching its type."""

    def read_public() -> PublicKey:
        obj = handle.private_object()
        return public_from_objects(obj, find_public(session_for(handle.uri), handle.key_id))

    with TOKEN_LOCK:
        public = retry_stale(read_public, forget=handle.forget)
    if isinstance(public, rsa.RSAPublicKey):
        return TokenRSAPrivateKey(handle, public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return TokenECPrivateKey(handle, public)
    return TokenEd25519PrivateKey(handle, public)
