"""Aborting a rollout, sending its rollback, and ending it when devices confirmed."""

from __future__ import annotations

from datetime import datetime

from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    ROLLBACK_TARGETS,
    DeviceRolloutState,
    PushStep,
    RolloutState,
)
from orchestrator.logs import get_logger
from orchestrator.services.rollout.deps import PUSH_BATCH_SIZE, RolloutDeps, batched, load

__all__ = ["abort_rollout", "evaluate_rollback", "finish", "rollback_rollout"]

log = get_logger(__name__)


def abort_rollout(
    deps: RolloutDeps,
    rollout_id: str,
    *,
    cause: str,
    actor: str,
    now: datetime,
    wave: int | None,
) -> bool:
    """created, running or paused -> rolling_back; whether this call aborted it."""
    change = load(deps.store, rollout_id).abort(cause=cause, now=now, actor=actor, failed_wave=wave)
    if change is None or not deps.store.change(rollout_id, change):
        return False
    log.warning("rollout_aborted", rollout_id=rollout_id, cause=cause)
    deps.tasks.rollback_rollout(rollout_id)
    return True


def _push_rollback(deps: RolloutDeps, rollout_id: str, devices: list[str]) -> None:
    for batch in batched(devices, PUSH_BATCH_SIZE):
        deps.tasks.push_batch(rollout_id, -1, batch, PushStep.ROLLBACK, countdown=0)


def rollback_rollout(deps: RolloutDeps, rollout_id: str, *, now: datetime) -> int:
    """Enqueue rollback bundles for every device that may hold the new credential."""
    if load(deps.store, rollout_id).state is not RolloutState.ROLLING_BACK:
        return 0
    targets = deps.store.devices_in(
        rollout_id, [*ROLLBACK_TARGETS, DeviceRolloutState.ROLLBACK_SENT]
    )
    _push_rollback(deps, rollout_id, targets)
    deps.tasks.evaluate_rollout(rollout_id, countdown=1.0)
    return len(targets)


def evaluate_rollback(deps: RolloutDeps, rollout: Rollout, *, now: datetime, actor: str) -> str:
    """Re-reach devices still holding the new credential; end when all confirmed or time is up."""
    # Devices that reached a target state after rollback_rollout listed them (a stage
    # push already under way at the abort) get their rollback now; re-sends are harmless.
    untouched = deps.store.devices_in(rollout.id, ROLLBACK_TARGETS)
    _push_rollback(deps, rollout.id, untouched)
    waiting = untouched + deps.store.devices_in(rollout.id, [DeviceRolloutState.ROLLBACK_SENT])
    if waiting and not rollout.rollback_overdue(now):
        return RolloutState.ROLLING_BACK.value
    change = rollout.end_rollback(waiting, now=now, actor=actor)
    if change is not None and deps.store.change(rollout.id, change):
        finish(deps, rollout, RolloutState.ROLLED_BACK, now=now, actor=actor)
    return RolloutState.ROLLED_BACK.value


def finish(
    deps: RolloutDeps, rollout: Rollout, outcome: RolloutState, *, now: datetime, actor: str
) -> None:
    """Stop ticking an ended rollout and release its claims on its devices."""
    deps.store.set_active(rollout.id, False)
    devices = deps.store.device_states(rollout.id)
    deps.store.release(rollout.id, [rollout.spec.tag, rollout.spec.spare_tag], devices)
    deps.store.change(rollout.id, rollout.finish(outcome, now=now, actor=actor))
    log.info("rollout_finished", rollout_id=rollout.id, outcome=outcome.value)
