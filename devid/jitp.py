"""AWS IoT just-in-time provisioning (JITP) templates: which certificate fields they need.

When a device first connects with a certificate from a CA registered for JITP, AWS IoT fills
the CA's template from the certificate's *subject* and calls RegisterThing. The values come
only from these subject attributes (plus ``Id``, which AWS IoT assigns), and "the certificate
must contain values for all of the parameters in the template body"
(https://docs.aws.amazon.com/iot/latest/developerguide/jit-provisioning.html). A missing one
makes provisioning fail on the device's first connection, in the field. :func:`check` finds
that before a device ships: it reads a template (bare, or the ``registrationConfig`` wrapper
``{"templateBody": "<json>", "roleArn": ...}``), lists the ``AWS::IoT::Certificate::*``
parameters it declares or references (``Ref``, ``Fn::Sub``, anywhere in ``Resources``), and
compares them with a subject.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from devid.errors import BadInput
from devid.pki.names import parse_name

PREFIX = "AWS::IoT::Certificate::"
#: AWS IoT thing names (CreateThing): 1-128 of these characters
_THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_SUB_VARIABLE = re.compile(r"\$\{(?!!)([^}]+)\}")
#: Deeper templates are refused: the walks below recurse, and no real template comes close.
MAX_DEPTH = 100


class CertificateParameter(enum.Enum):
    """A JITP parameter: its name after ``AWS::IoT::Certificate::`` and its subject attribute."""

    COUNTRY = ("Country", NameOID.COUNTRY_NAME, "C")
    ORGANIZATION = ("Organization", NameOID.ORGANIZATION_NAME, "O")
    ORGANIZATIONAL_UNIT = ("OrganizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME, "OU")
    DN_QUALIFIER = ("DistinguishedNameQualifier", NameOID.DN_QUALIFIER, "dnQualifier")
    STATE_NAME = ("StateName", NameOID.STATE_OR_PROVINCE_NAME, "ST")
    COMMON_NAME = ("CommonName", NameOID.COMMON_NAME, "CN")
    SERIAL_NUMBER = ("SerialNumber", NameOID.SERIAL_NUMBER, "serialNumber")
    ID = ("Id", None, None)

    def __init__(self, short: str, oid: x509.ObjectIdentifier | None, attr: str | None) -> None:
        self.short = short
        self.oid = oid
        self.attribute = attr

    @property
    def full_name(self) -> str:
        return PREFIX + self.short

    @classmethod
    def named(cls, name: str) -> CertificateParameter | None:
        return next((p for p in cls if p.full_name == name), None)

    def value_in(self, subject: x509.Name) -> str | None:
        """The subject's value for this parameter; ``Id`` is always assigned by AWS IoT."""
        if self.oid is None:
            return "(assigned by AWS IoT)"
        found = subject.get_attributes_for_oid(self.oid)
        return str(found[0].value) if found else None


_DN_LABELS = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DN_QUALIFIER: "dnQualifier",
}


def parse_subject(text: str) -> x509.Name:
    """An RFC 4514 subject such as ``CN=dev-1,serialNumber=0042,C=DE``."""
    return parse_name(text)


def subject_text(name: x509.Name) -> str:
    return name.rfc4514_string(_DN_LABELS)


