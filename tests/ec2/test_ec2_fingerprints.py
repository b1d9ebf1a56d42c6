"""EC2 fingerprints and key matching, checked against AWS's own pipelines and a published vector.

The keys are made by openssl / ssh-keygen; the expected fingerprints come from the commands AWS
documents (DESIGN.md section 2), never from devid. The key pairs handed to the matcher carry
those real-AWS values, so the fingerprint paths are tested even though moto computes others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, Result, run_tool
from ec2_support import (
    MOTO_PUBLIC_KEY,
    MOTO_PUBLISHED_FINGERPRINT,
    Pipelines,
    openssl_rsa,
    public_line,
    ssh_keygen,
)

from devid import ec2
from devid.loading import parse_private_key, parse_public_key

RSA_CASES = [
    pytest.param(1024, False, id="rsa-1024-pkcs8"),
    pytest.param(2048, False, id="rsa-2048-pkcs8"),
    pytest.param(2048, True, id="rsa-2048-pkcs1"),
    pytest.param(4096, True, id="rsa-4096-pkcs1"),
]


def _local(path: Path) -> ec2.LocalKey:
    found = ec2.key_from_bytes(str(path), path.read_bytes())
    assert isinstance(found, ec2.LocalKey), found
    return found


def _pair(fingerprint: str, public: object = None) -> ec2.KeyPair:
    return ec2.KeyPair("kp", "key-0123456789abcdef0", "rsa", fingerprint, public)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bits", "traditional"), RSA_CASES)
def test_rsa_fingerprints_match_aws_pipelines(tmp_path: Path, bits: int, traditional: bool) -> None:
    key = openssl_rsa(tmp_path / "k.pem", bits, traditional=traditional)
    local = _local(key)
    assert local.ec2_created == Pipelines.created(key)
    assert local.ec2_imported == Pipelines.imported(key)
    assert len(local.ec2_created or "") == 59 and len(local.ec2_imported or "") == 47
    # devid ec2 create reports the created form for the private key it saved.
    assert ec2.devid_fingerprint(parse_private_key(key.read_bytes())) == Pipelines.created(key)


@pytest.mark.parametrize("rounds", range(3))
def test_ed25519_fingerprint_matches_ssh_keygen_padded(tmp_path: Path, rounds: int) -> None:
    key = ssh_keygen(tmp_path / "id_ed25519")
    expected = Pipelines.ed25519(key)
    assert len(expected) == 44 and expected.endswith("=")
    assert _local(key).ec2_imported == expected
    assert _local(Path(f"{key}.pub")).ec2_imported == expected
    assert _local(key).ec2_created is None  # Ed25519 shows one form, created or imported
    assert ec2.devid_fingerprint(parse_private_key(key.read_bytes())) == expected


def test_published_moto_vector(tmp_path: Path) -> None:
    assert _local(MOTO_PUBLIC_KEY).ec2_imported == MOTO_PUBLISHED_FINGERPRINT
    spki = tmp_path / "spki.pem"
    spki.write_bytes(run_tool("ssh-keygen", "-e", "-m", "PKCS8", "-f", str(MOTO_PUBLIC_KEY)).stdout)
    assert Pipelines.imported(spki, public=True) == MOTO_PUBLISHED_FINGERPRINT


@pytest.mark.parametrize(
    ("make", "method"),
    [
        pytest.param(lambda p: openssl_rsa(p), "imported", id="rsa-imported"),
        pytest.param(lambda p: openssl_rsa(p, traditional=True), "created", id="rsa-created"),
        pytest.param(lambda p: ssh_keygen(p), "ed25519", id="ed25519"),
    ],
)
def test_match_by_the_fingerprint_aws_shows(
    tmp_path: Path, make: Callable[[Path], Path], method: str
) -> None:
    key = make(tmp_path / "k")
    shown = {
        "imported": Pipelines.imported,
        "created": Pipelines.created,
        "ed25519": Pipelines.ed25519,
    }[method](key)
    expected = {
        "created": ec2.MatchMethod.CREATED_FINGERPRINT,
    }.get(method, ec2.MatchMethod.IMPORTED_FINGERPRINT)
    assert ec2.match(_pair(shown), _local(key)) is expected
    # Upper-case hex (or an unpadded SHA256: form) is the same fingerprint.
    variant = shown.upper() if ":" in shown else "SHA256:" + shown.rstrip("=")
    assert ec2.match(_pair(variant), _local(key)) is expected
    other = _local(openssl_rsa(tmp_path / "other.pem"))
    assert ec2.match(_pair(shown), other) is None


def test_match_falls_back_to_the_public_key(tmp_path: Path) -> None:
    key = openssl_rsa(tmp_path / "k.pem")
    line = public_line(key).encode()
    pair = _pair("00:11:22:33", parse_public_key(line))
    assert ec2.match(pair, _local(key)) is ec2.MatchMethod.PUBLIC_KEY
    assert ec2.match(pair, _local(openssl_rsa(tmp_path / "o.pem"))) is None


def test_match_all_lists_the_unmatched(tmp_path: Path) -> None:
    a = _local(openssl_rsa(tmp_path / "a.pem"))
    b = _local(ssh_keygen(tmp_path / "b"))
    pair = _pair(Pipelines.imported(tmp_path / "a.pem"))
    matches, unmatched = ec2.match_all([pair], [a, b])
    assert [(m.local.ref, m.method) for m in matches] == [
        (a.ref, ec2.MatchMethod.IMPORTED_FINGERPRINT)
    ]
    assert [k.ref for k in unmatched] == [b.ref]


def test_key_fingerprint_cli_shows_both_ec2_forms(
    tmp_path: Path, devid: Callable[..., Result]
) -> None:
    key = openssl_rsa(tmp_path / "k.pem", traditional=True)
    result = devid("key", "fingerprint", key, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["ec2"] == Pipelines.imported(key)
    assert data["ec2_created"] == Pipelines.created(key)


def test_key_fingerprint_reads_a_pipe_once(tmp_path: Path) -> None:
    # <(...) is a pipe that can be read once: the private key's created-key fingerprint and
    # the public ones must all come from that one read
    key = openssl_rsa(tmp_path / "k.pem", traditional=False)
    Path(key).chmod(0o600)  # for ssh-keygen -y
    command = f'{sys.executable} -m devid key fingerprint <(cat "{key}") --json'
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["ec2_created"] == Pipelines.created(key)
    assert data["ec2"] == Pipelines.imported(key)
    public = run_tool("ssh-keygen", "-y", "-f", str(key)).stdout.decode()
    command = f"{sys.executable} -m devid key fingerprint <(echo '{public.strip()}') --json"
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["openssh_sha256"] == data["openssh_sha256"]


def test_key_public_reads_an_encrypted_key_from_a_pipe_once(tmp_path: Path) -> None:
    # the public half of an encrypted private key needs the passphrase: the data read for
    # the first attempt must serve the second (a pipe cannot be read again)
    key, passphrase = tmp_path / "enc.pem", tmp_path / "pp"
    passphrase.write_text("correct horse\n")
    run_tool("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-aes256", "-pass", f"file:{passphrase}", "-out", str(key))  # fmt: skip
    devid = f"{sys.executable} -m devid key public"
    outputs = []
    for source in (f'"{key}"', f'<(cat "{key}")'):
        done = subprocess.run(
            ["bash", "-c", f'{devid} {source} --passphrase-file "{passphrase}"'],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and outputs[0].startswith("ecdsa-sha2-nistp256 ")
