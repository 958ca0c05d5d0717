"""One rollout as the console shows it, read at a cost that does not grow with its devices.

A 100,000-device rollout reads like a 100-device one: the waves' counts are aggregates
(`wave_counts`), the gate's decisions come from the log's rollout and wave entries only
(`events`), the failed and timed-out devices a page at a time (`devices_page`), each with
its last report of the rollout, and the log's last entries (`log_tail`). The console's
live page reads it once a second while someone watches; `rollout_status` (the API's
document) lists every failed device instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final, Literal

from orchestrator.domain.gate import GateInput, evaluate_gate
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    FAILURES,
    SUCCESS,
    DeviceRolloutState,
    RolloutState,
    WaveState,
)
from orchestrator.ports import InventoryStore
from orchestrator.services.rollout.deps import RolloutDeps, load

__all__ = [
    "AUDIT_TAIL",
    "FAILED_PAGE_SIZE",
    "FAILED_STATES",
    "GROUPS",
    "FailedDevice",
    "FailedPage",
    "GateEntry",
    "GateReading",
    "RolloutSummary",
    "RolloutView",
    "Verb",
    "WaveView",
    "gate_entries",
    "rollout_summary",
    "rollout_view",
]

D = DeviceRolloutState
Verb = Literal["pause", "resume", "approve", "abort"]

FAILED_PAGE_SIZE: Final = 50
"""Failed and timed-out devices shown per page."""
AUDIT_TAIL: Final = 20
"""Audit log entries shown, newest first."""
REPORTS_SEARCHED: Final = 20
"""A device's latest reports searched for its last one about the rollout."""
FAILED_STATES: Final = (*sorted(FAILURES), D.TIMED_OUT)
"""The states of the devices listed as failed: the failures and the timeouts."""
GROUPS: Final[Mapping[str, frozenset[DeviceRolloutState]]] = MappingProxyType(
    {
        "committed": SUCCESS,
        "failed": FAILURES,
        "timed_out": frozenset({D.TIMED_OUT}),
        "pending": frozenset({D.PENDING}),
        "in_flight": frozenset({D.SENT, D.RECEIVED, D.CSR, D.ISSUED, D.STAGED, D.HEALTH_OK}),
        "rollback": frozenset({D.ROLLBACK_SENT, D.ROLLED_BACK, D.UNDO_REFUSED}),
    }
)
"""Device states shown together, each state in one group: committed (retired counts as
committed), failed (every failure), timed out, pending, in flight (sent, not decided),
and rollback (sent a rollback, rolled back, or refused it)."""
_SETTLED: Final = ("committed", "failed", "timed_out")
_ENDED: Final = frozenset(
    {RolloutState.COMPLETED, RolloutState.COMPLETED_WITH_TIMEOUTS, RolloutState.ROLLED_BACK}
)


def _grouped(counts: Mapping[str, int]) -> dict[str, int]:
    return {name: sum(counts.get(s, 0) for s in states) for name, states in GROUPS.items()}


@dataclass(frozen=True, slots=True)
class WaveView:
    """One wave: its state, size, devices per state (every state) and per group."""

    index: int
    state: str
    size: int
    counts: Mapping[str, int]
    groups: Mapping[str, int]

    @property
    def decided(self) -> int:
        """Devices committed, failed or timed out."""
        return sum(self.groups[g] for g in _SETTLED)


@dataclass(frozen=True, slots=True)
class GateEntry:
    """A decision the gate logged: a wave passed, or the rollout aborted, and why (the
    cause holds the decision's numbers: failures, budget, decided, started)."""

    time: str
    wave: str
    verdict: Literal["pass", "abort"]
    old: str
    new: str
    cause: str


@dataclass(frozen=True, slots=True)
class GateReading:
    """What the gate makes of the running wave now, by the rule the evaluator applies."""

    wave: int
    verdict: str
    failures: int
    decided: int
    budget: float
    reason: str


