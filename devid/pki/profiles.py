"""Certificate profiles: what a device, client, server or CA certificate may and must carry.

A :class:`Profile` fixes key usage, extended key usage, basic constraints, which SAN kinds are
allowed, the default validity and the weakest key accepted. A small TOML file can start from
a built-in profile and override the subject, SANs and validity::

    base = "device"
    days = 90
    subject = "CN={device_id},O=Acme,C=DE"
    san = ["dns:{device_id}.devices.example.com"]
    device_uri = "urn:acme:device:{device_id}"
    allow_ed25519 = false
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from devid.errors import BadInput, CheckFailed
from devid.fsutil import read_input
from devid.pki.names import SAN_KINDS, is_dns_name, parse_name, parse_san

# At most 64 characters: the device id is the certificate's CN by default, and X.520 bounds
# a common name to 64 (ub-common-name, RFC 5280 appendix A.1).
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
DEFAULT_DEVICE_URI = "urn:devid:{device_id}"
DEFAULT_DEVICE_DNS = "{device_id}"
_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def check_device_id(device_id: str) -> str:
    if not _DEVICE_ID.fullmatch(device_id):
        raise BadInput(
            f"bad device id {device_id!r}; use up to 64 letters, digits, '.', '_', ':' or '-'"
        )
    return device_id


@dataclass(frozen=True)
class KeyRules:
    """The weakest subject key a profile accepts."""

    min_rsa_bits: int = 2048
    min_ec_bits: int = 256
    allow_ed25519: bool = True

    def check(self, key: object, *, profile: str) -> None:
        """Raise :class:`CheckFailed` when *key* (a public key) is weaker than allowed."""
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < self.min_rsa_bits:
                raise CheckFailed(
                    f"RSA-{key.key_size} key refused by the {profile} profile: "
                    f"RSA keys need at least {self.min_rsa_bits} bits"
                )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.key_size < self.min_ec_bits:
                raise CheckFailed(
                    f"EC {key.curve.name} key refused by the {profile} profile: "
                    f"EC keys need a curve of at least {self.min_ec_bits} bits (P-256)"
                )
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if not self.allow_ed25519:
                raise CheckFailed(f"Ed25519 key refused by the {profile} profile")
        else:
            raise CheckFailed(
                f"{type(key).__name__} refused by the {profile} profile; use RSA, EC or Ed25519"
            )


@dataclass(frozen=True)
class Profile:
    """What certificates of one kind carry; built-ins are in :data:`PROFILES`."""

    name: str
    key_usage: frozenset[str]
    extended_key_usage: tuple[x509.ObjectIdentifier, ...] = ()
    rsa_key_usage: frozenset[str] = frozenset()  # added for RSA subject keys
    ca: bool = False
    days: int = 365
    keys: KeyRules = field(default_factory=KeyRules)
    san_kinds: frozenset[str] = frozenset(SAN_KINDS)
    san_required: bool = False
    device_sans: bool = False
    device_uri: str = DEFAULT_DEVICE_URI
    device_dns: str = DEFAULT_DEVICE_DNS
    subject: str | None = None  # RFC 4514 template overriding the CSR's subject
    sans: tuple[str, ...] = ()  # SAN templates added to the CSR's
    crl_distribution: bool = True

    def key_usage_extension(self, key: object) -> x509.KeyUsage:
        flags = set(self.key_usage)
        if isinstance(key, rsa.RSAPublicKey):
            flags |= self.rsa_key_usage
        values = {name: name in flags for name in _KEY_USAGE_FLAGS}
        return x509.KeyUsage(**values, encipher_only=False, decipher_only=False)

    def subject_for(self, device_id: str | None) -> x509.Name | None:
        if self.subject is None:
            return None
        return parse_name(_fill(self.subject, device_id, "subject"))

    def extra_sans(self, device_id: str | None) -> list[x509.GeneralName]:
        """The profile's own SANs, and the device id ones for device profiles."""
        out = [parse_san(_fill(t, device_id, "san")) for t in self.sans]
        if self.device_sans and device_id is not None:
            out.append(parse_san("uri:" + _fill(self.device_uri, device_id, "device_uri")))
            dns = _fill(self.device_dns, device_id, "device_dns") if self.device_dns else ""
            if dns and is_dns_name(dns):
                out.append(x509.DNSName(dns))
            elif dns and self.device_dns != DEFAULT_DEVICE_DNS:
                raise BadInput(f"device_dns gives {dns!r}, which is not a DNS name")
        return out


