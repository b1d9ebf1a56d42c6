"""Token keys seen by other programs: OpenSSH, OpenSSL and OpenSC agree with devid.

- ``ssh-keygen -D <module>`` (which does not log in) lists the public key ``devid key public``
  prints, for RSA and EC token keys, and its fingerprints equal ``devid key fingerprint``.
  OpenSSH 9.2 skips Ed25519 token keys; devid still handles them.
- ``openssl req -verify`` accepts a CSR signed on the token (PKCS#1 v1.5, PSS, ECDSA on every
  curve, Ed25519), ``openssl verify`` a self-signed certificate, and both reject tampering.
- ``pkcs11-tool --read-object --type pubkey`` reads the public key devid reports.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN_LABEL, Result, run_tool, softhsm_module, unique
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

import hsm
from devid.keys import KeyType, generate_key

SSH_TYPES = ["rsa-2048", "rsa-4096", "ec-p256", "ec-p384", "ec-p521"]
KeySource = Callable[[str], Any]


@pytest.fixture(scope="module")
def token_keys(token_uri: str) -> Iterator[KeySource]:
    """``token_keys(key_type)``: one token key per type for this module (RSA-4096 once)."""
    cache: dict[str, Any] = {}

    def get(key_type: str) -> Any:
        if key_type not in cache:
            key, _ = generate_key(
                KeyType(key_type), token=token_uri, label=unique(f"xcheck-{key_type}")
            )
            cache[key_type] = key
        return cache[key_type]

    yield get
    for key in cache.values():
        hsm.delete_key(key.reference)


def ssh_keygen_d() -> list[str]:
    """The public keys OpenSSH finds on the SoftHSM tokens, as OpenSSH lines."""
    assert os.environ.get("SOFTHSM2_CONF"), "the softhsm fixture sets SOFTHSM2_CONF"
    done = run_tool("ssh-keygen", "-D", softhsm_module())
    return done.stdout.decode().splitlines()


def _key_material(line: str) -> str:
    return " ".join(line.split()[:2])


# --- OpenSSH ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", SSH_TYPES)
def test_ssh_keygen_lists_the_public_key_devid_prints(
    key_type: str, token_keys: KeySource, devid: Callable[..., Result]
) -> None:
    key = token_keys(key_type)
    printed = devid("key", "public", key.reference)
    assert printed.code == 0, printed.err
    ours = _key_material(printed.out)
    listed = ssh_keygen_d()
    assert ours in {_key_material(line) for line in listed}
    # OpenSSH names the key by its CKA_LABEL.
    assert any(line.startswith(ours) and key.handle.label in line for line in listed)


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ec-p384", "ec-p521"])
def test_ssh_keygen_fingerprints_equal_devid_fingerprint(
    key_type: str, token_keys: KeySource, devid: Callable[..., Result], tmp_path: Path
) -> None:
    """Fingerprints of the key as OpenSSH read it from the token, not as devid exported it."""
    key = token_keys(key_type)
    line = next(ln for ln in ssh_keygen_d() if ln.split()[2:] == [key.handle.label])
    pub = tmp_path / "from-token.pub"
    pub.write_text(line + "\n")
    result = devid("key", "fingerprint", key.reference, "--json")
    assert result.code == 0, result.err
    reported = json.loads(result.out)
    for algo, field in (("sha256", "openssh_sha256"), ("md5", "openssh_md5")):
        out = run_tool("ssh-keygen", "-l", "-E", algo, "-f", str(pub)).stdout.decode().split()
        assert reported[field] == out[1]
        assert int(out[0]) == reported["bits"]


def test_ed25519_token_key_without_openssh(
    token_keys: KeySource, devid: Callable[..., Result], tmp_path: Path
) -> None:
    """OpenSSH 9.2 skips Ed25519 token keys; devid still prints and fingerprints them, and
    an Ed25519 key on the token does not stop ``ssh-keygen -D`` listing the others."""
    key = token_keys("ed25519")
    ec_key = token_keys("ec-p256")
    printed = devid("key", "public", key.reference)
    assert printed.code == 0, printed.err
    assert printed.out.startswith("ssh-ed25519 ")
    loaded = serialization.load_ssh_public_key(printed.out.split("\n")[0].encode())
    assert loaded == key.public_key()
    pub = tmp_path / "ed25519.pub"
    pub.write_text(printed.out)
    shown = run_tool("ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)).stdout.decode().split()
    reported = json.loads(devid("key", "fingerprint", key.reference, "--json").out)
    assert reported["openssh_sha256"] == shown[1]
    assert "(ED25519)" in " ".join(shown)
    ec_line = _key_material(devid("key", "public", ec_key.reference).out)
    assert ec_line in {_key_material(line) for line in ssh_keygen_d()}
    key.public_key().verify(key.sign(b"still usable from python"), b"still usable from python")


# --- OpenSSL ----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def build_csr(key: Any, algorithm: hashes.HashAlgorithm | None, **kw: Any) -> x509.CSR:
    san = x509.SubjectAlternativeName([x509.DNSName("device-1.example.com")])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name("device-1"))
    return builder.add_extension(san, critical=False).sign(key, algorithm, **kw)


def build_self_signed(
    key: Any, algorithm: hashes.HashAlgorithm | None, **kw: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("devid cross-check CA"))
        .issuer_name(_name("devid cross-check CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(key, algorithm, **kw)


PSS_DIGEST = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
PSS_MAX = padding.PSS(padding.MGF1(hashes.SHA512()), padding.PSS.MAX_LENGTH)
PSS_384 = padding.PSS(padding.MGF1(hashes.SHA384()), padding.PSS.DIGEST_LENGTH)
CSR_CASES = [
    pytest.param("rsa-2048", hashes.SHA256(), None, id="rsa-pkcs1-sha256"),
    pytest.param("rsa-2048", hashes.SHA512(), None, id="rsa-pkcs1-sha512"),
    pytest.param("rsa-2048", hashes.SHA256(), PSS_DIGEST, id="rsa-pss-sha256-digestlen"),
    pytest.param("rsa-2048", hashes.SHA512(), PSS_MAX, id="rsa-pss-sha512-maxlen"),
    pytest.param("rsa-4096", hashes.SHA384(), PSS_384, id="rsa4096-pss-sha384"),
    pytest.param("ec-p256", hashes.SHA256(), None, id="ecdsa-p256-sha256"),
    pytest.param("ec-p384", hashes.SHA384(), None, id="ecdsa-p384-sha384"),
    pytest.param("ec-p521", hashes.SHA512(), None, id="ecdsa-p521-sha512"),
    pytest.param("ec-p256", hashes.SHA512(), None, id="ecdsa-p256-sha512"),
    pytest.param("ed25519", None, None, id="ed25519"),
]


def _sign_kwargs(pss: padding.PSS | None) -> dict[str, Any]:
    return {} if pss is None else {"rsa_padding": pss}


def _openssl_ok(done: Any) -> bool:
    return done.returncode == 0 and b"verify ok" in (done.stdout + done.stderr).lower()


@pytest.mark.parametrize(("key_type", "algorithm", "pss"), CSR_CASES)
def test_openssl_accepts_a_csr_signed_on_the_token(
    key_type: str,
    algorithm: hashes.HashAlgorithm | None,
    pss: padding.PSS | None,
    token_keys: KeySource,
    tmp_path: Path,
) -> None:
    key = token_keys(key_type)
    csr = build_csr(key, algorithm, **_sign_kwargs(pss))
    path = tmp_path / "device.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    done = run_tool("openssl", "req", "-verify", "-in", str(path), "-noout", check=False)
    assert _openssl_ok(done), done.stderr.decode()
    # The key OpenSSL found in the CSR is the token's key.
    pem = run_tool("openssl", "req", "-in", str(path), "-pubkey", "-noout").stdout
    assert serialization.load_pem_public_key(pem) == key.public_key()
    if pss is not None:
        text = run_tool("openssl", "req", "-in", str(path), "-noout", "-text").stdout.decode()
        assert "rsassaPss" in text


def test_openssl_rejects_a_tampered_csr(token_keys: KeySource, tmp_path: Path) -> None:
    """The check above is real: one flipped bit in the signature and OpenSSL says no."""
    csr = build_csr(token_keys("ec-p256"), hashes.SHA256())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature at the end of the CSR
    path = tmp_path / "tampered.csr"
    path.write_bytes(bytes(der))
    done = run_tool(
        "openssl", "req", "-verify", "-inform", "DER", "-in", str(path), "-noout", check=False
    )
    assert not _openssl_ok(done)


@pytest.mark.parametrize(("key_type", "algorithm", "pss"), CSR_CASES)
def test_openssl_verifies_a_self_signed_certificate(
    key_type: str,
    algorithm: hashes.HashAlgorithm | None,
    pss: padding.PSS | None,
    token_keys: KeySource,
    tmp_path: Path,
) -> None:
    cert = build_self_signed(token_keys(key_type), algorithm, **_sign_kwargs(pss))
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = run_tool("openssl", "verify", "-CAfile", str(path), str(path), check=False)
    assert done.returncode == 0 and done.stdout.decode().strip().endswith(": OK"), (
        done.stdout.decode() + done.stderr.decode()
    )
    assert x509.load_pem_x509_certificate(path.read_bytes()) == cert


# --- OpenSC -----------------------------------------------------------------------------


# P-384 is left out: pkcs11-tool 0.23 fails on SoftHSM's P-384 public keys ("cannot create
# EVP_PKEY") while reading P-256 and P-521 ones; ssh-keygen -D covers P-384 above.
# Ed25519 is left out: pkcs11-tool writes no SubjectPublicKeyInfo for EdDSA keys.
@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256", "ec-p521"])
def test_pkcs11_tool_reads_the_public_key_devid_reports(
    key_type: str, token_keys: KeySource, tmp_path: Path
) -> None:
    key = token_keys(key_type)
    out = tmp_path / "public.der"
    run_tool(
        "pkcs11-tool",
        "--module",
        softhsm_module(),
        "--token-label",
        TOKEN_LABEL,
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        key.handle.key_id.hex(),
        "-o",
        str(out),
    )
    assert serialization.load_der_public_key(out.read_bytes()) == key.public_key()
