"""Rollout views: the CLI's tables (columns in the field's words, counts where they belong)
and the console's read service over the in-memory stores (grouped counts, the gate's
decisions, failed devices a page at a time with their reasons, the audit log's tail)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rich.console import Console

from orchestrator.cli.rollout_view import rollouts_table, status_table
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import AuditEntry, Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    RolloutState,
    WaveState,
)
from orchestrator.services.rollout import (
    FAILED_PAGE_SIZE,
    RolloutDeps,
    RolloutError,
    rollout_summary,
    rollout_view,
)
from orchestrator.services.rollout.view import GROUPS
from tests.fake_rollouts import FakeMetrics, FakeRollouts, RecordingTasks, trust_add_spec
from tests.fakes import FakeInventory
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit


def _counts(**given: int) -> dict[str, int]:
    return {s.value: given.get(s.value, 0) for s in DeviceRolloutState}


STATUS = {
    "id": "ro-1",
    "kind": "trust.add",
    "state": "running",
    "created_at": "2026-12-01T12:00:00+00:00",
    "waves": [
        {"index": 0, "size": 5, "state": "passed", "counts": _counts(committed=4, fallback=1)},
        {
            "index": 1,
            "size": 10,
            "state": "running",
            "counts": _counts(pending=3, sent=2, committed=5),
        },
    ],
    "totals": _counts(pending=3, sent=2, committed=9, fallback=1),
}


def _text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_status_table_shows_done_counts_and_what_is_in_flight() -> None:
    """Wave 1: 5 committed, 3 pending, so 2 in flight; the done states are the columns."""
    text = _text(status_table(STATUS))
    header = next(line for line in text.splitlines() if "wave" in line and "size" in line)
    for column in (
        "committed",
        "rejected",
        "health_failed",
        "timed_out",
        "fallback",
        "rolled_back",
    ):
        assert column in header
    row = next(line for line in text.splitlines() if line.strip().startswith("│ 1"))
    assert row.split("│")[-2].strip() == "2"


def test_rollouts_table_counts_failures_and_timeouts_as_failed() -> None:
    """One line per rollout: 15 devices, 9 committed, 1 failed (the fallback)."""
    text = _text(rollouts_table([STATUS]))
    row = next(line for line in text.splitlines() if "ro-1" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == ["ro-1", "trust.add", "running", "2026-12-01T12:00:00", "15", "9", "1"]


# -- the console's rollout view -------------------------------------------------------------

D = DeviceRolloutState
RID = "ro-view"
EVERY = frozenset(D)


def _deps() -> RolloutDeps:
    return RolloutDeps(
        store=FakeRollouts(),
        inventory=FakeInventory(),
        tasks=RecordingTasks(),
        metrics=FakeMetrics(),
    )


def _rollout(deps: RolloutDeps, sizes: list[int], **spec: object) -> Rollout:
    """A created rollout of waves of `sizes` (devices `dev-<wave>-<nnn>`), waves 1 and on
    planned, wave 0 running."""
    waves_spec = ",".join(str(n) for n in sizes[:-1]) + ("," if len(sizes) > 1 else "") + "100%"
    rollout = Rollout.planned(
        RID,
        trust_add_spec(waves=parse_waves(waves_spec), **spec),
        seed="s",
        sizes=sizes,
        now=NOW,
    )
    waves = [[f"dev-{w}-{i:03d}" for i in range(n)] for w, n in enumerate(sizes)]
    deps.store.create(
        rollout, waves=waves, active={d: [42] for w in waves for d in w}, actor="test"
    )
    return rollout


def _run(deps: RolloutDeps) -> Rollout:
    """created -> running, wave 0 running, as the engine logs it."""
    rollout = deps.store.get(RID)
    assert rollout is not None
    start = rollout.start(now=NOW, actor="test")
    assert start is not None
    assert deps.store.change(RID, start)
    rollout = deps.store.get(RID)
    assert rollout is not None
    wave = rollout.start_wave(now=NOW, actor="engine")
    assert wave is not None
    assert deps.store.change(RID, wave)
    rollout = deps.store.get(RID)
    assert rollout is not None
    return rollout


def _move(deps: RolloutDeps, state: DeviceRolloutState, devices: list[str]) -> None:
    results = deps.store.transition(
        RID,
        [DeviceTransition(d, state, EVERY, cause=f"to {state}") for d in devices],
        now=NOW,
        actor="test",
    )
    assert all(r.applied for r in results)


def _report(device: str, *, rollout_id: str = RID, reason: str, minutes: int) -> DeviceReport:
    return DeviceReport(
        device_id=device,
        rollout_id=rollout_id,
        seq=1,
        op="stage",
        phase="failed",
        reason=reason,
        detail=f"detail of {reason}",
        time=NOW + timedelta(minutes=minutes),
    )


def test_every_device_state_is_in_exactly_one_group() -> None:
    """The groups the page shows add up to the wave's size: no state counted twice or lost."""
    members = [s for states in GROUPS.values() for s in states]
    assert sorted(members) == sorted(D)


