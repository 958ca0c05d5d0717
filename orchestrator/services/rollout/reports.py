"""Device reports: each moves its device in its rollout, if it answers a bundle issued to it.

A report carries the `seq` and `op` of the bundle it answers. It moves its device
only if that (rollout, step of the op, seq) is a bundle certfleet issued to the
device, and the move goes forward; any other report is counted as unmatched, by
reason, and logged, never applied.

A `rejected` answering a rollback with `nothing_to_undo` or `superseded` is no
confirmed undo: it moves the device from `rollback_sent` to `undo_refused`, bound to
the rollback bundle like any report; the rollback's evaluation then looks at the
device's inventory (`rollback.verify_by_inventory`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Final

from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout_states import (
    DECIDED,
    UNDO_REFUSALS,
    UNMATCHED,
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    sources_of,
)
from orchestrator.logs import get_logger
from orchestrator.services.rollout.deps import RolloutDeps, count

__all__ = ["OP_STEP", "PHASE_OPS", "PHASE_TO_STATE", "apply_reports"]

log = get_logger(__name__)

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
OP_STEP: Final[Mapping[str, PushStep]] = {
    "stage": PushStep.STAGE,
    "retire": PushStep.STAGE,
    "commit": PushStep.COMMIT,
    "rollback": PushStep.ROLLBACK,
}
"""The push step whose bundle carries each op a rollout sends."""
_ANY_OP: Final = frozenset(OP_STEP)
PHASE_OPS: Final[Mapping[str, frozenset[str]]] = {
    "received": _ANY_OP,
    "rejected": _ANY_OP,
    "staged": frozenset({"stage"}),
    "health_ok": frozenset({"stage"}),
    "health_failed": frozenset({"stage"}),
    "committed": frozenset({"commit"}),
    "retired": frozenset({"retire"}),
    "fallback": frozenset({"stage", "commit"}),
    "rolled_back": frozenset({"rollback"}),
}
"""The ops of the bundles a phase may answer: a `committed` answers a commit, never a stage."""
UNMATCHED_OP: Final = "op"
"""Unmatched reason: the report's op is none a rollout sends, or not one its phase answers."""
UNKNOWN_ROLLOUT: Final = "unknown_rollout"
"""Unmatched reason: no rollout has the report's id."""
_TARGETS: Final = {*PHASE_TO_STATE.values(), D.UNDO_REFUSED}
_SOURCES: Final = {target: sources_of(target) for target in _TARGETS}
_TERMINAL: Final = frozenset(
    t for t in _TARGETS if t in DECIDED or t in (D.ROLLED_BACK, D.UNDO_REFUSED)
)


def _target(report: DeviceReport) -> DeviceRolloutState | None:
    """The state the report moves its device to (None: a phase that moves none)."""
    if report.phase == "rejected" and report.op == "rollback" and report.reason in UNDO_REFUSALS:
        return D.UNDO_REFUSED
    return PHASE_TO_STATE.get(report.phase)


def _cause(report: DeviceReport, target: DeviceRolloutState) -> str:
    """The audit log's cause of the move: the report, and for a refused undo what it means."""
    cause = f"report {report.phase}/{report.reason} seq {report.seq}"
    if target is D.UNDO_REFUSED:
        return f"{cause}: the device undid nothing, not a confirmed undo"
    return cause


def _answered_step(report: DeviceReport) -> PushStep | None:
    """The step of the bundle the report answers, or None if its op cannot say."""
    if report.op is None or report.op not in PHASE_OPS[report.phase]:
        return None
    return OP_STEP[report.op]


def _unmatched(unmatched: Counter[str], report: DeviceReport, reason: str) -> None:
    unmatched[reason] += 1
    log.warning(
        "report_unmatched",
        device_id=report.device_id,
        rollout_id=report.rollout_id,
        seq=report.seq,
        op=report.op,
        phase=report.phase,
        reason=reason,
    )


def _answers(
    reports: Iterable[DeviceReport], rejected: Counter[str], unmatched: Counter[str]
) -> dict[str, list[tuple[DeviceReport, DeviceTransition]]]:
    """By rollout, each report with the transition it asks for; rejections counted."""
    by_rollout: dict[str, list[tuple[DeviceReport, DeviceTransition]]] = {}
    for report in reports:
        target = _target(report)
        if report.phase == "rejected":
            rejected[report.reason] += 1
        if not report.rollout_id or target is None or report.reason == "replay":
            continue
        step = _answered_step(report)
        if step is None:
            _unmatched(unmatched, report, UNMATCHED_OP)
            continue
        transition = DeviceTransition(
            device_id=report.device_id,
            new=target,
            allowed=_SOURCES[target],
            cause=_cause(report, target),
            clear_deadline=target in _TERMINAL,
            match=(step, report.seq),
        )
        by_rollout.setdefault(report.rollout_id, []).append((report, transition))
    return by_rollout


def apply_reports(deps: RolloutDeps, reports: Iterable[DeviceReport], *, now: datetime) -> set[str]:
    """Move devices by their reports; return the rollouts whose devices moved.

    A duplicate delivery of a bundle shows up as a `rejected`/`replay` report: it
    says nothing about the rollout and is ignored. Late and repeated reports are
    refused by the transition itself; a report that answers no bundle issued to its
    device is refused there too, and counted in `certfleet_reports_unmatched_total`.
    One store call per rollout in the batch, none per report.
    """
    rejected: Counter[str] = Counter()
    unmatched: Counter[str] = Counter()
    by_rollout = _answers(reports, rejected, unmatched)
    # One counter update per label and batch, not one round trip per report.
    for reason, n in sorted(rejected.items()):
        count(deps.metrics, "certfleet_bundles_rejected_total", {"reason": reason}, n)
    moved: set[str] = set()
    arrived: Counter[str] = Counter()
    for rollout_id, answers in by_rollout.items():
        rollout = deps.store.get(rollout_id)
        if rollout is None:
            for report, _ in answers:
                _unmatched(unmatched, report, UNKNOWN_ROLLOUT)
            continue
        # A device that answered has a device timeout from its answer to go on: the
        # deadline it had (a re-send time, or none if it answered before its send was
        # acknowledged) gives way to that.
        until = now.timestamp() + rollout.spec.device_timeout_seconds
        transitions = [t if t.clear_deadline else replace(t, deadline=until) for _, t in answers]
        results = deps.store.transition(rollout_id, transitions, now=now, actor="device")
        for (report, transition), result in zip(answers, results, strict=True):
            if result.applied:
                moved.add(rollout_id)
                arrived[transition.new.value] += 1
            elif result.reason in UNMATCHED:
                _unmatched(unmatched, report, str(result.reason))
    for state, n in sorted(arrived.items()):
        count(deps.metrics, "certfleet_device_transitions_total", {"to": state}, n)
    for reason, n in sorted(unmatched.items()):
        count(deps.metrics, "certfleet_reports_unmatched_total", {"reason": reason}, n)
    return moved
