"""A path-validation suite built with cryptography's builders: one :class:`Case` per quirk.

Every case is a small PKI made on the fly with software keys (P-256, fast; Ed25519 and
RSA-1024 where a case is about them), a validation time, a purpose and the expected verdict.
Helpers here only *build* certificates; they never decide whether a chain is valid (that is
the job of devid, cryptography and ``openssl verify``).

``openssl`` on a case is the verdict ``openssl verify`` is expected to give when it differs from
``expect_ok`` for a documented reason (WebPKI strictness that OpenSSL does not have, or the
other way round); ``None`` means "same as expect_ok".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")

CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER = ExtendedKeyUsageOID.SERVER_AUTH

Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def dn(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devid path suite"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class Spec:
    """What one certificate carries; defaults make a well-formed WebPKI-style certificate."""

    cn: str
    ca: bool
    not_before: dt.datetime = NOW - 30 * DAY
    not_after: dt.datetime = NOW + 365 * DAY
    basic_constraints: bool = True
    ca_flag: bool | None = None  # overrides ``ca`` in basicConstraints only
    path_length: int | None = None
    eku: tuple[ObjectIdentifier, ...] | None = None
    dns: tuple[str, ...] = ()
    uri: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    critical_unknown: bool = False
    noncritical_unknown: bool = False
    aki: bool = True
    ski: bool = True
    ski_digest: bytes | None = None  # a subject key identifier that may lie about the key


@dataclass(frozen=True)
class Issued:
    """A certificate together with the key it certifies (so it can issue in turn)."""

    cert: x509.Certificate
    key: Key

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _extensions(
    builder: x509.CertificateBuilder, spec: Spec, key: Key, issuer_key: Key
) -> x509.CertificateBuilder:
    if spec.basic_constraints:
        ca_flag = spec.ca if spec.ca_flag is None else spec.ca_flag
        constraints = x509.BasicConstraints(ca=ca_flag, path_length=spec.path_length)
        builder = builder.add_extension(constraints, critical=True)
    builder = builder.add_extension(_key_usage(spec.ca), critical=True)
    if spec.eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(spec.eku)), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
    names += [x509.UniformResourceIdentifier(u) for u in spec.uri]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if spec.permitted or spec.excluded:
        constraints_nc = x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(d) for d in spec.permitted] or None,
            excluded_subtrees=[x509.DNSName(d) for d in spec.excluded] or None,
        )
        builder = builder.add_extension(constraints_nc, critical=True)
    if spec.ski:
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        if spec.ski_digest is not None:
            ski = x509.SubjectKeyIdentifier(spec.ski_digest)
        builder = builder.add_extension(ski, critical=False)
    if spec.aki:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(aki, critical=False)
    if spec.critical_unknown:
        builder = builder.add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)
    if spec.noncritical_unknown:
        builder = builder.add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), False)
    return builder


def make(
    spec: Spec,
    *,
    issuer: Issued | None = None,
    key: Key | None = None,
    sign_with: Key | None = None,
) -> Issued:
    """Issue *spec* under *issuer* (self-signed when None); *sign_with* forges the signature."""
    key = key or new_key()
    issuer_name = issuer.name if issuer else dn(spec.cn)
    issuer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(dn(spec.cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
    )
    builder = _extensions(builder, spec, key, issuer_key)
    signer = sign_with or issuer_key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(builder.sign(signer, algorithm), key)


def root(cn: str = "Root CA", **kw: object) -> Issued:
    return make(Spec(cn, ca=True, aki=False, **kw))


def ca(cn: str, issuer: Issued, *, key: Key | None = None, **kw: object) -> Issued:
    return make(Spec(cn, ca=True, **kw), issuer=issuer, key=key)


def device(issuer: Issued, *, cn: str = "device-0042", **kw: object) -> Issued:
    """A device certificate as devid's ``device`` profile makes it: clientAuth, SAN URI+DNS."""
    defaults: dict[str, object] = {
        "eku": (CLIENT,),
        "dns": (f"{cn}.devices.example.com",),
        "uri": (f"urn:devid:{cn}",),
    }
    return make(Spec(cn, ca=False, **{**defaults, **kw}), issuer=issuer)


