"""Where a rollout, a wave and a device stand, and where a device may go next."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "DECIDED",
    "FAILURES",
    "RANK",
    "ROLLBACK_TARGETS",
    "SUCCESS",
    "UNDO_REFUSALS",
    "UNMATCHED",
    "DeviceRolloutState",
    "DeviceTransition",
    "PushStep",
    "RolloutState",
    "TransitionRefusal",
    "TransitionResult",
    "WaveState",
    "may_transition",
    "sources_of",
]


class RolloutState(enum.StrEnum):
    """Where a rollout as a whole stands."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    COMPLETED_WITH_TIMEOUTS = "completed_with_timeouts"
    """Every wave passed, but some devices never confirmed (timed out, failed)."""
    ABORTED = "aborted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class WaveState(enum.StrEnum):
    """Where one wave stands."""

    PENDING = "pending"
    RUNNING = "running"
    BAKING = "baking"
    PASSED = "passed"
    FAILED = "failed"


class DeviceRolloutState(enum.StrEnum):
    """Where one device stands in one rollout; `may_transition` says where it may go."""

    PENDING = "pending"
    SENT = "sent"
    RECEIVED = "received"
    CSR = "csr"
    """identity.rotate: the device made its new key and reported the CSR; certfleet issues."""
    ISSUED = "issued"
    """identity.rotate: the new certificate went out in the device's identity stage."""
    STAGED = "staged"
    HEALTH_OK = "health_ok"
    COMMITTED = "committed"
    REJECTED = "rejected"
    HEALTH_FAILED = "health_failed"
    TIMED_OUT = "timed_out"
    FALLBACK = "fallback"
    ROLLBACK_SENT = "rollback_sent"
    ROLLED_BACK = "rolled_back"
    CSR_REFUSED = "csr_refused"
    """identity.rotate: the CSR (or its issuance) was refused; the device keeps its identity."""
    RETIRED = "retired"
    """identity.rotate: after the soak, the device deleted its old identity (final success)."""
    UNDO_REFUSED = "undo_refused"
    """The device answered its rollback `nothing_to_undo` or `superseded`: it undid nothing.
    Not a confirmed undo; it counts as rolled back only once its inventory shows none of
    the rollout's change (`RolloutSpec.undone_on`)."""


class PushStep(enum.StrEnum):
    """Which bundle a push sends: the stage (or retire), the commit, or the rollback.

    `RESEND` is the stage again, a fresh bundle (new seq and expiry) to a device that
    has not answered the one it was sent; it is stored and matched as the stage.
    """

    STAGE = "stage"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    RESEND = "resend"
    RETIRE = "retire"
    """identity.rotate: the old identity's deletion, after the wave's soak."""

    @property
    def bundle_step(self) -> PushStep:
        """The step whose bundle this push sends (a re-send sends the stage)."""
        return PushStep.STAGE if self is PushStep.RESEND else self


_S = DeviceRolloutState
RANK: Final[Mapping[DeviceRolloutState, int]] = MappingProxyType(
    {
        _S.PENDING: 0,
        _S.SENT: 1,
        _S.RECEIVED: 2,
        _S.CSR: 3,
        _S.ISSUED: 4,
        _S.STAGED: 5,
        _S.HEALTH_OK: 6,
        _S.COMMITTED: 7,
        _S.REJECTED: 7,
        _S.HEALTH_FAILED: 7,
        _S.TIMED_OUT: 7,
        _S.FALLBACK: 7,
        _S.CSR_REFUSED: 7,
        _S.RETIRED: 8,
        _S.ROLLBACK_SENT: 9,
        _S.UNDO_REFUSED: 10,
        _S.ROLLED_BACK: 10,
    }
)
FAILURES: Final = frozenset({_S.REJECTED, _S.HEALTH_FAILED, _S.FALLBACK, _S.CSR_REFUSED})
"""Failures in any case; `TIMED_OUT` counts as one only when the policy says so."""
SUCCESS: Final = frozenset({_S.COMMITTED, _S.RETIRED})
DECIDED: Final = SUCCESS | FAILURES | {_S.TIMED_OUT}
ROLLBACK_TARGETS: Final = frozenset(
    {
        _S.SENT,
        _S.RECEIVED,
        _S.CSR,
        _S.ISSUED,
        _S.STAGED,
        _S.HEALTH_OK,
        _S.COMMITTED,
        _S.TIMED_OUT,
    }
)
"""Devices that may hold the new credential, and so must be told to roll back: a device
that timed out may still have committed just before its deadline, unseen."""
UNDO_REFUSALS: Final = frozenset({"nothing_to_undo", "superseded"})
"""The reasons of a `rejected` answering a rollback that move its device to `undo_refused`:
the device holds no undo record of this rollout, so it changed nothing."""


