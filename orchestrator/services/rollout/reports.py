"""Device reports: each moves its device in its rollout, if it answers a bundle issued to it.

A report carries the `seq` and `op` of the bundle it answers. It moves its device
only if that (rollout, step of the op, seq) is a bundle certfleet issued to the
device, and the move goes forward; any other report is counted as unmatched, by
reason, and logged, never applied.

A `rejected` answering a rollback with `nothing_to_undo` or `superseded` is no
confirmed undo: it moves the device from `rollback_sent` to `undo_refused`, bound to
the rollback bundle like any report; the rollback's evaluation then looks at the
device's inventory (`rollback.verify_by_inventory`).

A stage refused as `tag_in_use` by a device whose inventory shows this rollout's change
already made (trust.add and trust.replace: the new CA active in the spare tag, and for a
replace the old tag no longer active) settles the device as `committed`: it committed
before, and certfleet lost that (a Redis Cluster failover that lost the new master's last
writes) and sent the stage again. Only the inventory decides; the report alone never does
(`_settle_held_changes`), and the check reads the inventory of those devices only.

identity.rotate: a `csr` answers the `keygen` (the stage step) and moves its device to
`csr`, its CSR kept for the issuance (`IdentityStore.put_csrs`); a `retired` answers the
retire of the old identity, sent after the wave's soak (`PushStep.RETIRE`), and moves the
device from `committed` to `retired`. For a trust.retire the retire is the stage itself
and `retired` means committed; so the op's step and the phase's state depend on the
rollout's kind. A `fallback` answering the keygen (the device waited for its certificate
until its `commit_by`) is a timeout, not a failure: certfleet did not deliver. A device
that retired gets its old certificate revoked (`revoke_identities`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final

from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec
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

__all__ = [
    "OP_STEP",
    "PHASE_OPS",
    "PHASE_TO_STATE",
    "RolloutSpecs",
    "apply_reports",
    "holds_change",
    "kept_csr",
    "split_kept_csr",
]

log = get_logger(__name__)

D = DeviceRolloutState
PHASE_TO_STATE: Final[Mapping[str, DeviceRolloutState]] = {
    "received": D.RECEIVED,
    "csr": D.CSR,
    "staged": D.STAGED,
    "health_ok": D.HEALTH_OK,
    "health_failed": D.HEALTH_FAILED,
    "committed": D.COMMITTED,
    "retired": D.COMMITTED,
    "rejected": D.REJECTED,
    "fallback": D.FALLBACK,
    "rolled_back": D.ROLLED_BACK,
}
"""The device state each reported phase moves a device to (trust kinds; identity.rotate
reads `retired` as `IDENTITY_PHASE_TO_STATE` says)."""
IDENTITY_PHASE_TO_STATE: Final[Mapping[str, DeviceRolloutState]] = {
    **PHASE_TO_STATE,
    "retired": D.RETIRED,
}
"""identity.rotate: `retired` confirms the old identity's deletion, after the commit."""
OP_STEP: Final[Mapping[str, PushStep]] = {
    "stage": PushStep.STAGE,
    "keygen": PushStep.STAGE,
    "retire": PushStep.STAGE,
    "commit": PushStep.COMMIT,
    "rollback": PushStep.ROLLBACK,
}
"""The push step whose bundle carries each op a trust rollout sends (a keygen is an
identity rollout's stage step; its certificate's `stage` is stored under it too)."""
IDENTITY_OP_STEP: Final[Mapping[str, PushStep]] = {**OP_STEP, "retire": PushStep.RETIRE}
"""identity.rotate: the retire of the old identity is a step of its own, after the soak."""
_ANY_OP: Final = frozenset(OP_STEP)
PHASE_OPS: Final[Mapping[str, frozenset[str]]] = {
    "received": _ANY_OP,
    "rejected": _ANY_OP,
    "csr": frozenset({"keygen"}),
    "staged": frozenset({"stage"}),
    "health_ok": frozenset({"stage"}),
    "health_failed": frozenset({"stage"}),
    "committed": frozenset({"commit"}),
    "retired": frozenset({"retire"}),
    "fallback": frozenset({"keygen", "stage", "commit"}),
    "rolled_back": frozenset({"rollback"}),
}
"""The ops of the bundles a phase may answer: a `committed` answers a commit, never a stage."""
UNMATCHED_OP: Final = "op"
"""Unmatched reason: the report's op is none a rollout sends, or not one its phase answers."""
UNKNOWN_ROLLOUT: Final = "unknown_rollout"
"""Unmatched reason: no rollout has the report's id."""
_TARGETS: Final = {
    *PHASE_TO_STATE.values(),
    *IDENTITY_PHASE_TO_STATE.values(),
    D.UNDO_REFUSED,
    D.TIMED_OUT,
}
_SOURCES: Final = {target: sources_of(target) for target in _TARGETS}
_TERMINAL: Final = frozenset(
    t for t in _TARGETS if t in DECIDED or t in (D.ROLLED_BACK, D.UNDO_REFUSED)
)


