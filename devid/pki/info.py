"""What ``cert show`` and ``csr show`` report: plain data, ready for JSON or text."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptography import x509

from devid.keys import describe
from devid.pki import certs
from devid.pki.names import general_name_text

_KEY_USAGE = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def oid_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return name if isinstance(name, str) and name != "Unknown OID" else oid.dotted_string


def _hex(data: bytes | None) -> str | None:
    return data.hex(":") if data is not None else None


def _key_usage(ku: x509.KeyUsage) -> list[str]:
    used = [flag for flag in _KEY_USAGE if getattr(ku, flag)]
    if ku.key_agreement:
        used += [f for f in ("encipher_only", "decipher_only") if getattr(ku, f)]
    return used


def _names(names: Iterable[x509.GeneralName] | None) -> list[str]:
    return [general_name_text(n) for n in names or ()]


def extension_value(value: x509.ExtensionType) -> Any:
    """A readable form of the common extensions; the DER hex for anything else."""
    if isinstance(value, x509.BasicConstraints):
        return {"ca": value.ca, "path_length": value.path_length}
    if isinstance(value, x509.KeyUsage):
        return _key_usage(value)
    if isinstance(value, x509.ExtendedKeyUsage):
        return [oid_name(o) for o in value]
    if isinstance(value, x509.SubjectKeyIdentifier):
        return _hex(value.digest)
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return _hex(value.key_identifier)
    if isinstance(value, x509.SubjectAlternativeName):
        return _names(value)
    if isinstance(value, x509.NameConstraints):
        return {
            "permitted": _names(value.permitted_subtrees),
            "excluded": _names(value.excluded_subtrees),
        }
    if isinstance(value, x509.CRLDistributionPoints):
        return [n for point in value for n in _names(point.full_name)]
    if isinstance(value, x509.CRLNumber):
        return value.crl_number
    return value.public_bytes().hex()


def extensions(exts: x509.Extensions) -> list[dict[str, Any]]:
    return [
        {
            "name": oid_name(e.oid),
            "oid": e.oid.dotted_string,
            "critical": e.critical,
            "value": extension_value(e.value),
        }
        for e in exts
    ]


def _key(public: object) -> dict[str, Any]:
    info = describe(public)
    return {"algorithm": info.algorithm, "bits": info.bits, "size": info.size}


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    digest = certs.sha256_hex(cert)
    try:
        ca = certs.extensions_of(cert).get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": certs.serial_hex(cert.serial_number),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": _key(cert.public_key()),
        "signature_algorithm": oid_name(cert.signature_algorithm_oid),
        "sans": _names(certs.sans_of(cert)),
        "is_ca": ca,
        "self_signed": certs.is_self_signed(cert),
        "extensions": extensions(certs.extensions_of(cert)),
        "sha256_fingerprint": certs.colon_fingerprint(digest),
        "aws_iot_certificate_id": digest,
    }


def describe_csr(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    try:
        valid = csr.is_signature_valid
    except Exception:  # unsupported signature algorithm: say so instead of failing
        valid = False
    return {
        "subject": csr.subject.rfc4514_string(),
        "key": _key(csr.public_key()),
        "signature_algorithm": oid_name(csr.signature_algorithm_oid),
        "signature_valid": valid,
        "sans": _names(certs.sans_of(csr)),
        "extensions": extensions(certs.extensions_of(csr)),
    }


def text_lines(data: dict[str, Any]) -> list[str]:
    """``name: value`` lines for people (extensions one a line)."""
    lines: list[str] = []
    for name, value in data.items():
        label = name.replace("_", " ")
        if name == "extensions":
            for ext in value:
                critical = " (critical)" if ext["critical"] else ""
                lines.append(f"{'extension':<24}{ext['name']}{critical}: {_flat(ext['value'])}")
        else:
            lines.append(f"{label:<24}{_flat(value)}")
    return lines


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "-"
    return "-" if value is None else str(value)
