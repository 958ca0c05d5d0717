"""Credentials as the nRF9160 modem stores them: sec_tags, types, digests."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.domain.errors import (
    CaChainTooLargeError,
    InvalidCredentialError,
    InvalidSecTagError,
)

__all__ = [
    "CA_CHAIN_MAX_BYTES",
    "SEC_TAG_MAX",
    "SEC_TAG_MIN",
    "CredentialType",
    "ReportedCredential",
    "ca_chain_item",
    "sha256_hex",
    "validate_sec_tag",
]

SEC_TAG_MIN = 0
SEC_TAG_MAX = 2_147_483_647
"""Highest sec_tag an application may use; the modem reserves the ones above."""

CA_CHAIN_MAX_BYTES = 4096
"""The modem validates a server chain against a CA chain item of at most 4 KB: the PEM
text bytes written to it (ASCII, every line and newline, no NUL), as `ca_chain_item`
counts them."""


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


def ca_chain_item(pems: Sequence[str], *, what: str = "the CA chain") -> str:
    """The one CA chain item several CAs for one sec_tag are stored as, checked to fit.

    A modem holds one item per (sec_tag, type): a second type-0 write to a tag fails
    (-EALREADY), so CAs that share a tag travel and are stored as their PEMs
    concatenated, in order, each starting on a line of its own. One PEM stays byte for
    byte what it was, so its digest is the digest of the file it came from.

    Raises:
        CaChainTooLargeError: the item is over `CA_CHAIN_MAX_BYTES`; `what` names it.
    """
    parts: list[str] = []
    for pem in pems:
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(pem)
    item = "".join(parts)
    size = len(item.encode())
    if size > CA_CHAIN_MAX_BYTES:
        raise CaChainTooLargeError(
            f"{what} is {size} bytes as one CA chain item (the PEM text of "
            f"{len(pems)} certificate file{'s' if len(pems) != 1 else ''}), over the "
            f"{CA_CHAIN_MAX_BYTES}-byte item a modem stores per sec_tag: give fewer CAs, "
            "or CAs with smaller keys (ECDSA) or fewer extensions"
        )
    return item


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