class RolloutSpecs:
    """Rollout specs, each read from the store once: a rollout's spec never changes.

    The listener keeps one, so a batch of reports costs no read of its rollout (the
    spec says how to read a report: the rollout's kind, its device timeout); the state
    a report may move a device in is checked by the transition itself. A rollout the
    store does not know is asked again next time (it may be created meanwhile).
    """

    def __init__(self, most: int = 256) -> None:
        self.most = most
        self._specs: dict[str, RolloutSpec] = {}

    def get(self, deps: RolloutDeps, rollout_id: str) -> RolloutSpec | None:
        """The rollout's spec, from the store the first time (None: no such rollout)."""
        spec = self._specs.get(rollout_id)
        if spec is None:
            rollout = deps.store.get(rollout_id)
            if rollout is None:
                return None
            if len(self._specs) >= self.most:
                self._specs.pop(next(iter(self._specs)))  # the oldest read
            spec = self._specs[rollout_id] = rollout.spec
        return spec


def kept_csr(seq: int, csr_field: str) -> str:
    """What is kept of a `csr` report: the keygen seq it answered and its field, one text.

    The modem's attestation binds the seq the device answered, which may be an earlier
    keygen than the latest stored (a re-send that crossed the report).
    """
    return f"{seq} {csr_field}"


def split_kept_csr(kept: str) -> tuple[int | None, str]:
    """(seq answered, csr field) of what `kept_csr` made (seq None: no seq kept with it)."""
    head, sep, rest = kept.partition(" ")
    if sep and head.isdigit():
        return int(head), rest
    return None, kept


def _target(report: DeviceReport, *, identity: bool) -> DeviceRolloutState | None:
    """The state the report moves its device to (None: a phase that moves none)."""
    if report.phase == "rejected" and report.op == "rollback" and report.reason in UNDO_REFUSALS:
        return D.UNDO_REFUSED
    if identity and report.phase == "fallback" and report.op == "keygen":
        # The device waited for its certificate until its `commit_by` and dropped the new
        # key: certfleet did not deliver in time (the issuer away, say), no device failure.
        return D.TIMED_OUT
    return (IDENTITY_PHASE_TO_STATE if identity else PHASE_TO_STATE).get(report.phase)


def _cause(report: DeviceReport, target: DeviceRolloutState) -> str:
    """The audit log's cause of the move: the report, and for a refused undo what it means."""
    cause = f"report {report.phase}/{report.reason} seq {report.seq}"
    if target is D.UNDO_REFUSED:
        return f"{cause}: the device undid nothing, not a confirmed undo"
    if target is D.TIMED_OUT:
        return f"{cause}: no certificate reached the device in time; it keeps its identity"
    return cause


