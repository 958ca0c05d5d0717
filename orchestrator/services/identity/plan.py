"""Beat's identity rotation planning: an `identity.rotate` rollout for expiring identities.

Each tick looks at the client certificates (type 1) of the identity tag pair
(`CERTFLEET_IDENTITY_TAGS`, A and B) through the inventory's identity index: a device
whose identity tag is A and whose certificate there expires within
`CERTFLEET_IDENTITY_RENEW_DAYS` (or has expired) goes into a rollout from A to the spare
B, and a device on B into one from B to A. A device a rollout holds (any rollout, from
its creation to its end: a held one too) is left out, so a tick never plans a device
twice; so is a device whose last state says contract v1 (it has no `keygen`). A device
whose rotation ended without a new identity (refused CSR, timeout, rollback) is planned
again by a later tick, while it still expires. The rollouts are
created held, for an operator to `certfleet rollout resume`, or started when
`CERTFLEET_AUTO_ROLLOUT` is true. The same rollout by hand:
`certfleet rollout create --kind identity.rotate --select file:PATH`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.rollout import IDENTITY_KIND
from orchestrator.logs import get_logger
from orchestrator.ports import RolloutStore
from orchestrator.services.renewals.deps import RenewalPolicy
from orchestrator.services.rollout import RolloutDeps, create_rollout

__all__ = ["ACTOR", "IdentityPlanDeps", "PlanOutcome", "held_devices", "plan_identity_rotations"]

log = get_logger(__name__)

ACTOR: Final = "identity-plan"
"""Who the rollout log names as the creator of a planned rotation."""
KEYGEN_VERSION: Final = 2
"""The contract version that knows `keygen`: a v1 device would refuse it (`bad_payload`),
counting as a failure against the gate, so it is never planned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityPlanDeps:
    """What the planning works with (built from the settings by the container)."""

    rollouts: RolloutDeps
    policy: RenewalPolicy
    """The waves, bake, gate, device timeout and `auto_rollout` every planned rollout gets."""
    identity_tags: tuple[int, int]
    """`CERTFLEET_IDENTITY_TAGS`: the two sec_tags an identity alternates between."""
    renew_days: int
    """`CERTFLEET_IDENTITY_RENEW_DAYS`: how long before its notAfter an identity is renewed."""
    probe: tuple[str, int] | None
    """The broker's mutual-TLS listener the devices' probe connects to (None: plan nothing)."""


@dataclass(slots=True)
class PlanOutcome:
    """What one planning pass did: rollouts created, and devices left out by reason."""

    planned: dict[str, int] = field(default_factory=dict)
    """Rollout id -> devices in it."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> expiring devices not planned: `held` (a rollout holds them), `other_tag`
    (their identity is another tag), `protocol_v1` (their contract has no keygen),
    `refused` (the rollout could not be created)."""
    errors: list[str] = field(default_factory=list)

    def skip(self, reason: str, devices: int) -> None:
        """Count `devices` left out for `reason` (none: nothing to say)."""
        if devices:
            self.skipped[reason] = self.skipped.get(reason, 0) + devices

    def as_json(self) -> dict[str, Any]:
        """What the beat task returns and logs."""
        return {"planned": self.planned, "skipped": self.skipped, "errors": self.errors}


def held_devices(store: RolloutStore, device_ids: Sequence[str]) -> set[str]:
    """Those of `device_ids` a rollout holds: one read per rollout the tick looks at.

    A rollout holds its devices from its creation (held or started) until it ends,
    which is exactly while it is active.
    """
    if not device_ids:
        return set()
    held: set[str] = set()
    for rollout_id in store.active_ids():
        held.update(store.device_states(rollout_id, device_ids))
    return held


def plan_identity_rotations(deps: IdentityPlanDeps, *, now: datetime) -> PlanOutcome:
    """Create an `identity.rotate` rollout per identity tag for its expiring, free devices.

    Never raises a `CertfleetError`: a rollout that cannot be created is logged and
    left for the next tick (e.g. a device another rollout claimed meanwhile).
    """
    outcome = PlanOutcome()
    if deps.probe is None:
        log.warning(
            "identity_plan_no_probe",
            detail="CERTFLEET_IDENTITY_PROBE is not set: no identity rotation is planned",
        )
        outcome.errors.append("no identity probe endpoint (CERTFLEET_IDENTITY_PROBE)")
        return outcome
    first, second = deps.identity_tags
    for tag, spare in ((first, second), (second, first)):
        _plan_tag(deps, deps.probe, tag, spare, now=now, outcome=outcome)
    if outcome.planned or outcome.skipped:
        log.info("identity_plan", **outcome.as_json())
    return outcome


def _due(deps: IdentityPlanDeps, tag: int, *, now: datetime, outcome: PlanOutcome) -> list[str]:
    """Devices presenting `tag` whose certificate there expires within the renew window."""
    inventory = deps.rollouts.inventory
    before = now + timedelta(days=deps.renew_days)
    expiring = inventory.expiring_identities(tag, before)
    if not expiring:
        return []
    identity = inventory.identity_tags_of(expiring)
    using = [d for d in expiring if identity.get(d) == tag]
    outcome.skip("other_tag", len(expiring) - len(using))
    versions = inventory.protocol_versions(using)
    able = [d for d in using if versions.get(d, 1) >= KEYGEN_VERSION]
    outcome.skip("protocol_v1", len(using) - len(able))
    held = held_devices(deps.rollouts.store, able)
    outcome.skip("held", len(held))
    return [d for d in able if d not in held]


def _plan_tag(
    deps: IdentityPlanDeps,
    probe: tuple[str, int],
    tag: int,
    spare: int,
    *,
    now: datetime,
    outcome: PlanOutcome,
) -> None:
    devices = _due(deps, tag, now=now, outcome=outcome)
    if not devices:
        return
    try:
        spec = deps.policy.spec(
            IDENTITY_KIND,
            ca_pems=(),
            tag=tag,
            spare_tag=spare,
            probe=probe,
            name=f"identity-{tag}-to-{spare}-{now:%Y%m%d-%H%M%S}",
        )
        rollout_id = create_rollout(
            deps.rollouts,
            spec,
            now=now,
            actor=ACTOR,
            start=deps.policy.auto_rollout,
            devices=devices,
        )
    except CertfleetError as exc:
        log.warning("identity_plan_refused", tag=tag, devices=len(devices), error=str(exc))
        outcome.skip("refused", len(devices))
        outcome.errors.append(f"sec_tag {tag}: {exc}")
        return
    outcome.planned[rollout_id] = len(devices)
    log.info(
        "identity_rotation_planned",
        rollout_id=rollout_id,
        tag=tag,
        spare_tag=spare,
        devices=len(devices),
        started=deps.policy.auto_rollout,
    )