@dataclass(frozen=True)
class Case:
    name: str
    leaf: x509.Certificate
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    expect_ok: bool
    reason: str = ""  # devid's reason contains one of these "|"-separated parts (if not ok)
    purpose: str | None = "client"
    at: dt.datetime | None = NOW
    max_depth: int | None = None
    openssl: bool | None = None  # openssl's expected verdict when it differs from expect_ok
    why: str = ""  # one line: what the case shows (and why openssl differs, if it does)
    limit_ok: bool = False  # pathological: ok, or a "search limit" failure, both pass

    @property
    def openssl_ok(self) -> bool:
        return self.expect_ok if self.openssl is None else self.openssl


def _case(
    name: str,
    leaf: Issued,
    roots: Sequence[Issued],
    intermediates: Sequence[Issued],
    ok: bool,
    **kw: object,
) -> Case:
    return Case(
        name,
        leaf.cert,
        tuple(r.cert for r in roots),
        tuple(i.cert for i in intermediates),
        ok,
        **kw,
    )


# --- the cases ---------------------------------------------------------------------------


def valid_cases() -> list[Case]:
    r = root()
    i = ca("Issuing CA", r)
    server_leaf = make(Spec("srv", ca=False, eku=(SERVER,), dns=("srv.example.com",)), issuer=i)
    generic = make(Spec("generic", ca=False), issuer=i)
    no_aki = device(i, aki=False)
    return [
        _case("valid_device_chain", device(i), [r], [i], True, why="root > CA > device"),
        _case("valid_direct", device(r), [r], [], True, why="device issued by the root"),
        _case("valid_server", server_leaf, [r], [i], True, purpose="server", why="serverAuth leaf"),
        _case("valid_any_purpose", device(i), [r], [i], True, purpose=None, why="no purpose"),
        _case(
            "generic_leaf_no_purpose",
            generic,
            [r],
            [i],
            True,
            purpose=None,
            why="no SAN/EKU: fine when no purpose is asked",
        ),
        _case(
            "generic_leaf_client",
            generic,
            [r],
            [i],
            False,
            reason="subjectAltName",
            openssl=True,
            why="client purpose: WebPKI wants a SAN; openssl does not",
        ),
        _case(
            "leaf_without_aki_client",
            no_aki,
            [r],
            [i],
            False,
            reason="authorityKeyIdentifier",
            openssl=True,
            why="client purpose: WebPKI wants an AKI on the leaf; openssl does not",
        ),
        _case("leaf_without_aki_any", no_aki, [r], [i], True, purpose=None),
        _case(
            "default_time",
            device(i),
            [r],
            [i],
            True,
            at=None,
            why="at=None means now",
        ),
        _case(
            "noncritical_unknown_extension",
            device(i, noncritical_unknown=True),
            [r],
            [i],
            True,
            why="unknown non-critical extensions are ignored",
        ),
    ]


