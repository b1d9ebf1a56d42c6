"""``devid iot create-from-csr`` when a step fails after AWS IoT created the certificate.

AWS IoT has made the certificate by then; devid must take it back (delete it from AWS IoT and
write nothing), or, when it cannot, leave a file and an inventory record of what is there.
moto signs a key of its own (DESIGN.md section 3), so :class:`SigningIot` signs the CSR's key
and registers the result in moto; :class:`FailingIot` makes chosen calls fail as AWS IoT does
with an internal error (HTTP 500). Every other call goes to the moto server.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MotoServer
from cryptography import x509
from iot_aws_support import (
    Devid,
    FailingIot,
    make_csr,
    ok_json,
    one_error_line,
    openssl_iot_id,
    registrations,
    snapshot,
)

from devid.errors import BadInput
from devid.iot import LeftInAws, create_from_csr


def _in_aws(iot: Any) -> list[tuple[str, str]]:
    return [(c["certificateId"], c["status"]) for c in iot.list_certificates()["certificates"]]


@pytest.fixture
def iot(moto: MotoServer) -> Any:
    return moto.client("iot")


@pytest.fixture
def failing(iot: Any, monkeypatch: pytest.MonkeyPatch) -> FailingIot:
    """The client ``devid iot`` commands get: signs the CSR's key, fails on cue."""
    client = FailingIot(iot)
    monkeypatch.setattr("devid.cli.iot_aws._client", lambda *options: client)
    return client


@pytest.mark.parametrize("force", [False, True])
def test_failed_activation_deletes_the_certificate_and_writes_nothing(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    iot: Any,
    failing: FailingIot,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
    force: bool,
) -> None:
    csr = make_csr(openssl_key("ec-p256"), "/CN=sensor-20", tmp_path / "d.csr")
    out = tmp_path / "d.pem"
    old = "the certificate --force would replace\n"
    if force:
        out.write_text(old)
    overwrite = ["--force"] if force else []
    before = snapshot(pki_home)
    failing.failing.add("describe_certificate")  # the activation step asks for the status first

    args = ["iot", "create-from-csr", str(csr), "--out", str(out), "--activate", *overwrite]
    result = devid(*args, *moto.aws_args())

    assert result.code == 3, result.err
    line = one_error_line(result)
    assert "activating certificate " in line and "AWS said InternalFailure" in line
    assert "was deleted from AWS IoT" in line
    assert failing.calls == ["describe_certificate"]
    assert _in_aws(iot) == []
    assert (
        out.read_text() == "the certificate --force would replace\n" if force else not out.exists()
    )
    assert snapshot(pki_home) == before

    failing.failing.clear()  # AWS IoT answers again: a rerun is no conflict
    done = ok_json(devid, *args, *moto.aws_args())
    assert done["status"] == "ACTIVE"
    assert done["aws_iot_certificate_id"] == openssl_iot_id(out) == done["aws_certificate_id"]
    assert _in_aws(iot) == [(openssl_iot_id(out), "ACTIVE")]
    assert [(r["arn"], r["status"]) for r in registrations(pki_home)] == [
        (done["certificate_arn"], "ACTIVE")
    ]


def test_certificate_that_cannot_be_deleted_is_kept_and_recorded(
    devid: Devid,
    pki_home: Path,
    moto: MotoServer,
    iot: Any,
    failing: FailingIot,
    tmp_path: Path,
    openssl_key: Callable[[str], Path],
) -> None:
    csr = make_csr(openssl_key("rsa-2048"), "/CN=sensor-21", tmp_path / "d.csr")
    out = tmp_path / "d.pem"
    failing.failing.update({"describe_certificate", "delete_certificate"})

    result = devid("iot", "create-from-csr", csr, "--out", out, "--activate", *moto.aws_args())

    assert result.code == 3, result.err
    line = one_error_line(result)
    cert_id = openssl_iot_id(out)
    assert f"activating certificate {cert_id} failed" in line
    assert "deleting it from AWS IoT again failed too" in line
    assert f"wrote {out} and recorded it in the inventory" in line
    assert f"'devid iot status {cert_id} active'" in line
    assert failing.calls == ["describe_certificate", "delete_certificate"]
    assert _in_aws(iot) == [(cert_id, "INACTIVE")]
    csr_key = x509.load_pem_x509_csr(csr.read_bytes()).public_key()
    assert x509.load_pem_x509_certificate(out.read_bytes()).public_key() == csr_key
    [row] = registrations(pki_home)
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
        "certificateArn"
    ]
    assert (row["arn"], row["certificate_id"], row["status"], row["kind"]) == (
        arn,
        cert_id,
        "INACTIVE",
        "certificate",
    )
    with sqlite3.connect(pki_home / "inventory.sqlite") as db:
        [(detail,)] = db.execute("SELECT detail FROM events WHERE kind = 'iot.create-from-csr'")
    assert json.loads(detail)["path"] == str(out)

    failing.failing.clear()  # what the error says to do works
    assert (
        ok_json(devid, "iot", "status", cert_id, "active", *moto.aws_args())["status"] == "ACTIVE"
    )
    assert registrations(pki_home)[0]["status"] == "ACTIVE"


def test_failed_keep_with_delete_failing_says_what_is_left(
    iot: Any, tmp_path: Path, openssl_key: Callable[[str], Path]
) -> None:
    """Library level: *keep* fails (exit 2 for bad input) and so does DeleteCertificate."""
    csr_path = make_csr(openssl_key("ec-p384"), "/CN=sensor-22", tmp_path / "d.csr")
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    discarded: list[x509.Certificate] = []

    def keep(cert: x509.Certificate) -> None:
        raise BadInput("cannot write there")

    with pytest.raises(LeftInAws) as raised:
        create_from_csr(
            FailingIot(iot, "delete_certificate"),
            csr,
            activate=True,
            keep=keep,
            discard=discarded.append,
        )
    left = raised.value
    assert left.exit_code == 2 and left.kept is False and discarded == []
    assert str(left).startswith("cannot write there; deleting it from AWS IoT again failed too")
    assert _in_aws(iot) == [(left.certificate.certificate_id, "INACTIVE")]


def test_interrupted_activation_takes_the_certificate_back(
    iot: Any, tmp_path: Path, openssl_key: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM) during activation: deleted from AWS IoT, *keep* undone, re-raised."""
    csr_path = make_csr(openssl_key("ec-p256"), "/CN=sensor-23", tmp_path / "d.csr")
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    kept: list[x509.Certificate] = []

    def interrupted(*args: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("devid.iot.set_status", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_from_csr(FailingIot(iot), csr, activate=True, keep=kept.append, discard=kept.remove)
    assert kept == []
    assert _in_aws(iot) == []