@dataclass(frozen=True, slots=True)
class FailedDevice:
    """A failed or timed-out device and its last report about the rollout (if any)."""

    device_id: str
    state: str
    phase: str
    reason: str
    detail: str
    reported_at: datetime | None


@dataclass(frozen=True, slots=True)
class FailedPage:
    """One page of the failed and timed-out devices, in device id order."""

    page: int
    pages: int
    total: int
    devices: tuple[FailedDevice, ...]

    @property
    def has_prev(self) -> bool:
        return self.page > 0

    @property
    def has_next(self) -> bool:
        return self.page + 1 < self.pages


@dataclass(frozen=True, slots=True)
class RolloutSummary:
    """A rollout in the list: state, waves and progress."""

    id: str
    kind: str
    state: str
    created_at: datetime
    current_wave: int
    awaiting_approval: bool
    abort_reason: str | None
    waves: tuple[WaveView, ...]
    groups: Mapping[str, int]

    @property
    def devices(self) -> int:
        return sum(w.size for w in self.waves)

    @property
    def decided(self) -> int:
        """Devices committed, failed or timed out."""
        return sum(self.groups[g] for g in _SETTLED)

    @property
    def ended(self) -> bool:
        """Completed (with or without timeouts) or rolled back: nothing more will change."""
        return self.state in _ENDED


@dataclass(frozen=True, slots=True)
class RolloutView:
    """Everything the console's rollout page shows."""

    summary: RolloutSummary
    gate_now: GateReading | None
    gate: tuple[GateEntry, ...]
    failed: FailedPage
    audit: tuple[Mapping[str, str], ...]
    undo_refused: int
    unconfirmed: int
    verbs: tuple[Verb, ...]
    """The commands the rollout's state allows (`command` refuses the others)."""


def _summary(deps: RolloutDeps, rollout: Rollout) -> RolloutSummary:
    counts = deps.store.wave_counts(rollout.id, len(rollout.waves))
    waves = tuple(
        WaveView(
            index=wave.index,
            state=wave.state.value,
            size=wave.size,
            counts=MappingProxyType({s.value: c.get(s.value, 0) for s in D}),
            groups=MappingProxyType(_grouped(c)),
        )
        for wave, c in zip(rollout.waves, counts, strict=True)
    )
    totals = {name: sum(w.groups[name] for w in waves) for name in GROUPS}
    return RolloutSummary(
        id=rollout.id,
        kind=rollout.spec.kind,
        state=rollout.state.value,
        created_at=rollout.created_at,
        current_wave=rollout.current,
        # The stored flag outlives an abort or pause; only a running wave awaits approval.
        awaiting_approval=rollout.awaiting_approval and rollout.state is RolloutState.RUNNING,
        abort_reason=rollout.abort_reason,
        waves=waves,
        groups=MappingProxyType(totals),
    )


def rollout_summary(deps: RolloutDeps, rollout_id: str) -> RolloutSummary:
    """A rollout's state and counts (two reads); raises `RolloutError` if unknown."""
    return _summary(deps, load(deps.store, rollout_id))


def _verbs(rollout: Rollout) -> tuple[Verb, ...]:
    """The commands the state allows, as the aggregate decides them (each of its steps
    returns None where the state does not allow it; a created rollout resumes by starting)."""
    now, actor = rollout.created_at, "console"
    allowed: list[Verb] = []
    if rollout.pause(now=now, actor=actor) is not None:
        allowed.append("pause")
    resumes = rollout.resume(now=now, actor=actor) or rollout.start(now=now, actor=actor)
    if resumes is not None:
        allowed.append("resume")
    if rollout.approve(now=now, actor=actor) is not None:
        allowed.append("approve")
    if rollout.abort(cause="", now=now, actor=actor, failed_wave=None) is not None:
        allowed.append("abort")
    return tuple(allowed)


