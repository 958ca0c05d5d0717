"""Device reports: each moves its device in its rollout, if the move goes forward."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final

from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout_states import (
    DECIDED,
    DeviceRolloutState,
    DeviceTransition,
    sources_of,
)
from orchestrator.services.rollout.deps import RolloutDeps, count

__all__ = ["PHASE_TO_STATE", "apply_reports"]

D = DeviceRolloutState
PHASE_TO_STATE: Final[Mapping[str, DeviceRolloutState]] = {
    "received": D.RECEIVED,
    "staged": D.STAGED,
    "health_ok": D.HEALTH_OK,
    "health_failed": D.HEALTH_FAILED,
    "committed": D.COMMITTED,
    "retired": D.COMMITTED,
    "rejected": D.REJECTED,
    "fallback": D.FALLBACK,
    "rolled_back": D.ROLLED_BACK,
}
"""The device state each reported phase moves a device to."""
_SOURCES: Final = {target: sources_of(target) for target in set(PHASE_TO_STATE.values())}
_TERMINAL: Final = frozenset(
    t for t in PHASE_TO_STATE.values() if t in DECIDED or t is D.ROLLED_BACK
)


def apply_reports(deps: RolloutDeps, reports: Iterable[DeviceReport], *, now: datetime) -> set[str]:
    """Move devices by their reports; return the rollouts whose devices moved.

    A duplicate delivery of a bundle shows up as a `rejected`/`replay` report: it
    says nothing about the rollout and is ignored. Late and repeated reports are
    refused by the transition itself.
    """
    by_rollout: dict[str, list[DeviceTransition]] = {}
    rejected: Counter[str] = Counter()
    for report in reports:
        target = PHASE_TO_STATE.get(report.phase)
        if report.phase == "rejected":
            rejected[report.reason] += 1
        if not report.rollout_id or target is None or report.reason == "replay":
            continue
        by_rollout.setdefault(report.rollout_id, []).append(
            DeviceTransition(
                device_id=report.device_id,
                new=target,
                allowed=_SOURCES[target],
                cause=f"report {report.phase}/{report.reason} seq {report.seq}",
                clear_deadline=target in _TERMINAL,
            )
        )
    # One counter update per label and batch, not one round trip per report.
    for reason, n in sorted(rejected.items()):
        count(deps.metrics, "certfleet_bundles_rejected_total", {"reason": reason}, n)
    moved: set[str] = set()
    arrived: Counter[str] = Counter()
    for rollout_id, transitions in by_rollout.items():
        if not deps.store.exists(rollout_id):
            continue
        results = deps.store.transition(rollout_id, transitions, now=now, actor="device")
        for transition, result in zip(transitions, results, strict=True):
            if result.applied:
                moved.add(rollout_id)
                arrived[transition.new.value] += 1
    for state, n in sorted(arrived.items()):
        count(deps.metrics, "certfleet_device_transitions_total", {"to": state}, n)
    return moved