def _too_deep(doc: Any) -> bool:
    """Whether *doc* nests deeper than :data:`MAX_DEPTH` (walked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return False


def loads(data: bytes | str, *, where: str) -> Any:
    """``json.loads``, refusing documents nested too deeply to walk (ValueError as usual)."""
    try:
        doc = json.loads(data)
    except RecursionError as exc:
        raise BadInput(f"{where} is nested too deeply (JSON)") from exc
    if _too_deep(doc):
        raise BadInput(f"{where} is nested too deeply (more than {MAX_DEPTH} levels)")
    return doc


def load_template(data: bytes, *, where: str = "template") -> dict[str, Any]:
    """The template body from a template file or a ``registrationConfig`` wrapper."""
    try:
        doc = loads(data, where=where)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{where} is not JSON: {exc}") from exc
    if isinstance(doc, dict) and "templateBody" in doc:
        body = doc["templateBody"]
        try:
            doc = loads(body, where=f"{where}: templateBody") if isinstance(body, str) else body
        except ValueError as exc:
            raise BadInput(f"{where}: templateBody is not a JSON document: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise BadInput(f"{where} is not a provisioning template: it needs a Resources object")
    if not isinstance(doc.get("Parameters", {}), dict):
        raise BadInput(f"{where}: Parameters must be an object")
    return doc


def _references(node: Any) -> Iterator[str]:
    """Parameter names a template fragment refers to with Ref or Fn::Sub."""
    if isinstance(node, list):
        for item in node:
            yield from _references(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "Ref" and isinstance(value, str):
            yield value
        elif key == "Fn::Sub":
            yield from _sub_references(value)
        else:
            yield from _references(value)


def _sub_references(value: Any) -> Iterator[str]:
    text, local = (
        (value[0], value[1]) if isinstance(value, list) and len(value) == 2 else (value, {})
    )
    if isinstance(text, str):
        local_names = local if isinstance(local, dict) else {}
        yield from (n for n in _SUB_VARIABLE.findall(text) if n not in local_names)
    yield from _references(local)


@dataclass(frozen=True)
class TemplateParameters:
    """What a template needs: declared parameters (with or without Default) and references."""

    declared: Mapping[str, Any]
    referenced: tuple[str, ...]

    @classmethod
    def of(cls, template: Mapping[str, Any]) -> TemplateParameters:
        declared = template.get("Parameters") or {}
        referenced = tuple(dict.fromkeys(_references(template.get("Resources", {}))))
        return cls(declared, referenced)

    @property
    def certificate(self) -> tuple[str, ...]:
        """``AWS::IoT::Certificate::*`` names, declared or referenced, in order of appearance."""
        names = [*self.declared, *self.referenced]
        return tuple(dict.fromkeys(n for n in names if n.startswith(PREFIX)))

    @property
    def undeclared(self) -> tuple[str, ...]:
        return tuple(n for n in self.referenced if n not in self.declared)

    @property
    def unfillable(self) -> tuple[str, ...]:
        """Other parameters without a Default: JITP passes only the certificate's values."""
        other = [n for n in [*self.declared, *self.undeclared] if not n.startswith(PREFIX)]
        return tuple(
            n
            for n in dict.fromkeys(other)
            if not isinstance(self.declared.get(n), dict) or "Default" not in self.declared[n]
        )


