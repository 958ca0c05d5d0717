"""Pushing one step's bundles (stage, commit, rollback or retire) to a batch of devices.

identity.rotate: the stage step's bundle is the `keygen`; the certificate's stage that
follows the CSR is issued by `services.identity.issue` (it needs the issuer), stored
under the same step with a fresh seq. The retire of the old identity is its own step
(`PushStep.RETIRE`), sent to committed devices after their wave's soak.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from orchestrator.domain.errors import DelegationUnavailableError
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    ROLLBACK_TARGETS,
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
)
from orchestrator.logs import get_logger
from orchestrator.services.bundles import (
    UNDO_WINDOW_SECONDS,
    BundleBody,
    BundleTemplate,
    bundle_template,
    identity_commit_body,
    identity_retire_body,
    keygen_body,
    stage_body,
)
from orchestrator.services.rollout.deps import PushDeps, count, load

__all__ = ["NO_DELEGATION", "PUBLISH_CHUNK", "PUSH_STOPPED_METRIC", "bundle_body", "push_batch"]

log = get_logger(__name__)

D = DeviceRolloutState
PUBLISH_CHUNK: Final = 50
"""Bundles signed and stored per Redis round trip within a batch; one chunk goes out
while the next is signed."""
PUSH_STOPPED_METRIC: Final = "certfleet_push_stopped_total"
NO_DELEGATION: Final = "no_delegation"
"""Why a push stopped: the worker has no delegation from the root key covering its bundles."""


@dataclass(frozen=True, slots=True)
class _StepRule:
    """When a step may be pushed, to which devices, and where they go once it is issued."""

    rollout_states: frozenset[RolloutState]
    sources: frozenset[DeviceRolloutState]
    target: DeviceRolloutState | None
    """None: the step moves no device (a commit is confirmed by the device's report; a
    re-sent device stays `sent`)."""


_RULES: Final[Mapping[PushStep, _StepRule]] = {
    PushStep.STAGE: _StepRule(frozenset({RolloutState.RUNNING}), frozenset({D.PENDING}), D.SENT),
    # A pause stops new stages only: devices that already proved the new trust
    # still get their commit, or they would fall back and count as failures.
    PushStep.COMMIT: _StepRule(
        frozenset({RolloutState.RUNNING, RolloutState.PAUSED}), frozenset({D.HEALTH_OK}), None
    ),
    PushStep.ROLLBACK: _StepRule(
        frozenset({RolloutState.ROLLING_BACK}), ROLLBACK_TARGETS, D.ROLLBACK_SENT
    ),
    # The stage again to a device that has not answered it: a pause stops new stages,
    # not the delivery of one already sent. The device stays `sent`.
    PushStep.RESEND: _StepRule(
        frozenset({RolloutState.RUNNING, RolloutState.PAUSED}), frozenset({D.SENT}), None
    ),
    # identity.rotate, after the wave's soak: the device stays `committed` until it
    # reports `retired`; the bundle is re-sent byte for byte while it does not.
    PushStep.RETIRE: _StepRule(
        frozenset({RolloutState.RUNNING, RolloutState.PAUSED}), frozenset({D.COMMITTED}), None
    ),
}


def bundle_body(
    spec: RolloutSpec,
    step: PushStep,
    active: Sequence[int],
    now: datetime,
    *,
    undo_window_seconds: int = UNDO_WINDOW_SECONDS,
    device_id: str = "",
) -> BundleBody:
    """What `step`'s bundle says to the device `device_id` whose active tag list is `active`.

    A commit says until when it may be undone (`undo_by`, now + the undo window);
    `issue_bundle` leaves that out of a v1 device's bundle.
    """
    step = step.bundle_step
    if step is PushStep.ROLLBACK:
        return BundleBody(op="rollback", tag=spec.spare_tag)
    if spec.is_identity:
        return _identity_body(
            spec, step, active, now, undo_window_seconds=undo_window_seconds, device_id=device_id
        )
    if step is PushStep.COMMIT:
        return BundleBody(
            op="commit",
            tag=spec.spare_tag,
            active=tuple(spec.active_after(active)),
            undo_by=int(now.timestamp()) + undo_window_seconds,
        )
    if spec.kind == "trust.retire":
        return BundleBody(op="retire", tags=(spec.tag,), active=tuple(spec.active_after(active)))
    return stage_body(
        ca_pems=spec.ca_pems,
        tag=spec.spare_tag,
        probe_host=spec.probe_host,
        probe_port=spec.probe_port,
        probe_tags=[spec.spare_tag] if spec.probe_with == "spare" else spec.active_after(active),
        active_after=spec.active_after(active),
        commit_by=now + timedelta(seconds=spec.device_timeout_seconds),
    )


def _identity_body(
    spec: RolloutSpec,
    step: PushStep,
    active: Sequence[int],
    now: datetime,
    *,
    undo_window_seconds: int,
    device_id: str,
) -> BundleBody:
    """identity.rotate's keygen (the stage step), commit and retire of the old identity."""
    if step is PushStep.COMMIT:
        undo_by = int(now.timestamp()) + undo_window_seconds
        return identity_commit_body(tag=spec.spare_tag, undo_by=undo_by)
    if step is PushStep.RETIRE:
        return identity_retire_body(old_tag=spec.tag, active=active)
    if not device_id:
        raise ValueError("a keygen names its device: the CSR's subject is the device id")
    return keygen_body(
        tag=spec.spare_tag,
        subject=device_id,
        commit_by=now + timedelta(seconds=spec.device_timeout_seconds),
    )


