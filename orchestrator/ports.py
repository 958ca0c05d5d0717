"""The ports services depend on; adapters implement them, fakes stand in for tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from orchestrator.domain.inventory import DeviceState, ExpiringItem, ExpiryWindow, FleetSummary
from orchestrator.domain.reports import DeviceReport

__all__ = [
    "BundlePublisher",
    "BundleSigner",
    "CredentialLibrary",
    "ExpiryCounts",
    "InventoryStore",
    "Metrics",
    "SequenceStore",
    "TaskQueue",
    "TlsProbe",
]

ExpiryCounts = tuple[int, int, int]
"""(expired, expiring, ok) for one sec_tag."""


class InventoryStore(Protocol):
    """The fleet's reported credentials, indexed by sec_tag and expiry."""

    def record_states(self, states: Sequence[DeviceState], *, received_at: datetime) -> int:
        """Replace each device's credentials with its report; return how many were newer."""
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

    def publish_bundles(self, bundles: Iterable[tuple[str, bytes]], *, expiry_seconds: int) -> int:
        """Publish (device id, bundle) pairs as the iterable yields them, pipelined.

        Returns how many once every one is acknowledged; the iterable's work (signing
        the next bundles) overlaps with the network sending the previous ones.
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
