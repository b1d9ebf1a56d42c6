"""`devid key fingerprint` against the numbers people compare it with.

OpenSSH's come from `ssh-keygen -l -E sha256|md5`; EC2's from the openssl pipelines AWS
documents (DESIGN.md section 2); one EC2 value from moto's published test vector. Every
input key is made by a real tool (openssl, ssh-keygen) or on the SoftHSM token.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Result, run_tool

from devid.fingerprint import colon_hex, fingerprints, ssh_wire_blob
from devid.loading import load_public_key, load_signing_key

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "keys"
MOTO_VECTOR = VECTORS / "moto-rsa-2048-imported.rfc4716"
# Published by moto (tests/test_ec2/test_key_pairs.py) and quoted in DESIGN.md section 2.
MOTO_EC2_FINGERPRINT = "6a:49:07:1c:7e:bd:d2:bd:96:25:fe:b5:74:83:ae:fd"

PASSPHRASE = b"fingerprint test passphrase"
KINDS = ["rsa-2048", "rsa-3072", "ec-p256", "ec-p384", "ec-p521", "ed25519"]
FORMS = ["pkcs8", "pkcs1", "openssh", "pkcs8-encrypted", "openssh-encrypted"]
FILE_CASES = [
    (kind, form) for kind in KINDS for form in FORMS if not (kind == "ed25519" and form == "pkcs1")
] + [("rsa-4096", "pkcs8")]  # RSA-4096 is slow to make: once
SSH_KEYGEN_TYPES = {"RSA": "rsa", "ECDSA": "ec", "ED25519": "ed25519"}


@dataclass(frozen=True)
class Sample:
    """A key file and the same key in the forms the reference tools read."""

    key: Path  # the file devid reads
    pub: Path  # the OpenSSH public key, made by a real tool, for ssh-keygen -l
    pem: Path | None  # unencrypted PEM for openssl (None: openssl cannot read this key)
    passphrase_file: Path | None


def ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def ed25519_pub_from_openssl(pem: Path, out: Path) -> Path:
    """The OpenSSH line of an openssl-made Ed25519 key (OpenSSH 9.2 cannot read its PEM).

    The raw key is the last 32 bytes of openssl's SubjectPublicKeyInfo (RFC 8410); the SSH
    blob is string "ssh-ed25519" + string key (RFC 8709 section 4).
    """
    spki = run_tool("openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER").stdout
    blob = ssh_string(b"ssh-ed25519") + ssh_string(spki[-32:])
    out.write_text(f"ssh-ed25519 {base64.b64encode(blob).decode()}\n")
    return out


def ssh_keygen_y(key: Path, out: Path) -> Path:
    out.write_bytes(run_tool("ssh-keygen", "-y", "-P", "", "-f", str(key)).stdout)
    return out


def to_openssh(source: Path, out: Path, passphrase: bytes = b"") -> Path:
    """Rewrite a copy of *source* in OpenSSH's own format with ssh-keygen -p."""
    shutil.copyfile(source, out)
    out.chmod(0o600)
    run_tool(
        "ssh-keygen", "-q", "-p", "-a", "4", "-P", "", "-N", passphrase.decode(), "-f", str(out)
    )
    return out


@pytest.fixture(scope="session")
def pass_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fp-pass") / "passphrase"
    path.write_bytes(PASSPHRASE)
    return path


@pytest.fixture(scope="session")
def sample(
    openssl_key: Callable[[str], Path],
    pass_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, str], Sample]:
    """``sample(kind, form)``: one key of *kind* written in *form*, with its references."""
    directory = tmp_path_factory.mktemp("fp-samples")

    @functools.cache
    def reference_pub(kind: str) -> Path:
        base = openssl_key(kind)
        out = directory / f"{kind}.pub"
        if kind == "ed25519":
            return ed25519_pub_from_openssl(base, out)
        return ssh_keygen_y(base, out)

    @functools.cache
    def openssh_plain(kind: str) -> Sample:
        if kind == "ed25519":  # OpenSSH cannot read openssl's Ed25519 PEM: its own key
            key = directory / "ed25519-openssh"
            run_tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key))
            return Sample(key, Path(f"{key}.pub"), None, None)
        key = to_openssh(openssl_key(kind), directory / f"{kind}-openssh")
        return Sample(key, reference_pub(kind), openssl_key(kind), None)

    @functools.cache
    def make(kind: str, form: str) -> Sample:
        base = openssl_key(kind)
        if form == "pkcs8":
            return Sample(base, reference_pub(kind), base, None)
        if form == "pkcs1":  # RSA PRIVATE KEY / EC PRIVATE KEY (SEC1)
            out = directory / f"{kind}-traditional.pem"
            run_tool("openssl", "pkey", "-in", str(base), "-traditional", "-out", str(out))
            return Sample(out, reference_pub(kind), out, None)
        if form == "pkcs8-encrypted":
            out = directory / f"{kind}-encrypted.pem"
            passout = f"file:{pass_file}"
            run_tool("openssl", "pkey", "-in", str(base), "-aes256", "-passout", passout,
                     "-out", str(out))  # fmt: skip
            return Sample(out, reference_pub(kind), base, pass_file)
        plain = openssh_plain(kind)
        if form == "openssh":
            return plain
        out = to_openssh(plain.key, directory / f"{kind}-openssh-encrypted", PASSPHRASE)
        return Sample(out, plain.pub, plain.pem, pass_file)

    return make


