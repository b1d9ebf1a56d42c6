"""Loading keys from every form people keep them in, each form made by the tool that makes it.

The expected key always comes from the tool too (``openssl pkey -pubout``, ``ssh-keygen -y``),
read by cryptography, never from devid.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN_LABEL, run_tool, softhsm_module
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from devid import ppk
from devid.errors import BadInput, PassphraseRequired
from devid.keys import PrivateKey, PublicKey
from devid.loading import (
    load_public_key,
    load_signing_key,
    looks_private,
    parse_private_key,
    parse_public_key,
)

KINDS = ["rsa-2048", "ec-p256", "ec-p384", "ed25519"]
PASSPHRASE = b"loading test passphrase"
MESSAGE = b"devid loading test message\n"


@dataclass(frozen=True)
class Source:
    """A private key file made by a tool and the public key that tool says it has."""

    key: Path
    public: PublicKey


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ssh_keygen(*args: str | Path) -> bytes:
    return run_tool("ssh-keygen", *map(str, args)).stdout


def openssl(*args: str | Path, input: bytes | None = None) -> bytes:
    return run_tool("openssl", *map(str, args), input=input).stdout


class Maker:
    """Makes (and caches) each form of each kind of key in one session directory."""

    def __init__(self, directory: Path, openssl_key: Callable[[str], Path]) -> None:
        self.dir = directory
        self.openssl_key = openssl_key
        self.pass_file = directory / "passphrase"
        self.pass_file.write_bytes(PASSPHRASE)

    def path(self, kind: str, name: str) -> Path:
        return self.dir / f"{kind}.{name}"

    @functools.cache  # noqa: B019 - one Maker per session
    def openssl_source(self, kind: str) -> Source:
        pem = self.openssl_key(kind)
        public = serialization.load_pem_public_key(openssl("pkey", "-in", pem, "-pubout"))
        assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                          | ed25519.Ed25519PublicKey)  # fmt: skip
        return Source(pem, public)

    @functools.cache  # noqa: B019
    def ssh_source(self, kind: str) -> Source:
        """The key in OpenSSH's own format (a new ssh-keygen key for Ed25519: OpenSSH 9.2
        cannot read openssl's Ed25519 PEM)."""
        out = self.path(kind, "openssh")
        if kind == "ed25519":
            ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", "", "-f", out)
        else:
            shutil.copyfile(self.openssl_key(kind), out)
            out.chmod(0o600)
            ssh_keygen("-q", "-p", "-P", "", "-N", "", "-f", out)
        public = serialization.load_ssh_public_key(ssh_keygen("-y", "-P", "", "-f", out))
        assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                          | ed25519.Ed25519PublicKey)  # fmt: skip
        return Source(out, public)

    def write(self, kind: str, name: str, data: bytes) -> Path:
        out = self.path(kind, name)
        out.write_bytes(data)
        return out

    def loaded_with_cryptography(self, kind: str) -> Any:
        return serialization.load_pem_private_key(self.openssl_key(kind).read_bytes(), None)


def _cert(m: Maker, kind: str, der: bool) -> tuple[Path, Source]:
    src = m.openssl_source(kind)
    args = ["req", "-x509", "-new", "-key", src.key, "-subj", "/CN=devid-test", "-days", "1"]
    return m.write(kind, f"cert{der}", openssl(*args, *(["-outform", "DER"] if der else []))), src


def _csr(m: Maker, kind: str, der: bool) -> tuple[Path, Source]:
    src = m.openssl_source(kind)
    args = ["req", "-new", "-key", src.key, "-subj", "/CN=devid-test"]
    return m.write(kind, f"csr{der}", openssl(*args, *(["-outform", "DER"] if der else []))), src


def _spki_der(m: Maker, kind: str) -> bytes:
    return openssl("pkey", "-in", m.openssl_key(kind), "-pubout", "-outform", "DER")