@dataclass(frozen=True)
class JitpCheck:
    """The verdict for one subject: values found, and everything that would fail."""

    subject: str
    values: Mapping[str, str | None]
    missing: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    unfillable: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unknown or self.unfillable or self.problems)

    def reasons(self) -> list[str]:
        out = []
        if self.missing:
            fields = ", ".join(_describe_missing(n) for n in self.missing)
            out.append(f"the subject lacks {fields}")
        if self.unknown:
            out.append(f"JITP provides no {', '.join(self.unknown)}")
        if self.unfillable:
            out.append(f"JITP cannot fill {', '.join(self.unfillable)} (no Default)")
        return out + list(self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "subject": self.subject,
            "parameters": dict(self.values),
            "missing": list(self.missing),
            "unknown": list(self.unknown),
            "unfillable": list(self.unfillable),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def _describe_missing(name: str) -> str:
    param = CertificateParameter.named(name)
    return f"{name} ({param.attribute}=)" if param and param.attribute else name


def check(template: Mapping[str, Any], subject: x509.Name) -> JitpCheck:
    """Would JITP with *template* work for a certificate with *subject*?"""
    params = TemplateParameters.of(template)
    values: dict[str, str | None] = {}
    unknown = []
    for name in params.certificate:
        param = CertificateParameter.named(name)
        if param is None:
            unknown.append(name)
        else:
            values[name] = param.value_in(subject)
    warnings = [f"{n} is referenced but not declared in Parameters" for n in params.undeclared]
    return JitpCheck(
        subject=subject_text(subject),
        values=values,
        missing=tuple(n for n, v in values.items() if v is None),
        unknown=tuple(unknown),
        unfillable=params.unfillable,
        problems=tuple(_thing_name_problems(template, subject)),
        warnings=tuple(warnings),
    )


def _resolve(node: Any, subject: x509.Name) -> str | None:
    """A string value built from the subject (Ref, Fn::Join, Fn::Sub), None if unknown."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        return None
    key, value = next(iter(node.items()))
    if key == "Ref" and isinstance(value, str):
        param = CertificateParameter.named(value)
        return param.value_in(subject) if param and param.oid is not None else None
    if key == "Fn::Join" and isinstance(value, list) and len(value) == 2:
        separator, items = value
        parts = [_resolve(p, subject) for p in items] if isinstance(items, list) else [None]
        known = [p for p in parts if p is not None]
        return separator.join(known) if isinstance(separator, str) and None not in parts else None
    if key == "Fn::Sub" and isinstance(value, str):
        found = {n: _resolve({"Ref": n}, subject) for n in _SUB_VARIABLE.findall(value)}
        if None in found.values():
            return None
        return _SUB_VARIABLE.sub(lambda m: found[m[1]] or "", value)
    return None


def _thing_name_problems(template: Mapping[str, Any], subject: x509.Name) -> Iterator[str]:
    for resource in template.get("Resources", {}).values():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::IoT::Thing":
            continue
        properties = resource.get("Properties")
        node = properties.get("ThingName") if isinstance(properties, dict) else None
        value = _resolve(node, subject) if node is not None else None
        if value is not None and not _THING_NAME.fullmatch(value):
            yield (
                f"the thing name would be {value!r}, which AWS IoT refuses "
                "(1-128 of a-z A-Z 0-9 : _ -)"
            )


#: the thing's name in IoT policy variables (the client id must equal it)
_THING = "${iot:Connection.Thing.ThingName}"


def _starter_policy(topic_prefix: str) -> dict[str, Any]:
    topics = [f"{topic_prefix}/{_THING}/*", f"devid/check/{_THING}"]
    arn = "arn:aws:iot:*:*:"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn}client/{_THING}"},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [f"{arn}topic/{t}" for t in topics],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{arn}topicfilter/{t}" for t in topics],
            },
        ],
    }


def starter_template(*, topic_prefix: str = "devices") -> dict[str, Any]:
    """A JITP template to start from: the thing is named by the certificate's CommonName and
    records its subject serialNumber, the certificate is activated, and a policy lets the
    device connect as its thing name and use ``TOPIC_PREFIX/<thing>/*`` (and the
    ``devid/check/<thing>`` topic ``devid device connect`` uses by default)."""
    cn, serial, cert_id = (
        CertificateParameter.COMMON_NAME.full_name,
        CertificateParameter.SERIAL_NUMBER.full_name,
        CertificateParameter.ID.full_name,
    )
    return {
        "Parameters": {name: {"Type": "String"} for name in (cn, serial, cert_id)},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Ref": cn},
                    "AttributePayload": {"serialNumber": {"Ref": serial}},
                },
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateId": {"Ref": cert_id}, "Status": "ACTIVE"},
            },
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyDocument": json.dumps(_starter_policy(topic_prefix))},
            },
        },
    }


def registration_config(template: Mapping[str, Any], role_arn: str) -> dict[str, str]:
    """The ``registrationConfig`` RegisterCACertificate takes: the body as a JSON string."""
    return {"templateBody": json.dumps(template), "roleArn": role_arn}
