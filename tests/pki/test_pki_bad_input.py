"""Bad input: one error line, the right exit code, nothing recorded, nothing written."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from pki_support import flip_signature_byte, foreign_csr, inventory_counts, ok_json, one_error_line

from devid.pki.ca import CaRequest, init_ca
from devid.store import open_store


@pytest.fixture
def issuing(devid: Callable[..., Any], pki_home: Path, key_file: Callable[[str], Path]) -> str:
    ok_json(devid, "ca", "init", "issuing", "--key", str(key_file("ec-p256")))
    return "issuing"


def _refused(devid: Callable[..., Any], pki_home: Path, out: Path, code: int, *args: str) -> str:
    before = inventory_counts(pki_home)
    result = devid(*args)
    assert result.code == code, (result.out, result.err)
    assert result.out == ""
    assert not out.exists()
    assert list(out.parent.glob(f".{out.name}*")) == []  # no temporary file left behind
    assert inventory_counts(pki_home) == before
    return one_error_line(result)


def _issue_args(csr: Path, out: Path, *extra: str) -> list[str]:
    return ["cert", "issue", "--ca", "issuing", "--csr", str(csr), "--out", str(out), *extra]


def test_csr_with_a_bad_signature(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, issuing: str
) -> None:
    csr = tmp_path / "bad-sig.csr"
    good = foreign_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    csr.write_bytes(flip_signature_byte(good))
    out = tmp_path / "out.pem"
    line = _refused(devid, pki_home, out, 2, *_issue_args(csr, out))
    assert "signature" in line
    shown = devid("csr", "show", str(csr), "--json")
    assert shown.code == 1 and '"signature_valid": false' in shown.out


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), id="rsa-1024"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP224R1()), id="ec-p224"),
    ],
)  # fmt: skip
def test_csr_for_a_weak_key(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    issuing: str,
    make_key: Callable[[], Any],
) -> None:
    csr = tmp_path / "weak.csr"
    csr.write_bytes(foreign_csr(make_key()))
    out = tmp_path / "out.pem"
    line = _refused(devid, pki_home, out, 1, *_issue_args(csr, out))
    assert "refused by the device profile" in line


def test_unknown_ca(devid: Callable[..., Any], pki_home: Path, tmp_path: Path) -> None:
    csr = tmp_path / "d.csr"
    csr.write_bytes(foreign_csr(ec.generate_private_key(ec.SECP256R1())))
    out = tmp_path / "out.pem"
    args = ["cert", "issue", "--ca", "nope", "--csr", str(csr), "--out", str(out)]
    line = _refused(devid, pki_home, out, 1, *args)
    assert "unknown CA 'nope'" in line
    assert devid("ca", "show", "nope").code == 1
    crl = tmp_path / "x.crl"
    _refused(devid, pki_home, crl, 1, "crl", "generate", "--ca", "nope", "--out", str(crl))


def test_expired_ca(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, key_file: Callable[[str], Path]
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    request = CaRequest(name="issuing", key_ref=str(key_file("ec-p256")), days=365)
    init_ca(request, store=open_store(), now=past)
    csr = tmp_path / "d.csr"
    csr.write_bytes(foreign_csr(ec.generate_private_key(ec.SECP256R1())))
    out = tmp_path / "out.pem"
    line = _refused(devid, pki_home, out, 1, *_issue_args(csr, out))
    assert "CA 'issuing' expired on" in line
    crl = tmp_path / "x.crl"
    args = ["crl", "generate", "--ca", "issuing", "--out", str(crl)]
    assert "expired" in _refused(devid, pki_home, crl, 1, *args)
    child = devid("ca", "init", "child", "--parent", "issuing", "--key", str(key_file("ec-p256")))
    assert child.code == 1 and "expired" in one_error_line(child)
    assert not (pki_home / "cas" / "child").exists()


@pytest.mark.parametrize(
    ("option", "value", "phrase"),
    [
        ("--subject", "CN=dev1,,O=Acme", "malformed subject"),
        ("--subject", "just text", "malformed subject"),
        ("--subject", "CN=dev1,C=Germany", "malformed subject"),
        ("--subject", "", "empty subject"),
        ("--san", "dns:bad name.example.com", "malformed DNS name"),
        ("--san", "ip:999.1.1.1", "malformed IP address"),
        ("--san", "uri:no-scheme", "malformed URI"),
        ("--san", "email:nobody", "malformed email"),
        ("--san", "x400:whatever", "malformed SAN"),
        ("--san", "dns:", "malformed SAN"),
    ],
)
def test_malformed_dn_or_san(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    option: str,
    value: str,
    phrase: str,
) -> None:
    out = tmp_path / "d.csr"
    args = ["--subject", "CN=dev1"] if option == "--san" else []
    cmd = [
        "csr",
        "create",
        "--key",
        str(key_file("ec-p256")),
        *args,
        option,
        value,
        "--out",
        str(out),
    ]
    assert phrase in _refused(devid, pki_home, out, 2, *cmd)


@pytest.mark.parametrize(
    "args",
    [
        ["--subject", "CN=x,,"],
        ["--name-constraint", "allow:dns:example.com"],
        ["--name-constraint", "permit:ip:10.0.0.0/33"],
        ["--name-constraint", "permit:dns:"],
        ["--crl-url", "not a url"],
        ["--days", "0"],
    ],
)
def test_malformed_ca_options(
    devid: Callable[..., Any],
    pki_home: Path,
    key_file: Callable[[str], Path],
    args: list[str],
) -> None:
    before = inventory_counts(pki_home)
    result = devid("ca", "init", "bad", "--key", str(key_file("ec-p256")), *args)
    assert result.code == 2, result.err
    one_error_line(result)
    assert not (pki_home / "cas" / "bad").exists()
    assert inventory_counts(pki_home) == before


def test_output_path_exists(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, issuing: str
) -> None:
    csr = tmp_path / "d.csr"
    csr.write_bytes(foreign_csr(ec.generate_private_key(ec.SECP256R1())))
    out = tmp_path / "taken.pem"
    out.write_text("keep me\n")
    before = inventory_counts(pki_home)
    result = devid(*_issue_args(csr, out))
    assert result.code == 4
    assert "exists" in one_error_line(result)
    assert out.read_text() == "keep me\n"
    assert inventory_counts(pki_home) == before
    assert list(tmp_path.glob(".taken.pem*")) == []
    # The same for CSRs and CRLs.
    csr_again = devid("csr", "create", "--key", str(out), "--subject", "CN=x", "--out", str(csr))
    assert csr_again.code == 4
    crl = devid("crl", "generate", "--ca", "issuing", "--out", str(out))
    assert crl.code == 4 and out.read_text() == "keep me\n"
    assert inventory_counts(pki_home) == before


def test_other_bad_inputs(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, issuing: str
) -> None:
    garbage = tmp_path / "garbage.csr"
    garbage.write_text(
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    out = tmp_path / "out.pem"
    assert "malformed CSR" in _refused(devid, pki_home, out, 2, *_issue_args(garbage, out))
    csr = tmp_path / "d.csr"
    csr.write_bytes(foreign_csr(ec.generate_private_key(ec.SECP256R1()), cn="no spaces allowed"))
    assert "is not a device id; give --device-id" in _refused(
        devid, pki_home, out, 2, *_issue_args(csr, out)
    )
    profile = tmp_path / "p.toml"
    profile.write_text('base = "device"\ncolour = "blue"\n')
    line = _refused(devid, pki_home, out, 2, *_issue_args(csr, out, "--profile", str(profile)))
    assert "unknown setting(s) colour" in line
    line = _refused(devid, pki_home, out, 2, *_issue_args(csr, out, "--profile", "nonsense"))
    assert "unknown profile" in line
    # A server certificate needs a SAN; a device one refuses an email SAN.
    line = _refused(devid, pki_home, out, 2, *_issue_args(csr, out, "--profile", "server"))
    assert "needs a SAN" in line
    unknown_serial = devid("cert", "revoke", "abcdef", "--ca", "issuing")
    assert unknown_serial.code == 1 and "no certificate with serial" in unknown_serial.err
    not_serial = devid("cert", "revoke", "not-a-file-nor-hex", "--ca", "issuing")
    assert not_serial.code == 2
    bad_reason = devid("cert", "revoke", "abcdef", "--ca", "issuing", "--reason", "boredom")
    assert bad_reason.code == 2 and "unknown revocation reason" in bad_reason.err
    assert devid("cert", "list", "--expiring-within", "soon").code == 2


def test_existing_ca_name_is_a_conflict(
    devid: Callable[..., Any], pki_home: Path, key_file: Callable[[str], Path], issuing: str
) -> None:
    before = inventory_counts(pki_home)
    result = devid("ca", "init", "issuing", "--key", str(key_file("ec-p256")))
    assert result.code == 4 and "exists" in one_error_line(result)
    assert inventory_counts(pki_home) == before
    weak = devid(
        "ca",
        "init",
        "weak",
        "--key",
        str(key_file("rsa-2048")),
        "--name-constraint",
        "permit:dns:x.y",
    )
    assert weak.code == 0  # RSA-2048 is the minimum, not below it


def _duplicate_extension_csr() -> bytes:
    """A correctly signed CSR asking for the SAN extension twice (RFC 5280 4.2 forbids it)."""
    key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "dupdev")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dupdev")]), False)
        .add_extension(x509.KeyUsage(True, *[False] * 8), True)
        .sign(key, None)
    )
    der, tbs = csr.public_bytes(serialization.Encoding.DER), csr.tbs_certrequest_bytes
    key_usage_oid, san_oid = bytes.fromhex("0603551d0f"), bytes.fromhex("0603551d11")
    relabelled = tbs.replace(key_usage_oid, san_oid)  # same length: the DER stays well formed
    return der.replace(tbs, relabelled)[: -len(csr.signature)] + key.sign(relabelled)


def test_csr_with_a_duplicated_extension(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, issuing: str
) -> None:
    csr = tmp_path / "dup.csr"
    csr.write_bytes(_duplicate_extension_csr())
    assert x509.load_der_x509_csr(csr.read_bytes()).is_signature_valid
    out = tmp_path / "out.pem"
    line = _refused(devid, pki_home, out, 2, *_issue_args(csr, out))
    assert "malformed extensions" in line
    shown = devid("csr", "show", str(csr))
    assert shown.code == 2 and "malformed extensions" in one_error_line(shown)


@pytest.mark.parametrize(
    "make_key, algorithm, name",
    [
        pytest.param(ed448.Ed448PrivateKey.generate, None, "ed448", id="ed448"),
        pytest.param(lambda: dsa.generate_private_key(2048), hashes.SHA256(), "dsa", id="dsa"),
    ],
)  # fmt: skip
def test_certificates_and_csrs_of_other_key_types_are_shown_and_refused(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    issuing: str,
    make_key: Callable[[], Any],
    algorithm: Any,
    name: str,
) -> None:
    # devid makes no Ed448 or DSA keys, but it must show them and refuse to certify them
    key = make_key()
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "other")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1234567)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, algorithm)
    )  # fmt: skip
    (tmp_path / "o.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "o.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for args in (("csr", "show", tmp_path / "o.csr"), ("cert", "show", tmp_path / "o.pem")):
        shown = devid(*args, "--json")
        assert shown.code == 0, shown.err
        assert json.loads(shown.out)["key"]["algorithm"] == name
    out = tmp_path / "out.pem"
    line = _refused(devid, pki_home, out, 1, *_issue_args(tmp_path / "o.csr", out,
                                                         "--device-id", "other"))  # fmt: skip
    assert "refused by the device profile" in line


@pytest.mark.parametrize("missing", ["config.toml", "key.ref", "chain.pem"])
def test_an_incomplete_ca_folder_is_named_and_the_others_still_listed(
    devid: Callable[..., Any],
    pki_home: Path,
    key_file: Callable[[str], Path],
    tmp_path: Path,
    issuing: str,
    missing: str,
) -> None:
    ok_json(devid, "ca", "init", "broken", "--key", str(key_file("ec-p256")))
    (pki_home / "cas" / "broken" / missing).unlink()
    listed = devid("ca", "list", "--json")
    assert listed.code == 3
    assert f"cannot read {missing}" in one_error_line(listed)
    rows = {row["name"]: row for row in json.loads(listed.out)}
    assert "not_after" in rows["issuing"] and missing in rows["broken"]["error"]
    crl = tmp_path / "broken.crl"
    for args in (("ca", "show", "broken"), ("crl", "generate", "--ca", "broken", "--out", crl)):
        result = devid(*args)
        assert result.code == 3, result.err
        assert "CA folder" in one_error_line(result) and missing in result.err
    assert not crl.exists()


def test_an_empty_expiring_within_is_bad_input(devid: Callable[..., Any], issuing: str) -> None:
    result = devid("cert", "list", "--expiring-within", "")
    assert result.code == 2 and "bad duration" in one_error_line(result)


def test_a_crl_that_cannot_be_written_uses_no_crl_number(
    devid: Callable[..., Any], pki_home: Path, tmp_path: Path, issuing: str
) -> None:
    first = ok_json(devid, "crl", "generate", "--ca", "issuing", "--out", str(tmp_path / "1.crl"))
    before = inventory_counts(pki_home)
    failed = devid("crl", "generate", "--ca", "issuing", "--out", tmp_path / "no" / "2.crl")
    assert failed.code == 2 and "no such folder" in one_error_line(failed)
    assert inventory_counts(pki_home) == before
    second = ok_json(devid, "crl", "generate", "--ca", "issuing", "--out", str(tmp_path / "2.crl"))
    assert second["number"] == first["number"] + 1