def test_the_view_groups_each_waves_counts() -> None:
    """Wave 0 of 10: 4 committed, 2 failures (rejected, fallback), 1 timed out, 2 in flight
    (sent, health_ok), 1 pending; wave 1 all pending; the totals add the waves."""
    deps = _deps()
    _rollout(deps, [10, 20])
    _run(deps)
    wave0 = [f"dev-0-{i:03d}" for i in range(10)]
    _move(deps, D.COMMITTED, wave0[:4])
    _move(deps, D.REJECTED, wave0[4:5])
    _move(deps, D.FALLBACK, wave0[5:6])
    _move(deps, D.TIMED_OUT, wave0[6:7])
    _move(deps, D.SENT, wave0[7:8])
    _move(deps, D.HEALTH_OK, wave0[8:9])

    view = rollout_view(deps, RID)

    first, second = view.summary.waves
    assert (first.state, first.size, second.state, second.size) == ("running", 10, "pending", 20)
    assert dict(first.groups) == {
        "committed": 4,
        "failed": 2,
        "timed_out": 1,
        "pending": 1,
        "in_flight": 2,
        "rollback": 0,
    }
    assert first.counts["rejected"] == 1
    assert first.counts["fallback"] == 1
    assert first.decided == 7
    assert second.groups["pending"] == 20
    assert view.summary.groups["pending"] == 21
    assert (view.summary.devices, view.summary.decided) == (30, 7)
    assert view.summary.state == "running"
    assert view.summary.current_wave == 0


def test_failed_devices_come_a_page_at_a_time_in_device_order() -> None:
    """120 failed or timed-out devices of 150: pages of 50, 50 and 20 in device id order;
    a page past the last reads as the last; committed devices are never listed."""
    deps = _deps()
    _rollout(deps, [150])
    _run(deps)
    devices = [f"dev-0-{i:03d}" for i in range(150)]
    _move(deps, D.HEALTH_FAILED, devices[0:60])
    _move(deps, D.TIMED_OUT, devices[60:120])
    _move(deps, D.COMMITTED, devices[120:])

    pages = [rollout_view(deps, RID, failed_page=n).failed for n in (0, 1, 2, 9)]

    assert [p.total for p in pages] == [120] * 4
    assert [p.pages for p in pages] == [3] * 4
    assert [p.page for p in pages] == [0, 1, 2, 2]
    assert [len(p.devices) for p in pages] == [FAILED_PAGE_SIZE, FAILED_PAGE_SIZE, 20, 20]
    listed = [d.device_id for p in pages[:3] for d in p.devices]
    assert listed == devices[:120]
    assert pages[0].devices[0].state == "health_failed"
    assert pages[2].devices[-1].state == "timed_out"
    assert (pages[0].has_prev, pages[0].has_next, pages[2].has_prev, pages[2].has_next) == (
        False,
        True,
        True,
        False,
    )


