"""Certificate path validation: cryptography's verifier, with a bounded search.

:func:`verify_chain` builds and checks a path from a leaf to one of the trusted roots with
``cryptography.x509.verification`` (no hand-written chain walk) and says in one line why it
failed. Purposes:

- ``"client"``: cryptography's client verifier as it is (WebPKI profile): the leaf needs a
  subjectAltName and an authorityKeyIdentifier; an EKU, where present, must list clientAuth
  (on CAs: clientAuth or anyExtendedKeyUsage). devid's ``device`` profile meets all of that.
- ``"server"``: the same verifier with the EKU rules asking for serverAuth instead. No host
  name is given, so the leaf's SAN is required but not matched against a name.
- ``None``: any purpose. CAs keep the WebPKI CA rules except EKU; the leaf keeps them
  (not a CA, no keyCertSign, no unknown critical extension, validity, signature algorithms)
  but needs no SAN, no authorityKeyIdentifier and no particular EKU.

Bounding the search. cryptography's path builder tries every certificate whose subject
matches the issuer it looks for, depth first, without loop detection; it stops after 128
signature checks, and it scans the whole intermediate pool at each step while holding the GIL.
devid bounds the work in three layers:

1. The pool is prepared deterministically before cryptography sees it: duplicates go; so do
   certificates whose subject cannot appear on any issuer-name path up from the leaf (they
   can never be candidates); each subject keeps at most ``SearchLimits.per_subject``
   candidates, the likeliest first (key identifier matching, valid at the validation time,
   not self-issued, issued under a trusted root's name), and the pool keeps at most
   ``SearchLimits.intermediates`` (nearest to the leaf first). Candidate order is also the
   order cryptography tries them in, so likely paths are found before loops are explored.
   A path found in the trimmed pool is a real path; a failure after trimming says so.
2. cryptography's own signature-check budget: hitting it reads "search limit reached".
3. A wall-clock deadline (``SearchLimits.seconds``, 10 s by default): the verification runs in
   a forked child process, killed at the deadline. (A thread cannot do it: the verifier holds
   the GIL for its whole run.) Without ``fork`` (Windows) or with ``seconds=None`` it runs
   in-process, still bounded by layers 1 and 2.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from devid.errors import BadInput
from devid.pki.names import constrained_subject_names, general_name_text, outside_constraints

PURPOSES = ("client", "server")
EKU_NAMES = {"client": "clientAuth", "server": "serverAuth"}
DEFAULT_MAX_DEPTH = 8  # cryptography's default
_DER = Encoding.DER
MAX_DEPTH_LIMIT = 255  # cryptography's depth is a u8


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    reason: str  # "ok", or one line saying why not
    chain: list[x509.Certificate]  # leaf .. root when ok, else []


@dataclass(frozen=True)
class SearchLimits:
    """How much path search one verification may do (see the module docstring)."""

    per_subject: int = 16
    intermediates: int = 128
    seconds: float | None = 10.0

    def __post_init__(self) -> None:
        if self.per_subject < 1 or self.intermediates < 1:
            raise ValueError("search limits must allow at least one candidate")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError("the search deadline must be positive (or None for none)")


DEFAULT_LIMITS = SearchLimits()


def verify_chain(
    leaf: x509.Certificate,
    *,
    roots: list[x509.Certificate],
    intermediates: list[x509.Certificate],
    purpose: str | None = None,
    at: dt.datetime | None = None,
    max_depth: int | None = None,
    limits: SearchLimits = DEFAULT_LIMITS,
) -> VerifyResult:
    """Verify *leaf* up to one of *roots*, using *intermediates* (untrusted) as needed."""
    _check_arguments(roots, purpose, max_depth)
    when = _utc(at)
    pool = prepare_pool(leaf, roots, intermediates, when=when, limits=limits)
    verifier = _verifier(roots, purpose, when, max_depth)
    context = Context(leaf, roots, pool, purpose, when, max_depth)

    def attempt() -> tuple[bool, str, list[bytes]]:
        return _attempt(verifier, context)

    ok, reason, ders = _run_bounded(attempt, limits.seconds)
    known = {c.public_bytes(_DER): c for c in [leaf, *roots, *pool.certs]}
    return VerifyResult(
        ok, reason, [known.get(d) or x509.load_der_x509_certificate(d) for d in ders]
    )


# --- arguments and policy -------------------------------------------------------------------


def _check_arguments(
    roots: Sequence[x509.Certificate], purpose: str | None, depth: int | None
) -> None:
    if purpose is not None and purpose not in PURPOSES:
        raise BadInput(f"unknown purpose {purpose!r}; use one of: {', '.join(PURPOSES)}")
    if not roots:
        raise BadInput("no trusted root certificates given")
    if depth is not None and not 0 <= depth <= MAX_DEPTH_LIMIT:
        raise BadInput(f"bad maximum depth {depth}; use 0 to {MAX_DEPTH_LIMIT}")


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-05:00
        raise BadInput(f"--at {at.isoformat()} is outside the years 1-9999 in UTC") from exc


def _eku_validators(
    wanted: x509.ObjectIdentifier, name: str
) -> tuple[Callable[..., None], Callable[..., None]]:
    """EKU checks like cryptography's own, for an EKU other than the verifier's."""

    def on_ca(_policy: object, _cert: object, eku: x509.ExtendedKeyUsage | None) -> None:
        if eku is not None and not {wanted, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(eku):
            raise ValueError(f"an issuer's EKU does not allow {name}")

    def on_leaf(_policy: object, _cert: object, eku: x509.ExtendedKeyUsage | None) -> None:
        if eku is not None and wanted not in set(eku):
            raise ValueError(f"EKU does not allow {name}")

    return on_ca, on_leaf


def _extension_policies(purpose: str | None) -> tuple[ExtensionPolicy, ExtensionPolicy] | None:
    """(CA policy, leaf policy) replacing cryptography's client defaults, or None to keep them."""
    ca_policy = ExtensionPolicy.webpki_defaults_ca()
    ee_policy = ExtensionPolicy.webpki_defaults_ee()
    eku = x509.ExtendedKeyUsage
    if purpose == "client":
        return None
    if purpose == "server":
        on_ca, on_leaf = _eku_validators(ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth")
        return (
            ca_policy.may_be_present(eku, Criticality.NON_CRITICAL, on_ca),
            ee_policy.may_be_present(eku, Criticality.NON_CRITICAL, on_leaf),
        )
    return (
        ca_policy.may_be_present(eku, Criticality.AGNOSTIC, None),
        ee_policy.may_be_present(eku, Criticality.AGNOSTIC, None)
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None),
    )


