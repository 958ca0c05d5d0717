"""The nRF9160 modem's credential store, as `modem_key_mgmt` and `AT%CMNG` behave.

Rules modelled: sec_tags 0..2147483647; six credential types; one item per
(sec_tag, type); writes and deletes only while the modem is offline (`CFUN=4`);
a CA chain item of at most 4 KB; a store of limited size; and the modem's error
codes, raised as typed exceptions.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from orchestrator.protocol import (
    CA_CHAIN_MAX_BYTES,
    SEC_TAG_MAX,
    SEC_TAG_MIN,
    CredentialEntry,
    CredentialType,
    sha256_hex,
)

__all__ = [
    "DEFAULT_CAPACITY_BYTES",
    "AlreadyExistsError",
    "FunctionalMode",
    "InvalidContentError",
    "Modem",
    "ModemError",
    "NotFoundError",
    "NotPermittedError",
    "StoreFullError",
    "StoredItem",
]

DEFAULT_CAPACITY_BYTES = 32 * 1024
"""Room this model gives all items together (the real figure depends on firmware)."""


class ModemError(Exception):
    """A refused key-store operation; `errno` is what `modem_key_mgmt_*` returns negated."""

    errno: int = errno.EIO
    modem_error: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)


class NotPermittedError(ModemError):
    """`-EPERM`: the key store is changed only while the modem is offline (`CFUN=4`)."""

    errno = errno.EPERM


class StoreFullError(ModemError):
    """`-ENOMEM`: no room left in the key store (modem error 515)."""

    errno = errno.ENOMEM
    modem_error = 515


class AlreadyExistsError(ModemError):
    """`-EALREADY`: the (sec_tag, type) slot holds an item; delete it first (519)."""

    errno = errno.EALREADY
    modem_error = 519


class InvalidContentError(ModemError):
    """`-EINVAL`: a bad sec_tag, type or content, or an item over its size limit (527)."""

    errno = errno.EINVAL
    modem_error = 527


class NotFoundError(ModemError):
    """`-ENOENT`: nothing is stored in that (sec_tag, type) slot."""

    errno = errno.ENOENT


class FunctionalMode(enum.IntEnum):
    """`AT+CFUN` modes that matter to the key store."""

    ONLINE = 1
    OFFLINE = 4


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One item in the key store, with what `AT%CMNG=1` and `AT%CERTEXPIRY` tell of it."""

    sec_tag: int
    type: CredentialType
    content: bytes
    sha256: str
    not_after: datetime | None
    subject: str | None
    issuer: str | None

    def to_entry(self) -> CredentialEntry:
        """The state-message entry for this item."""
        return CredentialEntry(
            sec_tag=self.sec_tag,
            type=self.type,
            sha256=self.sha256,
            not_after=self.not_after,
            subject=self.subject,
            issuer=self.issuer,
        )


def _check_slot(sec_tag: int, cred_type: int) -> CredentialType:
    if isinstance(sec_tag, bool) or not isinstance(sec_tag, int):
        raise InvalidContentError(f"sec_tag must be an integer, got {sec_tag!r}")
    if not SEC_TAG_MIN <= sec_tag <= SEC_TAG_MAX:
        raise InvalidContentError(f"sec_tag {sec_tag} is outside {SEC_TAG_MIN}..{SEC_TAG_MAX}")
    try:
        return CredentialType(cred_type)
    except ValueError:
        raise InvalidContentError(f"unknown credential type {cred_type!r}") from None


def _describe(
    cred_type: CredentialType, content: bytes
) -> tuple[datetime | None, str | None, str | None]:
    """notAfter (earliest in a chain), subject and issuer of the first certificate."""
    if not cred_type.is_certificate:
        return None, None, None
    try:
        certificates = x509.load_pem_x509_certificates(content)
    except ValueError as exc:
        raise InvalidContentError(f"not a PEM certificate: {exc}") from None
    if not certificates:
        raise InvalidContentError("no certificate in the content")
    first = certificates[0]
    return (
        min(c.not_valid_after_utc for c in certificates),
        first.subject.rfc4514_string(),
        first.issuer.rfc4514_string(),
    )


