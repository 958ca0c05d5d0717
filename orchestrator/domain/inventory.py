"""The fleet's credential inventory: expiry classes and the scan summary."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.credentials import ReportedCredential

__all__ = [
    "DeviceState",
    "ExpiringItem",
    "ExpiryClass",
    "ExpiryWindow",
    "FleetSummary",
    "IdentityCounts",
    "IdentitySummary",
    "TagCounts",
    "classify",
    "earliest_not_after_by_tag",
]


class ExpiryClass(enum.StrEnum):
    """How close a (device, sec_tag) is to losing its trust."""

    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ExpiryWindow:
    """The score boundaries of the expiry classes at one instant.

    A certificate is valid through its notAfter (RFC 5280), so it is `expired`
    only once `now` is past it; it is `expiring` while notAfter lies within
    `now .. now + warning` (both ends included), and `ok` beyond that.
    """

    now: datetime
    warning: timedelta

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must carry a timezone")
        if self.warning < timedelta(0):
            raise ValueError("the warning window cannot be negative")

    @property
    def expired_before(self) -> float:
        """Epoch seconds: notAfter strictly below this is `expired`."""
        return self.now.timestamp()

    @property
    def expiring_until(self) -> float:
        """Epoch seconds: notAfter up to and including this is `expiring`."""
        return (self.now + self.warning).timestamp()


def classify(not_after: datetime, window: ExpiryWindow) -> ExpiryClass:
    """Classify one notAfter against the window."""
    score = not_after.timestamp()
    if score < window.expired_before:
        return ExpiryClass.EXPIRED
    if score <= window.expiring_until:
        return ExpiryClass.EXPIRING
    return ExpiryClass.OK


def earliest_not_after_by_tag(credentials: Iterable[ReportedCredential]) -> dict[int, datetime]:
    """The notAfter that decides each sec_tag: the earliest among its certificates."""
    earliest: dict[int, datetime] = {}
    for credential in credentials:
        if credential.not_after is None:
            continue
        current = earliest.get(credential.sec_tag)
        if current is None or credential.not_after < current:
            earliest[credential.sec_tag] = credential.not_after
    return earliest


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceState:
    """What one device reported on its last connect."""

    device_id: str
    reported_at: datetime
    credentials: tuple[ReportedCredential, ...]
    active_tags: tuple[int, ...] | None = None
    protocol_version: int = 1
    """The contract version of the state message (`v`): certfleet sends v2 bundles only
    to a device that reported v2. A state recorded before versions were is a v1's."""
    identity_tag: int | None = None
    """The sec_tag whose client certificate and key the device presents (None: none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiringItem:
    """A (device, sec_tag) whose notAfter is inside the warning window or past."""

    device_id: str
    sec_tag: int
    not_after: datetime
    subject: str | None

    def as_json(self) -> dict[str, Any]:
        """The `fleet status --json` form."""
        return {
            "device_id": self.device_id,
            "sec_tag": self.sec_tag,
            "not_after": self.not_after.isoformat(),
            "subject": self.subject,
        }


@dataclass(slots=True)
class TagCounts:
    """Per-sec_tag counts of a scan; `unknown` overlaps the expiry classes."""

    ok: int = 0
    expiring: int = 0
    expired: int = 0
    unknown: int = 0

    def as_json(self) -> dict[str, int]:
        """The `by_tag` entry of `fleet status --json`."""
        return {
            "ok": self.ok,
            "expiring": self.expiring,
            "expired": self.expired,
            "unknown": self.unknown,
        }


@dataclass(slots=True)
class IdentityCounts:
    """Per identity tag: devices whose client certificate (type 1) there is in each class."""

    ok: int = 0
    expiring: int = 0
    expired: int = 0

    def as_json(self) -> dict[str, int]:
        """The `identities.by_tag` entry of `fleet status --json`."""
        return {"ok": self.ok, "expiring": self.expiring, "expired": self.expired}


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentitySummary:
    """The client certificates (type 1) of a scan, classified like the CAs.

    Kept apart from the CA classes: a device's identity is renewed by an
    `identity.rotate` rollout within `renew_days` of its notAfter, not by a CA renewal.
    """

    renew_days: int
    by_tag: Mapping[int, IdentityCounts] = field(default_factory=dict)
    expiring: tuple[ExpiringItem, ...] = ()
    expiring_total: int = 0

    @property
    def expiring_truncated(self) -> bool:
        """Whether `expiring` holds fewer items than the scan found."""
        return len(self.expiring) < self.expiring_total

    def as_json(self) -> dict[str, Any]:
        """The `identities` entry of `fleet status --json`."""
        return {
            "renew_days": self.renew_days,
            "by_tag": {str(tag): counts.as_json() for tag, counts in sorted(self.by_tag.items())},
            "expiring": [item.as_json() for item in self.expiring],
            "expiring_total": self.expiring_total,
            "expiring_truncated": self.expiring_truncated,
        }

    @staticmethod
    def none_json() -> dict[str, Any]:
        """The `identities` entry before any scan classified them (`renew_days` None)."""
        return {
            "renew_days": None,
            "by_tag": {},
            "expiring": [],
            "expiring_total": 0,
            "expiring_truncated": False,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IdentitySummary | None:
        """Read back what `as_json` wrote (None for `none_json`)."""
        if data.get("renew_days") is None:
            return None
        return cls(
            renew_days=int(data["renew_days"]),
            by_tag={int(tag): IdentityCounts(**c) for tag, c in data["by_tag"].items()},
            expiring=tuple(_expiring_item(item) for item in data["expiring"]),
            expiring_total=int(data["expiring_total"]),
        )


def _expiring_item(item: Mapping[str, Any]) -> ExpiringItem:
    return ExpiringItem(
        device_id=item["device_id"],
        sec_tag=int(item["sec_tag"]),
        not_after=datetime.fromisoformat(item["not_after"]),
        subject=item["subject"],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSummary:
    """The result of a fleet scan."""

    scanned_at: datetime
    warning_days: int
    devices: int
    by_tag: Mapping[int, TagCounts]
    expiring: tuple[ExpiringItem, ...]
    expiring_total: int
    unknown_digests: tuple[str, ...] = field(default=())
    identities: IdentitySummary | None = None
    """The client certificates' classes (None: a summary stored before they were scanned)."""

    @property
    def expiring_truncated(self) -> bool:
        """Whether `expiring` holds fewer items than the scan found."""
        return len(self.expiring) < self.expiring_total

    def as_json(self) -> dict[str, Any]:
        """The `fleet status --json` form (without the live rejection counts)."""
        return {
            "scanned_at": self.scanned_at.isoformat(),
            "warning_days": self.warning_days,
            "devices": self.devices,
            "by_tag": {str(tag): counts.as_json() for tag, counts in sorted(self.by_tag.items())},
            "expiring": [item.as_json() for item in self.expiring],
            "expiring_total": self.expiring_total,
            "expiring_truncated": self.expiring_truncated,
            "unknown_digests": list(self.unknown_digests),
            "identities": (
                self.identities.as_json() if self.identities else IdentitySummary.none_json()
            ),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FleetSummary:
        """Read back what `as_json` wrote."""
        return cls(
            scanned_at=datetime.fromisoformat(data["scanned_at"]),
            warning_days=int(data["warning_days"]),
            devices=int(data["devices"]),
            by_tag={int(tag): TagCounts(**counts) for tag, counts in data["by_tag"].items()},
            expiring=tuple(_expiring_item(item) for item in data["expiring"]),
            expiring_total=int(data["expiring_total"]),
            unknown_digests=tuple(data.get("unknown_digests", ())),
            identities=IdentitySummary.from_json(data.get("identities") or {}),
        )
