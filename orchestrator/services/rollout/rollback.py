"""Aborting a rollout, sending its rollback, and ending it when devices confirmed.

A device that answers its rollback `nothing_to_undo` or `superseded` (`undo_refused`)
undid nothing; whether that is fine is for its inventory to say (`verify_by_inventory`):
a device that shows none of the rollout's change counts as rolled back, "verified by
inventory"; any other stays `undo_refused`, listed by status, API and report.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    ROLLBACK_TARGETS,
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
)
from orchestrator.logs import get_logger
from orchestrator.services.rollout.deps import PUSH_BATCH_SIZE, RolloutDeps, batched, count, load
from orchestrator.services.rollout.identity_steps import revoke_unused

__all__ = [
    "abort_rollout",
    "evaluate_rollback",
    "finish",
    "leave_tick",
    "rollback_rollout",
    "verify_by_inventory",
]

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


def verify_by_inventory(deps: RolloutDeps, rollout: Rollout, *, now: datetime) -> int:
    """Move `undo_refused` devices whose inventory shows none of the rollout's change to
    `rolled_back`; return how many moved.

    A device that never reported an active tag list proves nothing and stays.
    """
    refused = deps.store.devices_in(rollout.id, [DeviceRolloutState.UNDO_REFUSED])
    if not refused:
        return 0
    spec = rollout.spec
    if spec.is_identity:
        # undone: the device presents its old identity (tag), not the new one
        identity = deps.inventory.identity_tags_of(refused)
        verified = [d for d in refused if identity.get(d) == spec.tag]
        what = f"the device presents its identity in sec_tag {spec.tag} again"
    else:
        active = deps.inventory.active_tags_of(refused)
        digests = deps.inventory.active_ca_digests(refused)
        verified = [
            d for d in refused if active.get(d) is not None and spec.undone_on(digests.get(d, {}))
        ]
        what = (
            f"sec_tag {spec.tag} active with its CA again"
            if spec.new_ca_digest is None
            else f"no active sec_tag holds the new CA {spec.new_ca_digest[:16]}"
        )
    results = deps.store.transition(
        rollout.id,
        [
            DeviceTransition(
                device_id=d,
                new=DeviceRolloutState.ROLLED_BACK,
                allowed=frozenset({DeviceRolloutState.UNDO_REFUSED}),
                cause=f"rolled back, verified by inventory: {what}",
                clear_deadline=True,
            )
            for d in verified
        ],
        now=now,
        actor="engine",
    )
    moved = sum(r.applied for r in results)
    count(deps.metrics, "certfleet_rollback_verified_by_inventory_total", {}, moved)
    if len(verified) < len(refused):
        log.warning(
            "undo_refused",
            rollout_id=rollout.id,
            devices=len(refused) - len(verified),
            sample=[d for d in refused if d not in set(verified)][:10],
        )
    return moved


def evaluate_rollback(deps: RolloutDeps, rollout: Rollout, *, now: datetime, actor: str) -> str:
    """Re-reach devices still holding the new credential; end when all confirmed or time is up.

    Devices that refused the undo are checked against their inventory first; they are
    not waited for (they answered), so those the inventory cannot clear end the
    rollout `undo_refused`.
    """
    verify_by_inventory(deps, rollout, now=now)
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
    """Release an ended rollout's claims on its devices and record it finished; the next
    beat tick that reads it so stops ticking it (`leave_tick`).

    identity.rotate: the certificates its devices no longer use are revoked (again for
    those revoked as they retired: it changes nothing).
    """
    devices = deps.store.device_states(rollout.id)
    deps.store.release(rollout.id, [rollout.spec.tag, rollout.spec.spare_tag], devices)
    if rollout.spec.is_identity:
        revoke_unused(deps, rollout)
    deps.store.change(rollout.id, rollout.finish(outcome, now=now, actor=actor))
    log.info("rollout_finished", rollout_id=rollout.id, outcome=outcome.value)


def leave_tick(deps: RolloutDeps, rollout_id: str) -> bool:
    """Drop the rollout from the beat tick's set if it reads finished (or unknown); True if
    dropped.

    The set is a global key, in another hash slot than the rollout's own keys: on a Redis
    Cluster a failover may lose the new master's last writes, the rollout's end among them,
    while the set's master kept its own. Dropped as the rollout finished, a lost end would
    leave a rollout `running` that no tick looks at again; dropped only once a later tick
    reads the end, the set always holds every rollout still going.
    """
    rollout = deps.store.get(rollout_id)
    if rollout is not None and not (rollout.ended and rollout.finished_at is not None):
        return False
    deps.store.set_active(rollout_id, False)
    return True