class Modem:
    """One modem's key store and functional mode. Starts offline, as after boot."""

    def __init__(self, *, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        self._items: dict[tuple[int, CredentialType], StoredItem] = {}
        self._mode = FunctionalMode.OFFLINE
        self._capacity = capacity_bytes

    @property
    def mode(self) -> FunctionalMode:
        """The current `AT+CFUN` mode."""
        return self._mode

    @property
    def online(self) -> bool:
        """Whether the link is up (`CFUN=1`)."""
        return self._mode is FunctionalMode.ONLINE

    def cfun(self, mode: FunctionalMode) -> None:
        """`AT+CFUN=<mode>`."""
        self._mode = FunctionalMode(mode)

    @property
    def used_bytes(self) -> int:
        """Bytes taken by all stored items."""
        return sum(len(item.content) for item in self._items.values())

    def write(self, sec_tag: int, cred_type: int, content: bytes) -> StoredItem:
        """`modem_key_mgmt_write` / `AT%CMNG=0`."""
        slot_type = _check_slot(sec_tag, cred_type)
        if self.online:
            raise NotPermittedError("the key store is written only while offline (CFUN=4)")
        if not content:
            raise InvalidContentError("empty content")
        if slot_type is CredentialType.CA_CHAIN and len(content) > CA_CHAIN_MAX_BYTES:
            raise InvalidContentError(
                f"CA chain of {len(content)} bytes exceeds the {CA_CHAIN_MAX_BYTES}-byte limit"
            )
        if (sec_tag, slot_type) in self._items:
            raise AlreadyExistsError(f"sec_tag {sec_tag} already holds type {slot_type.name}")
        if self.used_bytes + len(content) > self._capacity:
            raise StoreFullError(
                f"{len(content)} bytes do not fit: {self.used_bytes} of {self._capacity} used"
            )
        not_after, subject, issuer = _describe(slot_type, content)
        item = StoredItem(
            sec_tag=sec_tag,
            type=slot_type,
            content=bytes(content),
            sha256=sha256_hex(content),
            not_after=not_after,
            subject=subject,
            issuer=issuer,
        )
        self._items[(sec_tag, slot_type)] = item
        return item

    def delete(self, sec_tag: int, cred_type: int) -> None:
        """`modem_key_mgmt_delete` / `AT%CMNG=3`."""
        slot_type = _check_slot(sec_tag, cred_type)
        if self.online:
            raise NotPermittedError("the key store is changed only while offline (CFUN=4)")
        if self._items.pop((sec_tag, slot_type), None) is None:
            raise NotFoundError(f"sec_tag {sec_tag} holds no type {slot_type.name}")

    def read(self, sec_tag: int, cred_type: int) -> bytes:
        """`modem_key_mgmt_read` (certificates only, as on the modem)."""
        slot_type = _check_slot(sec_tag, cred_type)
        if not slot_type.is_certificate:
            raise NotPermittedError(f"type {slot_type.name} cannot be read back")
        return self._get(sec_tag, slot_type).content

    def digest(self, sec_tag: int, cred_type: int) -> str:
        """`modem_key_mgmt_digest`: SHA-256 of the stored item, hex."""
        return self._get(sec_tag, _check_slot(sec_tag, cred_type)).sha256

    def exists(self, sec_tag: int, cred_type: int) -> bool:
        """`modem_key_mgmt_exists`."""
        return (sec_tag, _check_slot(sec_tag, cred_type)) in self._items

    def items(self) -> list[StoredItem]:
        """`AT%CMNG=1`: every item, ordered by (sec_tag, type)."""
        return [self._items[key] for key in sorted(self._items)]

    def _get(self, sec_tag: int, slot_type: CredentialType) -> StoredItem:
        try:
            return self._items[(sec_tag, slot_type)]
        except KeyError:
            raise NotFoundError(f"sec_tag {sec_tag} holds no type {slot_type.name}") from None
