"""Which keys each AWS service accepts (DESIGN.md section 2), as data plus one check.

``check(key, Service.CODECOMMIT)`` answers the pre-flight question before anything is
uploaded: does this key fit, and if not, exactly why not and what to use instead.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from devid.errors import BadInput
from devid.keys import PrivateKey, PublicKey, describe


class Service(enum.Enum):
    CODECOMMIT = "codecommit"
    EC2 = "ec2"
    EC2_WINDOWS = "ec2-windows"
    IOT = "iot"

    @property
    def title(self) -> str:
        return {"codecommit": "CodeCommit", "ec2": "EC2", "ec2-windows": "EC2 Windows instances",
                "iot": "AWS IoT"}[self.value]  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> Service:
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise BadInput(f"unknown service {text!r}; choose one of {names}") from None


@dataclass(frozen=True)
class Rule:
    rsa_sizes: frozenset[int] | None  # None: any size >= rsa_min
    rsa_min: int
    curves: frozenset[str]
    ed25519: bool
    advice: str


RULES: dict[Service, Rule] = {
    # IAM SSH public keys: RSA of at least 2048 bits; ED25519/ECDSA are not documented.
    Service.CODECOMMIT: Rule(None, 2048, frozenset(), False, "use rsa-2048 or larger"),
    # ImportKeyPair: RSA 1024/2048/4096 or ED25519; no DSA, no ECDSA.
    Service.EC2: Rule(
        frozenset({1024, 2048, 4096}),
        1024,
        frozenset(),
        True,
        "use rsa-2048, rsa-4096 or ed25519",
    ),
    # Windows password data is encrypted to the key pair's RSA key.
    Service.EC2_WINDOWS: Rule(
        frozenset({1024, 2048, 4096}), 1024, frozenset(), False, "use rsa-2048 or rsa-4096"
    ),
    # IoT device keys: RSA >= 2048 or EC P-256/P-384/P-521; no Ed25519.
    Service.IOT: Rule(
        None,
        2048,
        frozenset({"p256", "p384", "p521"}),
        False,
        "use rsa-2048 or larger, or ec-p256/p384/p521",
    ),
}


@dataclass(frozen=True)
class Verdict:
    service: Service
    ok: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"service": self.service.value, "ok": self.ok, "reason": self.reason}


def _why_not(key: PublicKey | PrivateKey, service: Service, rule: Rule) -> str | None:
    info = describe(key)
    where = f"by {service.title}"
    if info.algorithm == "rsa":
        if info.bits < rule.rsa_min:
            return f"rsa-{info.bits} keys are too small for {service.title}; {rule.advice}"
        if rule.rsa_sizes is not None and info.bits not in rule.rsa_sizes:
            sizes = "/".join(str(s) for s in sorted(rule.rsa_sizes))
            return (
                f"rsa-{info.bits} keys are not accepted {where} (RSA {sizes} only); {rule.advice}"
            )
        return None
    if info.algorithm == "ec":
        if info.size in rule.curves:
            return None
        return f"ec-{info.size} keys are not accepted {where}; {rule.advice}"
    if rule.ed25519:
        return None
    return f"ed25519 keys are not accepted {where}; {rule.advice}"


def check(key: PublicKey | PrivateKey, service: Service) -> Verdict:
    """Whether *service* accepts *key*, with a one-line reason either way."""
    reason = _why_not(key, service, RULES[service])
    if reason is None:
        info = describe(key)
        name = "ed25519" if info.algorithm == "ed25519" else f"{info.algorithm}-{info.size}"
        return Verdict(service, True, f"{name} keys are accepted by {service.title}")
    return Verdict(service, False, reason)


#: IAM SSH public key ids (what git connects as): APKA, then upper-case letters and digits
_KEY_ID = re.compile(r"APKA[A-Z0-9]{16,124}")


def parse_key_id(text: str) -> str:
    """*text* if it is an IAM SSH public key id, else :class:`BadInput` (exit 2)."""
    if not _KEY_ID.fullmatch(text):
        raise BadInput(
            f"{text!r} is not an IAM SSH public key id",
            hint="expected APKA followed by upper-case letters and digits, 20+ characters",
        )
    return text