def _verifier(
    roots: list[x509.Certificate], purpose: str | None, when: dt.datetime, depth: int | None
) -> ClientVerifier:
    builder = PolicyBuilder().store(Store(roots)).time(when)
    if depth is not None:
        builder = builder.max_chain_depth(depth)
    policies = _extension_policies(purpose)
    if policies is not None:
        builder = builder.extension_policies(ca_policy=policies[0], ee_policy=policies[1])
    return builder.build_client_verifier()


# --- the pool -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """The intermediates handed to cryptography, and what was set aside to bound the search."""

    certs: list[x509.Certificate]
    set_aside: int
    note: str  # "" or why candidates were set aside


def prepare_pool(
    leaf: x509.Certificate,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    *,
    when: dt.datetime,
    limits: SearchLimits = DEFAULT_LIMITS,
) -> Pool:
    """Deduplicate, drop what can never be a candidate, order, and cap (module docstring)."""
    same_objects_once = {id(c): c for c in intermediates}.values()  # cheap before hashing DER
    unique = list(dict.fromkeys(same_objects_once))
    groups, distance = _reachable_groups(leaf, unique)
    wanted = _wanted_key_ids(leaf, unique)
    root_names = {_name(r.subject) for r in roots}
    order = {id(c): n for n, c in enumerate(unique)}
    kept: list[x509.Certificate] = []
    notes: list[str] = []
    for subject in sorted(groups, key=lambda s: distance[s]):
        group = sorted(
            groups[subject],
            key=lambda c: _likeliness(c, wanted.get(subject, set()), root_names, when, order),
        )
        if len(group) > limits.per_subject:
            notes.append(
                f"{len(group)} candidates named {groups[subject][0].subject.rfc4514_string()} "
                f"(limit {limits.per_subject})"
            )
        kept += group[: limits.per_subject]
    if len(kept) > limits.intermediates:
        notes.append(f"{len(kept)} candidate intermediates (limit {limits.intermediates})")
    reachable = sum(len(g) for g in groups.values())
    final = kept[: limits.intermediates]
    return Pool(final, reachable - len(final), "; ".join(notes))


def _name(name: x509.Name) -> bytes:
    return name.public_bytes()


