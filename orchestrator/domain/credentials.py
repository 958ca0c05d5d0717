"""Credentials as the nRF9160 modem stores them: sec_tags, types, digests."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from orchestrator.domain.errors import InvalidCredentialError, InvalidSecTagError

__all__ = [
    "CA_CHAIN_MAX_BYTES",
    "SEC_TAG_MAX",
    "SEC_TAG_MIN",
    "CredentialType",
    "ReportedCredential",
    "sha256_hex",
    "validate_sec_tag",
]

SEC_TAG_MIN = 0
SEC_TAG_MAX = 2_147_483_647
"""Highest sec_tag an application may use; the modem reserves the ones above."""

CA_CHAIN_MAX_BYTES = 4096
"""The modem validates a server chain against a CA chain item of at most 4 KB."""


class CredentialType(enum.IntEnum):
    """Credential types of `AT%CMNG` and `modem_key_mgmt` (one item per sec_tag and type)."""

    CA_CHAIN = 0
    CLIENT_CERT = 1
    CLIENT_KEY = 2
    PSK = 3
    PSK_IDENTITY = 4
    PUBLIC_KEY = 5

    @property
    def is_certificate(self) -> bool:
        """Whether items of this type are X.509 certificates with a notAfter."""
        return self in (CredentialType.CA_CHAIN, CredentialType.CLIENT_CERT)


def validate_sec_tag(sec_tag: int) -> int:
    """Return `sec_tag` if a modem accepts it, else raise `InvalidSecTagError`."""
    if isinstance(sec_tag, bool) or not isinstance(sec_tag, int):
        raise InvalidSecTagError(f"sec_tag must be an integer, got {sec_tag!r}")
    if not SEC_TAG_MIN <= sec_tag <= SEC_TAG_MAX:
        raise InvalidSecTagError(
            f"sec_tag {sec_tag} is outside {SEC_TAG_MIN}..{SEC_TAG_MAX} "
            "(tags above are reserved by the modem)"
        )
    return sec_tag


def sha256_hex(content: bytes) -> str:
    """The digest `AT%CMNG=1` reports for a stored item: SHA-256 of its bytes, hex."""
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportedCredential:
    """One credential a device says its modem holds in (sec_tag, type)."""

    sec_tag: int
    type: CredentialType
    sha256: str
    not_after: datetime | None = None
    subject: str | None = None
    issuer: str | None = None

    def __post_init__(self) -> None:
        validate_sec_tag(self.sec_tag)
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise InvalidCredentialError(
                f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}"
            )
        if self.not_after is not None and self.not_after.tzinfo is None:
            raise InvalidCredentialError("not_after must carry a timezone")
