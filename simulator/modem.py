"""The nRF9160 modem's credential store, as `modem_key_mgmt`, `AT%CMNG` and `AT%KEYGEN` behave.

Rules modelled: sec_tags 0..2147483647; six credential types; one item per
(sec_tag, type); writes, deletes and key generation only while the modem is offline
(`CFUN=4`); a CA chain item of at most 4 KB; a store of limited size; and the modem's
error codes, raised as typed exceptions.

A private key (type 2) never leaves the modem: it cannot be read back, and its
`%CMNG=1` digest is SHA-256 of its public key's SubjectPublicKeyInfo DER. `keygen`
makes one inside the modem and returns the CSR and the modem's attestation over it.
The simulator's own TLS code (`simulator.tls_identity`) gets the key object from
`client_identity` to present the certificate as the modem would; nothing else does.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import (
    CA_CHAIN_MAX_BYTES,
    SEC_TAG_MAX,
    SEC_TAG_MIN,
    CredentialEntry,
    CredentialType,
    sha256_hex,
)
from simulator.attestation import DEFAULT_FLEET_SEED, attestation_key, keygen_output, make_csr
from simulator.tls_identity import ClientIdentity

__all__ = [
    "DEFAULT_CAPACITY_BYTES",
    "KEYGEN_FAULTS",
    "AlreadyExistsError",
    "ClientIdentity",
    "FunctionalMode",
    "InvalidContentError",
    "KeyEscrow",
    "Modem",
    "ModemError",
    "NotFoundError",
    "NotPermittedError",
    "StoreFullError",
    "StoredItem",
]

DEFAULT_CAPACITY_BYTES = 32 * 1024
"""Room this model gives all items together (the real figure depends on firmware)."""

KEYGEN_FAULTS: Final = frozenset(
    {
        "csr-wrong-subject",
        "csr-reused-key",
        "csr-foreign-key",
        "csr-bad-signature",
        "attestation-forged",
    }
)
"""A broken `%KEYGEN` (fault injection, for certfleet's CSR checks): a CSR for another
subject; a CSR over the key the modem made or was given before (its identity in use);
a CSR over another device's key (`foreign_key`); a CSR whose self-signature does not
verify; an attestation signed by another key."""


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


KeyEscrow = Callable[[str, int, ec.EllipticCurvePrivateKey], None]
"""Told (device id, sec_tag, key) of every private key a modem stores: only for a test that
searches everything a run recorded for them (a real modem has no such thing)."""


def _spki_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _private_key(content: bytes) -> ec.EllipticCurvePrivateKey | None:
    """The P-256 key a written type-2 item holds, if the model can use it for TLS."""
    try:
        key = serialization.load_pem_private_key(content, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


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

    def __init__(
        self,
        *,
        capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
        device_id: str = "",
        fleet_seed: str = DEFAULT_FLEET_SEED,
        faults: frozenset[str] = frozenset(),
        key_escrow: KeyEscrow | None = None,
        foreign_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self._items: dict[tuple[int, CredentialType], StoredItem] = {}
        self._keys: dict[int, ec.EllipticCurvePrivateKey] = {}
        self._last_key: ec.EllipticCurvePrivateKey | None = None
        self._mode = FunctionalMode.OFFLINE
        self._capacity = capacity_bytes
        self.device_id = device_id
        """Whom the attestation names (the modem's IMEI-based id on a real device)."""
        self._fleet_seed = fleet_seed
        self._attestation_key: ec.EllipticCurvePrivateKey | None = None
        self.faults = faults & KEYGEN_FAULTS
        self._escrow = key_escrow
        self._foreign_key = foreign_key
        """What a `csr-foreign-key` keygen answers with (another device's key)."""

    @property
    def _attestation(self) -> ec.EllipticCurvePrivateKey:
        """Derived when first needed: a fleet of 100,000 modems is built without 100,000."""
        if self._attestation_key is None:
            self._attestation_key = attestation_key(self.device_id, self._fleet_seed)
        return self._attestation_key

    @property
    def attestation_public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half of the modem's attestation key (what certfleet is given)."""
        return self._attestation.public_key()

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
        key = _private_key(content) if slot_type is CredentialType.CLIENT_KEY else None
        if key is not None:
            return self._store_key(sec_tag, key)
        self._check_room(len(content))
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

    def _check_room(self, size: int) -> None:
        if self.used_bytes + size > self._capacity:
            raise StoreFullError(
                f"{size} bytes do not fit: {self.used_bytes} of {self._capacity} used"
            )

    def _store_key(self, sec_tag: int, key: ec.EllipticCurvePrivateKey) -> StoredItem:
        """Keep a private key inside the modem; the store shows its public key's digest."""
        spki = _spki_der(key)
        self._check_room(len(spki))
        item = StoredItem(
            sec_tag=sec_tag,
            type=CredentialType.CLIENT_KEY,
            content=spki,
            sha256=sha256_hex(spki),
            not_after=None,
            subject=None,
            issuer=None,
        )
        self._items[(sec_tag, CredentialType.CLIENT_KEY)] = item
        self._keys[sec_tag] = key
        self._last_key = key
        if self._escrow is not None:
            self._escrow(self.device_id, sec_tag, key)
        return item

    def keygen(self, sec_tag: int, *, subject: str, seq: int) -> str:
        """`AT%KEYGEN=<sec_tag>,2,0`: a P-256 key made and kept in (sec_tag, type 2).

        Returns `base64url(CSR DER).base64url(COSE_Sign1)`: a CSR for exactly
        `CN=<subject>`, and the modem's attestation naming the device, `seq` (the keygen
        bundle's), the tag and the CSR's SHA-256.

        Raises:
            NotPermittedError: the modem is online (EPERM).
            AlreadyExistsError: the slot holds a key; delete it first (519).
        """
        _check_slot(sec_tag, CredentialType.CLIENT_KEY)
        if self.online:
            raise NotPermittedError("%KEYGEN runs only while offline (CFUN=4)")
        if (sec_tag, CredentialType.CLIENT_KEY) in self._items:
            raise AlreadyExistsError(f"sec_tag {sec_tag} already holds a private key")
        key = self._keygen_key()
        self._store_key(sec_tag, key)
        name = f"{subject}-not-me" if "csr-wrong-subject" in self.faults else subject
        csr_der = make_csr(key, name)
        if "csr-bad-signature" in self.faults:
            csr_der = csr_der[:-1] + bytes([csr_der[-1] ^ 0x01])  # the signature's last byte
        forger = (
            ec.generate_private_key(ec.SECP256R1()) if "attestation-forged" in self.faults else None
        )
        return keygen_output(
            csr_der,
            attestation=self._attestation,
            device_id=self.device_id,
            seq=seq,
            tag=sec_tag,
            forged_by=forger,
        )

    def _keygen_key(self) -> ec.EllipticCurvePrivateKey:
        """A new P-256 key, unless a fault makes the modem answer with one it knows."""
        if "csr-foreign-key" in self.faults and self._foreign_key is not None:
            return self._foreign_key
        if "csr-reused-key" in self.faults and self._last_key is not None:
            return self._last_key
        return ec.generate_private_key(ec.SECP256R1())

    def client_identity(self, sec_tag: int) -> ClientIdentity:
        """The certificate and key a TLS socket given `sec_tag` presents (never sent anywhere)."""
        certificate = self._get(sec_tag, CredentialType.CLIENT_CERT).content
        key = self._keys.get(sec_tag)
        if key is None:
            raise NotFoundError(f"sec_tag {sec_tag} holds no private key the modem can use")
        return ClientIdentity(certificate_pem=certificate, key=key)

    def delete(self, sec_tag: int, cred_type: int) -> None:
        """`modem_key_mgmt_delete` / `AT%CMNG=3`."""
        slot_type = _check_slot(sec_tag, cred_type)
        if self.online:
            raise NotPermittedError("the key store is changed only while offline (CFUN=4)")
        if self._items.pop((sec_tag, slot_type), None) is None:
            raise NotFoundError(f"sec_tag {sec_tag} holds no type {slot_type.name}")
        if slot_type is CredentialType.CLIENT_KEY:
            self._keys.pop(sec_tag, None)

    def read(self, sec_tag: int, cred_type: int) -> bytes:
        """`modem_key_mgmt_read` (certificates only, as on the modem)."""
        slot_type = _check_slot(sec_tag, cred_type)
        if not slot_type.is_certificate:
            raise NotPermittedError(f"type {slot_type.name} cannot be read back")
        return self._get(sec_tag, slot_type).content

    def digest(self, sec_tag: int, cred_type: int) -> str:
        """`modem_key_mgmt_digest`: SHA-256 of the stored item (of a key: its SPKI DER), hex."""
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