def _reachable_groups(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[dict[bytes, list[x509.Certificate]], dict[bytes, int]]:
    """Pool certificates by subject, for subjects on some issuer-name path up from the leaf."""
    by_subject: dict[bytes, list[x509.Certificate]] = defaultdict(list)
    for cert in pool:
        by_subject[_name(cert.subject)].append(cert)
    distance = {_name(leaf.issuer): 1}
    queue = deque([_name(leaf.issuer)])
    while queue:
        subject = queue.popleft()
        for cert in by_subject.get(subject, []):
            issuer = _name(cert.issuer)
            if issuer not in distance:
                distance[issuer] = distance[subject] + 1
                queue.append(issuer)
    groups = {s: by_subject[s] for s in distance if s in by_subject}
    return groups, distance


def _key_id(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return None
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest
    return value.key_identifier if isinstance(value, x509.AuthorityKeyIdentifier) else None


def _wanted_key_ids(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate]
) -> dict[bytes, set[bytes]]:
    """For each issuer name: the authority key ids its children ask for."""
    wanted: dict[bytes, set[bytes]] = defaultdict(set)
    for cert in [leaf, *pool]:
        key_id = _key_id(cert, x509.AuthorityKeyIdentifier)
        if key_id is not None:
            wanted[_name(cert.issuer)].add(key_id)
    return wanted


def _likeliness(
    cert: x509.Certificate,
    wanted: set[bytes],
    root_names: set[bytes],
    when: dt.datetime,
    order: dict[int, int],
) -> tuple[int, bool, bool, bool, int]:
    """Sort key: smaller is likelier to be on a valid path (mirrors cryptography's own order)."""
    ski = _key_id(cert, x509.SubjectKeyIdentifier)
    key_rank = 1 if ski is None or not wanted else (0 if ski in wanted else 2)
    in_time = cert.not_valid_before_utc <= when <= cert.not_valid_after_utc
    self_issued = cert.subject == cert.issuer
    under_root = _name(cert.issuer) in root_names
    return (key_rank, not in_time, self_issued, not under_root, order[id(cert)])


# --- running it -----------------------------------------------------------------------------


def _attempt(verifier: ClientVerifier, context: Context) -> tuple[bool, str, list[bytes]]:
    try:
        chain = verifier.verify(context.leaf, context.pool.certs).chain
    except VerificationError as exc:
        return False, explain(str(exc), context), []
    except ValueError as exc:  # e.g. a SAN type cryptography cannot represent
        return False, f"certificate cannot be checked: {exc}", []
    why = _subject_name_constraints(chain)
    if why is not None:
        return False, why, []
    return True, "ok", [c.public_bytes(_DER) for c in chain]


def _subject_name_constraints(chain: Sequence[x509.Certificate]) -> str | None:
    """What cryptography leaves out of name constraints: it checks the SANs only. RFC 5280
    4.2.1.10 applies rfc822Name constraints to the subject's emailAddress too, and OpenSSL
    (like the browsers) applies dNSName ones to a CN that is a host name when there is no
    SAN; *chain* is the verified path, leaf first. Returns why it fails, or None."""
    leaf = chain[0]
    try:
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        has_sans = True
    except x509.ExtensionNotFound:
        has_sans = False
    except (x509.DuplicateExtension, ValueError):
        return "the certificate's extensions cannot be read"
    names = constrained_subject_names(leaf.subject, has_sans=has_sans)
    for issuer in chain[1:]:
        try:
            constraints = issuer.extensions.get_extension_for_class(x509.NameConstraints).value
        except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
            continue
        for name in names:
            why = outside_constraints(name, constraints)
            if why is not None:
                return (
                    f"the subject's {general_name_text(name)} is {why} of "
                    f"{issuer.subject.rfc4514_string()} (name constraints)"
                )
    return None


def _run_bounded(
    task: Callable[[], tuple[bool, str, list[bytes]]], seconds: float | None
) -> tuple[bool, str, list[bytes]]:
    """Run *task* in a forked child killed after *seconds*; in-process without fork."""
    if seconds is None or "fork" not in multiprocessing.get_all_start_methods():
        return task()
    forking = multiprocessing.get_context("fork")
    receiver, sender = forking.Pipe(duplex=False)
    child = forking.Process(target=_child, args=(task, sender), daemon=True)
    child.start()
    sender.close()
    try:
        if receiver.poll(seconds):
            result: tuple[bool, str, list[bytes]] = receiver.recv()
            return result
        return False, f"search limit reached: no result within {seconds:g} s", []
    except EOFError:
        child.join(1)
        return False, f"verification did not finish: worker exited with {child.exitcode}", []
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()


def _child(task: Callable[[], tuple[bool, str, list[bytes]]], sender: Connection) -> None:
    try:
        sender.send(task())
    except Exception as exc:  # reported to the parent as a failed verification
        sender.send((False, f"verification failed unexpectedly: {exc}", []))
    finally:
        sender.close()


# --- reasons --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a failed verification was about, to turn cryptography's message into a reason."""

    leaf: x509.Certificate
    roots: Sequence[x509.Certificate]
    pool: Pool
    purpose: str | None
    when: dt.datetime
    max_depth: int | None

    @property
    def depth(self) -> int:
        return DEFAULT_MAX_DEPTH if self.max_depth is None else self.max_depth

    @property
    def eku(self) -> str:
        return EKU_NAMES.get(self.purpose or "", "any purpose")


def explain(message: str, context: Context) -> str:
    """One line: what went wrong, then cryptography's own words."""
    detail = message.removeprefix("validation failed: ")
    summary = _summary(detail, context)
    if context.pool.note and "candidates exhausted" in detail and "search limit" not in summary:
        summary = f"search limit reached ({context.pool.note}); among the rest: {summary}"
    return f"{summary} (cryptography: {detail})"


def _summary(detail: str, context: Context) -> str:
    leaf_level = not detail.startswith("candidates exhausted")
    for needle, make in _RULES:
        if needle in detail:
            return make(detail, context, leaf_level)
    return "certificate path not valid"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_problem(cert: x509.Certificate, when: dt.datetime) -> str | None:
    if when < cert.not_valid_before_utc:
        return f"not valid before {_stamp(cert.not_valid_before_utc)}"
    if when > cert.not_valid_after_utc:
        return f"expired at {_stamp(cert.not_valid_after_utc)}"
    return None


def _time_reason(_detail: str, context: Context, leaf_level: bool) -> str:
    if leaf_level:
        return f"certificate {_time_problem(context.leaf, context.when) or 'not valid now'}"
    for cert in [*context.pool.certs, *context.roots]:
        problem = _time_problem(cert, context.when)
        if problem:
            return f"issuer certificate {cert.subject.rfc4514_string()} {problem}"
    return f"an issuer certificate is not valid at {_stamp(context.when)}"


def _critical_reason(detail: str, _context: Context, leaf_level: bool) -> str:
    oid = detail.split("invalid extension: ", 1)[-1].split(":", 1)[0]
    where = "the certificate" if leaf_level else "an issuer certificate"
    return f"unknown critical extension {oid} in {where}"


def _fixed(text: str) -> Callable[[str, Context, bool], str]:
    return lambda _detail, context, _leaf: text.format(c=context)


def _depth_reason(context: Context) -> str:
    if len({c.fingerprint(_SHA256) for c in context.pool.certs}) <= context.depth:
        # too few intermediates for a path that long: the search went round a loop
        return "no path to a trusted root: the intermediates only lead round in a loop"
    return f"no path to a trusted root within {context.depth} intermediates"


def _validator_reason(detail: str, _context: Context, _leaf: bool) -> str:
    return detail.split("ValueError: ", 1)[-1].split(" (encountered", 1)[0]


_SHA256 = hashes.SHA256()

_RULES: tuple[tuple[str, Callable[[str, Context, bool], str]], ...] = (
    (
        "maximum signature check limit",
        _fixed(
            "search limit reached: cryptography's path builder used up its signature-check budget"
        ),
    ),
    (
        "maximum name constraint check limit",
        _fixed("search limit reached: too many name constraint checks"),
    ),
    ("not valid at validation time", _time_reason),
    ("Python extension validator failed", _validator_reason),
    ("required EKU not found", _fixed("EKU does not allow {c.eku}")),
    ("Neither EKU nor anyEKU", _fixed("an issuer's EKU does not allow {c.eku}")),
    ("cA must be asserted", _fixed("an issuer is not a CA (basicConstraints cA is false)")),
    ("has no basicConstraints", _fixed("an issuer is not a CA (no basicConstraints)")),
    ("keyCertSign must be asserted", _fixed("an issuer's keyUsage does not allow keyCertSign")),
    ("path length constraint", _fixed("path length constraint exceeded")),
    (
        "no permitted name constraints",
        _fixed("name constraint violated: a name is outside the permitted subtrees"),
    ),
    ("excluded name constraint", _fixed("name constraint violated: a name is excluded")),
    ("name constraint", _fixed("name constraint cannot be checked")),
    ("unaccounted-for critical extension", _critical_reason),
    (
        "2.5.29.17: Certificate is missing",
        _fixed("certificate has no subjectAltName (required for {c.eku})"),
    ),
    (
        "2.5.29.35: Certificate is missing",
        _fixed("certificate has no authorityKeyIdentifier (required for {c.eku})"),
    ),
    ("must not be asserted in an EE", _fixed("the certificate is a CA, not an end entity")),
    ("EE keyUsage must not assert", _fixed("the certificate is a CA, not an end entity")),
    (
        "signature does not match",
        _fixed("no path to a trusted root: an issuer's signature does not verify"),
    ),
    ("exceeds max depth", lambda _detail, c, _leaf: _depth_reason(c)),
    ("no interior errors", _fixed("no path to a trusted root")),
    ("Forbidden", _fixed("key or signature algorithm not allowed")),
    ("too weak", _fixed("an issuer's key is too weak")),
)