# form -> (kinds it exists for, maker returning (file, the source whose key it holds))
PUBLIC_FORMS: dict[str, tuple[tuple[str, ...], Callable[[Maker, str], tuple[Path, Source]]]] = {
    "openssh-line": (
        tuple(KINDS),
        lambda m, k: (
            m.write(k, "pub", ssh_keygen("-y", "-f", m.ssh_source(k).key)),
            m.ssh_source(k),
        ),
    ),
    "rfc4716": (
        tuple(KINDS),
        lambda m, k: (
            m.write(k, "rfc4716", ssh_keygen("-e", "-m", "RFC4716", "-f", m.ssh_source(k).key)),
            m.ssh_source(k),
        ),
    ),
    "pem-spki": (
        tuple(KINDS),
        lambda m, k: (
            m.write(k, "spki.pem", openssl("pkey", "-in", m.openssl_key(k), "-pubout")),
            m.openssl_source(k),
        ),
    ),
    "der-spki": (
        tuple(KINDS),
        lambda m, k: (m.write(k, "spki.der", _spki_der(m, k)), m.openssl_source(k)),
    ),
    "pem-pkcs1-public": (
        ("rsa-2048",),
        lambda m, k: (
            m.write(k, "rsapub.pem", openssl("rsa", "-in", m.openssl_key(k), "-RSAPublicKey_out")),
            m.openssl_source(k),
        ),
    ),
    "base64-der-one-line": (
        tuple(KINDS),
        lambda m, k: (
            m.write(k, "b64line", openssl("base64", "-A", input=_spki_der(m, k))),
            m.openssl_source(k),
        ),
    ),
    "base64-der-wrapped": (
        tuple(KINDS),
        lambda m, k: (
            m.write(k, "b64wrapped", openssl("base64", input=_spki_der(m, k))),
            m.openssl_source(k),
        ),
    ),
    "certificate-pem": (tuple(KINDS), lambda m, k: _cert(m, k, der=False)),
    "certificate-der": (tuple(KINDS), lambda m, k: _cert(m, k, der=True)),
    "csr-pem": (tuple(KINDS), lambda m, k: _csr(m, k, der=False)),
    "csr-der": (tuple(KINDS), lambda m, k: _csr(m, k, der=True)),
}


def _traditional(m: Maker, kind: str, der: bool = False) -> tuple[Path, Source]:
    args = ["pkey", "-in", m.openssl_key(kind), "-traditional"]
    data = openssl(*args, *(["-outform", "DER"] if der else []))
    return m.write(kind, f"traditional{der}", data), m.openssl_source(kind)


def _ec_with_params(m: Maker, kind: str) -> tuple[Path, Source]:
    out = m.path(kind, "ecparam.pem")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", out)  # EC PARAMETERS + key
    public = serialization.load_pem_public_key(openssl("pkey", "-in", out, "-pubout"))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return out, Source(out, public)


def _ppk_devid(m: Maker, kind: str) -> tuple[Path, Source]:
    key = m.loaded_with_cryptography(kind)
    return m.write(kind, "devid.ppk", ppk.dump_ppk(key, comment="t")), m.openssl_source(kind)


def _ppk_puttygen(m: Maker, kind: str) -> tuple[Path, Source]:
    src = m.ssh_source(kind)
    out = m.path(kind, "puttygen.ppk")
    run_tool("puttygen", str(src.key), "-O", "private", "-o", str(out))
    return out, src


# private forms: also what load_signing_key reads
PRIVATE_FORMS: dict[str, tuple[tuple[str, ...], Callable[[Maker, str], tuple[Path, Source]]]] = {
    "pem-pkcs8": (tuple(KINDS), lambda m, k: (m.openssl_key(k), m.openssl_source(k))),
    "pem-pkcs1": (("rsa-2048",), _traditional),
    "pem-sec1": (("ec-p256", "ec-p384"), _traditional),
    "pem-sec1-with-ec-parameters": (("ec-p256",), _ec_with_params),
    "der-pkcs8": (
        tuple(KINDS),
        lambda m, k: (
            m.write(k, "p8.der", openssl("pkey", "-in", m.openssl_key(k), "-outform", "DER")),
            m.openssl_source(k),
        ),
    ),
    "der-traditional": (
        ("rsa-2048", "ec-p256"),
        lambda m, k: _traditional(m, k, der=True),
    ),
    "openssh": (tuple(KINDS), lambda m, k: (m.ssh_source(k).key, m.ssh_source(k))),
    "ppk-devid": (tuple(KINDS), _ppk_devid),
    "ppk-puttygen": (tuple(KINDS), _ppk_puttygen),
}


def cases(forms: dict[str, tuple[tuple[str, ...], Any]]) -> list[tuple[str, str]]:
    return [(form, kind) for form, (kinds, _) in forms.items() for kind in kinds]


@pytest.fixture(scope="session")
def maker(tmp_path_factory: pytest.TempPathFactory, openssl_key: Callable[[str], Path]) -> Maker:
    return Maker(tmp_path_factory.mktemp("loading"), openssl_key)


def make(forms: dict[str, Any], maker: Maker, form: str, kind: str) -> tuple[Path, Source]:
    result: tuple[Path, Source] = forms[form][1](maker, kind)
    return result


