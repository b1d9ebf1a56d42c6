"""A private world for the benchmark: SoftHSM config, DEVID_HOME, CAs, device CSRs.

Everything lives under one temporary directory, so the benchmark never touches the user's
tokens or inventory. The environment variables are set before the PKCS#11 module is loaded
(SoftHSM reads ``SOFTHSM2_CONF`` at initialisation) and are inherited by every spawned worker
and every tool the benchmark runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PIN = "1234"
SO_PIN = "0000"
CA_TOKEN = "bench-ca"
SOFT_CA = "bench-soft"  # issuing CA, P-256 key in a file
TOKEN_CA = "bench-token"  # issuing CA, P-256 key on the token CA_TOKEN
ROOT_CA = "bench-root"
ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
INSTALL = {
    "openssl": "openssl",
    "pkcs11-tool": "opensc",
    "softhsm2-util": "softhsm2",
    ENGINE: "libengine-pkcs11-openssl",
    MODULE: "softhsm2",
}


class MissingTool(RuntimeError):
    pass


def check_tools() -> None:
    """Fail (never skip) with the install hint when a tool the benchmark needs is missing."""
    missing = [
        f"{name} (apt-get install {package})"
        for name, package in INSTALL.items()
        if not (Path(name).exists() if name.startswith("/") else shutil.which(name))
    ]
    if missing:
        raise MissingTool("missing: " + ", ".join(missing))


@dataclass(frozen=True)
class Ca:
    """A CA devid created, with what openssl needs to sign as the same CA."""

    name: str
    cert_path: Path
    key_ref: str  # a file path or a pkcs11: URI (no PIN)


def isolate(root: Path) -> None:
    """Point SoftHSM, devid's data directory and the PIN at *root* (before any token use)."""
    import hsm  # loaded here: nothing of python-pkcs11 may run before SOFTHSM2_CONF is set

    os.environ["SOFTHSM2_CONF"] = hsm.softhsm_config(str(root / "softhsm"))
    os.environ["DEVID_HOME"] = str(root / "devid-home")
    os.environ["DEVID_PKCS11_PIN"] = PIN
    for name in ("DEVID_STORE", "DEVID_PKCS11_MODULE", "OPENSSL_CONF", "DEVID_PASSPHRASE"):
        os.environ.pop(name, None)


def make_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="devid-bench-"))


def new_token(label: str) -> str:
    """Initialise a fresh SoftHSM token; returns its URI."""
    import hsm

    hsm.init_softhsm_token(label, so_pin=SO_PIN, user_pin=PIN)
    return f"pkcs11:token={label}"


def delete_token(label: str) -> None:
    """Remove a token made by :func:`new_token` (keeps the slot list short between runs)."""
    from hsm.module import refresh

    subprocess.run(
        ["softhsm2-util", "--delete-token", "--token", label],
        check=True,
        capture_output=True,
    )
    refresh()


def make_cas(root: Path) -> tuple[Ca, Ca]:
    """A root CA (file key), and under it the two issuing CAs: file key and token key."""
    from devid.keys import KeyType, generate_key
    from devid.pki.ca import CaRequest, init_ca
    from devid.store import open_store

    token = new_token(CA_TOKEN)
    keys = root / "keys"
    keys.mkdir()
    refs = {}
    for name in (ROOT_CA, SOFT_CA):
        generate_key(KeyType.EC_P256, out=keys / f"{name}.key")
        refs[name] = str(keys / f"{name}.key")
    refs[TOKEN_CA] = generate_key(KeyType.EC_P256, token=token, label=TOKEN_CA)[1]
    store = open_store()
    try:
        init_ca(CaRequest(ROOT_CA, refs[ROOT_CA]), store=store)
        made = [
            init_ca(CaRequest(name, refs[name], parent=ROOT_CA), store=store)
            for name in (SOFT_CA, TOKEN_CA)
        ]
    finally:
        store.close()
    soft, tok = (Ca(ca.name, ca.directory / "ca.pem", ca.key_ref) for ca in made)
    return soft, tok


def device_csrs(count: int, prefix: str = "dev") -> list[x509.CertificateSigningRequest]:
    """CSRs (CN = the device id) signed by fresh software P-256 device keys."""
    out = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{prefix}-{i:06d}")])
        out.append(
            x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        )
    return out


def write_csr_files(
    csrs: list[x509.CertificateSigningRequest], directory: Path
) -> Iterator[tuple[Path, Path]]:
    """Each CSR as PEM beside an openssl extension file giving devid's device extensions."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, csr in enumerate(csrs):
        cn = str(csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        csr_path = directory / f"{n}.csr"
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        ext_path = directory / f"{n}.ext"
        ext_path.write_text(openssl_extensions(cn))
        yield csr_path, ext_path


def openssl_extensions(device_id: str) -> str:
    """devid's ``device`` profile as an openssl ``-extfile`` section named ``v3``."""
    return (
        "[v3]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = clientAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
        f"subjectAltName = URI:urn:devid:{device_id}, DNS:{device_id}\n"
    )


def engine_config(directory: Path) -> Path:
    """An openssl.cnf loading the libp11 engine with SoftHSM as its module."""
    path = directory / "engine.cnf"
    path.write_text(
        "openssl_conf = openssl_init\n\n[openssl_init]\nengines = engine_section\n\n"
        "[engine_section]\npkcs11 = pkcs11_section\n\n"
        f"[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {ENGINE}\n"
        f"MODULE_PATH = {MODULE}\ninit = 0\n"
    )
    return path
