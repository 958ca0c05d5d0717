"""The rollout engine: waves, pushes, device reports, the gate, rollback, the tick.

Every function takes its stores as arguments (`RolloutDeps`) and is safe to run
twice: rollout and wave changes are guarded by the state they expect, device
transitions by the states they may come from, and a bundle is issued once per
(device, step) and re-sent byte for byte when a task runs again.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from orchestrator.adapters.redis_rollouts import RedisRollouts, Transition, now_iso
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.gate import GateInput, GatePolicy, Verdict, evaluate_gate
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import (
    DECIDED,
    ROLLBACK_TARGETS,
    DeviceRolloutState,
    RolloutSpec,
    RolloutState,
    WaveState,
    may_transition,
)
from orchestrator.logs import get_logger
from orchestrator.ports import (
    BundlePublisher,
    BundleSigner,
    InventoryStore,
    Metrics,
    SequenceStore,
)
from orchestrator.services.bundles import BundleBody, issue_bundle, stage_body

__all__ = [
    "PUSH_BATCH_SIZE",
    "RolloutDeps",
    "RolloutError",
    "RolloutTasks",
    "abort_rollout",
    "apply_reports",
    "dispatch_wave",
    "evaluate_rollout",
    "push_batch",
    "rollback_rollout",
    "start_rollout",
    "tick_rollouts",
]

log = get_logger(__name__)

PUSH_BATCH_SIZE = 200
"""Devices per push_batch task: hundreds per task, never a task per device."""
PUBLISH_CHUNK = 50
"""Bundles signed and stored per Redis round trip within a batch; one chunk goes out
while the next is signed."""
COMMIT_RESEND_SECONDS = 30.0
REDISPATCH_MIN_SECONDS = 60.0
"""A wave's pending devices are dispatched again when still pending this long (or the
device timeout, when longer) after their last batch was due."""
"""A healthy device's commit goes again if it has not committed this long after (or a
quarter of the rollout's device timeout, when that is shorter)."""