def may_transition(current: DeviceRolloutState, new: DeviceRolloutState) -> bool:
    """Whether a device may go from `current` to `new`: only forward, never sideways."""
    if new == _S.ROLLBACK_SENT:
        return current in ROLLBACK_TARGETS
    if new == _S.UNDO_REFUSED:
        return current == _S.ROLLBACK_SENT
    if new == _S.ROLLED_BACK:
        # confirmed by the device, or an undo refusal verified by the inventory
        return current in (_S.ROLLBACK_SENT, _S.UNDO_REFUSED)
    return RANK[new] > RANK[current]


def sources_of(new: DeviceRolloutState) -> frozenset[DeviceRolloutState]:
    """Every state a device may reach `new` from."""
    return frozenset(s for s in DeviceRolloutState if may_transition(s, new))


class TransitionRefusal(enum.StrEnum):
    """Why a transition was not applied."""

    UNKNOWN_DEVICE = "unknown_device"
    """The device is not in the rollout."""
    NO_BUNDLE = "no_bundle"
    """The transition answers a step for which no bundle was issued to the device."""
    SEQ = "seq"
    """Bundles of the step were issued to the device, none with the answered seq."""
    STATE = "state"
    """The device stands in a state the new one may not come from (late or repeated)."""


UNMATCHED: Final = frozenset(
    {TransitionRefusal.UNKNOWN_DEVICE, TransitionRefusal.NO_BUNDLE, TransitionRefusal.SEQ}
)
"""Refusals of a report that answers no bundle issued to its device."""


@dataclass(frozen=True, slots=True)
class DeviceTransition:
    """Move `device_id` to `new` if it stands in one of `allowed`, in one atomic step.

    The same step may set or clear the device's deadline and store the bundle sent
    for `step` with its `seq`, which is recorded so the device's reports about it can
    be matched. With `match` (step, seq), as a device's report carries, the move
    applies only if a bundle of that step with that seq was issued to the device in
    this rollout. A device in any other state is left as it is, so a late or repeated
    transition changes nothing.
    """

    device_id: str
    new: DeviceRolloutState
    allowed: frozenset[DeviceRolloutState]
    cause: str
    deadline: float | None = None
    clear_deadline: bool = False
    step: PushStep | None = None
    bundle: bytes | None = None
    seq: int | None = None
    match: tuple[PushStep, int] | None = None

    def __post_init__(self) -> None:
        if self.deadline is not None and self.clear_deadline:
            raise ValueError("a transition sets a deadline or clears it, not both")
        if (self.step is None) != (self.bundle is None):
            raise ValueError("a transition stores a bundle together with its step")
        if self.seq is not None and (self.bundle is None or self.seq < 1):
            raise ValueError("a seq is recorded only with the bundle it numbers, and is >= 1")


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """What a transition found: applied or not, and the state it found (None: unknown device).

    `reason` says why a transition was refused (None when it was applied).
    """

    device_id: str
    applied: bool
    previous: DeviceRolloutState | None
    reason: TransitionRefusal | None = None

    def __post_init__(self) -> None:
        if self.applied != (self.reason is None):
            raise ValueError("a refused transition says why; an applied one has no reason")