def _ttl(spec: RolloutSpec) -> int:
    # A bundle lives as long as the device has to decide: a device that comes back
    # after it timed out finds it expired (MQTT message expiry, and `exp` itself).
    return max(1, int(spec.device_timeout_seconds))


@dataclass(frozen=True, slots=True)
class _Batch:
    """One push_batch call: what it sends, to whom, signed how."""

    deps: PushDeps
    rollout: Rollout
    step: PushStep
    active: Mapping[str, Sequence[int]]
    versions: Mapping[str, int]
    seqs: Mapping[str, int]
    now: datetime
    actor: str
    templates: dict[tuple[tuple[int, ...], int, str], BundleTemplate] = field(default_factory=dict)
    """The batch's bundle templates, by the active tags, version and (identity) device."""

    @property
    def ttl(self) -> int:
        return _ttl(self.rollout.spec)

    def deadline(self, sends: int) -> float:
        """When a device sent its stage `sends` times is due a re-send, or times out."""
        return self.now.timestamp() + self.rollout.spec.wait_after_send(sends)

    def issue(self, device_id: str) -> bytes:
        """The device's bundle, signed with its seq.

        Devices whose bodies are alike (the same active tags and version; a keygen names
        its device) share one template: the body, its checks and its CBOR are made once per batch.
        """
        spec = self.rollout.spec
        active = self.active.get(device_id, [spec.tag])
        version = self.versions.get(device_id, 1)
        keygen = spec.is_identity and self.step.bundle_step is PushStep.STAGE
        key = (tuple(active), version, device_id if keygen else "")
        template = self.templates.get(key)
        if template is None:
            template = self.templates[key] = bundle_template(
                signer=self.deps.signer,
                rollout_id=self.rollout.id,
                body=bundle_body(
                    spec,
                    self.step,
                    active,
                    self.now,
                    undo_window_seconds=self.deps.undo_window_seconds,
                    device_id=device_id,
                ),
                now=self.now,
                ttl_seconds=self.ttl,
                version=version,
                device_id=device_id,
            )
        return template.issue(device_id, self.seqs[device_id])

    def stored_first(
        self, issued_before: Sequence[str], to_issue: Sequence[str]
    ) -> Iterator[tuple[str, bytes]]:
        """The bundle stored per device, issued and stored (with its seq) if there is none.

        A device keeps the first bundle stored for the step: a re-run, or a run racing
        this one, sends those same bytes, never a second, different bundle.
        """
        store, rid, step = self.deps.store, self.rollout.id, self.step
        yield from store.bundles(rid, list(issued_before), step).items()
        for start in range(0, len(to_issue), PUBLISH_CHUNK):
            chunk = to_issue[start : start + PUBLISH_CHUNK]
            bundles = {d: self.issue(d) for d in chunk}
            if store.put_bundles_if_absent(rid, step, bundles, seqs=self.seqs) == len(bundles):
                yield from bundles.items()  # every one stored: these are the bytes kept
            else:  # a run racing this one stored some first: send what the store kept
                yield from store.bundles(rid, list(chunk), step).items()

    def move_acknowledged(self, rule: _StepRule, target: DeviceRolloutState) -> _Moved:
        """What moves the devices whose bundle the broker acknowledged to `target`."""
        spec = self.rollout.spec
        deadline = (
            self.deadline(1)
            if self.step is PushStep.STAGE
            else self.now.timestamp() + spec.device_timeout_seconds
        )
        return _Moved(self, rule.sources, target, deadline)

    def resent(self, due: Mapping[str, int]) -> Iterator[tuple[str, bytes]]:
        """Fresh stage bundles, each stored with its seq and next deadline before it goes."""
        devices = list(due)
        for start in range(0, len(devices), PUBLISH_CHUNK):
            issued = {d: self.issue(d) for d in devices[start : start + PUBLISH_CHUNK]}
            results = self.deps.store.transition(
                self.rollout.id,
                [
                    DeviceTransition(
                        device_id=d,
                        new=D.SENT,
                        allowed=frozenset({D.SENT}),
                        cause=f"stage bundle re-sent ({due[d]} of {self.rollout.spec.max_resends})",
                        deadline=self.deadline(due[d] + 1),
                        step=PushStep.STAGE,
                        bundle=data,
                        seq=self.seqs[d],
                    )
                    for d, data in issued.items()
                ],
                now=self.now,
                actor=self.actor,
            )
            yield from ((r.device_id, issued[r.device_id]) for r in results if r.applied)


