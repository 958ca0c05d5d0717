"""Rollouts as operators see them: plan, create, status, and the commands."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.rollout import MAX_ACTIVE_TAGS, RolloutSpec, plan_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    FAILURES,
    DeviceRolloutState,
    RolloutState,
    WaveState,
)
from orchestrator.logs import get_logger
from orchestrator.ports import InventoryStore
from orchestrator.services.rollout.deps import RolloutDeps, RolloutError, load
from orchestrator.services.rollout.dispatch import start_rollout
from orchestrator.services.rollout.rollback import abort_rollout

__all__ = ["Plan", "command", "create_rollout", "plan_rollout", "rollout_status"]

log = get_logger(__name__)

D = DeviceRolloutState


# -- planning -------------------------------------------------------------------------------


def _seed(spec: RolloutSpec) -> str:
    canonical = json.dumps(spec.to_json(), sort_keys=True)
    return spec.name or hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _targets(
    inventory: InventoryStore, spec: RolloutSpec, now: datetime, devices: Sequence[str] | None
) -> dict[str, list[int]]:
    """Selected devices whose active list holds the sec_tag the rollout changes.

    identity.rotate: devices whose identity tag is the rollout's `tag` (their active
    list, which the rotation leaves as it is, is kept for the probe); `expiring:DAYS`
    reads the client certificates' expiry in that tag.
    """
    selector = spec.selector
    until = now + timedelta(days=selector.days or 0)
    if devices is not None:
        selected = list(devices)
    elif selector.kind == "all":
        selected = inventory.device_ids()
    elif selector.kind == "expiring" and spec.is_identity:
        selected = inventory.expiring_identities(spec.tag, until)
    elif selector.kind == "expiring":
        selected = inventory.expiring_devices(spec.tag, until)
    elif selector.kind == "digest":
        selected = inventory.devices_with_ca(spec.tag, selector.digest or "")
    else:
        try:
            with open(selector.path or "", encoding="utf-8") as handle:
                selected = [
                    line.strip() for line in handle if line.strip() and not line.startswith("#")
                ]
        except OSError as exc:
            raise RolloutError(f"cannot read the device list {selector.path}: {exc}") from None
    active = inventory.active_tags_of(sorted(set(selected)))
    if spec.is_identity:
        identity = inventory.identity_tags_of(sorted(active))
        return {
            d: list(tags)
            for d, tags in active.items()
            if tags is not None and identity.get(d) == spec.tag
        }
    return {d: list(tags) for d, tags in active.items() if tags is not None and spec.tag in tags}


@dataclass(frozen=True, slots=True)
class Plan:
    """Which devices go in which wave, with each one's active tags and protocol version."""

    seed: str
    waves: list[list[str]]
    active: dict[str, list[int]]
    versions: dict[str, int]

    def as_json(self, *, sample: int = 5) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "devices": sum(len(w) for w in self.waves),
            "waves": [
                {"index": i, "size": len(w), "sample": w[:sample]} for i, w in enumerate(self.waves)
            ],
        }


def plan_rollout(
    inventory: InventoryStore,
    spec: RolloutSpec,
    *,
    now: datetime,
    devices: Sequence[str] | None = None,
) -> Plan:
    """The plan a rollout of `spec` would follow now (to `devices` if given); changes nothing."""
    targets = _targets(inventory, spec, now, devices)
    seed = _seed(spec)
    return Plan(
        seed=seed,
        waves=plan_waves(seed, targets, spec.waves),
        active=targets,
        versions=inventory.protocol_versions(sorted(targets)),
    )


def _over_socket_room(
    inventory: InventoryStore, spec: RolloutSpec, active: dict[str, list[int]]
) -> list[str]:
    """Devices whose socket would take more than 7 sec_tags after the rollout.

    A device presenting an identity gives its MQTT socket the active list and the identity
    tag, and a modem socket takes at most 7: such a device keeps at most 6 active tags, and
    an identity stage's probe takes its CA tags and the staged tag. A device would refuse
    the stage (`unsafe_active`, or `bad_payload` for the probe) and count against the gate.
    """
    identity = inventory.identity_tags_of(sorted(active))
    over = []
    for device, tags in active.items():
        if spec.is_identity:
            needed = len(tags) + 1
        elif identity.get(device) is not None:
            needed = len(spec.active_after(tags)) + 1
        else:
            continue
        if needed > MAX_ACTIVE_TAGS:
            over.append(device)
    return sorted(over)