def signature_verifies_with_openssl(key: PrivateKey, public: PublicKey, tmp_path: Path) -> None:
    """Sign with the loaded key; openssl checks it with the tool-made public key."""
    pub = tmp_path / "expected.pub.pem"
    pub.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    data, sig = tmp_path / "data", tmp_path / "sig"
    data.write_bytes(MESSAGE)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig.write_bytes(key.sign(MESSAGE))
        run_tool("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
                 "-in", str(data), "-sigfile", str(sig))  # fmt: skip
        return
    if isinstance(key, rsa.RSAPrivateKey):
        sig.write_bytes(key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))
    else:
        sig.write_bytes(key.sign(MESSAGE, ec.ECDSA(hashes.SHA256())))
    run_tool("openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(data))


# -- load_public_key ------------------------------------------------------------------------


@pytest.mark.parametrize(("form", "kind"), cases(PUBLIC_FORMS) + cases(PRIVATE_FORMS))
def test_load_public_key_from_every_form(maker: Maker, form: str, kind: str) -> None:
    forms = PUBLIC_FORMS if form in PUBLIC_FORMS else PRIVATE_FORMS
    path, source = make(forms, maker, form, kind)
    loaded = load_public_key(str(path))
    assert spki(loaded) == spki(source.public)
    assert looks_private(path.read_bytes()) == (forms is PRIVATE_FORMS)


def pkcs11_tool_public(label: str, tmp_path: Path) -> PublicKey:
    """The token's public key object as pkcs11-tool (opensc) reads it: SPKI, DER or PEM."""
    out = tmp_path / "pkcs11-tool.pub"
    run_tool("pkcs11-tool", "--module", softhsm_module(), "--token-label", TOKEN_LABEL,
             "--read-object", "--type", "pubkey", "--label", label, "-o", str(out))  # fmt: skip
    data = out.read_bytes()
    public = (
        serialization.load_pem_public_key(data)
        if data.startswith(b"-----BEGIN")
        else serialization.load_der_public_key(data)
    )
    assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                      | ed25519.Ed25519PublicKey)  # fmt: skip
    return public


# pkcs11-tool (opensc 0.23) cannot export P-384 public keys ("cannot create EVP_PKEY"),
# even ones it generated itself, so the EC case is P-256.
@pytest.mark.parametrize("kind", ["rsa-2048", "ec-p256", "ed25519"])
def test_load_public_key_from_token_uri(
    token_key_factory: Callable[[str], Any], tmp_path: Path, kind: str
) -> None:
    key = token_key_factory(kind)
    loaded = load_public_key(key.reference)
    assert spki(loaded) == spki(pkcs11_tool_public(key.handle.label, tmp_path))


def test_public_key_of_an_encrypted_ppk_needs_no_passphrase(maker: Maker) -> None:
    key = maker.loaded_with_cryptography("ed25519")
    data = ppk.dump_ppk(key, passphrase=PASSPHRASE)
    assert spki(parse_public_key(data)) == spki(maker.openssl_source("ed25519").public)


