"""The rollout store port: rollouts, their devices, bundles, claims and audit log."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    TransitionResult,
)

__all__ = [
    "RolloutStore",
]


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
        """Claim the devices for the rollout; return devices another rollout holds.

        One rollout at a time per device, whatever sec_tags (`tags`, the rollout's
        live and spare tag) each changes: a device keeps one undo record, so a second
        rollout would leave the first nothing to roll back. On any conflict nothing
        stays claimed.
        """
        ...

    def release(self, rollout_id: str, tags: Sequence[int], device_ids: Iterable[str]) -> None:
        """Drop this rollout's claims on the devices (only those it holds)."""
        ...

    def create(
        self,
        rollout: Rollout,
        *,
        waves: Sequence[Sequence[str]],
        active: Mapping[str, Sequence[int]],
        actor: str,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        """Store a planned rollout: every device `pending` in its wave, the first log line.

        `versions` are the devices' protocol versions when planned (a device left out
        is a v1's: it gets v1 bundles, which every device takes).
        """
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

    def protocol_versions(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, int]:
        """Each device's protocol version when the rollout was planned (1 where none)."""
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
    ) -> int:
        """Keep the first bundle issued for each (device, step) and record its seq in `seqs`;
        how many were stored (all of them unless a bundle of the step was there already).

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

    def sent_since(self, rollout_id: str, step: PushStep, since: float) -> set[str]:
        """Devices whose `step` send was claimed (`claim_sends`) at or after `since` (epoch
        seconds): one read, so a caller passes `claim_sends` only the others."""
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

    def events(self, rollout_id: str) -> list[dict[str, str]]:
        """The audit log's rollout and wave entries, no device's, oldest first: each
        entry's fields and an `id` (a few per wave, however many devices the rollout has)."""
        ...

    def log_tail(self, rollout_id: str, count: int) -> list[dict[str, str]]:
        """The audit log's last `count` entries, newest first: each entry's fields and `id`."""
        ...

    def devices_page(
        self,
        rollout_id: str,
        states: Iterable[DeviceRolloutState],
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[str]]:
        """How many devices are in one of `states`, and `count` of them from `offset` in
        device id order (a stable page). `pending` has no per-state set: not allowed.

        Raises:
            ValueError: `states` holds `pending`.
        """
        ...
