"""devid's ``verify_chain`` on a path-validation suite, against openssl and cryptography.

The suite
---------
``verify_cases.py`` builds, with cryptography's certificate builders and software P-256 keys,
one small PKI per case and records the verdict it should get:

- valid chains: root > CA > device (clientAuth, SAN URI + DNS, as devid's device profile),
  a leaf issued by the root, a serverAuth leaf, no purpose, a leaf with neither SAN nor EKU,
  a leaf without authorityKeyIdentifier, an Ed25519 leaf, the root repeated in the pool, a
  trusted self-signed leaf, an unknown non-critical extension, ``at=None`` (now);
- time: expired / not-yet-valid leaf, expired intermediate, expired root, a past ``--at``;
- purpose: serverAuth leaf for client, clientAuth leaf for server, a CA whose EKU excludes
  clientAuth, no EKU at all;
- constraints: CA:false issuer, issuer without basicConstraints, path length kept / exceeded,
  name constraints permitted / not permitted / excluded, unknown critical extension on the
  leaf and on the intermediate, a CA certificate as the leaf;
- signatures and trust: forged signature, untrusted self-signed leaf, untrusted root, missing
  intermediate, RSA-1024 leaf and RSA-1024 intermediate;
- depth: three intermediates with ``max_depth`` 3 and 2, an unordered pool;
- cross-signing: one subject and key under two roots with one path expired or untrusted, and
  with every path bad;
- a pool of 72 decoys (unrelated CAs, same-name CAs with other keys, duplicates);
- pathological: 24 self-issued CAs with one subject and key cross-signing each other, with and
  without a path to the root (``limit_ok``: the expected verdict or a "search limit" failure).

What is asserted, per case
--------------------------
1. devid gives the expected verdict (and its reason contains the expected phrase), both with
   the forked, deadline-bounded worker and in-process.
2. ``openssl verify -CAfile roots -untrusted pool [-purpose sslclient|sslserver] [-attime T]
   [-verify_depth N]`` gives the expected verdict, or the one the case documents where
   OpenSSL is laxer (no SAN/AKI/EE checks, no RSA minimum) or builds paths without
   backtracking (cross-signed, mesh).
3. Never worse than cryptography: cryptography's own verifier is called directly (the client
   verifier; for "server" the server verifier with the leaf's DNS name). Wherever it gives the
   expected verdict, devid gives it too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import run_tool
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from verify_cases import Case, all_cases

from devid.pki.verify import DEFAULT_LIMITS, SearchLimits, VerifyResult, verify_chain

CASES = all_cases()
IN_PROCESS = SearchLimits(seconds=None)
OPENSSL_PURPOSE = {"client": "sslclient", "server": "sslserver"}


def run_devid(case: Case, limits: SearchLimits = DEFAULT_LIMITS) -> VerifyResult:
    return verify_chain(
        case.leaf,
        roots=list(case.roots),
        intermediates=list(case.intermediates),
        purpose=case.purpose,
        at=case.at,
        max_depth=case.max_depth,
        limits=limits,
    )


def run_openssl(case: Case, tmp: Path) -> bool:
    def pem(name: str, certs: tuple[x509.Certificate, ...]) -> str:
        path = tmp / name
        path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
        return str(path)

    args = ["openssl", "verify", "-CAfile", pem("roots.pem", case.roots)]
    if case.intermediates:
        args += ["-untrusted", pem("pool.pem", case.intermediates)]
    if case.purpose:
        args += ["-purpose", OPENSSL_PURPOSE[case.purpose]]
    if case.at is not None:
        args += ["-attime", str(int(case.at.timestamp()))]
    if case.max_depth is not None:
        args += ["-verify_depth", str(case.max_depth)]
    args.append(pem("leaf.pem", (case.leaf,)))
    return run_tool(*args, check=False).returncode == 0


def run_cryptography(case: Case) -> bool:
    """cryptography's own verifier, called directly on the same inputs."""
    builder = PolicyBuilder().store(Store(list(case.roots)))
    if case.at is not None:
        builder = builder.time(case.at)
    if case.max_depth is not None:
        builder = builder.max_chain_depth(case.max_depth)
    try:
        if case.purpose == "server":
            builder.build_server_verifier(x509.DNSName(_dns_name(case.leaf))).verify(
                case.leaf, list(case.intermediates)
            )
        else:
            builder.build_client_verifier().verify(case.leaf, list(case.intermediates))
    except VerificationError:
        return False
    return True