def _fill(template: str, device_id: str | None, what: str) -> str:
    if "{device_id}" in template and device_id is None:
        raise BadInput(f"the profile's {what} needs a device id; give --device-id")
    return template.replace("{device_id}", device_id or "")


_SIGNING = frozenset({"digital_signature"})
_CA_USAGE = frozenset({"digital_signature", "key_cert_sign", "crl_sign"})
_ENCIPHER = frozenset({"key_encipherment"})

PROFILES: Mapping[str, Profile] = {
    "device": Profile(
        "device",
        _SIGNING,
        (ExtendedKeyUsageOID.CLIENT_AUTH,),
        _ENCIPHER,
        san_kinds=frozenset({"uri", "dns"}),
        device_sans=True,
    ),
    "client": Profile("client", _SIGNING, (ExtendedKeyUsageOID.CLIENT_AUTH,), _ENCIPHER),
    "server": Profile(
        "server",
        _SIGNING,
        (ExtendedKeyUsageOID.SERVER_AUTH,),
        _ENCIPHER,
        days=397,
        san_kinds=frozenset({"dns", "ip"}),
        san_required=True,
    ),
    "intermediate": Profile("intermediate", _CA_USAGE, ca=True, days=5 * 365),
    "root": Profile("root", _CA_USAGE, ca=True, days=10 * 365, crl_distribution=False),
}

_TOML_KEYS = {"base", "days", "subject", "san", "device_uri", "device_dns", "allow_ed25519"}


def get_profile(name: str) -> Profile:
    """A built-in profile by name, or a TOML profile file when *name* ends in ``.toml``."""
    if name.endswith(".toml") or "/" in name:
        return load_profile_file(Path(name))
    try:
        return PROFILES[name]
    except KeyError:
        choices = ", ".join(PROFILES)
        raise BadInput(f"unknown profile {name!r}; choose {choices} or a .toml file") from None


def load_profile_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(read_input(path, what="profile file").decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"malformed profile file {path}: {exc}") from exc
    return profile_from_mapping(data, where=str(path))


def profile_from_mapping(data: Mapping[str, Any], *, where: str = "profile") -> Profile:
    unknown = sorted(set(data) - _TOML_KEYS)
    if unknown:
        raise BadInput(f"{where}: unknown setting(s) {', '.join(unknown)}")
    base = get_profile(_typed(data, "base", str, where) or "device")
    changes: dict[str, Any] = {"name": f"{base.name}+{Path(where).stem}"}
    days = _typed(data, "days", int, where)
    if days is not None:
        if days < 1:
            raise BadInput(f"{where}: days must be at least 1")
        changes["days"] = days
    for key in ("subject", "device_uri", "device_dns"):
        value = _typed(data, key, str, where)
        if value is not None:
            changes[key] = value
    sans = _typed(data, "san", list, where)
    if sans is not None:
        if not all(isinstance(s, str) for s in sans):
            raise BadInput(f"{where}: san must be a list of strings")
        changes["sans"] = tuple(sans)
    allow = _typed(data, "allow_ed25519", bool, where)
    if allow is not None:
        changes["keys"] = dataclasses.replace(base.keys, allow_ed25519=allow)
    profile = dataclasses.replace(base, **changes)
    _check_templates(profile, where)
    return profile


def _typed(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadInput(f"{where}: {key} must be a {kind.__name__}")
    return value


def _check_templates(profile: Profile, where: str) -> None:
    """Fail at load time, not at issue time, on a malformed subject or SAN template."""
    try:
        profile.subject_for("example-device")
        profile.extra_sans("example-device")
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from exc