def as_json(result: Result) -> dict[str, Any]:
    assert result.code == 0, result.err
    assert result.err == ""
    data: dict[str, Any] = json.loads(result.out)
    return data


def ssh_keygen_l(pub: Path, digest: str) -> tuple[int, str, str]:
    """(bits, fingerprint, TYPE) as ``ssh-keygen -l -E digest`` prints them."""
    words = run_tool("ssh-keygen", "-l", "-E", digest, "-f", str(pub)).stdout.decode().split()
    return int(words[0]), words[1], words[-1].strip("()")


def openssl_colon_digest(digest: str, data: bytes) -> str:
    """``openssl md5|sha1 -c`` of *data*: ``MD5(stdin)= aa:bb:..`` -> ``aa:bb:..``."""
    out = run_tool("openssl", digest, "-c", input=data).stdout.decode()
    return out.split("= ", 1)[1].strip()


def aws_ec2_imported_rsa(pem: Path) -> str:
    """AWS's command: openssl rsa -in K -pubout -outform DER | openssl md5 -c."""
    der = run_tool("openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER").stdout
    return openssl_colon_digest("md5", der)


def aws_ec2_imported_rsa_from_pub(pub: Path) -> str:
    """The same pipeline for a public key only: ssh-keygen -e -m PKCS8 gives the SPKI."""
    spki_pem = run_tool("ssh-keygen", "-e", "-m", "PKCS8", "-f", str(pub)).stdout
    der = run_tool("openssl", "pkey", "-pubin", "-outform", "DER", input=spki_pem).stdout
    return openssl_colon_digest("md5", der)


def aws_ec2_created_rsa(pem: Path) -> str:
    """AWS's command: openssl pkcs8 -in K -inform PEM -outform DER -topk8 -nocrypt
    | openssl sha1 -c."""
    der = run_tool(
        "openssl", "pkcs8", "-in", str(pem), "-inform", "PEM", "-outform", "DER", "-topk8",
        "-nocrypt",
    ).stdout  # fmt: skip
    return openssl_colon_digest("sha1", der)


def padded(b64: str) -> str:
    return b64 + "=" * (-len(b64) % 4)


def assert_openssh_fields(fp: dict[str, Any], pub: Path) -> None:
    bits, sha256, kind = ssh_keygen_l(pub, "sha256")
    _, md5, _ = ssh_keygen_l(pub, "md5")
    assert fp["type"] == SSH_KEYGEN_TYPES[kind]
    assert fp["bits"] == bits
    assert fp["openssh_sha256"] == sha256
    assert not fp["openssh_sha256"].endswith("=")
    assert fp["openssh_md5"] == md5
    assert md5.startswith("MD5:")
    assert fp["iam_md5"] == md5.removeprefix("MD5:")


def assert_text_like_ssh_keygen(text: str, pub: Path) -> None:
    """The first two lines read like ssh-keygen -l, without the comment."""
    lines = text.splitlines()
    for line, digest in zip(lines[:2], ("sha256", "md5"), strict=True):
        bits, value, kind = ssh_keygen_l(pub, digest)
        assert line == f"{bits} {value} ({kind})"


def passphrase_args(sample: Sample) -> list[str]:
    return ["--passphrase-file", str(sample.passphrase_file)] if sample.passphrase_file else []


@pytest.mark.parametrize(("kind", "form"), FILE_CASES)
def test_file_key_matches_ssh_keygen_and_aws_pipelines(
    devid: Callable[..., Result], sample: Callable[[str, str], Sample], kind: str, form: str
) -> None:
    s = sample(kind, form)
    fp = as_json(devid("key", "fingerprint", s.key, "--json", *passphrase_args(s)))
    assert set(fp) == {
        "type", "bits", "openssh_sha256", "openssh_md5", "iam_md5", "ec2", "ec2_created"
    }  # fmt: skip
    assert_openssh_fields(fp, s.pub)
    if kind.startswith("rsa"):
        assert s.pem is not None
        assert fp["ec2"] == aws_ec2_imported_rsa(s.pem)
        assert fp["ec2_created"] == aws_ec2_created_rsa(s.pem)
    elif kind == "ed25519":
        assert fp["ec2"] == padded(ssh_keygen_l(s.pub, "sha256")[1].removeprefix("SHA256:"))
        assert len(fp["ec2"]) == 44
        assert fp["ec2_created"] is None
    else:
        assert fp["ec2"] is None
        assert fp["ec2_created"] is None
    text = devid("key", "fingerprint", s.key, *passphrase_args(s))
    assert text.code == 0, text.err
    assert_text_like_ssh_keygen(text.out, s.pub)