def test_openssh_line_with_comment_and_crlf(maker: Maker) -> None:
    src = maker.ssh_source("rsa-2048")
    line = ssh_keygen("-y", "-f", src.key).strip() + b" alice@example.com\r\n"
    assert spki(parse_public_key(line)) == spki(src.public)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "holds no public key"),
        (b"hello world\n", "holds no public key"),
        (b"ssh-rsa AAAA!!notbase64", "malformed OpenSSH public key"),
        (b"---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----\n", "RFC 4716"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "malformed PEM"),
        (b"\x30\x82\x01\x22\x30\x0d", "holds no public key"),
    ],
    ids=["empty", "text", "bad-openssh", "bad-rfc4716", "bad-pem", "truncated-der"],
)
def test_parse_public_key_refuses_garbage(data: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_public_key(data, where="input")


def test_load_public_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        load_public_key(str(tmp_path / "missing.pub"))
    with pytest.raises(BadInput, match="is a directory"):
        load_public_key(str(tmp_path))


# -- load_signing_key -----------------------------------------------------------------------


@pytest.mark.parametrize(("form", "kind"), cases(PRIVATE_FORMS))
def test_load_signing_key_from_every_private_form(
    maker: Maker, tmp_path: Path, form: str, kind: str
) -> None:
    path, source = make(PRIVATE_FORMS, maker, form, kind)
    key = load_signing_key(str(path))
    assert spki(key.public_key()) == spki(source.public)
    signature_verifies_with_openssl(key, source.public, tmp_path)


def _enc_pkcs8(m: Maker, kind: str) -> Path:
    out = m.path(kind, "p8.enc.pem")
    openssl("pkey", "-in", m.openssl_key(kind), "-aes256", "-passout", f"file:{m.pass_file}",
            "-out", out)  # fmt: skip
    return out


def _enc_traditional(m: Maker, kind: str) -> Path:
    out = m.path(kind, "trad.enc.pem")  # Proc-Type: 4,ENCRYPTED + DEK-Info headers
    tool = "rsa" if kind.startswith("rsa") else "ec"
    openssl(tool, "-in", m.openssl_key(kind), "-aes256", "-passout", f"file:{m.pass_file}",
            "-out", out)  # fmt: skip
    return out


def _enc_der(m: Maker, kind: str) -> Path:
    out = m.path(kind, "p8.enc.der")
    openssl("pkcs8", "-topk8", "-in", m.openssl_key(kind), "-v2", "aes256", "-outform", "DER",
            "-passout", f"file:{m.pass_file}", "-out", out)  # fmt: skip
    return out


def _enc_openssh(m: Maker, kind: str) -> Path:
    out = m.path(kind, "openssh.enc")
    shutil.copyfile(m.ssh_source(kind).key, out)
    out.chmod(0o600)
    ssh_keygen("-q", "-p", "-a", "4", "-P", "", "-N", PASSPHRASE.decode(), "-f", out)
    return out


def _enc_ppk(m: Maker, kind: str) -> Path:
    out = m.path(kind, "enc.ppk")
    run_tool("puttygen", str(m.ssh_source(kind).key), "-O", "private", "-o", str(out),
             "--new-passphrase", str(m.pass_file))  # fmt: skip
    return out


ENCRYPTED: dict[str, tuple[tuple[str, ...], Callable[[Maker, str], Path], bool]] = {
    # form: (kinds, maker, made from the OpenSSH source)
    "pem-pkcs8": (("rsa-2048", "ed25519"), _enc_pkcs8, False),
    "pem-traditional": (("rsa-2048", "ec-p256"), _enc_traditional, False),
    "der-pkcs8": (("ec-p384",), _enc_der, False),
    "openssh": (("rsa-2048", "ed25519"), _enc_openssh, True),
    "ppk-puttygen": (("ec-p256",), _enc_ppk, True),
}
ENCRYPTED_CASES = [(form, kind) for form, (kinds, _, _) in ENCRYPTED.items() for kind in kinds]


def encrypted(maker: Maker, form: str, kind: str) -> tuple[Path, Source]:
    _, build, from_ssh = ENCRYPTED[form]
    source = maker.ssh_source(kind) if from_ssh else maker.openssl_source(kind)
    return build(maker, kind), source


@pytest.mark.parametrize(("form", "kind"), ENCRYPTED_CASES)
def test_encrypted_key_right_passphrase(maker: Maker, tmp_path: Path, form: str, kind: str) -> None:
    path, source = encrypted(maker, form, kind)
    key = load_signing_key(str(path), passphrase=PASSPHRASE)
    assert spki(key.public_key()) == spki(source.public)
    signature_verifies_with_openssl(key, source.public, tmp_path)


@pytest.mark.parametrize(("form", "kind"), ENCRYPTED_CASES)
def test_encrypted_key_wrong_passphrase(maker: Maker, form: str, kind: str) -> None:
    path, _ = encrypted(maker, form, kind)
    with pytest.raises(BadInput, match="wrong passphrase") as info:
        load_signing_key(str(path), passphrase=b"not the passphrase")
    assert not isinstance(info.value, PassphraseRequired)
    assert "not the passphrase" not in str(info.value)


@pytest.mark.parametrize(("form", "kind"), ENCRYPTED_CASES)
def test_encrypted_key_missing_passphrase(maker: Maker, form: str, kind: str) -> None:
    path, source = encrypted(maker, form, kind)
    with pytest.raises(PassphraseRequired):
        load_signing_key(str(path))
    asked: list[bool] = []

    def ask() -> bytes:
        asked.append(True)
        return PASSPHRASE

    key = load_signing_key(str(path), ask_passphrase=ask)
    assert asked == [True]
    assert spki(key.public_key()) == spki(source.public)


def test_wrong_given_passphrase_is_not_asked_again(maker: Maker) -> None:
    path, _ = encrypted(maker, "pem-pkcs8", "rsa-2048")
    with pytest.raises(BadInput, match="wrong passphrase"):
        load_signing_key(str(path), passphrase=b"wrong", ask_passphrase=lambda: PASSPHRASE)


def test_passphrase_for_an_unencrypted_key_is_ignored(maker: Maker) -> None:
    # DEVID_PASSPHRASE may be set for another key; openssl and ssh-keygen ignore it too.
    for form in ("pem-pkcs8", "openssh"):
        path, source = make(PRIVATE_FORMS, maker, form, "rsa-2048")
        key = load_signing_key(str(path), passphrase=PASSPHRASE)
        assert spki(key.public_key()) == spki(source.public)


def test_load_signing_key_from_token_uri(token_key_factory: Callable[[str], Any]) -> None:
    made = token_key_factory("ec-p256")
    key = load_signing_key(made.reference)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    made.public_key().verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 64,
        b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n",
    ],
    ids=["empty", "zeros", "truncated-pem", "truncated-openssh"],
)
def test_parse_private_key_refuses_garbage(data: bytes) -> None:
    with pytest.raises(BadInput, match="is not a private key devid can read"):
        parse_private_key(data, where="input")