D = DeviceRolloutState
PHASE_TO_STATE: Mapping[str, DeviceRolloutState] = {
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


class RolloutError(CertfleetError):
    """A rollout command that cannot be carried out, and why."""


class RolloutTasks(Protocol):
    """Where the engine enqueues its next steps (Celery in production)."""

    def start_rollout(self, rollout_id: str) -> None: ...

    def dispatch_wave(self, rollout_id: str, wave: int) -> None: ...

    def push_batch(
        self, rollout_id: str, wave: int, device_ids: Sequence[str], step: str, *, countdown: float
    ) -> None: ...

    def evaluate_rollout(self, rollout_id: str, *, countdown: float = 0) -> None: ...

    def rollback_rollout(self, rollout_id: str) -> None: ...


@dataclass
class RolloutDeps:
    """What the rollout use cases work with."""

    rollouts: RedisRollouts
    inventory: InventoryStore
    signer: BundleSigner | None
    sequences: SequenceStore
    publisher: BundlePublisher | None
    tasks: RolloutTasks
    metrics: Metrics | None = None

    def count(self, name: str, labels: Mapping[str, str], amount: float = 1) -> None:
        """Add to a counter when metrics are wired."""
        if self.metrics is not None and amount:
            self.metrics.incr(name, labels, amount)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _allowed(new: DeviceRolloutState) -> frozenset[str]:
    return frozenset(s.value for s in DeviceRolloutState if may_transition(s, new))


def _meta(deps: RolloutDeps, rollout_id: str) -> dict[str, str]:
    meta = deps.rollouts.meta(rollout_id)
    if not meta:
        raise RolloutError(f"no rollout {rollout_id!r} (see `certfleet rollout list`)")
    return meta


def _spec(meta: Mapping[str, str]) -> RolloutSpec:
    return RolloutSpec.from_json(json.loads(meta["spec"]))


# -- steps -----------------------------------------------------------------------------


def _log(
    actor: str, kind: str, subject: str, *, old: str, new: str, cause: str, now: datetime
) -> dict[str, str]:
    return {
        "time": now_iso(now),
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "from": old,
        "to": new,
        "cause": cause,
    }


def start_rollout(deps: RolloutDeps, rollout_id: str, *, now: datetime, actor: str) -> bool:
    """created -> running; the evaluator starts wave 0 when the window allows."""
    started = deps.rollouts.set_meta(
        rollout_id,
        {"state": RolloutState.RUNNING.value},
        log=_log(
            actor, "rollout", rollout_id, old="created", new="running", cause="start", now=now
        ),
        expect=("state", RolloutState.CREATED.value),
    )
    if started:
        deps.tasks.evaluate_rollout(rollout_id)
    return started


def _regroup(chunks: Iterable[Sequence[str]], size: int) -> Iterator[list[str]]:
    """The devices of `chunks`, in order, as lists of `size` (the last may be shorter)."""
    batch: list[str] = []
    for chunk in chunks:
        for device_id in chunk:
            batch.append(device_id)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def dispatch_wave(deps: RolloutDeps, rollout_id: str, wave: int, *, now: datetime) -> int:
    """Enqueue push_batch tasks for the wave's pending devices, paced by the push rate.

    The wave is read a chunk at a time and each batch is enqueued as soon as it is
    full, so the worker holds one chunk and one batch, never the wave: its memory
    does not grow with the fleet.
    """
    meta = _meta(deps, rollout_id)
    if meta["state"] != RolloutState.RUNNING.value or meta.get(f"wave:{wave}:state") != "running":
        return 0
    spec = _spec(meta)
    until_key = f"wave:{wave}:dispatched_until"
    deps.rollouts.set_meta(rollout_id, {until_key: repr(now.timestamp())})
    pending = deps.rollouts.scan_wave(rollout_id, wave, [D.PENDING.value])
    dispatched = 0
    countdown = 0.0
    for number, batch in enumerate(_regroup(pending, PUSH_BATCH_SIZE)):
        countdown = number * PUSH_BATCH_SIZE / spec.push_rate if spec.push_rate else 0
        deps.tasks.push_batch(rollout_id, wave, batch, "stage", countdown=countdown)
        dispatched += len(batch)
    # When the last batch is due: a device still pending a device timeout after that
    # lost its batch (retries exhausted, say, through a long broker outage), and the
    # evaluator dispatches the wave's pending devices again (`_redispatch_stalled`).
    deps.rollouts.set_meta(rollout_id, {until_key: repr(now.timestamp() + countdown)})
    return dispatched


def _redispatch_stalled(ctx: _Context, pending: int) -> None:
    """Dispatch the running wave again if devices stay `pending` long after their push was due.

    Otherwise a push_batch that exhausted its retries would leave its devices pending
    with no deadline, and the wave would never end. The claim on the meta field keeps
    concurrent evaluators from dispatching twice.
    """
    key = f"wave:{ctx.current}:dispatched_until"
    raw = ctx.meta.get(key)
    if not pending or not raw:
        return
    grace = max(REDISPATCH_MIN_SECONDS, ctx.spec.device_timeout_seconds)
    if ctx.now.timestamp() <= float(raw) + grace:
        return
    if ctx.deps.rollouts.set_meta(
        ctx.rollout_id, {key: repr(ctx.now.timestamp())}, expect=(key, raw)
    ):
        log.warning(
            "wave_redispatched",
            rollout_id=ctx.rollout_id,
            wave=ctx.current,
            pending=pending,
            due=float(raw),
        )
        ctx.deps.tasks.dispatch_wave(ctx.rollout_id, ctx.current)


def _body(spec: RolloutSpec, step: str, active: Sequence[int], now: datetime) -> BundleBody:
    if step == "rollback":
        return BundleBody(op="rollback", tag=spec.spare_tag)
    if step == "commit":
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


def push_batch(
    deps: RolloutDeps,
    rollout_id: str,
    device_ids: Sequence[str],
    step: str,
    *,
    now: datetime,
    actor: str = "worker",
) -> int:
    """Issue and publish one step's bundles to a batch of devices; return how many went out.

    A device gets a bundle for a step once: the bundle is stored with the device's
    transition, and a re-run re-sends those same bytes to devices that have not
    answered yet, never a second, different bundle.
    """
    if deps.signer is None or deps.publisher is None:
        raise RolloutError("pushing bundles needs a signer and an MQTT publisher")
    meta = _meta(deps, rollout_id)
    state = meta["state"]
    # A pause stops new stages only: devices that already proved the new trust
    # still get their commit, or they would fall back and count as failures.
    wanted = {
        "stage": {RolloutState.RUNNING.value},
        "commit": {RolloutState.RUNNING.value, RolloutState.PAUSED.value},
        "rollback": {RolloutState.ROLLING_BACK.value},
    }[step]
    if state not in wanted:
        log.info("push_skipped", rollout_id=rollout_id, step=step, state=state)
        return 0
    spec = _spec(meta)
    states = deps.rollouts.device_states(rollout_id, device_ids)
    active = deps.rollouts.active_tags(rollout_id, device_ids)
    # A bundle lives as long as the device has to decide: a device that comes back
    # after it timed out finds it expired (MQTT message expiry, and `exp` itself).
    ttl = max(1, int(spec.device_timeout_seconds))
    source, target = {
        "stage": ({D.PENDING.value}, D.SENT),
        "commit": ({D.HEALTH_OK.value}, None),
        "rollback": ({s.value for s in ROLLBACK_TARGETS}, D.ROLLBACK_SENT),
    }[step]
    fresh = [d for d in device_ids if states.get(d) in source]

    # One round trip for the batch's sequence numbers, none per device.
    issued_before = deps.rollouts.bundles(rollout_id, fresh, step) if target is None else {}
    to_issue = [d for d in fresh if d not in issued_before]
    seqs = deps.sequences.next_sequences(to_issue)

    def issue(device_id: str) -> bytes:
        assert deps.signer is not None  # noqa: S101 -- checked above
        return issue_bundle(
            signer=deps.signer,
            sequences=deps.sequences,
            device_id=device_id,
            rollout_id=rollout_id,
            body=_body(spec, step, active.get(device_id, [spec.tag]), now),
            now=now,
            ttl_seconds=ttl,
            seq=seqs[device_id],
        ).data

    def outgoing() -> Iterator[tuple[str, bytes]]:
        """(device, bundle) to publish, in chunks: stored first, then handed to the broker.

        A generator, so the publisher sends one chunk while the next is being signed.
        """
        if target is None:
            yield from deps.rollouts.bundles(rollout_id, list(issued_before), step).items()
            for chunk in _chunks(to_issue, PUBLISH_CHUNK):
                deps.rollouts.put_bundles_if_absent(rollout_id, step, {d: issue(d) for d in chunk})
                # The first bundle stored for (device, step) is the one that goes out.
                yield from deps.rollouts.bundles(rollout_id, list(chunk), step).items()
            return
        # Devices a previous try of this batch moved already get the same bytes again.
        again = [d for d in device_ids if states.get(d) == target.value]
        yield from deps.rollouts.bundles(rollout_id, again, step).items()
        deadline = (now + timedelta(seconds=spec.device_timeout_seconds)).timestamp()
        for chunk in _chunks(to_issue, PUBLISH_CHUNK):
            issued = {d: issue(d) for d in chunk}
            results = deps.rollouts.transition(
                rollout_id,
                [
                    Transition(
                        device_id=d,
                        new=target.value,
                        allowed=frozenset(source),
                        cause=f"{step} bundle issued",
                        deadline=deadline,
                        step=step,
                        bundle=data,
                    )
                    for d, data in issued.items()
                ],
                time=now_iso(now),
                actor=actor,
            )
            yield from ((r.device_id, issued[r.device_id]) for r in results if r.applied)

    # Pipelined: the broker acknowledges a window of publishes at a time.
    sent = deps.publisher.publish_bundles(outgoing(), expiry_seconds=ttl)
    deps.count("certfleet_bundles_pushed_total", {"step": step}, sent)
    log.info("push_batch", rollout_id=rollout_id, step=step, devices=len(device_ids), sent=sent)
    return sent


def apply_reports(deps: RolloutDeps, reports: Iterable[DeviceReport], *, now: datetime) -> set[str]:
    """Move devices by their reports; return the rollouts whose devices moved.

    A duplicate delivery of a bundle shows up as a `rejected`/`replay` report: it
    says nothing about the rollout and is ignored. Late and repeated reports are
    refused by the transition itself.
    """
    by_rollout: dict[str, list[Transition]] = {}
    rejected: Counter[str] = Counter()
    for report in reports:
        target = PHASE_TO_STATE.get(report.phase)
        if report.phase == "rejected":
            rejected[report.reason] += 1
        if not report.rollout_id or target is None or report.reason == "replay":
            continue
        by_rollout.setdefault(report.rollout_id, []).append(
            Transition(
                device_id=report.device_id,
                new=target.value,
                allowed=_REPORT_SOURCES[target],
                cause=f"report {report.phase}/{report.reason} seq {report.seq}",
                clear_deadline=target in _REPORT_TERMINAL,
            )
        )
    # One counter update per label and batch, not one round trip per report.
    for reason, n in sorted(rejected.items()):
        deps.count("certfleet_bundles_rejected_total", {"reason": reason}, n)
    moved: set[str] = set()
    arrived: Counter[str] = Counter()
    for rollout_id, transitions in by_rollout.items():
        if not deps.rollouts.exists(rollout_id):
            continue
        results = deps.rollouts.transition(
            rollout_id, transitions, time=now_iso(now), actor="device"
        )
        for transition, result in zip(transitions, results, strict=True):
            if result.applied:
                moved.add(rollout_id)
                arrived[transition.new] += 1
    for state, n in sorted(arrived.items()):
        deps.count("certfleet_device_transitions_total", {"to": state}, n)
    return moved


_REPORT_SOURCES: Mapping[DeviceRolloutState, frozenset[str]] = {
    target: _allowed(target) for target in set(PHASE_TO_STATE.values())
}
"""The states a report may move a device from, per target (computed once)."""
_REPORT_TERMINAL = frozenset(
    t for t in PHASE_TO_STATE.values() if t in DECIDED or t is D.ROLLED_BACK
)


def _sum(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for state, n in c.items():
            total[state] = total.get(state, 0) + n
    return total


def evaluate_rollout(
    deps: RolloutDeps, rollout_id: str, *, now: datetime, actor: str = "engine"
) -> str:
    """Advance the rollout one step as far as its state allows; return its state."""
    owner = secrets.token_hex(8)
    if not deps.rollouts.lock(rollout_id, owner):
        deps.tasks.evaluate_rollout(rollout_id, countdown=1.0)
        return "locked"
    try:
        return _evaluate(deps, rollout_id, now=now, actor=actor)
    finally:
        deps.rollouts.unlock(rollout_id, owner)


@dataclass(frozen=True, slots=True)
class _Context:
    deps: RolloutDeps
    rollout_id: str
    meta: Mapping[str, str]
    spec: RolloutSpec
    sizes: list[int]
    current: int
    now: datetime
    actor: str


def _evaluate(deps: RolloutDeps, rollout_id: str, *, now: datetime, actor: str) -> str:
    meta = _meta(deps, rollout_id)
    state = meta["state"]
    spec = _spec(meta)
    if state == RolloutState.ROLLING_BACK.value:
        return _evaluate_rollback(deps, rollout_id, meta, spec, now=now, actor=actor)
    if state in (RolloutState.COMPLETED.value, RolloutState.ROLLED_BACK.value):
        if not meta.get("finished_at"):  # the worker that ended it died before cleaning up
            _finish(deps, rollout_id, spec, state, now=now, actor=actor)
        return state
    if state == RolloutState.PAUSED.value:
        _commit_healthy(deps, rollout_id, spec, int(meta["current"]), now=now)
        return state
    if state != RolloutState.RUNNING.value:
        return state
    ctx = _Context(
        deps=deps,
        rollout_id=rollout_id,
        meta=meta,
        spec=spec,
        sizes=json.loads(meta["sizes"]),
        current=int(meta["current"]),
        now=now,
        actor=actor,
    )
    step = {
        WaveState.PENDING.value: _wave_pending,
        WaveState.RUNNING.value: _wave_running,
        WaveState.BAKING.value: _wave_baking,
    }.get(meta.get(f"wave:{ctx.current}:state", ""))
    return step(ctx) if step is not None else state


def _wave_pending(ctx: _Context) -> str:
    """Start the wave unless it waits for an approval or the maintenance window."""
    state = ctx.meta["state"]
    if ctx.meta.get("awaiting_approval") == "1":
        return state
    if ctx.spec.window is not None and not ctx.spec.window.is_open(ctx.now):
        return state
    wave = ctx.current
    if ctx.deps.rollouts.set_meta(
        ctx.rollout_id,
        {
            f"wave:{wave}:state": WaveState.RUNNING.value,
            f"wave:{wave}:started_at": ctx.now.isoformat(),
        },
        log=_log(
            ctx.actor,
            "wave",
            str(wave),
            old="pending",
            new="running",
            cause="wave started",
            now=ctx.now,
        ),
        expect=(f"wave:{wave}:state", WaveState.PENDING.value),
    ):
        ctx.deps.tasks.dispatch_wave(ctx.rollout_id, wave)
    return state


def _commit_healthy(
    deps: RolloutDeps, rollout_id: str, spec: RolloutSpec, wave: int, *, now: datetime
) -> None:
    """Send the commit to every device of the wave whose probe passed, once per resend period.

    Evaluations run every debounce period and every beat tick; without the claim each
    one re-sent the commit to every healthy device not yet committed, and each device
    had to verify and refuse the duplicates (`replay`) — at a few hundred healthy
    devices the duplicates outran the commits. A commit lost on the way goes again
    after `COMMIT_RESEND_SECONDS`, or a quarter of the device timeout if shorter, so
    it arrives before the device's `commit_by`.
    """
    healthy = sorted(
        set(deps.rollouts.devices_in(rollout_id, [D.HEALTH_OK.value]))
        & set(deps.rollouts.wave_members(rollout_id, wave))
    )
    every = min(COMMIT_RESEND_SECONDS, spec.device_timeout_seconds / 4)
    healthy = deps.rollouts.claim_sends(
        rollout_id, "commit", healthy, now=now.timestamp(), every=every
    )
    for start in range(0, len(healthy), PUSH_BATCH_SIZE):
        deps.tasks.push_batch(
            rollout_id, wave, healthy[start : start + PUSH_BATCH_SIZE], "commit", countdown=0
        )


def _wave_running(ctx: _Context) -> str:
    """Commit healthy devices; let the gate pass the wave or abort the rollout."""
    deps, wave = ctx.deps, ctx.current
    counts = deps.rollouts.wave_counts(ctx.rollout_id, wave + 1)
    if counts[wave].get(D.HEALTH_OK.value):
        _commit_healthy(deps, ctx.rollout_id, ctx.spec, wave, now=ctx.now)
    _redispatch_stalled(ctx, counts[wave].get(D.PENDING.value, 0))
    decision = evaluate_gate(
        GatePolicy(
            max_failure=ctx.spec.max_failure,
            min_sample=ctx.spec.min_sample,
            timeouts_fail=ctx.spec.timeouts_fail,
        ),
        GateInput(
            wave_size=ctx.sizes[wave], wave_counts=counts[wave], cumulative_counts=_sum(counts)
        ),
    )
    if decision.verdict is Verdict.ABORT:
        abort_rollout(
            deps,
            ctx.rollout_id,
            cause=f"gate: {decision.reason}",
            actor="gate",
            now=ctx.now,
            wave=wave,
        )
        return RolloutState.ROLLING_BACK.value
    if decision.verdict is Verdict.PASS:
        deps.rollouts.set_meta(
            ctx.rollout_id,
            {
                f"wave:{wave}:state": WaveState.BAKING.value,
                f"wave:{wave}:bake_until": str(ctx.now.timestamp() + ctx.spec.bake_seconds),
            },
            log=_log(
                "gate",
                "wave",
                str(wave),
                old="running",
                new="baking",
                cause=decision.reason,
                now=ctx.now,
            ),
            expect=(f"wave:{wave}:state", WaveState.RUNNING.value),
        )
        deps.tasks.evaluate_rollout(ctx.rollout_id, countdown=ctx.spec.bake_seconds)
    return ctx.meta["state"]


def _wave_baking(ctx: _Context) -> str:
    """After the bake: pass the wave; complete, or move on (auto) or wait (manual)."""
    wave = ctx.current
    if ctx.now.timestamp() < float(ctx.meta.get(f"wave:{wave}:bake_until", "0")):
        return ctx.meta["state"]
    last = wave + 1 >= len(ctx.sizes)
    fields = {f"wave:{wave}:state": WaveState.PASSED.value}
    if last:
        fields["state"] = RolloutState.COMPLETED.value
    else:
        fields["current"] = str(wave + 1)
        if ctx.spec.advance == "manual":
            fields["awaiting_approval"] = "1"
    if not ctx.deps.rollouts.set_meta(
        ctx.rollout_id,
        fields,
        log=_log(
            ctx.actor,
            "wave",
            str(wave),
            old="baking",
            new="passed",
            cause="bake time over",
            now=ctx.now,
        ),
        expect=(f"wave:{wave}:state", WaveState.BAKING.value),
        expect_also=("state", RolloutState.RUNNING.value),
    ):
        return ctx.meta["state"]
    if last:
        _finish(ctx.deps, ctx.rollout_id, ctx.spec, "completed", now=ctx.now, actor=ctx.actor)
        return RolloutState.COMPLETED.value
    ctx.deps.tasks.evaluate_rollout(ctx.rollout_id)
    return ctx.meta["state"]


def _finish(
    deps: RolloutDeps,
    rollout_id: str,
    spec: RolloutSpec,
    outcome: str,
    *,
    now: datetime,
    actor: str,
) -> None:
    deps.rollouts.set_active(rollout_id, False)
    devices = deps.rollouts.device_states(rollout_id)
    deps.rollouts.release(rollout_id, [spec.tag, spec.spare_tag], devices)
    deps.rollouts.set_meta(
        rollout_id,
        {"finished_at": now.isoformat()},
        log=_log(
            actor, "rollout", rollout_id, old="", new=outcome, cause="claims released", now=now
        ),
    )
    log.info("rollout_finished", rollout_id=rollout_id, outcome=outcome)


def abort_rollout(
    deps: RolloutDeps, rollout_id: str, *, cause: str, actor: str, now: datetime, wave: int | None
) -> bool:
    meta = _meta(deps, rollout_id)
    spec = _spec(meta)
    previous = meta["state"]
    if previous not in (
        RolloutState.RUNNING.value,
        RolloutState.PAUSED.value,
        RolloutState.CREATED.value,
    ):
        return False
    fields = {
        "state": RolloutState.ROLLING_BACK.value,
        "abort_reason": cause,
        "rollback_deadline": str(now.timestamp() + spec.device_timeout_seconds),
    }
    if wave is not None:
        fields[f"wave:{wave}:state"] = WaveState.FAILED.value
    if not deps.rollouts.set_meta(
        rollout_id,
        fields,
        log=_log(actor, "rollout", rollout_id, old=previous, new="aborted", cause=cause, now=now),
        expect=("state", previous),
    ):
        return False
    deps.rollouts.set_meta(
        rollout_id,
        {},
        log=_log(
            actor,
            "rollout",
            rollout_id,
            old="aborted",
            new="rolling_back",
            cause="rollback started",
            now=now,
        ),
    )
    log.warning("rollout_aborted", rollout_id=rollout_id, cause=cause)
    deps.tasks.rollback_rollout(rollout_id)
    return True


def rollback_rollout(deps: RolloutDeps, rollout_id: str, *, now: datetime) -> int:
    """Enqueue rollback bundles for every device that may hold the new credential."""
    meta = _meta(deps, rollout_id)
    if meta["state"] != RolloutState.ROLLING_BACK.value:
        return 0
    targets = deps.rollouts.devices_in(
        rollout_id, [*(s.value for s in ROLLBACK_TARGETS), D.ROLLBACK_SENT.value]
    )
    for start in range(0, len(targets), PUSH_BATCH_SIZE):
        deps.tasks.push_batch(
            rollout_id, -1, targets[start : start + PUSH_BATCH_SIZE], "rollback", countdown=0
        )
    deps.tasks.evaluate_rollout(rollout_id, countdown=1.0)
    return len(targets)


def _evaluate_rollback(
    deps: RolloutDeps,
    rollout_id: str,
    meta: Mapping[str, str],
    spec: RolloutSpec,
    *,
    now: datetime,
    actor: str,
) -> str:
    # Devices that reached a target state after rollback_rollout listed them (a stage
    # push already under way at the abort) get their rollback now; re-sends are harmless.
    untouched = deps.rollouts.devices_in(rollout_id, [s.value for s in ROLLBACK_TARGETS])
    for start in range(0, len(untouched), PUSH_BATCH_SIZE):
        deps.tasks.push_batch(
            rollout_id, -1, untouched[start : start + PUSH_BATCH_SIZE], "rollback", countdown=0
        )
    waiting = untouched + deps.rollouts.devices_in(rollout_id, [D.ROLLBACK_SENT.value])
    overdue = now.timestamp() >= float(meta.get("rollback_deadline", "0"))
    if waiting and not overdue:
        return RolloutState.ROLLING_BACK.value
    fields = {"state": RolloutState.ROLLED_BACK.value, "unconfirmed": json.dumps(waiting)}
    cause = (
        "every device confirmed"
        if not waiting
        else f"{len(waiting)} devices did not confirm the rollback in time"
    )
    if deps.rollouts.set_meta(
        rollout_id,
        fields,
        log=_log(
            actor,
            "rollout",
            rollout_id,
            old="rolling_back",
            new="rolled_back",
            cause=cause,
            now=now,
        ),
        expect=("state", RolloutState.ROLLING_BACK.value),
    ):
        _finish(deps, rollout_id, spec, "rolled_back", now=now, actor=actor)
    return RolloutState.ROLLED_BACK.value


def tick_rollouts(deps: RolloutDeps, *, now: datetime) -> dict[str, str]:
    """Beat: time out overdue devices, then evaluate every active rollout."""
    outcome = {}
    timed_out = D.TIMED_OUT
    for rollout_id in deps.rollouts.active_ids():
        overdue = deps.rollouts.overdue(rollout_id, now.timestamp())
        if overdue:
            results = deps.rollouts.transition(
                rollout_id,
                [
                    Transition(
                        device_id=d,
                        new=timed_out.value,
                        allowed=_allowed(timed_out) - {D.ROLLBACK_SENT.value},
                        cause="no decision before the device timeout",
                        clear_deadline=True,
                    )
                    for d in overdue
                ],
                time=now_iso(now),
                actor="tick",
            )
            deps.count(
                "certfleet_device_transitions_total",
                {"to": timed_out.value},
                sum(r.applied for r in results),
            )
        outcome[rollout_id] = evaluate_rollout(deps, rollout_id, now=now, actor="tick")
    return outcome


def utcnow() -> datetime:
    """The clock of the entrypoints (the services take `now` as an argument)."""
    return datetime.now(UTC)