@pytest.mark.parametrize("kind", KINDS)
def test_token_key_matches_ssh_keygen_on_its_public_file(
    devid: Callable[..., Result],
    token_key_factory: Callable[[str], Any],
    tmp_path: Path,
    kind: str,
) -> None:
    ref = token_key_factory(kind).reference
    pub = tmp_path / "token.pub"
    written = devid("key", "public", ref, "--out", pub)
    assert written.code == 0, written.err
    fp = as_json(devid("key", "fingerprint", ref, "--json"))
    assert_openssh_fields(fp, pub)
    assert fp["ec2_created"] is None  # the private key cannot leave the token
    if kind.startswith("rsa"):
        assert fp["ec2"] == aws_ec2_imported_rsa_from_pub(pub)
    elif kind == "ed25519":
        assert fp["ec2"] == padded(ssh_keygen_l(pub, "sha256")[1].removeprefix("SHA256:"))
    else:
        assert fp["ec2"] is None
    text = devid("key", "fingerprint", ref)
    assert text.code == 0, text.err
    assert_text_like_ssh_keygen(text.out, pub)


def test_public_key_file_has_no_created_fingerprint(
    devid: Callable[..., Result], sample: Callable[[str, str], Sample]
) -> None:
    s = sample("rsa-2048", "pkcs8")
    fp = as_json(devid("key", "fingerprint", s.pub, "--json"))
    assert_openssh_fields(fp, s.pub)
    assert fp["ec2"] == aws_ec2_imported_rsa(s.pem or s.key)
    assert fp["ec2_created"] is None


def test_der_private_key_gets_the_created_fingerprint(
    devid: Callable[..., Result], openssl_key: Callable[[str], Path], tmp_path: Path
) -> None:
    pem = openssl_key("rsa-2048")
    der = tmp_path / "key.der"
    run_tool("openssl", "pkey", "-in", str(pem), "-outform", "DER", "-out", str(der))
    fp = as_json(devid("key", "fingerprint", der, "--json"))
    assert fp["ec2_created"] == aws_ec2_created_rsa(pem)


def test_passphrase_from_environment(
    devid: Callable[..., Result],
    sample: Callable[[str, str], Sample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = sample("rsa-2048", "openssh-encrypted")
    monkeypatch.setenv("DEVID_PASSPHRASE", PASSPHRASE.decode())
    fp = as_json(devid("key", "fingerprint", s.key, "--json"))
    assert s.pem is not None
    assert fp["ec2_created"] == aws_ec2_created_rsa(s.pem)


def test_moto_published_ec2_vector(devid: Callable[..., Result], tmp_path: Path) -> None:
    fp = as_json(devid("key", "fingerprint", MOTO_VECTOR, "--json"))
    assert fp["ec2"] == MOTO_EC2_FINGERPRINT
    # The same key as an OpenSSH line (ssh-keygen's conversion) gives the same numbers.
    pub = tmp_path / "moto.pub"
    pub.write_bytes(run_tool("ssh-keygen", "-i", "-m", "RFC4716", "-f", str(MOTO_VECTOR)).stdout)
    assert as_json(devid("key", "fingerprint", pub, "--json")) == fp
    assert_openssh_fields(fp, pub)
    # AWS's pipeline on the vector agrees with the published value, so the vector is intact.
    assert aws_ec2_imported_rsa_from_pub(pub) == MOTO_EC2_FINGERPRINT


def test_library_fingerprints_and_wire_blob(sample: Callable[[str, str], Sample]) -> None:
    for kind in ("rsa-2048", "ec-p256", "ed25519"):
        s = sample(kind, "pkcs8")
        private = load_signing_key(str(s.key))
        public = load_public_key(str(s.pub))
        blob = base64.b64decode(s.pub.read_text().split()[1])
        assert ssh_wire_blob(public) == blob
        from_private, from_public = fingerprints(private), fingerprints(public)
        assert from_public.ec2_created is None
        assert from_private.as_dict() | {"ec2_created": None} == from_public.as_dict()
    assert colon_hex(bytes([0, 1, 0xAB])) == "00:01:ab"