@dataclass(slots=True)
class _Moved:
    """Moves acknowledged devices to the step's target, one transition call per chunk."""

    batch: _Batch
    sources: frozenset[DeviceRolloutState]
    target: DeviceRolloutState
    deadline: float
    moved: int = 0

    def __call__(self, device_ids: Sequence[str]) -> None:
        batch = self.batch
        results = batch.deps.store.transition(
            batch.rollout.id,
            [
                DeviceTransition(
                    device_id=d,
                    new=self.target,
                    allowed=self.sources,
                    cause=f"{batch.step} bundle acknowledged by the broker",
                    deadline=self.deadline,
                )
                for d in device_ids
            ],
            now=batch.now,
            actor=batch.actor,
        )
        self.moved += sum(r.applied for r in results)


def _due_resends(
    deps: PushDeps, rollout: Rollout, sent: Sequence[str], now: datetime
) -> dict[str, int]:
    """Of `sent` devices, those due a re-send with budget left: device -> stage bundles sent.

    A device re-sent by an earlier try of this batch has a later deadline and is skipped.
    """
    store = deps.store
    deadlines = store.deadlines(rollout.id, sent)
    overdue = [d for d in sent if deadlines.get(d, float("inf")) <= now.timestamp()]
    sends = store.send_counts(rollout.id, overdue, PushStep.STAGE)
    return {d: sends.get(d, 1) for d in overdue if sends.get(d, 1) <= rollout.spec.max_resends}


