"""A CA's name constraints hold for what it issues: devid refuses what openssl would reject.

Each case makes a root and, under it, a constrained issuing CA, then asks for certificates
whose SANs are inside or outside the constraints. What devid issues, `openssl verify`
accepts; what it refuses comes back as one bad-input line with nothing written or recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_tool
from cryptography import x509
from cryptography.x509.oid import NameOID
from pki_support import inventory_counts, ok_json, one_error_line


@pytest.fixture
def make_ca(
    devid: Callable[..., Any], pki_home: Path, key_file: Callable[[str], Path]
) -> Callable[..., Path]:
    ok_json(devid, "ca", "init", "root", "--key", str(key_file("ec-p256")))

    def make(name: str, *constraints: str) -> Path:
        args = [f"--name-constraint={c}" for c in constraints]
        ok_json(devid, "ca", "init", name, "--parent", "root", "--key",
                str(key_file("ec-p256")), "--path-len", "0", *args)  # fmt: skip
        return pki_home / "cas" / name / "ca.pem"

    return make


def _csr(devid: Callable[..., Any], key: Path, tmp_path: Path, cn: str, *sans: str) -> Path:
    csr = tmp_path / f"{cn}.csr"
    san_args = [f"--san={s}" for s in sans]
    ok_json(devid, "csr", "create", "--key", str(key), "--subject", f"CN={cn}",
            *san_args, "--out", str(csr))  # fmt: skip
    return csr


def _issue(devid: Callable[..., Any], ca: str, csr: Path, out: Path, *extra: str) -> Any:
    return devid("cert", "issue", "--ca", ca, "--csr", csr, "--out", out, *extra)


def _openssl_accepts(pki_home: Path, ca_pem: Path, leaf: Path, purpose: str) -> None:
    root = pki_home / "cas" / "root" / "ca.pem"
    run_tool("openssl", "verify", "-CAfile", str(root), "-untrusted", str(ca_pem),
             "-purpose", purpose, str(leaf))  # fmt: skip


def _refused(result: Any, pki_home: Path, out: Path, before: Any, *fragments: str) -> None:
    assert result.code == 2, (result.out, result.err)
    line = one_error_line(result)
    for fragment in fragments:
        assert fragment in line
    assert not out.exists()
    assert inventory_counts(pki_home) == before


def test_a_leading_dot_dns_constraint_is_refused_with_the_right_form(
    devid: Callable[..., Any], pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    result = devid("ca", "init", "dotted", "--key", key_file("ec-p256"),
                   "--name-constraint", "permit:dns:.devices.example.com")  # fmt: skip
    assert result.code == 2
    assert "write dns:devices.example.com" in one_error_line(result)


def test_device_sans_outside_a_dns_constraint(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    make_ca: Callable[..., Path],
) -> None:
    fleet = make_ca("fleet", "permit:dns:devices.example.com")
    csr = _csr(devid, key_file("ec-p256"), tmp_path, "dev-1")
    before = inventory_counts(pki_home)
    out = tmp_path / "dev-1.pem"
    _refused(_issue(devid, "fleet", csr, out), pki_home, out, before,
             "the SAN dns:dev-1 is not in the permitted subtrees dns:devices.example.com",
             "device_dns")  # fmt: skip
    # a profile file putting the device's DNS name inside the constraint
    profile = tmp_path / "fleet-device.toml"
    profile.write_text('base = "device"\ndevice_dns = "{device_id}.devices.example.com"\n')
    issued = _issue(devid, "fleet", csr, out, "--profile", str(profile), "--json")
    assert issued.code == 0, issued.err
    _openssl_accepts(pki_home, fleet, out, "sslclient")
    verified = devid("cert", "verify", out, "--ca-bundle", pki_home / "cas" / "root" / "ca.pem",
                     "--untrusted", fleet, "--purpose", "client")  # fmt: skip
    assert verified.code == 0, verified.out + verified.err


def test_a_urn_under_a_uri_constraint(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    make_ca: Callable[..., Path],
) -> None:
    # RFC 5280 4.2.1.10: a URI constraint applies to the host, and a URI without one fails
    make_ca("web", "permit:uri:.devices.example.com")
    csr = _csr(devid, key_file("ec-p256"), tmp_path, "dev-2")
    before = inventory_counts(pki_home)
    out = tmp_path / "dev-2.pem"
    _refused(_issue(devid, "web", csr, out), pki_home, out, before,
             "uri:urn:devid:dev-2 is a URI without a host")  # fmt: skip


@pytest.mark.parametrize(
    ("constraint", "san", "profile", "inside", "purpose"),
    [
        ("exclude:ip:10.0.0.0/8", "ip:10.1.2.3", "server", False, "sslserver"),
        ("exclude:ip:10.0.0.0/8", "ip:192.0.2.7", "server", True, "sslserver"),
        ("permit:dns:example.com", "dns:www.example.com", "server", True, "sslserver"),
        ("permit:dns:example.com", "dns:example.org", "server", False, "sslserver"),
        ("exclude:dns:internal.example.com", "dns:a.internal.example.com", "server", False,
         "sslserver"),
        ("permit:email:example.com", "email:alice@example.com", "client", True, "sslclient"),
        ("permit:email:example.com", "email:bob@example.org", "client", False, "sslclient"),
        ("permit:uri:.example.com", "uri:https://api.example.com/x", "client", True,
         "sslclient"),
    ],
)  # fmt: skip
def test_sans_against_constraints_agree_with_openssl(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    make_ca: Callable[..., Path],
    constraint: str,
    san: str,
    profile: str,
    inside: bool,
    purpose: str,
) -> None:
    ca_pem = make_ca("constrained", constraint)
    csr = _csr(devid, key_file("ec-p256"), tmp_path, "leaf", san)
    out = tmp_path / "leaf.pem"
    before = inventory_counts(pki_home)
    result = _issue(devid, "constrained", csr, out, "--profile", profile)
    if inside:
        assert result.code == 0, result.err
        _openssl_accepts(pki_home, ca_pem, out, purpose)
        return
    _refused(result, pki_home, out, before, f"the SAN {san} is")
    # openssl agrees: the same certificate signed by that CA's key without devid's check
    _sign_bypassing_devid("constrained", csr, out, profile)
    done = run_tool("openssl", "verify", "-CAfile", str(pki_home / "cas" / "root" / "ca.pem"),
                    "-untrusted", str(ca_pem), "-purpose", purpose, str(out),
                    check=False)  # fmt: skip
    assert done.returncode != 0
    assert "subtree violation" in (done.stdout + done.stderr).decode()


def _sign_bypassing_devid(ca_name: str, csr_path: Path, out: Path, profile: str) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from devid.pki.build import CertificateSpec, sign_certificate
    from devid.pki.ca import load_ca
    from devid.pki.certs import sans_of
    from devid.pki.profiles import PROFILES

    ca = load_ca(ca_name)
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    spec = CertificateSpec(
        subject=csr.subject,
        public_key=csr.public_key(),  # type: ignore[arg-type]
        profile=PROFILES[profile],
        serial=x509.random_serial_number(),
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
        sans=tuple(sans_of(csr)),
    )
    cert = sign_certificate(spec, issuer=ca.certificate, key=ca.signing_key())
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _chain_with_constraints(tmp_path: Path, leaf_subject: x509.Name, sans: list[Any]) -> Path:
    """root -> intermediate (permit email example.com, dns example.com) -> leaf, signed with
    cryptography directly (devid would refuse to issue the bad ones); returns the folder."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = dt.datetime.now(dt.UTC)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    names = [x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n)]) for n in ("R", "I")]
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("example.com"), x509.DNSName("example.com")],
        excluded_subtrees=None,
    )

    def make(subject: x509.Name, issuer: x509.Name, key: Any, signer: Any, ca: bool,
             extra: list[Any]) -> x509.Certificate:  # fmt: skip
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )  # fmt: skip
        if ca:
            usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        if signer is not key:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
            builder = builder.add_extension(aki, critical=False)
        for value, critical in extra:
            builder = builder.add_extension(value, critical)
        return builder.sign(signer, hashes.SHA256())

    root = make(names[0], names[0], keys[0], keys[0], True, [])
    inter = make(names[1], names[0], keys[1], keys[0], True, [(constraints, True)])
    leaf_ext = [(x509.SubjectAlternativeName(sans), False)] if sans else []
    leaf = make(leaf_subject, names[1], keys[2], keys[1], False, leaf_ext)
    for name, cert in (("root", root), ("inter", inter), ("leaf", leaf)):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return tmp_path