def create_rollout(
    deps: RolloutDeps,
    spec: RolloutSpec,
    *,
    now: datetime,
    actor: str,
    start: bool,
    devices: Sequence[str] | None = None,
) -> str:
    """Plan, claim the devices (one rollout at a time each), store; start unless told not to.

    `devices` overrides the spec's selector (a renewal plan names its devices).

    Raises:
        CaChainTooLargeError: the CAs do not fit one modem CA chain item; nothing stored.
        RolloutError: no device matches, or some are held by another rollout.
    """
    _ = spec.ca_chain  # refused here, before anything is claimed or stored
    plan = plan_rollout(deps.inventory, spec, now=now, devices=devices)
    if not plan.active:
        where = "as its identity tag" if spec.is_identity else "in its active tag list"
        raise RolloutError(
            f"no device matches: none of the selected devices has sec_tag {spec.tag} {where} "
            "(see `certfleet fleet status`)"
        )
    over = _over_socket_room(deps.inventory, spec, plan.active)
    if over:
        raise RolloutError(
            f"{len(over)} devices present an identity and would need more than "
            f"{MAX_ACTIVE_TAGS} sec_tags on their socket (e.g. {', '.join(over[:10])}): "
            "a device with an identity keeps at most 6 active tags"
        )
    rollout_id = f"ro-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    conflicts = deps.store.claim(rollout_id, [spec.tag, spec.spare_tag], sorted(plan.active))
    if conflicts:
        shown = ", ".join(conflicts[:10])
        raise RolloutError(
            f"{len(conflicts)} devices are in another running rollout (e.g. {shown}); a "
            "device takes one rollout at a time: finish or abort that one first"
        )
    rollout = Rollout.planned(
        rollout_id, spec, seed=plan.seed, sizes=[len(w) for w in plan.waves], now=now
    )
    deps.store.create(
        rollout, waves=plan.waves, active=plan.active, versions=plan.versions, actor=actor
    )
    deps.store.set_active(rollout_id, True)
    log.info("rollout_created", rollout_id=rollout_id, devices=len(plan.active), kind=spec.kind)
    if start:
        deps.tasks.start_rollout(rollout_id)
    return rollout_id


# -- reading --------------------------------------------------------------------------------


def rollout_status(deps: RolloutDeps, rollout_id: str) -> dict[str, Any]:
    """The `rollout status --json` document."""
    rollout = load(deps.store, rollout_id)
    counts = deps.store.wave_counts(rollout_id, len(rollout.waves))
    every = [s.value for s in DeviceRolloutState]
    waves = []
    totals = dict.fromkeys(every, 0)
    for wave, wave_counts in zip(rollout.waves, counts, strict=True):
        full = {state: wave_counts.get(state, 0) for state in every}
        for state, n in full.items():
            totals[state] += n
        waves.append(
            {"index": wave.index, "size": wave.size, "state": wave.state.value, "counts": full}
        )
    status: dict[str, Any] = {
        "id": rollout_id,
        "kind": rollout.spec.kind,
        "state": rollout.state.value,
        "created_at": rollout.created_at.isoformat(),
        "current_wave": rollout.current,
        "awaiting_approval": rollout.awaiting_approval,
        "waves": waves,
        "totals": totals,
    }
    if rollout.abort_reason:
        status["abort_reason"] = rollout.abort_reason
    if rollout.unconfirmed is not None and rollout.state is RolloutState.ROLLED_BACK:
        status["unconfirmed_rollback"] = list(rollout.unconfirmed)
    if rollout.unconfirmed is not None and rollout.state is RolloutState.COMPLETED_WITH_TIMEOUTS:
        status["unconfirmed"] = list(rollout.unconfirmed)
    # Devices that refused their rollback and whose inventory still shows the change:
    # not rolled back, whatever the rollout's end state says.
    refused = deps.store.devices_in(rollout_id, [D.UNDO_REFUSED])
    status["undo_refused"] = {"count": len(refused), "devices": refused[:1000]}
    failed = deps.store.devices_in(rollout_id, [*FAILURES, D.TIMED_OUT])
    states = deps.store.device_states(rollout_id, failed)
    status["failed_devices"] = [
        {"device_id": d, "state": states[d].value if d in states else None} for d in failed[:1000]
    ]
    return status


# -- operator commands ----------------------------------------------------------------------


def command(deps: RolloutDeps, rollout_id: str, verb: str, *, now: datetime, actor: str) -> str:
    """pause, resume, abort or approve; return the resulting rollout state."""
    rollout = load(deps.store, rollout_id)
    state = rollout.state.value
    if verb == "abort":
        if not abort_rollout(
            deps, rollout_id, cause=f"aborted by {actor}", actor=actor, now=now, wave=None
        ):
            raise RolloutError(
                f"{rollout_id} is {state}; only a created, running or paused rollout can be aborted"
            )
        return RolloutState.ROLLING_BACK.value
    if verb == "pause":
        change = rollout.pause(now=now, actor=actor)
        if change is None or not deps.store.change(rollout_id, change):
            raise RolloutError(f"{rollout_id} is {state}; only a running rollout can be paused")
        return RolloutState.PAUSED.value
    if verb == "resume":
        if rollout.state is RolloutState.CREATED:
            start_rollout(deps, rollout_id, now=now, actor=actor)
            return RolloutState.RUNNING.value
        change = rollout.resume(now=now, actor=actor)
        if change is None or not deps.store.change(rollout_id, change):
            raise RolloutError(
                f"{rollout_id} is {state}; only a paused or created rollout can be resumed"
            )
        if rollout.wave.state is WaveState.RUNNING:
            deps.tasks.dispatch_wave(rollout_id, rollout.current)
        deps.tasks.evaluate_rollout(rollout_id)
        return RolloutState.RUNNING.value
    if verb == "approve":
        change = rollout.approve(now=now, actor=actor)
        if change is None:
            raise RolloutError(f"{rollout_id} is not waiting for an approval")
        deps.store.change(rollout_id, change)
        deps.tasks.evaluate_rollout(rollout_id)
        return state
    raise RolloutError(f"unknown command {verb!r}")