def time_cases() -> list[Case]:
    r = root()
    i = ca("Issuing CA", r)
    old_i = ca("Old CA", r, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    old_r = root("Old Root", not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    old_r_i = ca("Under Old Root", old_r)
    return [
        _case(
            "expired_leaf",
            device(i, not_before=NOW - 100 * DAY, not_after=NOW - DAY),
            [r],
            [i],
            False,
            reason="expired",
        ),
        _case(
            "not_yet_valid_leaf",
            device(i, not_before=NOW + DAY, not_after=NOW + 100 * DAY),
            [r],
            [i],
            False,
            reason="not valid before",
        ),
        _case(
            "valid_leaf_in_the_past",
            device(i, not_before=NOW - 100 * DAY, not_after=NOW - DAY),
            [r],
            [i],
            True,
            at=NOW - 2 * DAY,
            why="--at inside the validity window",
        ),
        _case("expired_intermediate", device(old_i), [r], [old_i], False, reason="expired"),
        _case("expired_root", device(old_r_i), [old_r], [old_r_i], False, reason="expired"),
    ]


def purpose_cases() -> list[Case]:
    r = root()
    i = ca("Issuing CA", r)
    server_only_ca = ca("Server-only CA", r, eku=(SERVER,))
    server_leaf = make(Spec("srv", ca=False, eku=(SERVER,), dns=("srv.example.com",)), issuer=i)
    return [
        _case("server_leaf_for_client", server_leaf, [r], [i], False, reason="clientAuth"),
        _case(
            "device_leaf_for_server",
            device(i),
            [r],
            [i],
            False,
            reason="serverAuth",
            purpose="server",
        ),
        _case(
            "intermediate_eku_excludes_client",
            device(server_only_ca),
            [r],
            [server_only_ca],
            False,
            reason="clientAuth",
            why="an EKU on a CA restricts what it may issue for",
        ),
        _case(
            "no_eku_means_any",
            device(i, eku=None),
            [r],
            [i],
            True,
            why="a leaf without EKU is accepted for client auth",
        ),
    ]


def constraint_cases() -> list[Case]:
    r = root()
    not_ca = make(Spec("Not A CA", ca=True, ca_flag=False), issuer=r)
    no_bc = make(Spec("No BC CA", ca=True, basic_constraints=False), issuer=r)
    pl0 = ca("PathLen0 CA", r, path_length=0)
    below_pl0 = ca("Below PathLen0", pl0)
    nc = ca("Constrained CA", r, permitted=("example.com",))
    exc = ca("Excluding CA", r, excluded=("bad.example.com",))
    crit_i = ca("Critical Ext CA", r, critical_unknown=True)
    return [
        _case("ca_false_intermediate", device(not_ca), [r], [not_ca], False, reason="not a CA"),
        _case(
            "missing_basic_constraints_intermediate",
            device(no_bc),
            [r],
            [no_bc],
            False,
            reason="not a CA",
        ),
        _case("path_length_ok", device(pl0), [r], [pl0], True, why="pathLen 0 may issue leaves"),
        _case(
            "path_length_exceeded",
            device(below_pl0),
            [r],
            [pl0, below_pl0],
            False,
            reason="path length",
        ),
        _case(
            "name_constraints_permitted",
            device(nc, cn="dev1", dns=("dev1.example.com",), uri=()),
            [r],
            [nc],
            True,
        ),
        _case(
            "name_constraints_not_permitted",
            device(nc, cn="dev2", dns=("dev2.example.org",), uri=()),
            [r],
            [nc],
            False,
            reason="name constraint",
        ),
        _case(
            "name_constraints_excluded",
            device(exc, cn="dev3", dns=("x.bad.example.com",), uri=()),
            [r],
            [exc],
            False,
            reason="name constraint",
        ),
        _case(
            "critical_unknown_extension_leaf",
            device(r, critical_unknown=True),
            [r],
            [],
            False,
            reason="critical extension",
        ),
        _case(
            "critical_unknown_extension_intermediate",
            device(crit_i),
            [r],
            [crit_i],
            False,
            reason="critical extension",
        ),
    ]


def signature_and_trust_cases() -> list[Case]:
    r = root()
    i = ca("Issuing CA", r)
    forged = make(
        Spec("forged", ca=False, eku=(CLIENT,), dns=("forged.example.com",)),
        issuer=i,
        sign_with=new_key(),
    )
    self_signed = make(Spec("selfie", ca=False, eku=(CLIENT,), dns=("selfie.example.com",)))
    other_root = root("Other Root")
    ed_leaf = make(
        Spec("ed", ca=False, eku=(CLIENT,), dns=("ed.example.com",)),
        issuer=i,
        key=ed25519.Ed25519PrivateKey.generate(),
    )
    weak_leaf = make(
        Spec("weak", ca=False, eku=(CLIENT,), dns=("weak.example.com",)),
        issuer=i,
        key=rsa.generate_private_key(65537, 1024),
    )
    weak_ca = ca("Weak CA", r, key=rsa.generate_private_key(65537, 1024))
    ca_leaf = ca("CA As Leaf", i)
    return [
        _case("wrong_signature", forged, [r], [i], False, reason="no path"),
        _case(
            "trusted_self_signed_leaf",
            self_signed,
            [self_signed],
            [],
            True,
            why="a self-signed leaf that is itself trusted",
        ),
        _case("root_in_pool", device(i), [r], [i, r], True, why="the chain file repeats the root"),
        _case(
            "weak_rsa_leaf",
            weak_leaf,
            [r],
            [i],
            True,
            why="an RSA-1024 leaf key signs nothing on the path (devid's issuance refuses it)",
        ),
        _case(
            "weak_rsa_intermediate",
            device(weak_ca),
            [r],
            [weak_ca],
            False,
            reason="too weak",
            openssl=True,
            why="RSA-1024 issuer: WebPKI wants 2048 bits; openssl verify has no minimum",
        ),
        _case(
            "ca_as_leaf",
            ca_leaf,
            [r],
            [i],
            False,
            reason="not an end entity",
            purpose=None,
            openssl=True,
            why="a CA certificate is not an end entity; openssl verify does not mind",
        ),
        _case("self_signed_leaf_untrusted", self_signed, [r], [], False, reason="no path"),
        _case("untrusted_root", device(i), [other_root], [i], False, reason="no path"),
        _case(
            "missing_intermediate", device(i), [r], [], False, reason="no path", why="pool empty"
        ),
        _case(
            "ed25519_leaf",
            ed_leaf,
            [r],
            [i],
            True,
            why="an Ed25519 device key (devid's profiles allow it on request)",
        ),
    ]


def depth_cases() -> list[Case]:
    r = root()
    i1 = ca("Level 1", r)
    i2 = ca("Level 2", i1)
    i3 = ca("Level 3", i2)
    leaf = device(i3)
    return [
        _case("depth_3_allowed", leaf, [r], [i1, i2, i3], True, max_depth=3),
        _case(
            "max_depth_exceeded",
            leaf,
            [r],
            [i1, i2, i3],
            False,
            reason="depth",
            max_depth=2,
        ),
        _case("default_depth", leaf, [r], [i3, i2, i1], True, why="unordered pool, default 8"),
    ]


def cross_signed_cases() -> list[Case]:
    """Cross-signing: one subject and key, several issuers, some of them bad."""
    root_a = root("Root A")
    root_b = root("Root B")
    untrusted_root = root("Untrusted Root")
    x_key = new_key()
    x_by_a_expired = ca(
        "Cross CA", root_a, key=x_key, not_before=NOW - 99 * DAY, not_after=NOW - DAY
    )
    x_by_b = ca("Cross CA", root_b, key=x_key)
    x_by_untrusted = ca("Cross CA", untrusted_root, key=x_key)
    leaf = device(x_by_b)
    return [
        _case(
            "cross_signed_one_expired",
            leaf,
            [root_a, root_b],
            [x_by_a_expired, x_by_b],
            True,
            why="the expired path is skipped, the other one verifies",
        ),
        _case(
            "cross_signed_one_untrusted",
            leaf,
            [root_b],
            [x_by_untrusted, x_by_b],
            True,
            openssl=False,
            why="openssl takes the first matching issuer from -untrusted and does not backtrack",
        ),
        _case(
            "cross_signed_all_bad",
            leaf,
            [root_a],
            [x_by_a_expired, x_by_untrusted],
            False,
            reason="expired|no path",
            why="every candidate path fails; which failure is named depends on search order",
        ),
    ]


def decoy_cases() -> list[Case]:
    """A big untrusted pool: unrelated CAs and same-name CAs with other keys."""
    r = root()
    real = ca("Issuing CA", r)
    unrelated = [ca(f"Unrelated {n}", r) for n in range(60)]
    same_name = [ca("Issuing CA", r) for _ in range(12)]  # other keys: wrong signature
    leaf = device(real)
    pool = [*unrelated, *same_name, real, *same_name]  # duplicates too
    return [
        _case("decoys_in_pool", leaf, [r], pool, True, why="72 decoys, duplicates, one real CA")
    ]


def mesh_cases(size: int = 24) -> list[Case]:
    """Pathological: *size* CAs with one subject and key all signing each other.

    Every mesh certificate is a plausible issuer of every other one (and of the leaf), so a
    naive depth-first search explores ``size ** depth`` paths. One extra certificate for the
    same subject and key is signed by the trusted root; it comes last in the pool.
    """
    r = root()
    mesh_key = new_key()
    bridge = ca("Mesh CA", r, key=mesh_key)
    members = [make(Spec("Mesh CA", ca=True), issuer=bridge, key=mesh_key) for _ in range(size)]
    leaf = device(bridge)
    dead_root = root("Mesh CA Other Root")
    return [
        _case(
            "mesh_with_bridge",
            leaf,
            [r],
            [*members, bridge],
            True,
            limit_ok=True,
            openssl=False,
            why=f"{size} CAs signing each other, root path last; openssl does not backtrack",
        ),
        _case(
            "mesh_without_path",
            leaf,
            [dead_root],
            [*members, bridge],
            False,
            reason="no path",
            limit_ok=True,
            why="no path exists: must fail, quickly, not search forever",
        ),
    ]


SUITES: tuple[Callable[[], list[Case]], ...] = (
    valid_cases,
    time_cases,
    purpose_cases,
    constraint_cases,
    signature_and_trust_cases,
    depth_cases,
    cross_signed_cases,
    decoy_cases,
    mesh_cases,
)


@functools.cache
def all_cases() -> list[Case]:
    """Every case, built once per process."""
    return [case for suite in SUITES for case in suite()]
