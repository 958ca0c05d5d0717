"""What a device's overdue deadline means: a re-send while the budget lasts, else a timeout.

A `sent` device's deadline is its next re-send time while re-sends remain (the spec's
`resend_after_seconds`, at most `max_resends` times), and after its last send the
device timeout. The beat tick re-sends the stage to an overdue `sent` device with
budget left (a fresh bundle, through `push_batch` with `PushStep.RESEND`) and times
out the rest. A device's report moves its deadline to a device timeout after it
(`apply_reports`), so a device that answered is never re-sent.
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
from orchestrator.services.rollout.deps import PUSH_BATCH_SIZE, RolloutDeps, batched, count, load

__all__ = ["handle_overdue"]

log = get_logger(__name__)

D = DeviceRolloutState
_TIMED_OUT_SOURCES: Final = sources_of(D.TIMED_OUT) - {D.ROLLBACK_SENT}
_RESENDING: Final = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})


def handle_overdue(deps: RolloutDeps, rollout_id: str, *, now: datetime) -> None:
    """Re-send or time out each device of the rollout whose deadline has passed."""
    store = deps.store
    overdue = store.overdue(rollout_id, now.timestamp())
    if not overdue:
        return
    rollout = load(store, rollout_id)
    states = store.device_states(rollout_id, overdue)
    sends = store.send_counts(rollout_id, overdue, PushStep.STAGE)
    # A `sent` device sent its stage k times had a re-send deadline while k <= max_resends;
    # any other device's deadline (a device timeout after its last answer) is final.
    resend = [
        d
        for d in overdue
        if states.get(d) is D.SENT and sends.get(d, 1) <= rollout.spec.max_resends
    ]
    if rollout.state not in _RESENDING:
        resend = []
    _resend(deps, rollout, resend, now=now)
    kept = set(resend)
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