def _answered_step(report: DeviceReport, *, identity: bool) -> PushStep | None:
    """The step of the bundle the report answers, or None if its op cannot say."""
    if report.op is None or report.op not in PHASE_OPS.get(report.phase, ()):
        return None
    if report.op == "keygen" and not identity:  # a trust rollout sends no keygen
        return None
    return (IDENTITY_OP_STEP if identity else OP_STEP)[report.op]


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


def _by_rollout(
    reports: Iterable[DeviceReport], rejected: Counter[str]
) -> dict[str, list[DeviceReport]]:
    """The reports that may move a device, by rollout; rejections counted, replays dropped."""
    by_rollout: dict[str, list[DeviceReport]] = {}
    for report in reports:
        if report.phase == "rejected":
            rejected[report.reason] += 1
        if not report.rollout_id or report.reason == "replay":
            continue
        if _target(report, identity=True) is None and _target(report, identity=False) is None:
            continue
        by_rollout.setdefault(report.rollout_id, []).append(report)
    return by_rollout


def _answers(
    spec: RolloutSpec, reports: Sequence[DeviceReport], unmatched: Counter[str], *, until: float
) -> list[tuple[DeviceReport, DeviceTransition]]:
    """Each report of the rollout with the transition it asks for, read by the rollout's kind.

    A device that answered has a device timeout from its answer to go on (`until`): the
    deadline it had (a re-send time, or none if it answered before its send was
    acknowledged) gives way to that.
    """
    identity = spec.is_identity
    answers = []
    for report in reports:
        target = _target(report, identity=identity)
        step = _answered_step(report, identity=identity)
        if target is None or step is None:
            _unmatched(unmatched, report, UNMATCHED_OP)
            continue
        terminal = target in _TERMINAL
        transition = DeviceTransition(
            device_id=report.device_id,
            new=target,
            allowed=_SOURCES[target],
            cause=_cause(report, target),
            clear_deadline=terminal,
            deadline=None if terminal else until,
            match=(step, report.seq),
        )
        answers.append((report, transition))
    return answers


HELD_CHANGE_REFUSAL: Final = "tag_in_use"
"""The reason of a refused stage that may mean the device made this rollout's change before."""


def holds_change(spec: RolloutSpec, active_ca: Mapping[int, str]) -> bool:
    """Whether a device whose active sec_tags hold these CA digests shows this rollout's
    change made: trust.add and trust.replace, the new CA in the spare tag, active (a replace:
    the old tag no longer active). Other kinds: never (nothing here can tell)."""
    if spec.kind not in ("trust.add", "trust.replace") or spec.new_ca_digest is None:
        return False
    if active_ca.get(spec.spare_tag) != spec.new_ca_digest:
        return False
    return spec.kind == "trust.add" or spec.tag not in active_ca


def _settle_held_changes(
    deps: RolloutDeps, spec: RolloutSpec, answers: list[tuple[DeviceReport, DeviceTransition]]
) -> list[tuple[DeviceReport, DeviceTransition]]:
    """Each stage refused as `tag_in_use` by a device whose inventory shows the change made
    becomes a move to `committed`, bound to the same bundle; the others stay as they are."""
    refused = [
        report.device_id for report, transition in answers if _tag_in_use(report, transition)
    ]
    if not refused or spec.kind not in ("trust.add", "trust.replace"):
        return answers
    digests = deps.inventory.active_ca_digests(refused)
    held = {device for device in refused if holds_change(spec, digests.get(device, {}))}
    return [
        (
            report,
            _committed(report, transition)
            if report.device_id in held and _tag_in_use(report, transition)
            else transition,
        )
        for report, transition in answers
    ]


def _tag_in_use(report: DeviceReport, transition: DeviceTransition) -> bool:
    """A stage refused as `tag_in_use`, about to move its device to `rejected`."""
    return (
        transition.new is D.REJECTED
        and report.reason == HELD_CHANGE_REFUSAL
        and report.op == "stage"
    )


