"""Starting a rollout and dispatching a wave's pending devices as push batches."""

from __future__ import annotations

from datetime import datetime
from itertools import chain

from orchestrator.domain.rollout_states import DeviceRolloutState, PushStep, RolloutState, WaveState
from orchestrator.services.rollout.deps import PUSH_BATCH_SIZE, RolloutDeps, batched, load

__all__ = ["dispatch_wave", "start_rollout"]


def start_rollout(deps: RolloutDeps, rollout_id: str, *, now: datetime, actor: str) -> bool:
    """created -> running; the evaluator starts wave 0 when the window allows."""
    change = load(deps.store, rollout_id).start(now=now, actor=actor)
    started = change is not None and deps.store.change(rollout_id, change)
    if started:
        deps.tasks.evaluate_rollout(rollout_id)
    return started


def dispatch_wave(deps: RolloutDeps, rollout_id: str, wave: int, *, now: datetime) -> int:
    """Enqueue push_batch tasks for the wave's pending devices, paced by the push rate.

    The wave is read a chunk at a time and each batch is enqueued as soon as it is
    full, so the worker holds one chunk and one batch, never the wave: its memory
    does not grow with the fleet.
    """
    rollout = load(deps.store, rollout_id)
    if not 0 <= wave < len(rollout.waves):  # a stray task for a wave the rollout lacks
        return 0
    if (
        rollout.state is not RolloutState.RUNNING
        or rollout.waves[wave].state is not WaveState.RUNNING
    ):
        return 0
    rate = rollout.spec.push_rate
    deps.store.change(rollout_id, rollout.dispatched(wave, until=now.timestamp()))
    pending = deps.store.scan_wave(rollout_id, wave, [DeviceRolloutState.PENDING])
    dispatched = 0
    countdown = 0.0
    for number, batch in enumerate(batched(chain.from_iterable(pending), PUSH_BATCH_SIZE)):
        countdown = number * PUSH_BATCH_SIZE / rate if rate else 0
        deps.tasks.push_batch(rollout_id, wave, batch, PushStep.STAGE, countdown=countdown)
        dispatched += len(batch)
    # When the last batch is due: a device still pending a device timeout after that
    # lost its batch (retries exhausted, say, through a long broker outage), and the
    # evaluator dispatches the wave's pending devices again (`Rollout.redispatch`).
    deps.store.change(rollout_id, rollout.dispatched(wave, until=now.timestamp() + countdown))
    return dispatched