@pytest.mark.parametrize(
    ("cn", "email", "sans", "ok"),
    [
        ("evil.org", "a@evil.com", [], False),  # no SAN: the email and the CN count
        ("ok.example.com", "a@example.com", [], True),
        ("evil.org", None, [], False),
        ("device-1", "a@example.com", [], True),  # a CN that is no host name is not checked
        ("evil.org", "a@evil.com", ["dns:ok.example.com"], False),  # emailAddress always
        ("evil.org", None, ["dns:ok.example.com"], True),  # with a SAN the CN is not checked
    ],
)  # fmt: skip
def test_verify_applies_name_constraints_to_the_subject_like_openssl(
    devid: Callable[..., Any], tmp_path: Path, cn: str, email: str | None, sans: list[str],
    ok: bool,
) -> None:  # fmt: skip
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    general = [x509.DNSName(s.removeprefix("dns:")) for s in sans]
    folder = _chain_with_constraints(tmp_path, x509.Name(attrs), general)
    result = devid("cert", "verify", folder / "leaf.pem", "--ca-bundle", folder / "root.pem",
                   "--untrusted", folder / "inter.pem", "--json")  # fmt: skip
    assert result.code == (0 if ok else 1), result.out + result.err
    if not ok:
        assert "name constraints" in result.out + result.err
    done = run_tool("openssl", "verify", "-CAfile", str(folder / "root.pem"), "-untrusted",
                    str(folder / "inter.pem"), str(folder / "leaf.pem"), check=False)  # fmt: skip
    assert (done.returncode == 0) is ok, done.stdout + done.stderr


def test_verify_at_a_time_outside_the_calendar_is_bad_input(
    devid: Callable[..., Any], tmp_path: Path
) -> None:
    folder = _chain_with_constraints(tmp_path, x509.Name([]), [x509.DNSName("a.example.com")])
    for at in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        result = devid("cert", "verify", folder / "leaf.pem", "--ca-bundle", folder / "root.pem",
                       "--untrusted", folder / "inter.pem", "--at", at)  # fmt: skip
        assert result.code == 2 and "outside the years" in one_error_line(result)


def test_issuing_checks_the_subject_email_too(
    devid: Callable[..., Any],
    pki_home: Path,
    tmp_path: Path,
    key_file: Callable[[str], Path],
    make_ca: Callable[..., Path],
) -> None:
    make_ca("mail", "permit:email:example.com")
    csr = tmp_path / "m.csr"
    ok_json(devid, "csr", "create", "--key", str(key_file("ec-p256")), "--subject",
            "CN=m,emailAddress=a@evil.com", "--out", str(csr))  # fmt: skip
    out = tmp_path / "m.pem"
    before = inventory_counts(pki_home)
    _refused(_issue(devid, "mail", csr, out, "--profile", "client"), pki_home, out, before,
             "the subject's email:a@evil.com is not in the permitted subtrees")  # fmt: skip
