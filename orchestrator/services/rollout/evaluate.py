"""Evaluating a rollout: commit healthy devices, apply the gate, bake, move waves on; the tick.

Every step is guarded by the state it expects (`Rollout`'s changes), so evaluations
that overlap (the listener's debounce, beat's tick) apply each step once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Final

from orchestrator.domain.gate import GateInput, Verdict, evaluate_gate
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    PushStep,
    RolloutState,
    WaveState,
)
from orchestrator.logs import get_logger
from orchestrator.services.rollout.deadlines import handle_overdue
from orchestrator.services.rollout.deps import (
    PUSH_BATCH_SIZE,
    RolloutDeps,
    batched,
    load,
)
from orchestrator.services.rollout.identity_steps import (
    issue_csrs,
    retire_due,
    retirements_pending,
)
from orchestrator.services.rollout.rollback import (
    abort_rollout,
    evaluate_rollback,
    finish,
    leave_tick,
    verify_by_inventory,
)

__all__ = ["COMMIT_RESEND_SECONDS", "commit_healthy", "evaluate_rollout", "tick_rollouts"]

log = get_logger(__name__)

D = DeviceRolloutState
COMMIT_RESEND_SECONDS: Final = 30.0
"""A healthy device's commit goes again if it has not committed this long after (or a
quarter of the rollout's device timeout, when that is shorter)."""


EVALUATION_LOCK_MS: Final = 10_000
"""How long an evaluation's lock lives if its holder never releases it (a worker killed
mid-evaluation, or a Redis failover that kept the lock but lost the release): short, so
commits wait at most this long; overlapping evaluations are safe (every change is
guarded by its expectation, every send claimed atomically), only wasteful."""


def evaluate_rollout(
    deps: RolloutDeps, rollout_id: str, *, now: datetime, actor: str = "engine"
) -> str:
    """Advance the rollout one step as far as its state allows; return its state."""
    owner = secrets.token_hex(8)
    if not deps.store.lock(rollout_id, owner, ttl_ms=EVALUATION_LOCK_MS):
        deps.tasks.evaluate_rollout(rollout_id, countdown=1.0)
        return "locked"
    try:
        return _evaluate(deps, load(deps.store, rollout_id), now=now, actor=actor)
    finally:
        deps.store.unlock(rollout_id, owner)


def _evaluate(deps: RolloutDeps, rollout: Rollout, *, now: datetime, actor: str) -> str:
    state = rollout.state
    if state is RolloutState.ROLLING_BACK:
        return evaluate_rollback(deps, rollout, now=now, actor=actor)
    if rollout.ended:
        if rollout.finished_at is None:  # the worker that ended it died before cleaning up
            finish(deps, rollout, state, now=now, actor=actor)
        if state is RolloutState.ROLLED_BACK:  # a refusal that came after the deadline
            verify_by_inventory(deps, rollout, now=now)
        return state.value
    if state is RolloutState.PAUSED:
        # A pause stops new stages; devices already under way get their certificate
        # and their commit, or they would fall back and count as failures.
        if rollout.spec.is_identity:
            issue_csrs(deps, rollout, rollout.current, now=now)
        commit_healthy(deps, rollout, rollout.current, now=now)
        return state.value
    if state is not RolloutState.RUNNING:
        return state.value
    step: Callable[[RolloutDeps, Rollout, datetime, str], RolloutState] | None = {
        WaveState.PENDING: _wave_pending,
        WaveState.RUNNING: _wave_running,
        WaveState.BAKING: _wave_baking,
    }.get(rollout.wave.state)
    if step is None:
        return state.value
    return step(deps, rollout, now, actor).value


def _wave_pending(deps: RolloutDeps, rollout: Rollout, now: datetime, actor: str) -> RolloutState:
    """Start the wave unless it waits for an approval or the maintenance window."""
    change = rollout.start_wave(now=now, actor=actor)
    if change is not None and deps.store.change(rollout.id, change):
        deps.tasks.dispatch_wave(rollout.id, rollout.current)
    return rollout.state


def commit_healthy(deps: RolloutDeps, rollout: Rollout, wave: int, *, now: datetime) -> None:
    """Send the commit to every device of the wave whose probe passed, once per resend period.

    Evaluations run every debounce period and every beat tick; without the claim each
    one re-sent the commit to every healthy device not yet committed, and each device
    had to verify and refuse the duplicates (`replay`) — at a few hundred healthy
    devices the duplicates outran the commits. A commit lost on the way goes again
    after `COMMIT_RESEND_SECONDS`, or a quarter of the device timeout if shorter, so
    it arrives before the device's `commit_by`.

    The devices whose commit was claimed within the period are read once
    (`sent_since`) and left out of the claim: a healthy device waits in `health_ok`
    for its commit over many evaluations, and checking each of them at each one made
    the claim's work grow with evaluations times healthy devices. The claim itself
    still decides, atomically, for the devices it is given.
    """
    store = deps.store
    every = min(COMMIT_RESEND_SECONDS, rollout.spec.device_timeout_seconds / 4)
    healthy = set(store.devices_in(rollout.id, [D.HEALTH_OK]))
    if healthy:
        healthy -= store.sent_since(rollout.id, PushStep.COMMIT, now.timestamp() - every)
    if not healthy:
        return
    due = sorted(healthy & set(store.wave_members(rollout.id, wave)))
    claimed = store.claim_sends(rollout.id, PushStep.COMMIT, due, now=now.timestamp(), every=every)
    for batch in batched(claimed, PUSH_BATCH_SIZE):
        deps.tasks.push_batch(rollout.id, wave, batch, PushStep.COMMIT, countdown=0)


