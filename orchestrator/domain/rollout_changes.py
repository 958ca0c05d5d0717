"""The values a rollout is made of and changes by: waves, changes, guards, audit entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from orchestrator.domain.rollout_states import RolloutState, WaveState

__all__ = ["AuditEntry", "Change", "Expect", "Wave", "WaveChange"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One line of a rollout's audit log: who moved what from where to where, and why."""

    time: datetime
    actor: str
    kind: Literal["rollout", "wave", "device"]
    subject: str
    old: str
    new: str
    cause: str

    def as_fields(self) -> dict[str, str]:
        """The entry as `RolloutStore.log` gives it back (without its `id`)."""
        return {
            "time": self.time.isoformat(),
            "actor": self.actor,
            "kind": self.kind,
            "subject": self.subject,
            "from": self.old,
            "to": self.new,
            "cause": self.cause,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Wave:
    """One wave of a rollout, as stored."""

    index: int
    size: int
    state: WaveState = WaveState.PENDING
    started_at: datetime | None = None
    bake_until: float | None = None
    dispatched_until: float | None = None
    """When the last push batch of the wave's latest dispatch is due (epoch seconds)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WaveChange:
    """The fields of one wave a change writes; None leaves a field as it is."""

    state: WaveState | None = None
    started_at: datetime | None = None
    bake_until: float | None = None
    dispatched_until: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """What must still hold when a change is written; unset parts are not checked."""

    state: RolloutState | None = None
    wave: tuple[int, WaveState] | None = None
    awaiting_approval: bool | None = None
    dispatched_until: tuple[int, float] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One atomic change of a rollout: fields to write (None: unchanged), entries, guard."""

    state: RolloutState | None = None
    current: int | None = None
    awaiting_approval: bool | None = None
    abort_reason: str | None = None
    rollback_deadline: float | None = None
    unconfirmed: tuple[str, ...] | None = None
    finished_at: datetime | None = None
    waves: Mapping[int, WaveChange] = field(default_factory=dict)
    entries: tuple[AuditEntry, ...] = ()
    expect: Expect = field(default_factory=Expect)
