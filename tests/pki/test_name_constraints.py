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