def test_truncated_real_pem_is_refused(maker: Maker, tmp_path: Path) -> None:
    whole = maker.openssl_key("rsa-2048").read_bytes()
    cut = tmp_path / "cut.pem"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadInput):
        load_signing_key(str(cut))
    with pytest.raises(BadInput):
        load_public_key(str(cut))


# -- malformed input that used to escape as a crash ---------------------------------------

_PANIC_PEM = (
    b"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
    b"DEK-Info: AES-256-CBC,59204B99DE6BADAAEB22E5D51C\n\n"
    b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END EC PRIVATE KEY-----\n"
)


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def test_an_encrypted_pem_with_a_short_iv_is_bad_input(
    tmp_path: Path, devid: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # cryptography's Rust code panics on this IV (pyo3 PanicException, a BaseException)
    path = tmp_path / "panic.pem"
    path.write_bytes(_PANIC_PEM)
    with pytest.raises(BadInput, match="malformed encrypted PEM"):
        parse_private_key(_PANIC_PEM, passphrase=b"x", where=str(path))
    monkeypatch.setenv("DEVID_PASSPHRASE", "x")
    for args in (("key", "fingerprint", path), ("key", "public", path)):
        result = devid(*args)
        assert result.code == 2, result.err
        assert result.err.count("\n") == 1 and "malformed encrypted PEM" in result.err


def test_a_wrong_passphrase_for_an_aes_gcm_openssh_key(tmp_path: Path) -> None:
    key = tmp_path / "gcm"
    ssh_keygen("-q", "-t", "ed25519", "-N", "right words", "-Z", "aes256-gcm@openssh.com",
               "-f", key)  # fmt: skip
    with pytest.raises(BadInput, match="wrong passphrase"):
        parse_private_key(key.read_bytes(), passphrase=b"wrong", where=str(key))
    assert parse_private_key(key.read_bytes(), passphrase=b"right words", where=str(key))


def test_an_openssh_line_with_a_compressed_ec_point_is_bad_input() -> None:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    )
    blob = _ssh_string(b"ecdsa-sha2-nistp256") + _ssh_string(b"nistp256") + _ssh_string(point)
    line = b"ecdsa-sha2-nistp256 " + __import__("base64").b64encode(blob) + b" c\n"
    with pytest.raises(BadInput, match="OpenSSH public key"):
        parse_public_key(line, where="compressed.pub")


@pytest.mark.parametrize("cipher", ["chacha20-poly1305@openssh.com", "aes128-cbc", "3des-cbc"])
def test_an_openssh_key_in_a_cipher_cryptography_lacks_says_so(tmp_path: Path, cipher: str) -> None:
    path = tmp_path / "k"
    run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE.decode(), "-Z", cipher,
             "-f", str(path))  # fmt: skip
    with pytest.raises(BadInput) as info:
        load_signing_key(str(path), passphrase=PASSPHRASE)
    assert info.value.message == f"{path}: encrypted with {cipher}, a cipher devid cannot read"
    assert info.value.hint == "re-encrypt it: ssh-keygen -p -Z aes256-ctr -f FILE"


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8]
)
def test_a_wrong_passphrase_that_gets_past_the_padding_check_is_still_a_wrong_passphrase(
    fmt: serialization.PrivateFormat,
) -> None:
    # About 1 wrong passphrase in 250 decrypts to valid CBC padding; the garbage then does not
    # parse as a key. That is still a wrong passphrase, not "not a private key".
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(PASSPHRASE)
    )
    messages = set()
    for n in range(5000):  # none past the padding in 5000 tries: p < 1e-8
        with pytest.raises(BadInput) as info:
            parse_private_key(data, passphrase=f"wrong {n}".encode(), where="k.pem")
        messages.add(info.value.message)
        if len(messages) == 2:
            break
    assert messages == {"k.pem: wrong passphrase", "k.pem: wrong passphrase (or a damaged file)"}
