"""What an identity.rotate rollout's evaluation does beyond a trust rollout's.

- devices that reported their CSR (`csr`) get their certificate: `issue_identities`
  tasks, each device claimed once per re-send period like a commit;
- at the end of each wave's soak, the wave's committed devices are told to delete
  their old identity (`PushStep.RETIRE`), re-sent like commits while unanswered;
- the last wave ends only once no device of the rollout stands `committed` (all
  retired) or their time to confirm the retire is up (`retire_deadline`);
- the certificates the devices no longer use are revoked (`revoke_identities`): the
  old one of a retired device, the new one of a device that rolled back or failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import DeviceRolloutState, PushStep, WaveState
from orchestrator.logs import get_logger
from orchestrator.services.rollout.deps import PUSH_BATCH_SIZE, RolloutDeps, batched

__all__ = [
    "ISSUE_CLAIM_STEP",
    "REVOKE_NEW",
    "REVOKE_OLD",
    "issue_csrs",
    "resend_every",
    "retire_deadline",
    "retire_due",
    "retirements_pending",
    "revoke_unused",
]

log = get_logger(__name__)

D = DeviceRolloutState
RESEND_MAX_SECONDS: Final = 30.0
"""A claimed issuance or retire goes again if its device has not moved this long after
(or a quarter of the device timeout, when shorter), as commits do."""
ISSUE_CLAIM_STEP: Final = PushStep.STAGE
"""The step whose sends an issuance claims: it sends the identity stage, the second
bundle of the stage step (the first is the keygen)."""
REVOKE_OLD: Final = frozenset({D.RETIRED})
"""Devices whose old certificate is revoked: they deleted it."""
REVOKE_NEW: Final = frozenset({D.ROLLED_BACK, D.HEALTH_FAILED, D.FALLBACK})
"""Devices whose new certificate is revoked: they deleted it (or never used it). A device
that timed out or never confirmed its rollback may use the new one: it is left alone."""


def resend_every(rollout: Rollout) -> float:
    """How long a claimed issuance or retire waits before it may be claimed again."""
    return min(RESEND_MAX_SECONDS, rollout.spec.device_timeout_seconds / 4)


def issue_csrs(deps: RolloutDeps, rollout: Rollout, wave: int, *, now: datetime) -> int:
    """Enqueue `issue_identities` for the wave's devices in `csr` or `issued`; how many claimed.

    Claimed once per re-send period: an issuance that failed (the issuer away, its task
    out of retries) is tried again while the device waits, until its deadline; a device
    `issued` that has not answered gets its stored stage again (a lost publish), which a
    device that has it refuses as a replay.
    """
    store = deps.store
    waiting = sorted(
        set(store.devices_in(rollout.id, [D.CSR, D.ISSUED]))
        & set(store.wave_members(rollout.id, wave))
    )
    claimed = store.claim_sends(
        rollout.id, ISSUE_CLAIM_STEP, waiting, now=now.timestamp(), every=resend_every(rollout)
    )
    for batch in batched(claimed, PUSH_BATCH_SIZE):
        deps.tasks.issue_identities(rollout.id, wave, batch)
    if claimed:
        log.info("identities_to_issue", rollout_id=rollout.id, wave=wave, devices=len(claimed))
    return len(claimed)


def _soaked_waves(rollout: Rollout, now: datetime) -> list[int]:
    """The waves whose soak is over: passed, or baking with the bake time up."""
    return [
        w.index
        for w in rollout.waves[: rollout.current + 1]
        if w.state is WaveState.PASSED
        or (w.state is WaveState.BAKING and now.timestamp() >= (w.bake_until or 0.0))
    ]


def retire_due(deps: RolloutDeps, rollout: Rollout, *, now: datetime) -> int:
    """Push the retire of the old identity to committed devices of soaked waves; how many.

    A device is claimed once per re-send period; the retire bundle is issued once per
    device and re-sent byte for byte while the device stays `committed`.
    """
    store = deps.store
    counts = store.wave_counts(rollout.id, rollout.current + 1)
    due_waves = [w for w in _soaked_waves(rollout, now) if counts[w].get(D.COMMITTED)]
    if not due_waves:  # O(waves) counts, no device read, on most evaluations
        return 0
    committed = set(store.devices_in(rollout.id, [D.COMMITTED]))
    total = 0
    for wave in due_waves:
        due = sorted(committed & set(store.wave_members(rollout.id, wave)))
        claimed = store.claim_sends(
            rollout.id, PushStep.RETIRE, due, now=now.timestamp(), every=resend_every(rollout)
        )
        for batch in batched(claimed, PUSH_BATCH_SIZE):
            deps.tasks.push_batch(rollout.id, wave, batch, PushStep.RETIRE, countdown=0)
        total += len(claimed)
    if total:
        log.info("identities_to_retire", rollout_id=rollout.id, devices=total)
    return total


def retire_deadline(rollout: Rollout) -> float:
    """Until when the last wave's committed devices have to confirm their retire."""
    return (rollout.wave.bake_until or 0.0) + rollout.spec.device_timeout_seconds


def retirements_pending(deps: RolloutDeps, rollout: Rollout, *, now: datetime) -> bool:
    """Whether the last wave must wait: devices still `committed` and time left to retire."""
    if not rollout.is_last_wave or now.timestamp() >= retire_deadline(rollout):
        return False
    return bool(deps.store.devices_in(rollout.id, [D.COMMITTED]))


def revoke_unused(deps: RolloutDeps, rollout: Rollout) -> int:
    """Enqueue `revoke_identities` for every device with a certificate it no longer uses.

    Run when the rollout ends; the task finds which certificate (old or new) by the
    device's state, and revoking one twice changes nothing.
    """
    devices = deps.store.devices_in(rollout.id, [*REVOKE_OLD, *REVOKE_NEW])
    for batch in batched(devices, PUSH_BATCH_SIZE):
        deps.tasks.revoke_identities(rollout.id, batch)
    return len(devices)
