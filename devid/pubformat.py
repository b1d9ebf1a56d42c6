"""Public-key encodings: OpenSSH line, RFC 4716, PEM and DER SubjectPublicKeyInfo."""

from __future__ import annotations

import base64
import enum

from cryptography.hazmat.primitives import serialization

from devid.errors import BadInput
from devid.fingerprint import ssh_wire_blob
from devid.keys import PublicKey


class PublicFormat(enum.Enum):
    OPENSSH = "openssh"
    RFC4716 = "rfc4716"
    PEM = "pem"
    DER = "der"


def check_comment(comment: str) -> str:
    """*comment*, refused if it holds control characters: a newline in an OpenSSH line
    would start another authorized_keys entry, and RFC 4716 headers are one logical line."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in comment):
        raise BadInput("a key comment may not contain newlines or other control characters")
    return comment


def openssh_line(key: PublicKey, comment: str = "") -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + (b" " + check_comment(comment).encode() if comment else b"")


#: RFC 4716 section 3: no line longer than 72 bytes
RFC4716_LINE_BYTES = 72
_COMMENT_FRAME = len(b'Comment: ""')


def rfc4716_comment(comment: str) -> str:
    """*comment* escaped for an RFC 4716 ``Comment:`` header and, like ``ssh-keygen -e``,
    shortened to fit one line of 72 bytes: PuTTY reads no continued header lines. Cuts
    fall between characters and never leave a lone escaping backslash."""
    escaped = check_comment(comment).replace("\\", "\\\\").replace('"', '\\"')
    room = RFC4716_LINE_BYTES - _COMMENT_FRAME
    while len(escaped.encode()) > room:
        escaped = escaped[:-1]
    if (len(escaped) - len(escaped.rstrip("\\"))) % 2:  # odd run: the last would escape '"'
        escaped = escaped[:-1]
    return escaped


def rfc4716(key: PublicKey, comment: str = "") -> bytes:
    """RFC 4716 section 3: the comment header in one line of at most 72 bytes (see
    :func:`rfc4716_comment`), the base64 body in lines of 70."""
    body = base64.b64encode(ssh_wire_blob(key)).decode()
    lines = ["---- BEGIN SSH2 PUBLIC KEY ----"]
    if comment:
        lines.append(f'Comment: "{rfc4716_comment(comment)}"')
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
