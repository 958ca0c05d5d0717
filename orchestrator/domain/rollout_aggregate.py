"""The rollout aggregate: a rollout, its waves, and every change it may make to itself.

Each transition is a method that reads the rollout as it was loaded and returns the
`Change` to store: the fields it writes, the audit entries it appends and the
guard (`Expect`) that must still hold when it is written, so two evaluators racing
on one rollout never both apply a step. A method returns None when the rollout's
state does not allow the step. Nothing here reads a clock: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_changes import (
    AuditEntry,
    Change,
    Expect,
    Wave,
    WaveChange,
    apply_change,
    expect_holds,
)
from orchestrator.domain.rollout_states import RolloutState, WaveState

__all__ = ["Rollout", "redispatch_grace"]

R = RolloutState
W = WaveState
REDISPATCH_MIN_SECONDS: Final = 60.0
"""A wave's pending devices are dispatched again when still pending this long (or the
device timeout, when longer) after their last batch was due."""
ABORTABLE: Final = frozenset({R.CREATED, R.RUNNING, R.PAUSED})
ENDED: Final = frozenset({R.COMPLETED, R.COMPLETED_WITH_TIMEOUTS, R.ROLLED_BACK})


def redispatch_grace(spec: RolloutSpec) -> float:
    """How long after its last batch was due a wave's pending devices count as lost."""
    return max(REDISPATCH_MIN_SECONDS, spec.device_timeout_seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """A rollout as stored: its spec, state, waves and where it stands."""

    id: str
    spec: RolloutSpec
    state: RolloutState
    created_at: datetime
    seed: str
    waves: tuple[Wave, ...]
    current: int = 0
    awaiting_approval: bool = False
    abort_reason: str | None = None
    rollback_deadline: float | None = None
    unconfirmed: tuple[str, ...] | None = None
    finished_at: datetime | None = None

    def __post_init__(self) -> None:
        if [w.index for w in self.waves] != list(range(len(self.waves))):
            raise ValueError(f"rollout {self.id}: waves must be numbered from 0 in order")
        if self.waves and not 0 <= self.current < len(self.waves):
            raise ValueError(f"rollout {self.id}: current wave {self.current} is out of range")

    @classmethod
    def planned(
        cls, rollout_id: str, spec: RolloutSpec, *, seed: str, sizes: Sequence[int], now: datetime
    ) -> Rollout:
        """A new rollout: created, every wave pending, the first one current."""
        return cls(
            id=rollout_id,
            spec=spec,
            state=R.CREATED,
            created_at=now,
            seed=seed,
            waves=tuple(Wave(index=i, size=n) for i, n in enumerate(sizes)),
        )

    @property
    def sizes(self) -> list[int]:
        """Devices per wave."""
        return [w.size for w in self.waves]

    @property
    def wave(self) -> Wave:
        """The current wave."""
        return self.waves[self.current]

    @property
    def is_last_wave(self) -> bool:
        """Whether the current wave is the rollout's last."""
        return self.current + 1 >= len(self.waves)

    @property
    def ended(self) -> bool:
        """Completed (with or without timeouts) or rolled back."""
        return self.state in ENDED

    def _entry(
        self,
        kind: Literal["rollout", "wave"],
        *,
        old: str,
        new: str,
        cause: str,
        actor: str,
        now: datetime,
        subject: str | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            time=now,
            actor=actor,
            kind=kind,
            subject=subject if subject is not None else self.id,
            old=old,
            new=new,
            cause=cause,
        )

    # -- the rollout ---------------------------------------------------------------------

    def created_entry(self, *, actor: str) -> AuditEntry:
        """The log's first line."""
        return self._entry(
            "rollout", old="", new=self.state, cause="created", actor=actor, now=self.created_at
        )

    def start(self, *, now: datetime, actor: str) -> Change | None:
        """created -> running; the evaluator starts wave 0 when the window allows."""
        if self.state is not R.CREATED:
            return None
        return Change(
            state=R.RUNNING,
            entries=(
                self._entry(
                    "rollout", old=R.CREATED, new=R.RUNNING, cause="start", actor=actor, now=now
                ),
            ),
            expect=Expect(state=R.CREATED),
        )

    def pause(self, *, now: datetime, actor: str) -> Change | None:
        """running -> paused: no new stages; commits of healthy devices go on."""
        if self.state is not R.RUNNING:
            return None
        return Change(
            state=R.PAUSED,
            entries=(
                self._entry(
                    "rollout", old=self.state, new=R.PAUSED, cause="pause", actor=actor, now=now
                ),
            ),
            expect=Expect(state=R.RUNNING),
        )

    def resume(self, *, now: datetime, actor: str) -> Change | None:
        """paused -> running."""
        if self.state is not R.PAUSED:
            return None
        return Change(
            state=R.RUNNING,
            entries=(
                self._entry(
                    "rollout", old=self.state, new=R.RUNNING, cause="resume", actor=actor, now=now
                ),
            ),
            expect=Expect(state=R.PAUSED),
        )

    def approve(self, *, now: datetime, actor: str) -> Change | None:
        """Let a manual rollout start its next wave."""
        if self.state is not R.RUNNING or not self.awaiting_approval:
            return None
        return Change(
            awaiting_approval=False,
            entries=(
                self._entry(
                    "wave",
                    subject=str(self.current),
                    old="pending",
                    new="approved",
                    cause="approve",
                    actor=actor,
                    now=now,
                ),
            ),
            expect=Expect(awaiting_approval=True),
        )

    def abort(
        self, *, cause: str, now: datetime, actor: str, failed_wave: int | None
    ) -> Change | None:
        """created, running or paused -> rolling_back (aborted), marking `failed_wave` failed."""
        if self.state not in ABORTABLE:
            return None
        waves = {} if failed_wave is None else {failed_wave: WaveChange(state=W.FAILED)}
        return Change(
            state=R.ROLLING_BACK,
            abort_reason=cause,
            rollback_deadline=now.timestamp() + self.spec.device_timeout_seconds,
            waves=waves,
            entries=(
                self._entry(
                    "rollout", old=self.state, new=R.ABORTED, cause=cause, actor=actor, now=now
                ),
                self._entry(
                    "rollout",
                    old=R.ABORTED,
                    new=R.ROLLING_BACK,
                    cause="rollback started",
                    actor=actor,
                    now=now,
                ),
            ),
            expect=Expect(state=self.state),
        )

    def rollback_overdue(self, now: datetime) -> bool:
        """Whether the time for devices to confirm the rollback is up."""
        return now.timestamp() >= (self.rollback_deadline or 0.0)

    def end_rollback(
        self, unconfirmed: Sequence[str], *, now: datetime, actor: str
    ) -> Change | None:
        """rolling_back -> rolled_back, listing the devices that never confirmed."""
        if self.state is not R.ROLLING_BACK:
            return None
        cause = (
            "every device confirmed"
            if not unconfirmed
            else f"{len(unconfirmed)} devices did not confirm the rollback in time"
        )
        return Change(
            state=R.ROLLED_BACK,
            unconfirmed=tuple(unconfirmed),
            entries=(
                self._entry(
                    "rollout", old=self.state, new=R.ROLLED_BACK, cause=cause, actor=actor, now=now
                ),
            ),
            expect=Expect(state=R.ROLLING_BACK),
        )

    def finish(self, outcome: RolloutState, *, now: datetime, actor: str) -> Change:
        """Record that an ended rollout released its claims."""
        return Change(
            finished_at=now,
            entries=(
                self._entry(
                    "rollout", old="", new=outcome, cause="claims released", actor=actor, now=now
                ),
            ),
        )

    # -- the waves -----------------------------------------------------------------------

    def start_wave(self, *, now: datetime, actor: str) -> Change | None:
        """The current wave: pending -> running, unless it waits for approval or the window."""
        if self.state is not R.RUNNING or self.wave.state is not W.PENDING:
            return None
        if self.awaiting_approval:
            return None
        if self.spec.window is not None and not self.spec.window.is_open(now):
            return None
        return Change(
            waves={self.current: WaveChange(state=W.RUNNING, started_at=now)},
            entries=(
                self._entry(
                    "wave",
                    subject=str(self.current),
                    old=W.PENDING,
                    new=W.RUNNING,
                    cause="wave started",
                    actor=actor,
                    now=now,
                ),
            ),
            expect=Expect(wave=(self.current, W.PENDING)),
        )

    def dispatched(self, wave: int, *, until: float) -> Change:
        """Note when the last push batch of `wave`'s dispatch is due."""
        return Change(waves={wave: WaveChange(dispatched_until=until)})

    def redispatch(self, *, now: datetime) -> Change | None:
        """Claim a new dispatch of the current wave if its pushes are overdue by the grace.

        The guard on the recorded due time lets one evaluator of several claim it.
        """
        due = self.wave.dispatched_until
        if due is None or now.timestamp() <= due + redispatch_grace(self.spec):
            return None
        return Change(
            waves={self.current: WaveChange(dispatched_until=now.timestamp())},
            expect=Expect(dispatched_until=(self.current, due)),
        )

    def pass_wave(self, reason: str, *, now: datetime) -> Change | None:
        """The gate passed the current wave: running -> baking for the bake time."""
        if self.wave.state is not W.RUNNING:
            return None
        return Change(
            waves={
                self.current: WaveChange(
                    state=W.BAKING, bake_until=now.timestamp() + self.spec.bake_seconds
                )
            },
            entries=(
                self._entry(
                    "wave",
                    subject=str(self.current),
                    old=W.RUNNING,
                    new=W.BAKING,
                    cause=reason,
                    actor="gate",
                    now=now,
                ),
            ),
            expect=Expect(wave=(self.current, W.RUNNING)),
        )

    def end_bake(
        self, *, now: datetime, actor: str, unconfirmed: Sequence[str] = ()
    ) -> Change | None:
        """After the bake: the wave passed; complete, or move on (auto) or wait (manual).

        After the last wave the rollout is completed if every device committed; if
        `unconfirmed` names devices that did not (timed out, failed), it is
        completed_with_timeouts and keeps their list.
        """
        wave = self.wave
        if self.state is not R.RUNNING or wave.state is not W.BAKING:
            return None
        if now.timestamp() < (wave.bake_until or 0.0):
            return None
        entry = self._entry(
            "wave",
            subject=str(wave.index),
            old=W.BAKING,
            new=W.PASSED,
            cause="bake time over",
            actor=actor,
            now=now,
        )
        waves = {wave.index: WaveChange(state=W.PASSED)}
        expect = Expect(state=R.RUNNING, wave=(wave.index, W.BAKING))
        if self.is_last_wave and not unconfirmed:
            return Change(state=R.COMPLETED, waves=waves, entries=(entry,), expect=expect)
        if self.is_last_wave:
            outcome = self._entry(
                "rollout",
                old=R.RUNNING,
                new=R.COMPLETED_WITH_TIMEOUTS,
                cause=(
                    f"{len(unconfirmed)} devices did not retire their old identity"
                    if self.spec.is_identity
                    else f"{len(unconfirmed)} devices did not confirm the new trust"
                ),
                actor=actor,
                now=now,
            )
            return Change(
                state=R.COMPLETED_WITH_TIMEOUTS,
                unconfirmed=tuple(unconfirmed),
                waves=waves,
                entries=(entry, outcome),
                expect=expect,
            )
        return Change(
            current=wave.index + 1,
            awaiting_approval=True if self.spec.advance == "manual" else None,
            waves=waves,
            entries=(entry,),
            expect=expect,
        )

    def applied(self, change: Change) -> Rollout:
        """This rollout with `change` written (what a store holds after it)."""
        return apply_change(self, change)

    def holds(self, expect: Expect) -> bool:
        """Whether every part of `expect` holds for this rollout."""
        return expect_holds(self, expect)
