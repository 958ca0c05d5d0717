"""What the rollout use cases work with: their ports, their error, their next steps."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import PushStep
from orchestrator.ports import (
    BundlePublisher,
    BundleSigner,
    InventoryStore,
    Metrics,
    RolloutStore,
    SequenceStore,
)
from orchestrator.ports.identity import IdentityStore
from orchestrator.services.bundles import UNDO_WINDOW_SECONDS

__all__ = [
    "PUSH_BATCH_SIZE",
    "PushDeps",
    "RolloutDeps",
    "RolloutError",
    "RolloutTasks",
    "batched",
    "count",
    "load",
]

PUSH_BATCH_SIZE: Final = 200
"""Devices per push_batch task: hundreds per task, never a task per device."""


class RolloutError(CertfleetError):
    """A rollout command that cannot be carried out, and why."""


class RolloutTasks(Protocol):
    """Where the engine enqueues its next steps (Celery in production)."""

    def start_rollout(self, rollout_id: str) -> None: ...

    def dispatch_wave(self, rollout_id: str, wave: int) -> None: ...

    def push_batch(
        self,
        rollout_id: str,
        wave: int,
        device_ids: Sequence[str],
        step: PushStep,
        *,
        countdown: float,
    ) -> None: ...

    def evaluate_rollout(self, rollout_id: str, *, countdown: float = 0) -> None: ...

    def rollback_rollout(self, rollout_id: str) -> None: ...

    def issue_identities(self, rollout_id: str, wave: int, device_ids: Sequence[str]) -> None:
        """identity.rotate: check the CSRs of devices in `csr`, issue, stage the certificates."""
        ...

    def revoke_identities(self, rollout_id: str, device_ids: Sequence[str]) -> None:
        """identity.rotate: revoke the certificates the devices no longer use."""
        ...

    def refresh_crl(self, *, countdown: float = 0) -> None:
        """Sign and publish the CRL of every revoked certificate not yet expired."""
        ...


@dataclass(frozen=True, slots=True)
class RolloutDeps:
    """What planning, evaluating, rolling back and the commands work with.

    `identity` keeps the CSRs identity.rotate devices report (None where no identity
    rollout runs: a `csr` report is then logged and its device times out).
    """

    store: RolloutStore
    inventory: InventoryStore
    tasks: RolloutTasks
    metrics: Metrics
    identity: IdentityStore | None = None


@dataclass(frozen=True, slots=True)
class PushDeps:
    """What pushing bundles works with: the store, a signer, sequences and a publisher.

    `undo_window_seconds` (`CERTFLEET_UNDO_WINDOW_SECONDS`) sets a v2 commit's `undo_by`.
    """

    store: RolloutStore
    signer: BundleSigner
    sequences: SequenceStore
    publisher: BundlePublisher
    metrics: Metrics
    undo_window_seconds: int = UNDO_WINDOW_SECONDS


def load(store: RolloutStore, rollout_id: str) -> Rollout:
    """The rollout, or a `RolloutError` that says where to look."""
    rollout = store.get(rollout_id)
    if rollout is None:
        raise RolloutError(f"no rollout {rollout_id!r} (see `certfleet rollout list`)")
    return rollout


def count(metrics: Metrics, name: str, labels: Mapping[str, str], amount: float = 1) -> None:
    """Add to a counter, skipping zero amounts (no round trip for nothing)."""
    if amount:
        metrics.incr(name, labels, amount)


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """`items` in order, as lists of `size` (the last may be shorter)."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