def push_batch(
    deps: PushDeps,
    rollout_id: str,
    device_ids: Sequence[str],
    step: PushStep,
    *,
    now: datetime,
    actor: str = "worker",
) -> int:
    """Issue and publish one step's bundles to a batch of devices; return how many went out.

    A device gets one bundle per step: it is stored, with its seq, while the device
    has not moved yet, and the device moves (pending -> sent, or to rollback_sent) only
    once the broker acknowledged it; a re-run re-sends those same bytes to the devices
    that did not move. A re-send (`PushStep.RESEND`) is the exception: a fresh stage
    bundle to a `sent` device whose re-send is due, within the rollout's budget.
    """
    rollout = load(deps.store, rollout_id)
    rule = _RULES[step]
    if rollout.state not in rule.rollout_states:
        log.info("push_skipped", rollout_id=rollout_id, step=step.value, state=rollout.state.value)
        return 0
    try:
        return _push(deps, rollout, device_ids, step, rule, now=now, actor=actor)
    except DelegationUnavailableError as exc:
        # Never an unsigned or stale bundle: what is not signed yet stays unsent, the
        # devices stay where they are, and the task is retried (a `TransientError`).
        log.warning(
            "push_stopped",
            rollout_id=rollout_id,
            step=step.value,
            devices=len(device_ids),
            reason=NO_DELEGATION,
            detail=str(exc),
        )
        count(deps.metrics, PUSH_STOPPED_METRIC, {"reason": NO_DELEGATION})
        raise


def _push(
    deps: PushDeps,
    rollout: Rollout,
    device_ids: Sequence[str],
    step: PushStep,
    rule: _StepRule,
    *,
    now: datetime,
    actor: str,
) -> int:
    rollout_id = rollout.id
    store = deps.store
    states = store.device_states(rollout_id, device_ids)
    fresh = [d for d in device_ids if states.get(d) in rule.sources]
    due = _due_resends(deps, rollout, fresh, now) if step is PushStep.RESEND else {}
    # Devices a previous try of this batch moved already get their bytes again too.
    again = [d for d in device_ids if rule.target is not None and states.get(d) == rule.target]
    issued_before = (
        {} if step is PushStep.RESEND else store.bundles(rollout_id, [*again, *fresh], step)
    )
    to_issue = (
        list(due) if step is PushStep.RESEND else [d for d in fresh if d not in issued_before]
    )
    if to_issue:
        # The delegation that will cover the new bundles, before a seq is spent on them:
        # renewed now if it is due (the root is asked per renewal, never per bundle).
        # Bundles stored by an earlier try were covered when signed, until they expire.
        deps.signer.delegation_for(int(now.timestamp()) + _ttl(rollout.spec))
    batch = _Batch(
        deps=deps,
        rollout=rollout,
        step=step,
        active=store.active_tags(rollout_id, device_ids),
        # a device gets the bundle version it reported when planned: v1 bundles to v1
        versions=store.protocol_versions(rollout_id, device_ids),
        # One round trip for the batch's sequence numbers, none per device.
        seqs=deps.sequences.next_sequences(to_issue),
        now=now,
        actor=actor,
    )
    # A generator, so the publisher sends one chunk while the next is being signed;
    # pipelined: the broker acknowledges a window of publishes at a time, and the
    # devices acknowledged move a chunk at a time.
    outgoing = (
        batch.resent(due)
        if step is PushStep.RESEND
        else batch.stored_first(list(issued_before), to_issue)
    )
    moved = batch.move_acknowledged(rule, rule.target) if rule.target is not None else None
    sent = deps.publisher.publish_bundles(outgoing, expiry_seconds=batch.ttl, on_acked=moved)
    count(deps.metrics, "certfleet_bundles_pushed_total", {"step": step.value}, sent)
    log.info(
        "push_batch",
        rollout_id=rollout_id,
        step=step.value,
        devices=len(device_ids),
        sent=sent,
        moved=moved.moved if moved is not None else 0,
    )
    return sent
