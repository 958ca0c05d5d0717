"""Pushing one step's bundles (stage, commit or rollback) to a batch of devices."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

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
from orchestrator.services.bundles import BundleBody, issue_bundle, stage_body
from orchestrator.services.rollout.deps import PushDeps, count, load

__all__ = ["PUBLISH_CHUNK", "bundle_body", "push_batch"]

log = get_logger(__name__)

D = DeviceRolloutState
PUBLISH_CHUNK: Final = 50
"""Bundles signed and stored per Redis round trip within a batch; one chunk goes out
while the next is signed."""


@dataclass(frozen=True, slots=True)
class _StepRule:
    """When a step may be pushed, to which devices, and where they go once it is issued."""

    rollout_states: frozenset[RolloutState]
    sources: frozenset[DeviceRolloutState]
    target: DeviceRolloutState | None
    """None: the step moves no device (a commit is confirmed by the device's report)."""


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
}


def bundle_body(
    spec: RolloutSpec, step: PushStep, active: Sequence[int], now: datetime
) -> BundleBody:
    """What `step`'s bundle says to a device whose active tag list is `active`."""
    if step is PushStep.ROLLBACK:
        return BundleBody(op="rollback", tag=spec.spare_tag)
    if step is PushStep.COMMIT:
        return BundleBody(op="commit", tag=spec.spare_tag, active=tuple(spec.active_after(active)))
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


@dataclass(frozen=True, slots=True)
class _Batch:
    """One push_batch call: what it sends, to whom, signed how."""

    deps: PushDeps
    rollout: Rollout
    step: PushStep
    rule: _StepRule
    device_ids: Sequence[str]
    states: Mapping[str, DeviceRolloutState]
    active: Mapping[str, Sequence[int]]
    seqs: Mapping[str, int]
    now: datetime
    actor: str

    @property
    def ttl(self) -> int:
        # A bundle lives as long as the device has to decide: a device that comes back
        # after it timed out finds it expired (MQTT message expiry, and `exp` itself).
        return max(1, int(self.rollout.spec.device_timeout_seconds))

    def issue(self, device_id: str) -> bytes:
        spec = self.rollout.spec
        return issue_bundle(
            signer=self.deps.signer,
            sequences=self.deps.sequences,
            device_id=device_id,
            rollout_id=self.rollout.id,
            body=bundle_body(spec, self.step, self.active.get(device_id, [spec.tag]), self.now),
            now=self.now,
            ttl_seconds=self.ttl,
            seq=self.seqs[device_id],
        ).data

    def resent_as_stored(
        self, issued_before: Sequence[str], to_issue: Sequence[str]
    ) -> Iterator[tuple[str, bytes]]:
        """A step that moves nobody (commit): the first bundle stored per device goes out."""
        store, rid = self.deps.store, self.rollout.id
        yield from store.bundles(rid, list(issued_before), self.step).items()
        for start in range(0, len(to_issue), PUBLISH_CHUNK):
            chunk = to_issue[start : start + PUBLISH_CHUNK]
            bundles = {d: self.issue(d) for d in chunk}
            store.put_bundles_if_absent(rid, self.step, bundles, seqs=self.seqs)
            yield from store.bundles(rid, list(chunk), self.step).items()

    def issued_with_transition(
        self, target: DeviceRolloutState, to_issue: Sequence[str]
    ) -> Iterator[tuple[str, bytes]]:
        """A step that moves devices: each bundle is stored with its device's transition."""
        store, rid = self.deps.store, self.rollout.id
        # Devices a previous try of this batch moved already get the same bytes again.
        again = [d for d in self.device_ids if self.states.get(d) == target]
        yield from store.bundles(rid, again, self.step).items()
        deadline = (
            self.now + timedelta(seconds=self.rollout.spec.device_timeout_seconds)
        ).timestamp()
        for start in range(0, len(to_issue), PUBLISH_CHUNK):
            issued = {d: self.issue(d) for d in to_issue[start : start + PUBLISH_CHUNK]}
            results = store.transition(
                rid,
                [
                    DeviceTransition(
                        device_id=d,
                        new=target,
                        allowed=self.rule.sources,
                        cause=f"{self.step} bundle issued",
                        deadline=deadline,
                        step=self.step,
                        bundle=data,
                        seq=self.seqs[d],
                    )
                    for d, data in issued.items()
                ],
                now=self.now,
                actor=self.actor,
            )
            yield from ((r.device_id, issued[r.device_id]) for r in results if r.applied)


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

    A device gets a bundle for a step once: the bundle is stored with the device's
    transition, and a re-run re-sends those same bytes to devices that have not
    answered yet, never a second, different bundle.
    """
    rollout = load(deps.store, rollout_id)
    rule = _RULES[step]
    if rollout.state not in rule.rollout_states:
        log.info("push_skipped", rollout_id=rollout_id, step=step.value, state=rollout.state.value)
        return 0
    store = deps.store
    states = store.device_states(rollout_id, device_ids)
    fresh = [d for d in device_ids if states.get(d) in rule.sources]
    # One round trip for the batch's sequence numbers, none per device.
    issued_before = store.bundles(rollout_id, fresh, step) if rule.target is None else {}
    to_issue = [d for d in fresh if d not in issued_before]
    batch = _Batch(
        deps=deps,
        rollout=rollout,
        step=step,
        rule=rule,
        device_ids=device_ids,
        states=states,
        active=store.active_tags(rollout_id, device_ids),
        seqs=deps.sequences.next_sequences(to_issue),
        now=now,
        actor=actor,
    )
    # A generator, so the publisher sends one chunk while the next is being signed;
    # pipelined: the broker acknowledges a window of publishes at a time.
    outgoing = (
        batch.resent_as_stored(list(issued_before), to_issue)
        if rule.target is None
        else batch.issued_with_transition(rule.target, to_issue)
    )
    sent = deps.publisher.publish_bundles(outgoing, expiry_seconds=batch.ttl)
    count(deps.metrics, "certfleet_bundles_pushed_total", {"step": step.value}, sent)
    log.info(
        "push_batch", rollout_id=rollout_id, step=step.value, devices=len(device_ids), sent=sent
    )
    return sent