def _dns_name(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no-name.invalid"
    names = san.get_values_for_type(x509.DNSName)
    return names[0] if names else "no-name.invalid"


def as_expected(case: Case, result: VerifyResult) -> bool:
    if case.limit_ok and result.reason.startswith("search limit reached"):
        return True
    if result.ok != case.expect_ok:
        return False
    if result.ok:
        return result.reason == "ok" and len(result.chain) >= 1
    return any(part in result.reason for part in case.reason.split("|")) and not result.chain


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, IN_PROCESS], ids=["worker", "in-process"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_devid_gives_the_expected_verdict(case: Case, limits: SearchLimits) -> None:
    result = run_devid(case, limits)
    assert as_expected(case, result), f"{case.name}: {result.reason} ({case.why})"
    assert "\n" not in result.reason


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_openssl_agrees_with_the_suite(case: Case, tmp_path: Path) -> None:
    assert run_openssl(case, tmp_path) == case.openssl_ok, f"{case.name}: {case.why}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_never_worse_than_cryptography(case: Case) -> None:
    if run_cryptography(case) == case.expect_ok:
        result = run_devid(case)
        assert result.ok == case.expect_ok, f"{case.name}: cryptography got it, devid did not"


def test_the_suite_covers_what_the_issue_names() -> None:
    names = {c.name for c in CASES}
    for needed in (
        "expired_leaf",
        "not_yet_valid_leaf",
        "expired_intermediate",
        "server_leaf_for_client",
        "ca_false_intermediate",
        "missing_basic_constraints_intermediate",
        "path_length_exceeded",
        "name_constraints_not_permitted",
        "name_constraints_excluded",
        "critical_unknown_extension_leaf",
        "critical_unknown_extension_intermediate",
        "wrong_signature",
        "self_signed_leaf_untrusted",
        "max_depth_exceeded",
        "cross_signed_one_expired",
        "decoys_in_pool",
        "mesh_with_bridge",
    ):
        assert needed in names
    assert sum(not c.expect_ok for c in CASES) >= 20


def test_devid_finds_the_mesh_path_where_cryptography_gives_up() -> None:
    """The pool order devid hands over puts the one root-signed candidate first."""
    case = next(c for c in CASES if c.name == "mesh_with_bridge")
    assert run_cryptography(case) is False  # its signature-check budget runs out first
    result = run_devid(case)
    assert result.ok, result.reason
    assert [c.subject for c in result.chain][1:] == [
        case.intermediates[-1].subject,
        case.roots[0].subject,
    ]


def test_chain_is_leaf_to_root_with_the_callers_objects() -> None:
    case = next(c for c in CASES if c.name == "depth_3_allowed")
    result = run_devid(case)
    assert result.chain[0] is case.leaf
    assert result.chain[-1] is case.roots[0]
    assert result.chain[1:-1] == list(reversed(case.intermediates))
    assert all(a.issuer == b.subject for a, b in zip(result.chain, result.chain[1:], strict=False))


def test_reasons_carry_cryptographys_words() -> None:
    case = next(c for c in CASES if c.name == "expired_leaf")
    result = run_devid(case)
    expiry = case.leaf.not_valid_after_utc.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.reason.startswith(f"certificate expired at {expiry} (cryptography: ")
    assert "not valid at validation time" in result.reason