def _redispatch_stalled(deps: RolloutDeps, rollout: Rollout, pending: int, now: datetime) -> None:
    """Dispatch the running wave again if devices stay `pending` long after their push was due.

    Otherwise a push_batch that exhausted its retries would leave its devices pending
    with no deadline, and the wave would never end. The guard on the due time keeps
    concurrent evaluators from dispatching twice.
    """
    change = rollout.redispatch(now=now) if pending else None
    if change is not None and deps.store.change(rollout.id, change):
        log.warning(
            "wave_redispatched",
            rollout_id=rollout.id,
            wave=rollout.current,
            pending=pending,
            due=rollout.wave.dispatched_until,
        )
        deps.tasks.dispatch_wave(rollout.id, rollout.current)


def _sum(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for state, n in c.items():
            total[state] = total.get(state, 0) + n
    return total


def _wave_running(deps: RolloutDeps, rollout: Rollout, now: datetime, actor: str) -> RolloutState:
    """Commit healthy devices; let the gate pass the wave or abort the rollout."""
    wave, spec = rollout.current, rollout.spec
    counts = deps.store.wave_counts(rollout.id, wave + 1)
    if spec.is_identity:
        if counts[wave].get(D.CSR) or counts[wave].get(D.ISSUED):
            issue_csrs(deps, rollout, wave, now=now)
        retire_due(deps, rollout, now=now)  # earlier waves' devices still to retire
    if counts[wave].get(D.HEALTH_OK):
        commit_healthy(deps, rollout, wave, now=now)
    _redispatch_stalled(deps, rollout, counts[wave].get(D.PENDING, 0), now)
    decision = evaluate_gate(
        spec.gate_policy,
        GateInput(
            wave_size=rollout.wave.size, wave_counts=counts[wave], cumulative_counts=_sum(counts)
        ),
    )
    if decision.verdict is Verdict.ABORT:
        abort_rollout(
            deps, rollout.id, cause=f"gate: {decision.reason}", actor="gate", now=now, wave=wave
        )
        return RolloutState.ROLLING_BACK
    if decision.verdict is Verdict.PASS:
        change = rollout.pass_wave(decision.reason, now=now)
        if change is not None:
            deps.store.change(rollout.id, change)
        deps.tasks.evaluate_rollout(rollout.id, countdown=spec.bake_seconds)
    return rollout.state


def _wave_baking(deps: RolloutDeps, rollout: Rollout, now: datetime, actor: str) -> RolloutState:
    """After the bake: pass the wave; complete, or move on (auto) or wait (manual).

    identity.rotate: the soak's end retires the wave's old identities, and the last wave
    waits for the retirements (`retirements_pending`).
    """
    if rollout.spec.is_identity:
        retire_due(deps, rollout, now=now)
        if retirements_pending(deps, rollout, now=now):
            return rollout.state
    # After the last wave, every device of the rollout that did not commit (timed out,
    # failed within the gate's allowance) keeps the rollout from a plain `completed`;
    # for identity.rotate, every device that did not retire its old identity.
    done = D.RETIRED if rollout.spec.is_identity else D.COMMITTED
    unconfirmed = (
        deps.store.devices_in(rollout.id, [s for s in D if s is not done])
        if rollout.is_last_wave
        else []
    )
    change = rollout.end_bake(now=now, actor=actor, unconfirmed=unconfirmed)
    if change is None or not deps.store.change(rollout.id, change):
        return rollout.state
    if change.state is not None:
        finish(deps, rollout, change.state, now=now, actor=actor)
        if unconfirmed:
            log.warning(
                "rollout_completed_with_timeouts",
                rollout_id=rollout.id,
                unconfirmed=len(unconfirmed),
            )
        return change.state
    deps.tasks.evaluate_rollout(rollout.id)
    return rollout.state


def tick_rollouts(deps: RolloutDeps, *, now: datetime) -> dict[str, str]:
    """Beat: re-send or time out overdue devices, then evaluate every active rollout; a
    rollout read finished leaves the set (`leave_tick`)."""
    outcome = {}
    for rollout_id in deps.store.active_ids():
        if leave_tick(deps, rollout_id):
            continue
        handle_overdue(deps, rollout_id, now=now)
        outcome[rollout_id] = evaluate_rollout(deps, rollout_id, now=now, actor="tick")
    return outcome