def _gate_now(rollout: Rollout, summary: RolloutSummary) -> GateReading | None:
    """The gate's reading of the current wave while it runs (None otherwise)."""
    if rollout.state is not RolloutState.RUNNING or rollout.wave.state is not WaveState.RUNNING:
        return None
    spec = rollout.spec
    started = summary.waves[: rollout.current + 1]
    cumulative = {s.value: sum(w.counts[s.value] for w in started) for s in D}
    decision = evaluate_gate(
        spec.gate_policy,
        GateInput(
            wave_size=rollout.wave.size,
            wave_counts=dict(summary.waves[rollout.current].counts),
            cumulative_counts=cumulative,
        ),
    )
    return GateReading(
        wave=rollout.current,
        verdict=decision.verdict.value,
        failures=decision.failures,
        decided=decision.decided,
        budget=decision.budget,
        reason=decision.reason,
    )


def gate_entries(events: Sequence[Mapping[str, str]]) -> tuple[GateEntry, ...]:
    """The gate's decisions among a rollout's rollout and wave entries, oldest first:
    a wave it passed (running -> baking) and the abort it made (-> aborted)."""
    found: list[GateEntry] = []
    current = "0"
    for e in events:
        kind, old, new = e.get("kind", ""), e.get("from", ""), e.get("to", "")
        if kind == "wave" and new == WaveState.RUNNING:
            current = e.get("subject", current)
        if e.get("actor") != "gate":
            continue
        verdict: Literal["pass", "abort"] | None = None
        if kind == "wave" and new == WaveState.BAKING:
            verdict = "pass"
        elif kind == "rollout" and new == RolloutState.ABORTED:
            verdict = "abort"
        if verdict is not None:
            wave = e.get("subject", current) if kind == "wave" else current
            found.append(
                GateEntry(
                    time=e.get("time", ""),
                    wave=wave,
                    verdict=verdict,
                    old=old,
                    new=new,
                    cause=e.get("cause", ""),
                )
            )
    return tuple(found)


def _last_report(inventory: InventoryStore, device_id: str, rollout_id: str) -> DeviceReport | None:
    reports = inventory.recent_reports(device_id, limit=REPORTS_SEARCHED)
    return next((r for r in reversed(reports) if r.rollout_id == rollout_id), None)


def _failed_page(
    deps: RolloutDeps, rollout_id: str, summary: RolloutSummary, page: int
) -> FailedPage:
    """The page asked for (the last one if it asked past it) of the failed devices."""
    expected = summary.groups["failed"] + summary.groups["timed_out"]
    pages = max(1, -(-expected // FAILED_PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    total, devices = deps.store.devices_page(
        rollout_id, FAILED_STATES, offset=page * FAILED_PAGE_SIZE, count=FAILED_PAGE_SIZE
    )
    states = deps.store.device_states(rollout_id, devices)
    rows = []
    for device in devices:
        report = _last_report(deps.inventory, device, rollout_id)
        state = states.get(device)
        rows.append(
            FailedDevice(
                device_id=device,
                state=state.value if state is not None else "",
                phase=report.phase if report else "",
                reason=report.reason if report else "",
                detail=report.detail if report else "",
                reported_at=report.time if report else None,
            )
        )
    return FailedPage(
        page=page,
        pages=max(1, -(-total // FAILED_PAGE_SIZE)),
        total=total,
        devices=tuple(rows),
    )


def rollout_view(deps: RolloutDeps, rollout_id: str, *, failed_page: int = 0) -> RolloutView:
    """The rollout page's content: a handful of reads whatever the rollout's size.

    `failed_page` is 0-based; a page past the last reads as the last.
    Raises `RolloutError` for an unknown rollout.
    """
    rollout = load(deps.store, rollout_id)
    summary = _summary(deps, rollout)
    return RolloutView(
        summary=summary,
        gate_now=_gate_now(rollout, summary),
        gate=gate_entries(deps.store.events(rollout_id)),
        failed=_failed_page(deps, rollout_id, summary, failed_page),
        audit=tuple(deps.store.log_tail(rollout_id, AUDIT_TAIL)),
        undo_refused=sum(w.counts[D.UNDO_REFUSED.value] for w in summary.waves),
        unconfirmed=len(rollout.unconfirmed or ()),
        verbs=_verbs(rollout),
    )
