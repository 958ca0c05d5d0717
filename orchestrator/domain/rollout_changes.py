"""The values a rollout is made of and changes by: waves, changes, guards, audit entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from orchestrator.domain.rollout_states import RolloutState, WaveState

if TYPE_CHECKING:
    from orchestrator.domain.rollout_aggregate import Rollout

__all__ = [
    "AuditEntry",
    "Change",
    "Expect",
    "Wave",
    "WaveChange",
    "apply_change",
    "expect_holds",
]


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


_T = TypeVar("_T", "Rollout", Wave)

_ROLLOUT_FIELDS: Final = (
    "state",
    "current",
    "awaiting_approval",
    "abort_reason",
    "rollback_deadline",
    "unconfirmed",
    "finished_at",
)
"""The rollout fields a `Change` writes (None in the change: unchanged)."""
_WAVE_FIELDS: Final = ("state", "started_at", "bake_until", "dispatched_until")
"""The wave fields a `WaveChange` writes."""


def _merged(current: _T, change: object, names: tuple[str, ...]) -> _T:
    """`current` with each of `names` that `change` sets (not None) replaced."""
    updates = {n: v for n in names if (v := getattr(change, n)) is not None}
    return replace(current, **updates)


def apply_change(rollout: Rollout, change: Change) -> Rollout:
    """`rollout` with `change` written (what a store holds after it)."""
    waves = list(rollout.waves)
    for index, wave_change in change.waves.items():
        waves[index] = _merged(waves[index], wave_change, _WAVE_FIELDS)
    return replace(_merged(rollout, change, _ROLLOUT_FIELDS), waves=tuple(waves))


def expect_holds(rollout: Rollout, expect: Expect) -> bool:
    """Whether every part of `expect` holds for `rollout` (as a store checks it)."""
    if expect.state is not None and rollout.state != expect.state:
        return False
    if expect.wave is not None:
        index, state = expect.wave
        if not 0 <= index < len(rollout.waves) or rollout.waves[index].state != state:
            return False
    if (
        expect.awaiting_approval is not None
        and rollout.awaiting_approval != expect.awaiting_approval
    ):
        return False
    if expect.dispatched_until is not None:
        index, due = expect.dispatched_until
        if not 0 <= index < len(rollout.waves) or rollout.waves[index].dispatched_until != due:
            return False
    return True
