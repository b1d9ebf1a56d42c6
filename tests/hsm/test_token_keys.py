"""Token keys honour cryptography's private-key contract, exactly like file keys, and never
let their private half out.

The contract tests run the same assertions over a key in a file and a key on the SoftHSM
token, for every key type: signatures verify with cryptography's own public-key code, and
cryptography's CSR, X.509 certificate and SSH certificate builders sign with the key. The
non-extractable tests ask the token itself (python-pkcs11) and another program
(``pkcs11-tool``) whether the private value can be read.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11.exceptions as px
import pytest
from conftest import TEST_PIN, TOKEN_LABEL, run_tool, softhsm_module, unique
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

import hsm
from devid.keys import KeyType, generate_key
from devid.loading import load_signing_key
from hsm.module import TOKEN_LOCK
from hsm.session import session_for

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
KeySource = Callable[[str, str], Any]

ALL_TYPES = ["rsa-2048", "ec-p256", "ec-p384", "ec-p521", "ed25519"]
EC_TYPES = ["ec-p256", "ec-p384", "ec-p521"]
SOURCES = ["file", "token"]
#: the hash each key type conventionally signs certificates with (None: Ed25519 has its own)
CERT_HASH: dict[str, hashes.HashAlgorithm | None] = {
    "rsa-2048": hashes.SHA256(),
    "rsa-3072": hashes.SHA384(),
    "ec-p256": hashes.SHA256(),
    "ec-p384": hashes.SHA384(),
    "ec-p521": hashes.SHA512(),
    "ed25519": None,
}
MESSAGES = [b"", b"devid", bytes(range(256)) * 64]


@pytest.fixture(scope="module")
def keys(token_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeySource]:
    """``keys(source, key_type)``: one key per source and type, made on first use.

    File keys are written by devid and read back by path; token keys are generated on the
    token and loaded again by their reference, as every devid command loads them.
    """
    folder = tmp_path_factory.mktemp("contract-keys")
    cache: dict[tuple[str, str], PrivateKey] = {}

    def get(source: str, key_type: str) -> PrivateKey:
        if (source, key_type) not in cache:
            if source == "file":
                path = folder / f"{key_type}.pem"
                _, ref = generate_key(KeyType(key_type), out=path)
            else:
                _, ref = generate_key(
                    KeyType(key_type), token=token_uri, label=unique(f"contract-{key_type}")
                )
            cache[source, key_type] = load_signing_key(ref)
        return cache[source, key_type]

    yield get
    for (source, _), key in cache.items():
        if source == "token":
            hsm.delete_key(key.reference)


def _pairs(types: list[str], sources: list[str] = SOURCES) -> list[Any]:
    return [pytest.param((s, t), id=f"{s}-{t}") for t in types for s in sources]


@pytest.fixture(params=_pairs(ALL_TYPES))
def any_key(request: pytest.FixtureRequest, keys: KeySource) -> tuple[str, PrivateKey]:
    source, key_type = request.param
    return key_type, keys(source, key_type)


@pytest.fixture(
    params=[*_pairs(["rsa-2048"]), pytest.param(("token", "rsa-3072"), id="token-rsa-3072")]
)
def rsa_key(request: pytest.FixtureRequest, keys: KeySource) -> rsa.RSAPrivateKey:
    key = keys(*request.param)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(params=_pairs(EC_TYPES))
def ec_key(request: pytest.FixtureRequest, keys: KeySource) -> ec.EllipticCurvePrivateKey:
    key = keys(*request.param)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture(params=_pairs(["ed25519"]))
def ed_key(request: pytest.FixtureRequest, keys: KeySource) -> ed25519.Ed25519PrivateKey:
    key = keys(*request.param)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


@pytest.fixture(params=ALL_TYPES)
def token_key(request: pytest.FixtureRequest, keys: KeySource) -> Any:
    return keys("token", request.param)


# --- the key objects --------------------------------------------------------------------


def test_token_keys_are_cryptography_private_keys(keys: KeySource) -> None:
    expected = {
        "rsa-2048": (rsa.RSAPrivateKey, hsm.TokenRSAPrivateKey),
        "ec-p256": (ec.EllipticCurvePrivateKey, hsm.TokenECPrivateKey),
        "ed25519": (ed25519.Ed25519PrivateKey, hsm.TokenEd25519PrivateKey),
    }
    for key_type, (abc, cls) in expected.items():
        key = keys("token", key_type)
        assert isinstance(key, abc)
        assert isinstance(key, cls)
        assert key.reference.startswith(f"pkcs11:token={TOKEN_LABEL};")
        assert hsm.load_key(key.reference).public_key() == key.public_key()


def test_public_key_matches_the_type(any_key: tuple[str, PrivateKey]) -> None:
    key_type, key = any_key
    public = key.public_key()
    if key_type.startswith("rsa"):
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == int(key_type.split("-")[1])
        assert public.public_numbers().e == 65537
    elif key_type.startswith("ec"):
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.key_size == int(key_type[4:])
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)


# --- signatures -------------------------------------------------------------------------

RSA_HASHES = [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]


def _prehash(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


@pytest.mark.parametrize("algorithm", RSA_HASHES, ids=lambda a: a.name)
def test_rsa_pkcs1v15(rsa_key: rsa.RSAPrivateKey, algorithm: hashes.HashAlgorithm) -> None:
    public = rsa_key.public_key()
    for message in MESSAGES:
        signature = rsa_key.sign(message, padding.PKCS1v15(), algorithm)
        assert len(signature) == rsa_key.key_size // 8
        public.verify(signature, message, padding.PKCS1v15(), algorithm)
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"another message", padding.PKCS1v15(), algorithm)


@pytest.mark.parametrize("algorithm", RSA_HASHES[2:], ids=lambda a: a.name)
def test_rsa_pkcs1v15_prehashed(
    rsa_key: rsa.RSAPrivateKey, algorithm: hashes.HashAlgorithm
) -> None:
    digest = _prehash(algorithm, b"prehashed message")
    signature = rsa_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
    rsa_key.public_key().verify(signature, b"prehashed message", padding.PKCS1v15(), algorithm)


SALTS = {"digest": padding.PSS.DIGEST_LENGTH, "max": padding.PSS.MAX_LENGTH, "20": 20}


@pytest.mark.parametrize("salt", SALTS)
@pytest.mark.parametrize("algorithm", RSA_HASHES[2:], ids=lambda a: a.name)
def test_rsa_pss(rsa_key: rsa.RSAPrivateKey, algorithm: hashes.HashAlgorithm, salt: str) -> None:
    pss = padding.PSS(padding.MGF1(algorithm), SALTS[salt])
    public = rsa_key.public_key()
    message = b"pss message"
    signature = rsa_key.sign(message, pss, algorithm)
    # Verify with the exact salt length the signer was asked for, not AUTO: a token that
    # picked another length would fail here.
    exact = {
        "digest": algorithm.digest_size,
        "max": (rsa_key.key_size + 6) // 8 - algorithm.digest_size - 2,
        "20": 20,
    }[salt]
    public.verify(signature, message, padding.PSS(padding.MGF1(algorithm), exact), algorithm)
    auto = padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
    public.verify(signature, message, auto, algorithm)
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"other", auto, algorithm)
    # PSS is randomised: two signatures of one message differ, and both verify.
    again = rsa_key.sign(message, pss, algorithm)
    assert again != signature
    public.verify(again, message, auto, algorithm)


def test_rsa_pss_mgf1_hash_is_the_paddings_own(rsa_key: rsa.RSAPrivateKey) -> None:
    """PSS with an MGF1 hash other than the message hash (as a CSR's AlgorithmIdentifier
    can name): the signature verifies with exactly those parameters, or the token refuses
    (SoftHSM insists the two hashes match). Never a signature made with other parameters."""
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    try:
        signature = rsa_key.sign(b"mixed", pss, hashes.SHA384())
    except hsm.HsmError as exc:
        assert isinstance(rsa_key, hsm.TokenRSAPrivateKey)
        _one_line(str(exc))
        return
    exact = padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA384().digest_size)
    rsa_key.public_key().verify(signature, b"mixed", exact, hashes.SHA384())


@pytest.mark.parametrize("salt", ["digest", "max"])
def test_rsa_pss_prehashed(rsa_key: rsa.RSAPrivateKey, salt: str) -> None:
    algorithm = hashes.SHA384()
    pss = padding.PSS(padding.MGF1(algorithm), SALTS[salt])
    digest = _prehash(algorithm, b"prehashed pss")
    signature = rsa_key.sign(digest, pss, utils.Prehashed(algorithm))
    rsa_key.public_key().verify(signature, b"prehashed pss", pss, algorithm)


@pytest.mark.parametrize("algorithm", RSA_HASHES[2:], ids=lambda a: a.name)
def test_ecdsa(ec_key: ec.EllipticCurvePrivateKey, algorithm: hashes.HashAlgorithm) -> None:
    public = ec_key.public_key()
    for message in MESSAGES:
        signature = ec_key.sign(message, ec.ECDSA(algorithm))
        r, s = utils.decode_dss_signature(signature)  # DER, as X.509 and TLS want it
        assert r > 0 and s > 0
        public.verify(signature, message, ec.ECDSA(algorithm))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"another message", ec.ECDSA(algorithm))


@pytest.mark.parametrize("algorithm", RSA_HASHES[2:], ids=lambda a: a.name)
def test_ecdsa_prehashed(
    ec_key: ec.EllipticCurvePrivateKey, algorithm: hashes.HashAlgorithm
) -> None:
    digest = _prehash(algorithm, b"prehashed ecdsa")
    signature = ec_key.sign(digest, ec.ECDSA(utils.Prehashed(algorithm)))
    ec_key.public_key().verify(signature, b"prehashed ecdsa", ec.ECDSA(algorithm))
    ec_key.public_key().verify(signature, digest, ec.ECDSA(utils.Prehashed(algorithm)))


def test_ed25519(ed_key: ed25519.Ed25519PrivateKey) -> None:
    public = ed_key.public_key()
    for message in MESSAGES:
        signature = ed_key.sign(message)
        assert len(signature) == 64
        public.verify(signature, message)
        # Ed25519 is deterministic (RFC 8032): the token must give the same signature.
        assert ed_key.sign(message) == signature
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"another message")


# --- cryptography's builders ------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devid tests"),
        ]
    )


def build_csr(key: PrivateKey, algorithm: hashes.HashAlgorithm | None, **kw: Any) -> x509.CSR:
    san = x509.SubjectAlternativeName([x509.DNSName("device-1.example.com")])
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("device-1"))
        .add_extension(san, critical=False)
    )
    return builder.sign(key, algorithm, **kw)


def build_self_signed(
    key: PrivateKey, algorithm: hashes.HashAlgorithm | None, **kw: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("devid test CA"))
        .issuer_name(_name("devid test CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, algorithm, **kw)


def _verify_tbs(public: Any, cert: x509.Certificate) -> None:
    params = cert.signature_algorithm_parameters
    if isinstance(public, rsa.RSAPublicKey):
        assert cert.signature_hash_algorithm is not None
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, params, cert.signature_hash_algorithm
        )
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(cert.signature, cert.tbs_certificate_bytes, params)
    else:
        public.verify(cert.signature, cert.tbs_certificate_bytes)


def test_csr(any_key: tuple[str, PrivateKey]) -> None:
    key_type, key = any_key
    csr = build_csr(key, CERT_HASH[key_type])
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    reloaded = x509.load_pem_x509_csr(csr.public_bytes(serialization.Encoding.PEM))
    assert reloaded.is_signature_valid
    assert reloaded.subject == _name("device-1")


def test_self_signed_certificate(any_key: tuple[str, PrivateKey]) -> None:
    key_type, key = any_key
    cert = build_self_signed(key, CERT_HASH[key_type])
    cert.verify_directly_issued_by(cert)
    _verify_tbs(key.public_key(), cert)
    assert cert.public_key() == key.public_key()


@pytest.mark.parametrize("salt", ["digest", "max"])
def test_rsa_pss_csr_and_certificate(rsa_key: rsa.RSAPrivateKey, salt: str) -> None:
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), SALTS[salt])
    csr = build_csr(rsa_key, hashes.SHA256(), rsa_padding=pss)
    assert csr.is_signature_valid
    cert = build_self_signed(rsa_key, hashes.SHA256(), rsa_padding=pss)
    assert isinstance(cert.signature_algorithm_parameters, padding.PSS)
    cert.verify_directly_issued_by(cert)
    _verify_tbs(rsa_key.public_key(), cert)


def _ssh_certificate(key: PrivateKey) -> serialization.SSHCertificate:
    subject = ed25519.Ed25519PrivateKey.generate().public_key()
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    builder = (
        serialization.SSHCertificateBuilder()
        .public_key(subject)
        .serial(7)
        .type(serialization.SSHCertificateType.USER)
        .key_id(b"devid-contract")
        .valid_principals([b"device"])
        .valid_after(now - 60)
        .valid_before(now + 3600)
        .add_extension(b"permit-pty", b"")
    )
    return builder.sign(key)  # type: ignore[arg-type]


def test_ssh_certificate(any_key: tuple[str, PrivateKey], tmp_path: Path) -> None:
    """cryptography's SSHCertificateBuilder signs with the key; OpenSSH reads the result.

    ``ssh-keygen -L`` verifies the CA signature while parsing the certificate (it refuses
    a certificate whose signature does not verify), and names the CA by fingerprint.
    """
    _, key = any_key
    cert = _ssh_certificate(key)
    cert.verify_cert_signature()
    ca_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    signer = cert.signature_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert signer == ca_line
    cert_file = tmp_path / "device-cert.pub"
    cert_file.write_bytes(cert.public_bytes() + b"\n")
    ca_file = tmp_path / "ca.pub"
    ca_file.write_bytes(ca_line + b"\n")
    shown = run_tool("ssh-keygen", "-L", "-f", str(cert_file)).stdout.decode()
    ca_fp = run_tool("ssh-keygen", "-l", "-E", "sha256", "-f", str(ca_file)).stdout.split()[1]
    signing = re.search(r"Signing CA: \S+ (SHA256:\S+)", shown)
    assert signing is not None, shown
    assert signing.group(1) == ca_fp.decode()
    assert 'Key ID: "devid-contract"' in shown
    assert "Serial: 7" in shown


def test_tampered_ssh_certificate_is_refused(keys: KeySource, tmp_path: Path) -> None:
    """The ``ssh-keygen -L`` check above is real: a flipped signature byte is refused."""
    cert = _ssh_certificate(keys("token", "ec-p256"))
    kind, body = cert.public_bytes().split()[:2]
    raw = bytearray(base64.b64decode(body))
    raw[-5] ^= 0x01  # inside the ECDSA signature's s value
    line = kind + b" " + base64.b64encode(raw)
    parsed = serialization.load_ssh_public_identity(line)  # still well-formed...
    assert isinstance(parsed, serialization.SSHCertificate)
    with pytest.raises(InvalidSignature):
        parsed.verify_cert_signature()  # ...but the signature no longer verifies
    tampered = tmp_path / "tampered-cert.pub"
    tampered.write_bytes(line + b"\n")
    done = run_tool("ssh-keygen", "-L", "-f", str(tampered), check=False)
    assert done.returncode != 0


# --- nothing private leaves the token ---------------------------------------------------


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message


def test_export_methods_raise_not_extractable(token_key: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: token_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        lambda: token_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
        lambda: token_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    ]
    if isinstance(token_key, ed25519.Ed25519PrivateKey):
        calls.append(token_key.private_bytes_raw)
    else:
        calls.append(token_key.private_numbers)
    for call in calls:
        with pytest.raises(hsm.NotExtractable) as caught:
            call()
        _one_line(str(caught.value))
        assert token_key.handle.label in str(caught.value)
        assert caught.value.exit_code == 2


def _private_object(key: Any) -> pkcs11.Object:
    session = session_for(hsm.parse_uri(key.reference))
    with TOKEN_LOCK:
        found = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key.handle.key_id}
            )
        )
    assert len(found) == 1
    return found[0]


def _public_object(key: Any) -> pkcs11.Object:
    session = session_for(hsm.parse_uri(key.reference))
    with TOKEN_LOCK:
        found = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key.handle.key_id}
            )
        )
    assert len(found) == 1
    return found[0]


SECRET_ATTRIBUTES = {
    "rsa": [
        Attribute.PRIVATE_EXPONENT,
        Attribute.PRIME_1,
        Attribute.PRIME_2,
        Attribute.EXPONENT_1,
        Attribute.EXPONENT_2,
        Attribute.COEFFICIENT,
    ],
    "ec": [Attribute.VALUE],
    "ed25519": [Attribute.VALUE],
}


def _family(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    return "ec" if isinstance(key, ec.EllipticCurvePrivateKey) else "ed25519"


def test_private_value_cannot_be_read_through_pkcs11(token_key: Any) -> None:
    obj = _private_object(token_key)
    with TOKEN_LOCK:
        for attribute in SECRET_ATTRIBUTES[_family(token_key)]:
            with pytest.raises(px.AttributeSensitive):
                obj[attribute]


def test_key_cannot_be_made_extractable(token_key: Any) -> None:
    obj = _private_object(token_key)
    with TOKEN_LOCK:
        with pytest.raises(px.PKCS11Error):
            obj[Attribute.EXTRACTABLE] = True
        with pytest.raises(px.PKCS11Error):
            obj[Attribute.SENSITIVE] = False
        # Nor can a copy be made with the flag flipped (C_CopyObject).
        try:
            copy = obj.copy({Attribute.EXTRACTABLE: True, Attribute.LABEL: "copy"})
        except px.PKCS11Error:
            copy = None
        if copy is not None:
            copy.destroy()
            pytest.fail("the token made an extractable copy of the key")
        assert obj[Attribute.EXTRACTABLE] is False
        assert obj[Attribute.SENSITIVE] is True


def test_key_attributes_say_generated_inside(token_key: Any) -> None:
    obj = _private_object(token_key)
    public = _public_object(token_key)
    with TOKEN_LOCK:
        flags = {
            attribute: obj[attribute]
            for attribute in (
                Attribute.TOKEN,
                Attribute.PRIVATE,
                Attribute.SENSITIVE,
                Attribute.ALWAYS_SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.NEVER_EXTRACTABLE,
                Attribute.LOCAL,
                Attribute.SIGN,
            )
        }
        public_private = public[Attribute.PRIVATE]
        public_label = public[Attribute.LABEL]
    assert flags == {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.ALWAYS_SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.NEVER_EXTRACTABLE: True,
        Attribute.LOCAL: True,
        Attribute.SIGN: True,
    }
    assert public_private is False  # so ssh-keygen -D, which does not log in, sees it
    assert public_label == token_key.handle.label


def test_list_keys_shows_the_flags(token_key: Any) -> None:
    infos = hsm.list_keys(token_key.reference)
    assert [i.object_class for i in infos] == ["private"]
    info = infos[0]
    assert info.id == token_key.handle.key_id.hex()
    assert (info.sensitive, info.always_sensitive, info.never_extractable, info.local) == (
        True,
        True,
        True,
        True,
    )
    assert info.extractable is False


@pytest.fixture
def pkcs11_tool() -> Callable[..., Any]:
    module = softhsm_module()

    def call(*args: str, check: bool = True) -> Any:
        return run_tool(
            "pkcs11-tool",
            "--module",
            module,
            "--login",
            "--pin",
            TEST_PIN,
            "--token-label",
            TOKEN_LABEL,
            *args,
            check=check,
        )

    return call


def _objects(listing: str) -> Iterator[dict[str, str]]:
    """pkcs11-tool's --list-objects output as one dict per object."""
    for block in re.split(r"\n(?=\S)", listing.strip()):
        lines = block.splitlines()
        fields = {"kind": lines[0].strip()}
        for line in lines[1:]:
            name, _, value = line.strip().partition(":")
            fields[name.strip()] = value.strip()
        yield fields


def test_pkcs11_tool_sees_a_sensitive_never_extractable_key(
    token_key: Any, pkcs11_tool: Callable[..., Any]
) -> None:
    listing = pkcs11_tool("--list-objects", "--type", "privkey").stdout.decode()
    mine = [o for o in _objects(listing) if o.get("ID") == token_key.handle.key_id.hex()]
    assert len(mine) == 1, listing
    assert mine[0]["kind"].startswith("Private Key Object")
    assert mine[0]["label"] == token_key.handle.label
    access = [part.strip() for part in mine[0]["Access"].split(",")]
    for flag in ("sensitive", "always sensitive", "never extractable", "local"):
        assert flag in access
    assert "extractable" not in access


def test_pkcs11_tool_cannot_read_the_private_key(
    token_key: Any, pkcs11_tool: Callable[..., Any], tmp_path: Path
) -> None:
    out = tmp_path / "private.der"
    key_id = token_key.handle.key_id.hex()
    done = pkcs11_tool(
        "--read-object", "--type", "privkey", "--id", key_id, "-o", str(out), check=False
    )
    got = out.read_bytes() if out.exists() else b""
    assert done.returncode != 0 or not got, "pkcs11-tool read key material from the token"
    assert not got and not done.stdout.strip()
