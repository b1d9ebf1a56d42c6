"""Distinguished names (RFC 4514 text) and subject alternative names (``dns:``, ``uri:`` ...).

``--subject "CN=dev1,O=Acme,C=DE"`` and ``--san dns:dev1.example.com --san uri:urn:dev:1
--san ip:10.0.0.1 --san email:ops@example.com``; name constraints add ``permit:``/``exclude:``
in front (``permit:dns:example.com``, ``exclude:ip:10.0.0.0/8``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from devid.errors import BadInput

SAN_KINDS = ("dns", "uri", "ip", "email")
_DNS = re.compile(
    r"(\*\.)?([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*",
    re.IGNORECASE,
)
_URI = re.compile(r"[a-z][a-z0-9+.-]*:\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


#: RFC 4514 attribute names cryptography does not know by itself (it reads CN, L, ST, O,
#: OU, C, STREET, DC, UID and dotted OIDs); AWS IoT JITP templates use serialNumber
EXTRA_ATTRIBUTE_NAMES = {
    "serialNumber": x509.NameOID.SERIAL_NUMBER,
    "dnQualifier": x509.NameOID.DN_QUALIFIER,
    "title": x509.NameOID.TITLE,
    "GN": x509.NameOID.GIVEN_NAME,
    "givenName": x509.NameOID.GIVEN_NAME,
    "SN": x509.NameOID.SURNAME,
    "emailAddress": x509.NameOID.EMAIL_ADDRESS,
}
_ATTRIBUTE_NAMES = {  # RFC 4514 names are case-insensitive
    variant: oid
    for name, oid in EXTRA_ATTRIBUTE_NAMES.items()
    for variant in (name, name.upper(), name.lower())
}


def parse_name(text: str) -> x509.Name:
    """An RFC 4514 string (``CN=dev1,O=Acme,C=DE``, ``serialNumber=0042``) as an X.509 name."""
    if not text.strip():
        raise BadInput("empty subject; give a name like 'CN=device-1,O=Acme'")
    try:
        return x509.Name.from_rfc4514_string(text, _ATTRIBUTE_NAMES)
    except ValueError as exc:  # also C= values that are not two letters
        why = str(exc) or "not RFC 4514 (NAME=value pairs separated by commas)"
        raise BadInput(f"malformed subject {text!r}: {why}") from exc


def is_dns_name(text: str) -> bool:
    return len(text) <= 253 and _DNS.fullmatch(text) is not None


def _general_name(kind: str, value: str, *, network: bool) -> x509.GeneralName:
    # cryptography takes only A-labels (ValueError otherwise); IDNs must come as xn--...
    if not value.isascii():
        raise BadInput(
            f"malformed {kind} value {value!r}: only ASCII; write an international domain "
            "name in its xn-- form"
        )
    if kind == "dns":
        if network and value.startswith("."):
            # RFC 5280 4.2.1.10: a DNS constraint covers the name and every name under it;
            # the leading-dot form is for URI and email constraints only
            raise BadInput(
                f"DNS name constraint {value!r} has a leading dot; write "
                f"dns:{value.lstrip('.')} (it covers that domain and every name under it)"
            )
        if not is_dns_name(value):
            raise BadInput(f"malformed DNS name {value!r}")
        return x509.DNSName(value)
    # In name constraints (RFC 5280 4.2.1.10) URI and email subtrees name hosts or domains.
    domain = network and is_dns_name(value.lstrip("."))
    if kind == "uri":
        if not domain and (network or not _URI.fullmatch(value)):
            what = "host or .domain" if network else "URI; it needs a scheme, e.g. urn:dev:1"
            raise BadInput(f"malformed {what} {value!r}")
        return x509.UniformResourceIdentifier(value)
    if kind == "email":
        if not domain and not _EMAIL.fullmatch(value):
            raise BadInput(f"malformed email address {value!r}")
        return x509.RFC822Name(value)
    try:
        ip = ipaddress.ip_network(value) if network else ipaddress.ip_address(value)
    except ValueError as exc:
        raise BadInput(f"malformed IP {'network' if network else 'address'} {value!r}") from exc
    return x509.IPAddress(ip)


def parse_san(text: str) -> x509.GeneralName:
    """``dns:NAME``, ``uri:URI``, ``ip:ADDRESS`` or ``email:ADDRESS``."""
    kind, sep, value = text.partition(":")
    if not sep or kind.lower() not in SAN_KINDS or not value:
        raise BadInput(f"malformed SAN {text!r}; use dns:, uri:, ip: or email: before the value")
    return _general_name(kind.lower(), value, network=False)


def parse_sans(texts: Iterable[str]) -> list[x509.GeneralName]:
    return unique_names(parse_san(t) for t in texts)


def unique_names(names: Iterable[x509.GeneralName]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        if name not in out:
            out.append(name)
    return out


@dataclass(frozen=True)
class NameConstraints:
    """Permitted and excluded subtrees for a CA certificate (RFC 5280 section 4.2.1.10)."""

    permitted: tuple[x509.GeneralName, ...] = ()
    excluded: tuple[x509.GeneralName, ...] = ()

    def extension(self) -> x509.NameConstraints | None:
        if not self.permitted and not self.excluded:
            return None
        return x509.NameConstraints(
            permitted_subtrees=list(self.permitted) or None,
            excluded_subtrees=list(self.excluded) or None,
        )


def parse_name_constraints(texts: Iterable[str]) -> NameConstraints:
    """``permit:dns:example.com``, ``exclude:ip:10.0.0.0/8``, ``permit:email:example.com`` ..."""
    permitted: list[x509.GeneralName] = []
    excluded: list[x509.GeneralName] = []
    for text in texts:
        mode, _, rest = text.partition(":")
        kind, sep, value = rest.partition(":")
        if mode.lower() not in ("permit", "exclude") or not sep or kind.lower() not in SAN_KINDS:
            raise BadInput(
                f"malformed name constraint {text!r}; use permit:|exclude: then dns:, uri:, "
                "ip: (a network, e.g. 10.0.0.0/8) or email:"
            )
        if not value:
            raise BadInput(f"malformed name constraint {text!r}: empty value")
        name = _general_name(kind.lower(), value, network=True)
        (permitted if mode.lower() == "permit" else excluded).append(name)
    return NameConstraints(tuple(unique_names(permitted)), tuple(unique_names(excluded)))


def general_name_text(name: x509.GeneralName) -> str:
    """The ``kind:value`` text for *name*, as ``--san`` takes it."""
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"dirname:{name.value.rfc4514_string()}"
    return f"{type(name).__name__}:{name.value!r}"


def common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _dns_within(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if base.startswith("."):  # not RFC 5280 for DNS, but OpenSSL reads it as "under"
        return name.endswith(base)
    return not base or name == base or name.endswith("." + base)


def _host_within(host: str, base: str) -> bool:
    """URI hosts and email domains: ``.example.com`` means under it, else exactly it."""
    host, base = host.lower(), base.lower()
    return host.endswith(base) if base.startswith(".") else host == base


def _within(name: x509.GeneralName, base: x509.GeneralName) -> bool | None:
    """Whether *name* lies in the subtree *base* (RFC 5280 4.2.1.10); None when *base*
    constrains another kind of name."""
    if isinstance(name, x509.DNSName) and isinstance(base, x509.DNSName):
        return _dns_within(name.value, base.value)
    if isinstance(name, x509.IPAddress) and isinstance(base, x509.IPAddress):
        network = base.value
        return isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) and (
            name.value.version == network.version and name.value in network
        )
    if isinstance(name, x509.UniformResourceIdentifier) and isinstance(
        base, x509.UniformResourceIdentifier
    ):
        host = urlsplit(name.value).hostname
        return host is not None and _host_within(host, base.value)
    if isinstance(name, x509.RFC822Name) and isinstance(base, x509.RFC822Name):
        if "@" in base.value:
            return name.value.lower() == base.value.lower()
        return _host_within(name.value.rpartition("@")[2], base.value)
    return None


def outside_constraints(name: x509.GeneralName, constraints: x509.NameConstraints) -> str | None:
    """Why *name* breaks *constraints* (``not in the permitted ...`` or ``in the excluded
    ...``), or None when it does not. A URI without a host breaks any URI constraint."""
    permitted = constraints.permitted_subtrees or []
    excluded = constraints.excluded_subtrees or []
    for base in excluded:
        if _within(name, base):
            return f"in the excluded subtree {general_name_text(base)}"
    same_kind = [b for b in [*permitted, *excluded] if type(b) is type(name)]
    hostless = (
        isinstance(name, x509.UniformResourceIdentifier) and not urlsplit(name.value).hostname
    )
    if same_kind and hostless:
        return "a URI without a host, under URI name constraints"
    allowed = [b for b in permitted if type(b) is type(name)]
    if allowed and not any(_within(name, b) for b in allowed):
        return "not in the permitted subtrees " + ", ".join(general_name_text(b) for b in allowed)
    return None


def constrained_subject_names(subject: x509.Name, *, has_sans: bool) -> list[x509.GeneralName]:
    """The names in *subject* that name constraints reach: every emailAddress (RFC 5280
    4.2.1.10) and, when the certificate has no SAN, a CN that is a host name (OpenSSL and
    the browsers check it against dNSName constraints)."""
    names: list[x509.GeneralName] = [
        x509.RFC822Name(str(a.value))
        for a in subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
    ]
    if not has_sans:
        names += [
            x509.DNSName(str(a.value))
            for a in subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            if "." in str(a.value) and is_dns_name(str(a.value))
        ]
    return names
