"""An IAM user's SSH public keys (the keys CodeCommit accepts), through boto3.

devid enforces what the AWS stand-in in the tests does not (DESIGN.md section 3): the
CodeCommit key policy before anything is uploaded, the quota of five keys per user, and
duplicate detection. Keys are compared by their SSH wire blob, and the fingerprint devid
shows is its own :func:`~devid.fingerprint.iam_md5`; the value the endpoint reports is kept
as ``reported_fingerprint`` and never relied on (moto hashes the raw body text).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devid import policy
from devid.aws import AwsOptions, aws_errors, client
from devid.errors import BadInput, CheckFailed, Conflict, DevidError, NotFound
from devid.fingerprint import iam_md5, openssh_sha256, ssh_wire_blob
from devid.keys import PublicKey
from devid.loading import parse_public_key
from devid.policy import parse_key_id
from devid.pubformat import openssh_line

#: At most this many SSH public keys per IAM user (Active and Inactive alike).
QUOTA = 5

# IAM SSHPublicKeyId: "APKA" + upper-case letters/digits, 20 to 128 characters.
# IAM user names: 1-64 of letters, digits and +=,.@_-
_USER = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)


class Status(enum.Enum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"


class Encoding(enum.Enum):
    """How GetSSHPublicKey returns the body: an OpenSSH line or PEM SubjectPublicKeyInfo."""

    SSH = "SSH"
    PEM = "PEM"


def parse_user(text: str) -> str:
    if not _USER.fullmatch(text):
        raise BadInput(f"{text!r} is not an IAM user name (1-64 of letters, digits, +=,.@_-)")
    return text


def _iso(when: datetime) -> str:
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SshKey:
    """One SSH public key of an IAM user, with the public key parsed from its body."""

    key_id: str
    status: Status
    upload_date: datetime
    public_key: PublicKey | None
    reported_fingerprint: str | None

    @property
    def blob(self) -> bytes | None:
        return ssh_wire_blob(self.public_key) if self.public_key is not None else None

    @property
    def fingerprint(self) -> str | None:
        """The OpenSSH-MD5 form IAM shows, computed by devid from the key itself."""
        return iam_md5(self.public_key) if self.public_key is not None else None

    @property
    def uploaded(self) -> str:
        return _iso(self.upload_date)

    def summary(self) -> str:
        return f"{self.key_id} ({self.status.value}, uploaded {self.uploaded})"

    def as_dict(self) -> dict[str, Any]:
        key = self.public_key
        return {
            "key_id": self.key_id,
            "status": self.status.value,
            "upload_date": self.uploaded,
            "fingerprint": self.fingerprint,
            "openssh_sha256": openssh_sha256(key) if key is not None else None,
            "reported_fingerprint": self.reported_fingerprint,
        }


def _public_of_body(body: str | None) -> PublicKey | None:
    if not body:
        return None
    try:
        return parse_public_key(body.encode(), where="IAM key body")
    except DevidError:
        return None  # a body devid cannot read still lists; it just matches nothing


def _key_from(data: dict[str, Any], public_key: PublicKey | None = None) -> SshKey:
    return SshKey(
        key_id=str(data["SSHPublicKeyId"]),
        status=Status(data["Status"]),
        upload_date=data["UploadDate"],
        public_key=public_key or _public_of_body(data.get("SSHPublicKeyBody")),
        reported_fingerprint=data.get("Fingerprint"),
    )


def quota_message(user: str, keys: list[SshKey]) -> str:
    """One line naming the keys a user with a full quota could retire, oldest first."""
    ordered = sorted(keys, key=lambda k: (k.status is Status.ACTIVE, k.upload_date))
    names = ", ".join(k.summary() for k in ordered)
    return (
        f"IAM user {user} already has {len(keys)} SSH public keys, the most IAM allows; "
        f"retire one first ({names}), e.g. devid ssh delete --user {user} "
        f"--key-id {ordered[0].key_id}"
    )


class IamSshKeys:
    """The SSH public keys of one IAM user: list, get, upload, set status, delete."""

    def __init__(self, iam: Any, user: str) -> None:
        self._iam = iam
        self.user = parse_user(user)

    @classmethod
    def connect(cls, user: str, options: AwsOptions) -> IamSshKeys:
        return cls(client("iam", options), user)

    def _codes(self, **extra: DevidError) -> dict[str, DevidError]:
        no_user = NotFound(
            f"no IAM user {self.user}", hint="check --user and the account --profile points at"
        )
        return {"NoSuchEntity": no_user, **extra}

    def _metadata(self) -> Iterator[dict[str, Any]]:
        with aws_errors(f"listing the SSH keys of {self.user}", self._codes()):
            pages = self._iam.get_paginator("list_ssh_public_keys").paginate(UserName=self.user)
            for page in pages:
                yield from page.get("SSHPublicKeys", [])

    def key_ids(self) -> list[str]:
        return [str(meta["SSHPublicKeyId"]) for meta in self._metadata()]

    def _require(self, key_id: str) -> None:
        """Fail clearly when the user (NotFound "no IAM user") or the key does not exist."""
        if parse_key_id(key_id) not in self.key_ids():
            raise NotFound(
                f"IAM user {self.user} has no SSH public key {key_id}",
                hint=f"devid ssh list --user {self.user} shows its keys",
            )

    def _key_codes(self, key_id: str) -> dict[str, DevidError]:
        return {"NoSuchEntity": NotFound(f"IAM user {self.user} has no SSH public key {key_id}")}

    def body(self, key_id: str, encoding: Encoding = Encoding.SSH) -> str:
        """The key's body as IAM returns it in *encoding*."""
        return str(self._get(key_id, encoding).get("SSHPublicKeyBody", ""))

    def _get(self, key_id: str, encoding: Encoding) -> dict[str, Any]:
        with aws_errors(f"reading SSH key {key_id}", self._key_codes(key_id)):
            response = self._iam.get_ssh_public_key(
                UserName=self.user, SSHPublicKeyId=key_id, Encoding=encoding.value
            )
        return dict(response["SSHPublicKey"])

    def get(self, key_id: str) -> SshKey:
        self._require(key_id)
        return _key_from(self._get(key_id, Encoding.SSH))

    def list_keys(self) -> list[SshKey]:
        """Every key of the user with its public key (one GetSSHPublicKey call per key)."""
        return [_key_from(self._get(key_id, Encoding.SSH)) for key_id in self.key_ids()]

    def find(self, key: PublicKey, keys: list[SshKey] | None = None) -> SshKey | None:
        """The registered key with the same SSH wire blob as *key*, if any."""
        blob = ssh_wire_blob(key)
        candidates = self.list_keys() if keys is None else keys
        return next((k for k in candidates if k.blob == blob), None)

    def upload(self, key: PublicKey, *, existing: list[SshKey] | None = None) -> SshKey:
        """Upload *key* after the pre-flight checks devid makes itself.

        Raises :class:`CheckFailed` when CodeCommit does not accept the key type or size,
        :class:`Conflict` when the key is registered already or the quota is full.
        *existing* is the user's keys when the caller has just listed them.
        """
        verdict = policy.check(key, policy.Service.CODECOMMIT)
        if not verdict.ok:
            raise CheckFailed(verdict.reason)
        existing = self.list_keys() if existing is None else existing
        same = self.find(key, existing)
        if same is not None:
            raise Conflict(
                f"this key is already registered for IAM user {self.user} as {same.summary()}"
            )
        if len(existing) >= QUOTA:
            raise Conflict(quota_message(self.user, existing))
        body = openssh_line(key).decode()
        codes = self._codes(
            DuplicateSSHPublicKey=Conflict(
                f"this key is already registered for IAM user {self.user}"
            ),
            LimitExceeded=Conflict(f"IAM user {self.user} has the most SSH keys IAM allows"),
            InvalidPublicKey=CheckFailed("IAM refused the key as invalid"),
            UnrecognizedPublicKeyEncoding=BadInput("IAM did not recognise the key encoding"),
        )
        with aws_errors(f"uploading an SSH key for {self.user}", codes):
            response = self._iam.upload_ssh_public_key(UserName=self.user, SSHPublicKeyBody=body)
        return _key_from(dict(response["SSHPublicKey"]), key)

    def set_status(self, key_id: str, status: Status) -> SshKey:
        self._require(key_id)
        with aws_errors(f"setting SSH key {key_id} {status.value}", self._key_codes(key_id)):
            self._iam.update_ssh_public_key(
                UserName=self.user, SSHPublicKeyId=key_id, Status=status.value
            )
        return _key_from(self._get(key_id, Encoding.SSH))

    def delete(self, key_id: str) -> SshKey:
        """Delete the key and return what it was."""
        gone = self.get(key_id)
        with aws_errors(f"deleting SSH key {key_id}", self._key_codes(key_id)):
            self._iam.delete_ssh_public_key(UserName=self.user, SSHPublicKeyId=key_id)
        return gone


__all__ = [
    "QUOTA",
    "Encoding",
    "IamSshKeys",
    "SshKey",
    "Status",
    "parse_key_id",
    "parse_user",
    "quota_message",
]
