"""What a device's overdue deadline means: a re-send while the budget lasts, else a timeout.

A `sent` device's deadline is its next re-send time while re-sends remain (the spec's
`resend_after_seconds`, at most `max_resends` times), and after its last send the
device timeout. The beat tick re-sends the stage to an overdue `sent` device with
budget left (a fresh bundle, through `push_batch` with `PushStep.RESEND`), moves the
deadline of a device that answered before its re-send time on to its timeout, and
times out the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
    sources_of,
)
from orchestrator.logs import get_logger
from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.rollout.deps import PUSH_BATCH_SIZE, RolloutDeps, batched, count, load

__all__ = ["handle_overdue"]

log = get_logger(__name__)

D = DeviceRolloutState
_TIMED_OUT_SOURCES: Final = sources_of(D.TIMED_OUT) - {D.ROLLBACK_SENT}
_RESENDING: Final = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})


def handle_overdue(deps: RolloutDeps, rollout_id: str, *, now: datetime) -> None:
    """Re-send, extend or time out each device of the rollout whose deadline has passed."""
    store = deps.store
    overdue = store.overdue(rollout_id, now.timestamp())
    if not overdue:
        return
    rollout = load(store, rollout_id)
    states = store.device_states(rollout_id, overdue)
    sends = store.send_counts(rollout_id, overdue, PushStep.STAGE)
    spec = rollout.spec
    # A device sent its stage k times had a re-send deadline while k <= max_resends.
    early = {d for d in overdue if sends.get(d, 1) <= spec.max_resends}
    resend = [d for d in overdue if d in early and states.get(d) is D.SENT]
    if rollout.state not in _RESENDING:
        resend = []
    answered = [d for d in overdue if d in early and states.get(d) in _TIMED_OUT_SOURCES - {D.SENT}]
    extended = _extend(deps, rollout, answered, now=now)
    _resend(deps, rollout, resend, now=now)
    kept = set(resend) | set(extended)
    _time_out(deps, rollout_id, [d for d in overdue if d not in kept], now=now)


def _resend(
    deps: RolloutDeps, rollout: Rollout, device_ids: Sequence[str], *, now: datetime
) -> None:
    """Enqueue a re-send for the devices; overlapping ticks claim each device once."""
    every = rollout.spec.resend_interval / 2
    claimed = deps.store.claim_sends(
        rollout.id, PushStep.RESEND, list(device_ids), now=now.timestamp(), every=every
    )
    for batch in batched(claimed, PUSH_BATCH_SIZE):
        deps.tasks.push_batch(rollout.id, rollout.current, batch, PushStep.RESEND, countdown=0)
    if claimed:
        log.info("stage_resend", rollout_id=rollout.id, devices=len(claimed))


def _issued_at(data: bytes) -> float:
    """When a bundle certfleet signed and stored was issued (epoch seconds)."""
    return float(decode_payload(Sign1Message.decode(data).payload).issued_at)


def _extend(
    deps: RolloutDeps, rollout: Rollout, device_ids: Sequence[str], *, now: datetime
) -> list[str]:
    """Devices that answered before their re-send time: their deadline becomes the timeout.

    The timeout is a device timeout after the stage bundle they were last sent was
    issued (read from the stored bundle, so a second look finds the same time).
    Returns those whose timeout is still ahead; the others time out now.
    """
    store, timeout = deps.store, rollout.spec.device_timeout_seconds
    stored = store.bundles(rollout.id, list(device_ids), PushStep.STAGE)
    ahead = {d: _issued_at(data) + timeout for d, data in stored.items()}
    ahead = {d: when for d, when in ahead.items() if when > now.timestamp()}
    states = store.device_states(rollout.id, list(ahead))
    results = store.transition(
        rollout.id,
        [
            DeviceTransition(
                device_id=d,
                new=states[d],
                allowed=frozenset({states[d]}),
                cause="answered the stage: the deadline is the device timeout",
                deadline=when,
            )
            for d, when in ahead.items()
            if d in states
        ],
        now=now,
        actor="tick",
    )
    return [r.device_id for r in results if r.applied]


def _time_out(
    deps: RolloutDeps, rollout_id: str, device_ids: Sequence[str], *, now: datetime
) -> None:
    if not device_ids:
        return
    results = deps.store.transition(
        rollout_id,
        [
            DeviceTransition(
                device_id=d,
                new=D.TIMED_OUT,
                allowed=_TIMED_OUT_SOURCES,
                cause="no decision before the device timeout",
                clear_deadline=True,
            )
            for d in device_ids
        ],
        now=now,
        actor="tick",
    )
    count(
        deps.metrics,
        "certfleet_device_transitions_total",
        {"to": D.TIMED_OUT.value},
        sum(r.applied for r in results),
    )