def _committed(report: DeviceReport, refused: DeviceTransition) -> DeviceTransition:
    """The move to `committed` of a device whose refused stage the inventory settled."""
    return DeviceTransition(
        device_id=report.device_id,
        new=D.COMMITTED,
        allowed=_SOURCES[D.COMMITTED],
        cause=f"{refused.cause}: the device holds the new CA already, verified by inventory",
        clear_deadline=True,
        match=refused.match,
    )


def _keep_csrs(
    deps: RolloutDeps, rollout_id: str, answers: Sequence[tuple[DeviceReport, DeviceTransition]]
) -> None:
    """Keep the CSR of each `csr` report whose device may still move to `csr`, before it moves.

    Stored first, so a device never stands in `csr` without its CSR; a report refused
    afterwards (a late one, a race) leaves a CSR that nothing reads (issuance reads the
    CSRs of devices in `csr` only, and a device leaves `csr` for good).
    """
    wanted = {
        r.device_id: kept_csr(r.seq, r.csr)
        for r, t in answers
        if t.new is D.CSR and r.csr is not None
    }
    if not wanted:
        return
    if deps.identity is None:
        log.error("csr_not_kept", rollout_id=rollout_id, devices=len(wanted), why="no store")
        return
    states = deps.store.device_states(rollout_id, sorted(wanted))
    movable = {d: csr for d, csr in wanted.items() if states.get(d) in _SOURCES[D.CSR]}
    if movable:
        deps.identity.put_csrs(rollout_id, movable)


def apply_reports(
    deps: RolloutDeps,
    reports: Iterable[DeviceReport],
    *,
    now: datetime,
    specs: RolloutSpecs | None = None,
) -> set[str]:
    """Move devices by their reports; return the rollouts whose devices moved.

    A duplicate delivery of a bundle shows up as a `rejected`/`replay` report: it
    says nothing about the rollout and is ignored. Late and repeated reports are
    refused by the transition itself; a report that answers no bundle issued to its
    device is refused there too, and counted in `certfleet_reports_unmatched_total`.
    One store call per rollout in the batch, none per report; with `specs` (kept
    across batches) no read of the rollout either, once its spec is known.
    """
    specs = specs or RolloutSpecs()
    rejected: Counter[str] = Counter()
    unmatched: Counter[str] = Counter()
    by_rollout = _by_rollout(reports, rejected)
    # One counter update per label and batch, not one round trip per report.
    for reason, n in sorted(rejected.items()):
        count(deps.metrics, "certfleet_bundles_rejected_total", {"reason": reason}, n)
    moved: set[str] = set()
    arrived: Counter[str] = Counter()
    for rollout_id, batch in by_rollout.items():
        spec = specs.get(deps, rollout_id)
        if spec is None:
            for report in batch:
                _unmatched(unmatched, report, UNKNOWN_ROLLOUT)
            continue
        until = now.timestamp() + spec.device_timeout_seconds
        answers = _settle_held_changes(deps, spec, _answers(spec, batch, unmatched, until=until))
        if not answers:
            continue
        _keep_csrs(deps, rollout_id, answers)
        results = deps.store.transition(
            rollout_id, [t for _, t in answers], now=now, actor="device"
        )
        retired = []
        for (report, transition), result in zip(answers, results, strict=True):
            if result.applied:
                moved.add(rollout_id)
                arrived[transition.new.value] += 1
                if transition.new is D.RETIRED:
                    retired.append(report.device_id)
            elif result.reason in UNMATCHED:
                _unmatched(unmatched, report, str(result.reason))
        if retired:
            deps.tasks.revoke_identities(rollout_id, retired)
    for state, n in sorted(arrived.items()):
        count(deps.metrics, "certfleet_device_transitions_total", {"to": state}, n)
    for reason, n in sorted(unmatched.items()):
        count(deps.metrics, "certfleet_reports_unmatched_total", {"reason": reason}, n)
    return moved
