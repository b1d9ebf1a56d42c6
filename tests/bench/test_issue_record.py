"""The batch path's inventory rows equal what ``certs.certificate_record`` makes.

``issue_many`` builds each row from the certificate and the spec it was signed from (the
SANs are not parsed back out of the new certificate: bench/RESULTS.md says why). These
tests issue certificates with SANs of every kind, with none, and with an empty subject, and
compare every field with the row ``certs.certificate_record`` derives from the certificate.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_tool
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from devid.pki import certs
from devid.pki.ca import CaRequest, init_ca
from devid.pki.issue import IssueRequest, issue_many
from devid.pki.names import general_name_text
from devid.pki.profiles import PROFILES
from devid.store import open_store

CN = x509.NameOID.COMMON_NAME


def _csr(subject: x509.Name, sans: list[x509.GeneralName]) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), len(subject) == 0)
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


CASES = {
    "device, CN only": IssueRequest(
        csr=_csr(_name((CN, "sensor-1")), []), profile=PROFILES["device"]
    ),
    "device, CSR SANs and an explicit id": IssueRequest(
        csr=_csr(
            _name((CN, "x"), (x509.NameOID.ORGANIZATION_NAME, "Acme, Inc.")),
            [x509.DNSName("a.example.com"), x509.UniformResourceIdentifier("urn:x:1")],
        ),
        profile=PROFILES["device"],
        device_id="sensor-2",
        key_ref="/keys/sensor-2.pem",
        path="/out/sensor-2.pem",
        replaces="0abc",
    ),
    "server, DNS and IP SANs": IssueRequest(
        csr=_csr(
            _name((CN, "web")),
            [
                x509.DNSName("web.example.com"),
                x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
            ],
        ),
        profile=PROFILES["server"],
    ),
    "client, no SAN": IssueRequest(csr=_csr(_name((CN, "alice")), []), profile=PROFILES["client"]),
    "client, empty subject": IssueRequest(
        csr=_csr(x509.Name([]), [x509.RFC822Name("bob@example.com")]), profile=PROFILES["client"]
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_rows_equal_certificate_record(
    case: str, pki_home: Path, key_file: Callable[[str], Path]
) -> None:
    store = open_store()
    try:
        init_ca(CaRequest("root", str(key_file("ec-p256"))), store=store)
        ca = init_ca(CaRequest("issuing", str(key_file("ec-p256")), parent="root"), store=store)
        request = CASES[case]
        [item] = issue_many(ca, [request], store=store)
        stored = store.get_certificate(item.record.serial)
    finally:
        store.close()
    expected = certs.certificate_record(
        item.certificate,
        ca="issuing",
        profile=request.profile.name,
        key_ref=str(Path(request.key_ref).resolve()) if request.key_ref else None,
        device_id=item.record.device_id,
        path=request.path,
        replaces=request.replaces,
    )
    assert dataclasses.replace(item.record, issued_at=expected.issued_at) == expected
    assert stored is not None
    assert dataclasses.replace(stored, issued_at=expected.issued_at) == expected
    assert list(item.record.sans) == [general_name_text(n) for n in certs.sans_of(item.certificate)]
    # the PEM and fingerprints made from the DER are cryptography's and openssl's
    assert item.record.pem == certs.pem(item.certificate).decode()
    openssl = run_tool(
        "openssl", "x509", "-noout", "-fingerprint", "-sha256", input=item.record.pem.encode()
    )
    assert openssl.stdout.decode().strip() == f"sha256 Fingerprint={item.record.fingerprint}"
    assert item.record.aws_iot_id == item.record.fingerprint.replace(":", "").lower()
