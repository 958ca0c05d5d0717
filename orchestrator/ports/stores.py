"""The inventory, library, plan, receipt, signing, delegation, sequence, publishing, metrics,
probe and queue ports."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from orchestrator.domain.inventory import DeviceState, ExpiringItem, ExpiryWindow, FleetSummary
from orchestrator.domain.receipts import WebhookAnswer
from orchestrator.domain.renewal import PlanSummary, RenewalPlan
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.protocol.delegation import Delegation, Revocation

__all__ = [
    "BundlePublisher",
    "BundleSigner",
    "CredentialLibrary",
    "DelegationRegistry",
    "ExpiryCounts",
    "InventoryStore",
    "IssuedDelegation",
    "Metrics",
    "PlanStore",
    "SequenceStore",
    "SessionStore",
    "TaskQueue",
    "TlsProbe",
    "WebhookReceiptStore",
]

ExpiryCounts = tuple[int, int, int]
"""(expired, expiring, ok) for one sec_tag."""


class InventoryStore(Protocol):
    """The fleet's reported credentials, indexed by sec_tag and expiry."""

    def record_states(
        self,
        states: Sequence[DeviceState],
        *,
        received_at: datetime,
        pems: Sequence[Mapping[str, str]] = (),
        keys: Sequence[Sequence[str]] = (),
    ) -> int:
        """Replace each device's credentials with its report; return how many were newer.

        `pems` (one digest -> PEM mapping per state, in order, when given) join the
        credential library in the same atomic step as their state, and only if it applies;
        so do `keys` (per state, the SPKI SHA-256 of its client certificates), which
        `key_holders` answers from, for good.
        """
        ...

    def record_reports(self, reports: Sequence[DeviceReport]) -> None:
        """Append device reports to each device's report log."""
        ...

    def recent_reports(self, device_id: str, *, limit: int) -> list[DeviceReport]:
        """A device's latest reports, oldest first."""
        ...

    def count_rejection(self, reason: str, amount: int = 1) -> None:
        """Count a refused device message under `reason`."""
        ...

    def rejection_counts(self) -> dict[str, int]:
        """Refused device messages by reason."""
        ...

    def device_count(self) -> int:
        """How many devices have reported."""
        ...

    def device_credentials(self, device_id: str) -> DeviceState | None:
        """What one device last reported, or None."""
        ...

    def sec_tags(self) -> list[int]:
        """The sec_tags any device holds an item in."""
        ...

    def expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """Per sec_tag, how many devices fall in each expiry class."""
        ...

    def ca_digest_counts(self, sec_tags: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per sec_tag, how many devices hold each CA chain digest."""
        ...

    def expiring_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """Expired and expiring (device, sec_tag) items, soonest first, at most `limit`."""
        ...

    def expiring_page(
        self,
        sec_tags: Sequence[int],
        window: ExpiryWindow,
        *,
        limit: int,
        after: ExpiringItem | None = None,
        before: ExpiringItem | None = None,
        device_id_prefix: str = "",
    ) -> list[ExpiringItem]:
        """At most `limit` expired and expiring items, soonest first (by notAfter, device
        id, sec_tag): the first, those right after `after` or those right before `before`
        (one of them at most); only devices whose id starts with `device_id_prefix`.

        The cost of a page does not grow with how deep in the list it lies.
        """
        ...

    def device_ids(self) -> list[str]:
        """Every device that has reported."""
        ...

    def expiring_devices(self, sec_tag: int, until: datetime) -> list[str]:
        """Devices whose notAfter in `sec_tag` is at or before `until`."""
        ...

    def devices_with_ca(self, sec_tag: int, sha256: str) -> list[str]:
        """Devices whose CA chain in `sec_tag` has this digest."""
        ...

    def active_tags_of(self, device_ids: Sequence[str]) -> dict[str, tuple[int, ...] | None]:
        """Each device's reported active tag list (None where it reported none)."""
        ...

    def protocol_versions(self, device_ids: Sequence[str]) -> dict[str, int]:
        """Each device's protocol version from its last applied state (1 where none was)."""
        ...

    def active_ca_digests(self, device_ids: Sequence[str]) -> dict[str, dict[int, str]]:
        """Per device, the CA chain digest in each of its active sec_tags."""
        ...

    def identity_tags_of(self, device_ids: Sequence[str]) -> dict[str, int | None]:
        """Each device's identity tag from its last applied state (None where none)."""
        ...

    def key_holders(self, spki_sha256s: Sequence[str]) -> dict[str, str]:
        """Of these client keys (SPKI SHA-256, hex), those a reported client certificate
        had, each with the first device that reported it; a key once seen stays seen."""
        ...

    def expiring_identities(self, sec_tag: int, before: datetime) -> list[str]:
        """Devices whose client certificate (type 1) in `sec_tag` has notAfter at or before
        `before`, sorted. Only the identity tag's certificate counts for a device that
        names one; every type-1 item it holds for a device that names none."""
        ...

    def identity_expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """Per sec_tag, how many devices' client certificates fall in each expiry class."""
        ...

    def expiring_identity_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """Expired and expiring client certificates, soonest first, at most `limit`."""
        ...

    def save_summary(self, summary: FleetSummary) -> None:
        """Keep the result of the last scan."""
        ...

    def last_summary(self) -> FleetSummary | None:
        """The result of the last scan, if any."""
        ...


class CredentialLibrary(Protocol):
    """Content-addressed PEMs certfleet knows: SHA-256 of the PEM bytes -> PEM."""

    def add(self, pems: Mapping[str, str]) -> int:
        """Store digest -> PEM entries; return how many were new."""
        ...

    def known(self, digests: Sequence[str]) -> set[str]:
        """The subset of `digests` the library holds."""
        ...

    def get(self, digest: str) -> str | None:
        """The PEM with this digest, if known."""
        ...


class TaskQueue(Protocol):
    """Runs certfleet's background jobs on the workers."""

    def run_scan(self, *, timeout: float) -> Mapping[str, Any]:
        """Run `scan_fleet` on a worker and wait for its summary."""
        ...


class BundleSigner(Protocol):
    """Signs bundle envelopes with ES256: a worker's delegated key, or a root key itself
    (root-only operations; development with delegations off)."""

    @property
    def key_id(self) -> bytes:
        """The COSE key id of the signing key (a delegated key's, or a root key's)."""
        ...

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256 over the Sig_structure: the raw 64-byte r||s."""
        ...

    def delegation_for(self, expires_at: int) -> bytes | None:
        """The delegation covering a bundle that expires at `expires_at` (epoch seconds),
        COSE_Sign1 bytes for the bundle's protected header; None: this signer is a root key."""
        ...


class SequenceStore(Protocol):
    """Per-device monotonic bundle sequence numbers."""

    def next_sequence(self, device_id: str) -> int:
        """Atomically increase and return the device's sequence number."""
        ...

    def next_sequences(self, device_ids: Sequence[str]) -> dict[str, int]:
        """`next_sequence` for many devices in one round trip."""
        ...


class BundlePublisher(Protocol):
    """Delivers signed bundles to devices."""

    def publish_bundle(self, device_id: str, data: bytes, *, expiry_seconds: int) -> None:
        """Publish to the device's bundle topic (QoS 1, MQTT 5 message expiry)."""
        ...

    def publish_bundles(
        self,
        bundles: Iterable[tuple[str, bytes]],
        *,
        expiry_seconds: int,
        on_acked: Callable[[list[str]], None] | None = None,
    ) -> int:
        """Publish (device id, bundle) pairs as the iterable yields them, pipelined.

        Returns how many once every one is acknowledged; the iterable's work (signing
        the next bundles) overlaps with the network sending the previous ones.
        `on_acked` is called with the device ids the broker acknowledged, a run at a
        time in publish order, while publishing goes on; if publishing fails, the
        devices acknowledged before the failure are reported before the error goes up.
        """
        ...


class Metrics(Protocol):
    """Counters and gauges every process adds to (exposed at `/metrics`)."""

    def incr(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1) -> None:
        """Add to a counter."""
        ...

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set a gauge."""
        ...


class TlsProbe(Protocol):
    """The orchestrator's own TLS handshakes with server endpoints."""

    def check(self, host: str, port: int, *, ca_pems: Sequence[str]) -> Any:
        """Whether the endpoint's chain validates with only `ca_pems` (`.ok`, `.detail`)."""
        ...

    def leaf_sha256(self, host: str, port: int) -> str | None:
        """SHA-256 of the DER leaf the endpoint serves now, or None if unreachable."""
        ...


class PlanStore(Protocol):
    """CA renewal plans, newest first."""

    def save(self, plan: RenewalPlan) -> None:
        """Write the whole plan (a new one, or a new version of one)."""
        ...

    def load(self, plan_id: str) -> RenewalPlan | None:
        """One plan, or None."""
        ...

    def recent(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest `limit` plans, newest (by `created_at`) first."""
        ...

    def summaries(self, limit: int = 200) -> list[PlanSummary]:
        """The latest `limit` plans as `recent` lists them, each without its device lists."""
        ...

    def open_plans(self, limit: int = 200) -> list[RenewalPlan]:
        """Those of the latest `limit` plans the renewal watch still moves on, newest first."""
        ...


class WebhookReceiptStore(Protocol):
    """Webhook ids seen lately, each with the first answer given to it.

    The first delivery of an id claims it, is handled, and records its answer; a
    repeated delivery gets that answer back, and one arriving while the first is still
    being handled gets a 409 to retry.
    """

    def claim(self, webhook_id: str) -> str | WebhookAnswer:
        """A claim token when this delivery is the first, else the answer to give."""
        ...

    def record(self, webhook_id: str, answer: WebhookAnswer) -> None:
        """Keep the first answer to `webhook_id`, for later deliveries of it."""
        ...

    def release(self, webhook_id: str, token: str) -> None:
        """Drop this delivery's claim (its handling failed), so a retry handles it again."""
        ...


class SessionStore(Protocol):
    """Console sessions by their secret id; an entry lives until it expires or is deleted."""

    def create(self, session_id: str, session: ConsoleSession) -> None:
        """Store `session` under `session_id` until `session.expires_at`."""
        ...

    def get(self, session_id: str) -> ConsoleSession | None:
        """The live session of that id, or None (unknown, signed out, expired)."""
        ...

    def delete(self, session_id: str) -> None:
        """Sign the session out; nothing happens for an unknown id."""
        ...


@dataclass(frozen=True, slots=True)
class IssuedDelegation:
    """A delegation the root key signed, and the worker it was made for."""

    delegation: Delegation
    worker: str
    """Who holds the delegated key: `host:pid` of a worker process, or a CLI's."""


class DelegationRegistry(Protocol):
    """The delegations the root key signed for workers, and the fleet's revocation.

    Public data only (key ids, times, scope, the delegated public key), so that an
    operator can find a worker's delegation and revoke it (`certfleet keys`).
    """

    def record(self, delegation: Delegation, worker: str) -> None:
        """List a delegation the root just signed for `worker`, before it is used (one
        entry per delegated key: a renewal replaces the key's earlier delegation)."""
        ...

    def active(self, now: datetime) -> list[IssuedDelegation]:
        """The delegations not expired at `now`, oldest issue first."""
        ...

    def revocation(self) -> Revocation:
        """The revocation every device is to hold (nothing revoked until one is set)."""
        ...

    def set_revocation(self, revocation: Revocation) -> None:
        """Replace the fleet's revocation with `revocation` (kids replaced, as devices do)."""
        ...
