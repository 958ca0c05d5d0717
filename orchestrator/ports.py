"""The ports services depend on; adapters implement them, fakes stand in for tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from orchestrator.domain.inventory import DeviceState, ExpiringItem, ExpiryWindow, FleetSummary
from orchestrator.domain.receipts import WebhookAnswer
from orchestrator.domain.renewal import RenewalPlan
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    TransitionResult,
)

__all__ = [
    "BundlePublisher",
    "BundleSigner",
    "CredentialLibrary",
    "ExpiryCounts",
    "InventoryStore",
    "Metrics",
    "PlanStore",
    "RolloutStore",
    "SequenceStore",
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
    ) -> int:
        """Replace each device's credentials with its report; return how many were newer.

        `pems` (one digest -> PEM mapping per state, in order, when given) join the
        credential library in the same atomic step as their state, and only if it applies.
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

    def active_ca_digests(self, device_ids: Sequence[str]) -> dict[str, dict[int, str]]:
        """Per device, the CA chain digest in each of its active sec_tags."""
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


class RolloutStore(Protocol):
    """Rollouts as stored: the aggregate, per-device states, counts, bundles and the log.

    A rollout changes in one way only, `change`, which writes a `Change` if its guard
    holds; a device moves only by `transition`, which applies each transition if the
    device stands in one of its allowed states. Both are atomic, so a late, repeated
    or concurrent step changes nothing.

    Every bundle stored for a (device, step) has its seq recorded, all of them (a
    re-send issues a fresh seq; a late report about an earlier one is legitimate); a
    transition that answers a (step, seq), as a device's report does, applies only if
    that seq was issued to the device for that step in this rollout.
    """

    def claim(self, rollout_id: str, tags: Sequence[int], device_ids: Sequence[str]) -> list[str]:
        """Claim (device, tag) pairs for the rollout; return devices another rollout holds.

        On any conflict nothing stays claimed.
        """
        ...

    def release(self, rollout_id: str, tags: Sequence[int], device_ids: Iterable[str]) -> None:
        """Drop this rollout's claims (only those it holds)."""
        ...

    def create(
        self,
        rollout: Rollout,
        *,
        waves: Sequence[Sequence[str]],
        active: Mapping[str, Sequence[int]],
        actor: str,
    ) -> None:
        """Store a planned rollout: every device `pending` in its wave, the first log line."""
        ...

    def exists(self, rollout_id: str) -> bool:
        """Whether the rollout is stored."""
        ...

    def get(self, rollout_id: str) -> Rollout | None:
        """The rollout, or None."""
        ...

    def list_ids(self, limit: int = 100) -> list[str]:
        """Rollout ids, newest first."""
        ...

    def change(self, rollout_id: str, change: Change) -> bool:
        """Write `change` (fields and audit entries) if its guard holds; whether it did."""
        ...

    def transition(
        self, rollout_id: str, transitions: Sequence[DeviceTransition], *, now: datetime, actor: str
    ) -> list[TransitionResult]:
        """Apply device transitions in order, each as it would alone, atomically each.

        A transition is refused (its result says why) when the device is not in the
        rollout, when its `match` names a (step, seq) not issued to the device, checked
        first, or when the device's state is not among its `allowed`. One applied stores
        its bundle with its seq recorded.
        """
        ...

    def wave_counts(self, rollout_id: str, waves: int) -> list[dict[str, int]]:
        """Per wave (the first `waves`), devices per state (states with none left out)."""
        ...

    def wave_members(self, rollout_id: str, wave: int) -> list[str]:
        """The devices of a wave, sorted."""
        ...

    def scan_wave(
        self, rollout_id: str, wave: int, states: Iterable[DeviceRolloutState]
    ) -> Iterator[list[str]]:
        """The wave's devices in one of `states`, a chunk at a time (memory stays a chunk)."""
        ...

    def device_states(
        self, rollout_id: str, device_ids: Sequence[str] | None = None
    ) -> dict[str, DeviceRolloutState]:
        """Each device's state (every device of the rollout when `device_ids` is None)."""
        ...

    def devices_in(self, rollout_id: str, states: Iterable[DeviceRolloutState]) -> list[str]:
        """Devices whose state is one of `states`, sorted."""
        ...

    def active_tags(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, list[int]]:
        """Each device's active tag list when the rollout was planned."""
        ...

    def bundles(
        self, rollout_id: str, device_ids: Sequence[str], step: PushStep
    ) -> dict[str, bytes]:
        """The bundles stored for `step`, by device (devices without one left out)."""
        ...

    def put_bundles_if_absent(
        self,
        rollout_id: str,
        step: PushStep,
        bundles: Mapping[str, bytes],
        *,
        seqs: Mapping[str, int],
    ) -> None:
        """Keep the first bundle issued for each (device, step) and record its seq in `seqs`.

        A later bundle is dropped, and its seq, never sent, is not recorded.
        """
        ...

    def overdue(self, rollout_id: str, now: float) -> list[str]:
        """Devices whose deadline is at or before `now` (epoch seconds)."""
        ...

    def deadlines(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, float]:
        """Each device's deadline (epoch seconds); devices without one left out."""
        ...

    def send_counts(
        self, rollout_id: str, device_ids: Sequence[str], step: PushStep
    ) -> dict[str, int]:
        """How many bundles of `step` were issued to each device (seqs recorded; 0 left out)."""
        ...

    def claim_sends(
        self,
        rollout_id: str,
        step: PushStep,
        device_ids: Sequence[str],
        *,
        now: float,
        every: float,
    ) -> list[str]:
        """Devices whose `step` bundle was not sent in the last `every` seconds, now marked sent."""
        ...

    def set_active(self, rollout_id: str, active: bool) -> None:
        """Add the rollout to (or drop it from) the set the beat tick looks at."""
        ...

    def active_ids(self) -> list[str]:
        """Rollouts the beat tick looks at."""
        ...

    def lock(self, rollout_id: str, owner: str, ttl_ms: int = 30_000) -> bool:
        """A short exclusive lock for the rollout's evaluator."""
        ...

    def unlock(self, rollout_id: str, owner: str) -> None:
        """Release the lock if `owner` holds it."""
        ...

    def debounce(self, rollout_id: str, ttl_ms: int) -> bool:
        """True for the first caller in `ttl_ms` (the listener's evaluation debounce)."""
        ...

    def log(self, rollout_id: str, *, count: int | None = None) -> list[dict[str, str]]:
        """The audit log, oldest first: each entry's fields and its `id`."""
        ...


class BundleSigner(Protocol):
    """Signs bundle envelopes with ES256; a file key today, an HSM or Vault transit later."""

    @property
    def key_id(self) -> bytes:
        """The COSE key id devices look the public key up by."""
        ...

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256 over the Sig_structure: the raw 64-byte r||s."""
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