def test_a_failed_device_shows_its_last_report_of_this_rollout() -> None:
    """The reason is the device's latest report about this rollout: not an earlier one,
    not another rollout's; a device that never reported shows none."""
    deps = _deps()
    _rollout(deps, [3])
    _run(deps)
    _move(deps, D.REJECTED, ["dev-0-000", "dev-0-001"])
    _move(deps, D.TIMED_OUT, ["dev-0-002"])
    assert isinstance(deps.inventory, FakeInventory)
    deps.inventory.record_reports(
        [
            _report("dev-0-000", reason="bad_signature", minutes=1),
            _report("dev-0-000", reason="no_room", minutes=2),
            _report("dev-0-000", rollout_id="ro-other", reason="unrelated", minutes=3),
            _report("dev-0-001", rollout_id="ro-other", reason="unrelated", minutes=1),
        ]
    )

    rows = {d.device_id: d for d in rollout_view(deps, RID).failed.devices}

    assert (rows["dev-0-000"].phase, rows["dev-0-000"].reason) == ("failed", "no_room")
    assert rows["dev-0-000"].detail == "detail of no_room"
    assert rows["dev-0-000"].reported_at == NOW + timedelta(minutes=2)
    assert (rows["dev-0-001"].reason, rows["dev-0-001"].reported_at) == ("", None)
    assert (rows["dev-0-002"].state, rows["dev-0-002"].reason) == ("timed_out", "")


def test_the_gate_decisions_are_read_with_their_numbers() -> None:
    """The wave the gate passed and the abort it made, oldest first, each with the wave
    it judged and its cause (which holds the numbers); an operator's abort is no gate
    decision and device entries are not read."""
    deps = _deps()
    _rollout(deps, [2, 8])
    rollout = _run(deps)
    _move(deps, D.COMMITTED, ["dev-0-000", "dev-0-001"])
    reason = "wave complete (2 of 2 decided); 0 failures within a budget of 1"
    passed = rollout.pass_wave(reason, now=NOW)
    assert passed is not None
    assert deps.store.change(RID, passed)
    rollout = deps.store.get(RID)
    assert rollout is not None
    deps.store.change(
        RID,
        Change(
            current=1,
            waves={0: WaveChange(state=WaveState.PASSED), 1: WaveChange(state=WaveState.RUNNING)},
            entries=(
                AuditEntry(
                    time=NOW,
                    actor="engine",
                    kind="wave",
                    subject="1",
                    old="pending",
                    new="running",
                    cause="wave started",
                ),
            ),
        ),
    )
    rollout = deps.store.get(RID)
    assert rollout is not None
    cause = "gate: 3 failures over a budget of 0.8 (10% of max(8 started, min sample 1))"
    abort = rollout.abort(cause=cause, now=NOW, actor="gate", failed_wave=1)
    assert abort is not None
    assert deps.store.change(RID, abort)

    view = rollout_view(deps, RID)

    assert [(g.verdict, g.wave, g.old, g.new, g.cause) for g in view.gate] == [
        ("pass", "0", "running", "baking", reason),
        ("abort", "1", "running", "aborted", cause),
    ]
    assert view.summary.state == "rolling_back"
    assert view.summary.abort_reason == cause
    assert all(e["kind"] != "device" for e in deps.store.events(RID))


def test_an_operators_abort_is_no_gate_decision() -> None:
    """Aborted from the console: the audit names the operator, the gate table stays empty."""
    deps = _deps()
    _rollout(deps, [4])
    rollout = _run(deps)
    abort = rollout.abort(
        cause="aborted by console:ops", now=NOW, actor="console:ops", failed_wave=None
    )
    assert abort is not None
    assert deps.store.change(RID, abort)

    view = rollout_view(deps, RID)

    assert view.gate == ()
    assert view.audit[0]["actor"] == "console:ops"


