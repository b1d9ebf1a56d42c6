"""Public-key encodings: OpenSSH line, RFC 4716, PEM and DER SubjectPublicKeyInfo."""

from __future__ import annotations

import base64
import enum

from cryptography.hazmat.primitives import serialization

from devid.fingerprint import ssh_wire_blob
from devid.keys import PublicKey


class PublicFormat(enum.Enum):
    OPENSSH = "openssh"
    RFC4716 = "rfc4716"
    PEM = "pem"
    DER = "der"


def openssh_line(key: PublicKey, comment: str = "") -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + (b" " + comment.encode() if comment else b"")


def rfc4716(key: PublicKey, comment: str = "") -> bytes:
    """RFC 4716 section 3: header lines under 72 bytes, base64 body in lines of 70."""
    body = base64.b64encode(ssh_wire_blob(key)).decode()
    lines = ["---- BEGIN SSH2 PUBLIC KEY ----"]
    if comment:
        escaped = comment.replace("\\", "\\\\").replace('"', '\\"')
        header = f'Comment: "{escaped}"'
        # Continue long header lines with a trailing backslash (RFC 4716 section 3.3).
        while len(header) > 72:
            lines.append(header[:71] + "\\")
            header = header[71:]
        lines.append(header)
    lines += [body[i : i + 70] for i in range(0, len(body), 70)]
    lines.append("---- END SSH2 PUBLIC KEY ----")
    return ("\n".join(lines) + "\n").encode()


def public_bytes(key: PublicKey, fmt: PublicFormat, *, comment: str = "") -> bytes:
    """*key* encoded as *fmt*; text formats end with a newline."""
    if fmt is PublicFormat.OPENSSH:
        return openssh_line(key, comment) + b"\n"
    if fmt is PublicFormat.RFC4716:
        return rfc4716(key, comment)
    encoding = serialization.Encoding.PEM if fmt is PublicFormat.PEM else serialization.Encoding.DER
    return key.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