def test_the_gate_reads_the_running_wave_with_its_numbers() -> None:
    """While wave 0 of 10 runs with 1 failure and 4 committed (10% budget, min sample
    10): continue, 1 failure of 5 decided, budget 1."""
    deps = _deps()
    _rollout(deps, [10], max_failure=0.1, min_sample=10)
    _run(deps)
    _move(deps, D.COMMITTED, [f"dev-0-{i:03d}" for i in range(4)])
    _move(deps, D.REJECTED, ["dev-0-009"])

    reading = rollout_view(deps, RID).gate_now

    assert reading is not None
    assert (reading.wave, reading.verdict, reading.failures, reading.decided) == (
        0,
        "continue",
        1,
        5,
    )
    assert reading.budget == pytest.approx(1.0)
    assert "waiting for 5 of 10 devices" in reading.reason


def test_the_audit_tail_is_the_last_twenty_entries_newest_first() -> None:
    """30 device moves after the rollout's own lines: the tail is the last 20, newest first."""
    deps = _deps()
    _rollout(deps, [30])
    _run(deps)
    devices = [f"dev-0-{i:03d}" for i in range(30)]
    for device in devices:
        _move(deps, D.SENT, [device])

    audit = rollout_view(deps, RID).audit

    assert [e["subject"] for e in audit] == devices[::-1][:20]
    assert all(e["kind"] == "device" and e["to"] == "sent" for e in audit)


@pytest.mark.parametrize(
    ("given", "verbs"),
    [
        pytest.param({}, ("pause", "abort"), id="running"),
        pytest.param({"state": RolloutState.PAUSED}, ("resume", "abort"), id="paused"),
        pytest.param({"state": RolloutState.CREATED}, ("resume", "abort"), id="created"),
        pytest.param(
            {"awaiting_approval": True}, ("pause", "approve", "abort"), id="awaiting-approval"
        ),
        pytest.param({"state": RolloutState.ROLLING_BACK}, (), id="rolling-back"),
        pytest.param({"state": RolloutState.ROLLED_BACK}, (), id="rolled-back"),
        pytest.param({"state": RolloutState.COMPLETED}, (), id="completed"),
    ],
)
def test_the_view_offers_only_the_commands_the_state_allows(
    given: dict[str, object], verbs: tuple[str, ...]
) -> None:
    """The verbs shown are those `command` would carry out in that state."""
    deps = _deps()
    _rollout(deps, [4])
    _run(deps)
    assert deps.store.change(RID, Change(**given))  # type: ignore[arg-type]

    assert rollout_view(deps, RID).verbs == verbs


def test_the_summary_says_when_a_rollout_has_ended() -> None:
    """Rolled back and completed rollouts have ended; running and rolling back ones not."""
    deps = _deps()
    _rollout(deps, [4])
    _run(deps)
    states = [RolloutState.ROLLING_BACK, RolloutState.ROLLED_BACK]
    ended = []
    for state in states:
        deps.store.change(RID, Change(state=state))
        ended.append(rollout_summary(deps, RID).ended)

    assert ended == [False, True]


@pytest.mark.parametrize(
    ("state", "awaits"),
    [
        (RolloutState.RUNNING, True),
        (RolloutState.PAUSED, False),
        (RolloutState.ROLLING_BACK, False),
        (RolloutState.ROLLED_BACK, False),
    ],
)
def test_only_a_running_rollout_awaits_approval(state: RolloutState, awaits: bool) -> None:
    """An abort leaves the stored flag set; the page must not ask for an approval then."""
    deps = _deps()
    _rollout(deps, [4])
    _run(deps)
    assert deps.store.change(RID, Change(awaiting_approval=True))
    assert deps.store.change(RID, Change(state=state))

    assert rollout_summary(deps, RID).awaiting_approval is awaits


def test_an_unknown_rollout_is_a_rollout_error() -> None:
    """No rollout of that id: `RolloutError`, which the page turns into a 404."""
    with pytest.raises(RolloutError, match="no rollout"):
        rollout_view(_deps(), "ro-none")


def test_the_fake_store_refuses_a_page_of_pending_devices() -> None:
    """`pending` has no per-state set in Redis: the fake refuses it as the adapter does."""
    deps = _deps()
    _rollout(deps, [4])
    with pytest.raises(ValueError, match="pending"):
        deps.store.devices_page(RID, [D.PENDING], offset=0, count=10)
