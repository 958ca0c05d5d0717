"""The rollout engine against in-memory ports: every rollout, wave and device transition,
the gate, re-dispatch, the commit re-send rule and rollback targets, without Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout import RolloutSpec, parse_waves, parse_window
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    ROLLBACK_TARGETS,
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
    WaveState,
    may_transition,
)
from orchestrator.services.rollout import (
    COMMIT_RESEND_SECONDS,
    PUSH_BATCH_SIZE,
    RolloutError,
    abort_rollout,
    command,
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    push_batch,
    rollback_rollout,
    rollout_status,
    start_rollout,
    tick_rollouts,
)
from tests.fake_rollouts import (
    DEVICE_TIMEOUT,
    NEW_ROOT,
    FakeMetrics,
    FakePublisher,
    FakeRollouts,
    FakeSigner,
    RecordingTasks,
    trust_add_spec,
)
from tests.fakes import FakeInventory
from tests.rollout_rig import DEVICES, Engine, make_engine
from tests.unit.builders import NOW, credential

pytestmark = pytest.mark.unit

D = DeviceRolloutState
R = RolloutState
W = WaveState
CA = NEW_ROOT
TIMEOUT = DEVICE_TIMEOUT


def _spec(**overrides: object) -> RolloutSpec:
    return trust_add_spec(**{"waves": parse_waves("2,50%,100%"), "max_failure": 0.2, **overrides})


@pytest.fixture
def engine() -> Engine:
    return make_engine()


def _running(engine: Engine, spec: RolloutSpec | None = None) -> str:
    """A rollout created and started, its first wave running and dispatched."""
    rid = create_rollout(engine.deps, spec or _spec(), now=NOW, actor="test", start=True)
    assert engine.tasks.named("start_rollout") == [(rid,)]
    assert start_rollout(engine.deps, rid, now=NOW, actor="test")
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.RUNNING
    assert engine.tasks.named("dispatch_wave")[-1] == (rid, 0)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    return rid


def _wave(engine: Engine, rid: str, index: int) -> list[str]:
    return engine.store.wave_members(rid, index)


# -- creation and the rollout's transitions --------------------------------------------------


def test_a_created_rollout_has_every_device_pending_and_claims_its_devices(engine: Engine) -> None:
    """create: state created, waves 2/4/4 pending, each device claimed, a first log line."""
    rid = create_rollout(engine.deps, _spec(), now=NOW, actor="test", start=False)
    rollout = engine.rollout(rid)
    assert rollout.state is R.CREATED
    assert rollout.sizes == [2, 3, 5]
    assert {w.state for w in rollout.waves} == {W.PENDING}
    assert set(engine.store.device_states(rid).values()) == {D.PENDING}
    assert engine.store.claimed_by("dev-00") == rid
    assert engine.store.log(rid)[0]["cause"] == "created"
    assert engine.tasks.named("start_rollout") == []


def test_a_second_rollout_over_the_same_devices_is_refused(engine: Engine) -> None:
    """Claims are per device: a second rollout on the same tags cannot start."""
    create_rollout(engine.deps, _spec(), now=NOW, actor="test", start=False)
    with pytest.raises(RolloutError, match="another running rollout"):
        create_rollout(engine.deps, _spec(name="again"), now=NOW, actor="test", start=False)


def test_a_second_rollout_on_other_sec_tags_of_the_same_devices_is_refused(
    engine: Engine,
) -> None:
    """One rollout at a time per device: other tags (42 -> 44) do not make room for a second."""
    first = create_rollout(engine.deps, _spec(), now=NOW, actor="test", start=False)
    with pytest.raises(RolloutError, match="one rollout at a time"):
        create_rollout(
            engine.deps, _spec(name="other", spare_tag=44), now=NOW, actor="test", start=False
        )
    assert engine.store.list_ids() == [first], "nothing of the second was stored"
    assert engine.store.claimed_by("dev-00") == first


def test_start_is_applied_once(engine: Engine) -> None:
    """created -> running once: a second start (a re-run task) changes nothing."""
    rid = create_rollout(engine.deps, _spec(), now=NOW, actor="test", start=False)
    assert start_rollout(engine.deps, rid, now=NOW, actor="test")
    assert not start_rollout(engine.deps, rid, now=NOW, actor="test")
    assert engine.rollout(rid).state is R.RUNNING
    assert engine.tasks.named("evaluate_rollout") == [(rid, 0)]


def test_pause_resume_and_their_refusals(engine: Engine) -> None:
    """running -> paused -> running; pausing a paused one or resuming a running one is refused."""
    rid = _running(engine)
    assert command(engine.deps, rid, "pause", now=NOW, actor="op") == R.PAUSED
    with pytest.raises(RolloutError, match="only a running rollout can be paused"):
        command(engine.deps, rid, "pause", now=NOW, actor="op")
    assert command(engine.deps, rid, "resume", now=NOW, actor="op") == R.RUNNING
    with pytest.raises(RolloutError, match="only a paused or created rollout"):
        command(engine.deps, rid, "resume", now=NOW, actor="op")
    # the running wave is dispatched again on resume (a pause made its batches skip)
    assert engine.tasks.named("dispatch_wave")[-1] == (rid, 0)


def test_resume_of_a_created_rollout_starts_it(engine: Engine) -> None:
    """resume on a created rollout is a start."""
    rid = create_rollout(engine.deps, _spec(), now=NOW, actor="test", start=False)
    assert command(engine.deps, rid, "resume", now=NOW, actor="op") == R.RUNNING
    assert engine.rollout(rid).state is R.RUNNING


def test_a_paused_rollout_stages_nobody_but_still_commits(engine: Engine) -> None:
    """Pause stops stage pushes; healthy devices still get their commit."""
    rid = _running(engine)
    command(engine.deps, rid, "pause", now=NOW, actor="op")
    canary = _wave(engine, rid, 0)
    assert push_batch(engine.push, rid, canary, PushStep.STAGE, now=NOW) == 0
    engine.store.transition(
        rid,
        [DeviceTransition(canary[0], D.HEALTH_OK, frozenset({D.PENDING}), "test")],
        now=NOW,
        actor="test",
    )
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.PAUSED
    assert engine.tasks.pushes(PushStep.COMMIT) == [[canary[0]]]


def test_unknown_rollouts_and_verbs_say_what_to_do(engine: Engine) -> None:
    """A missing rollout names the command to list them; an unknown verb is refused."""
    with pytest.raises(RolloutError, match="certfleet rollout list"):
        evaluate_rollout(engine.deps, "ro-missing", now=NOW)
    rid = _running(engine)
    with pytest.raises(RolloutError, match="unknown command"):
        command(engine.deps, rid, "explode", now=NOW, actor="op")


# -- devices, pushes and the waves -----------------------------------------------------------


def test_stage_push_moves_pending_to_sent_once_and_resends_the_same_bytes(engine: Engine) -> None:
    """A stage bundle is issued once per device; a re-run re-sends those exact bytes."""
    rid = _running(engine)
    assert engine.run_pushes() == 2
    canary = _wave(engine, rid, 0)
    assert engine.store.devices_in(rid, [D.SENT]) == canary
    first = dict(engine.publisher.sent)
    # when: the same batch runs again (acks_late after a killed worker)
    assert push_batch(engine.push, rid, canary, PushStep.STAGE, now=NOW) == 2
    # then: the same bytes, and the devices still `sent`
    assert dict(engine.publisher.sent[2:]) == first
    assert engine.store.devices_in(rid, [D.SENT]) == canary
    bundle = engine.opened(canary[0], first[canary[0]])
    assert (bundle.op, bundle.rollout_id, bundle.tag, bundle.active) == ("stage", rid, 43, (42, 43))
    assert bundle.credentials[0].pem == CA.pem.decode()
    assert engine.store.overdue(rid, NOW.timestamp() + TIMEOUT) == canary


def test_reports_move_devices_forward_only(engine: Engine) -> None:
    """received -> staged -> health_ok -> committed; a late `received` changes nothing."""
    rid = _running(engine)
    engine.run_pushes()
    device = _wave(engine, rid, 0)[0]
    for phase, expected in [
        ("received", D.RECEIVED),
        ("staged", D.STAGED),
        ("health_ok", D.HEALTH_OK),
        ("committed", D.COMMITTED),
    ]:
        if phase == "committed":  # a device commits on the commit bundle it was sent
            push_batch(engine.push, rid, [device], PushStep.COMMIT, now=NOW)
        assert engine.report(rid, phase, device) == {rid}
        assert engine.store.device_states(rid, [device]) == {device: expected}
    assert engine.report(rid, "received", device) == set()
    assert engine.store.device_states(rid, [device]) == {device: D.COMMITTED}
    assert engine.store.overdue(rid, NOW.timestamp() + 2 * TIMEOUT) == [_wave(engine, rid, 0)[1]]


def test_a_replay_rejection_says_nothing_about_the_rollout(engine: Engine) -> None:
    """rejected/replay is a duplicate delivery: counted, the device not moved."""
    rid = _running(engine)
    engine.run_pushes()
    device = _wave(engine, rid, 0)[0]
    assert engine.report(rid, "rejected", device, reason="replay") == set()
    assert engine.store.device_states(rid, [device]) == {device: D.SENT}
    key = ("certfleet_bundles_rejected_total", (("reason", "replay"),))
    assert engine.metrics.counters[key] == 1


@pytest.mark.parametrize("current", list(D))
@pytest.mark.parametrize("new", list(D))
def test_the_store_applies_exactly_the_transitions_the_domain_allows(
    engine: Engine, current: DeviceRolloutState, new: DeviceRolloutState
) -> None:
    """Every (from, to) pair: applied iff `may_transition` says so."""
    rid = create_rollout(engine.deps, _spec(), now=NOW, actor="test", start=False)
    device = DEVICES[0]
    if current is not D.PENDING:
        engine.store.transition(
            rid, [DeviceTransition(device, current, frozenset(D), "given")], now=NOW, actor="t"
        )
    allowed = frozenset(s for s in D if may_transition(s, new))
    [result] = engine.store.transition(
        rid, [DeviceTransition(device, new, allowed, "when")], now=NOW, actor="t"
    )
    assert result.applied == may_transition(current, new)
    assert engine.store.device_states(rid, [device])[device] == (new if result.applied else current)


def _decide(engine: Engine, rid: str, wave: int, *, failing: int = 0) -> None:
    """Every device of the wave committed, but `failing` that report health_failed."""
    members = _wave(engine, rid, wave)
    engine.run_pushes()
    engine.report(rid, "health_failed", *members[:failing], reason="unknown_ca")
    engine.report(rid, "health_ok", *members[failing:])
    push_batch(engine.push, rid, members[failing:], PushStep.COMMIT, now=NOW)
    engine.report(rid, "committed", *members[failing:])


def test_a_healthy_rollout_passes_bakes_and_completes_every_wave(engine: Engine) -> None:
    """Each wave: running -> baking (gate) -> passed (bake over); the last completes and
    releases the claims."""
    rid = _running(engine, _spec(bake_seconds=60))
    now = NOW
    for wave in range(3):
        _decide(engine, rid, wave)
        assert evaluate_rollout(engine.deps, rid, now=now) == R.RUNNING
        assert engine.rollout(rid).waves[wave].state is W.BAKING
        assert engine.tasks.named("evaluate_rollout")[-1] == (rid, 60)
        # the bake is not over a second early
        evaluate_rollout(engine.deps, rid, now=now + timedelta(seconds=59))
        assert engine.rollout(rid).waves[wave].state is W.BAKING
        now += timedelta(seconds=61)
        outcome = evaluate_rollout(engine.deps, rid, now=now)
        assert engine.rollout(rid).waves[wave].state is W.PASSED
        if wave < 2:
            assert outcome == R.RUNNING
            assert engine.rollout(rid).current == wave + 1
            assert evaluate_rollout(engine.deps, rid, now=now) == R.RUNNING
            assert engine.tasks.named("dispatch_wave")[-1] == (rid, wave + 1)
            dispatch_wave(engine.deps, rid, wave + 1, now=now)
    assert outcome == R.COMPLETED
    rollout = engine.rollout(rid)
    assert rollout.state is R.COMPLETED
    assert rollout.finished_at == now
    assert engine.store.claimed_by("dev-00") is None
    assert rid in engine.store.active_ids(), "ticked until a tick reads it finished"
    assert tick_rollouts(engine.deps, now=now) == {}
    assert rid not in engine.store.active_ids()
    assert set(engine.store.device_states(rid).values()) == {D.COMMITTED}


def test_a_manual_rollout_waits_for_approval_between_waves(engine: Engine) -> None:
    """advance=manual: after a wave passes the next waits until `approve`."""
    rid = _running(engine, _spec(advance="manual"))
    _decide(engine, rid, 0)
    evaluate_rollout(engine.deps, rid, now=NOW)
    evaluate_rollout(engine.deps, rid, now=NOW)
    rollout = engine.rollout(rid)
    assert (rollout.current, rollout.awaiting_approval) == (1, True)
    dispatches = len(engine.tasks.named("dispatch_wave"))
    evaluate_rollout(engine.deps, rid, now=NOW)
    assert len(engine.tasks.named("dispatch_wave")) == dispatches
    assert command(engine.deps, rid, "approve", now=NOW, actor="op") == R.RUNNING
    with pytest.raises(RolloutError, match="not waiting for an approval"):
        command(engine.deps, rid, "approve", now=NOW, actor="op")
    evaluate_rollout(engine.deps, rid, now=NOW)
    assert engine.tasks.named("dispatch_wave")[-1] == (rid, 1)
    assert engine.rollout(rid).waves[1].state is W.RUNNING


def test_a_wave_waits_for_its_maintenance_window(engine: Engine) -> None:
    """A pending wave starts only while the window is open."""
    window = parse_window("0 2 * * *|1h")  # 02:00-03:00 UTC; NOW is 12:00
    rid = create_rollout(engine.deps, _spec(window=window), now=NOW, actor="t", start=False)
    start_rollout(engine.deps, rid, now=NOW, actor="t")
    evaluate_rollout(engine.deps, rid, now=NOW)
    assert engine.rollout(rid).waves[0].state is W.PENDING
    opened = NOW.replace(hour=2, minute=30) + timedelta(days=1)
    evaluate_rollout(engine.deps, rid, now=opened)
    assert engine.rollout(rid).waves[0].state is W.RUNNING


def test_the_gate_aborts_on_failures_and_the_rollback_goes_to_every_target(
    engine: Engine,
) -> None:
    """Too many failures: wave failed, rollout rolling_back, rollback to every device that may
    hold the new CA (never to a pending device), then rolled_back once all confirmed."""
    rid = _running(engine, _spec(max_failure=0.0))
    _decide(engine, rid, 0, failing=1)
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.ROLLING_BACK
    rollout = engine.rollout(rid)
    assert rollout.waves[0].state is W.FAILED
    assert rollout.abort_reason is not None
    assert rollout.abort_reason.startswith("gate: ")
    assert [e["to"] for e in engine.store.log(rid)[-2:]] == ["aborted", "rolling_back"]
    assert engine.tasks.named("rollback_rollout") == [(rid,)]
    # given: a device of the next wave was staged just as the abort happened
    late = _wave(engine, rid, 1)[0]
    engine.store.transition(
        rid, [DeviceTransition(late, D.STAGED, frozenset({D.PENDING}), "t")], now=NOW, actor="t"
    )
    # when
    assert rollback_rollout(engine.deps, rid, now=NOW) == 2
    # then: the committed canary device and the staged one; not the failed, not the pending
    targets = sorted(d for batch in engine.tasks.pushes(PushStep.ROLLBACK) for d in batch)
    committed = _wave(engine, rid, 0)[1]
    assert targets == sorted([committed, late])
    engine.run_pushes()
    assert engine.store.devices_in(rid, [D.ROLLBACK_SENT]) == sorted([committed, late])
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.ROLLING_BACK
    engine.report(rid, "rolled_back", committed, late)
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.ROLLED_BACK
    rollout = engine.rollout(rid)
    assert (rollout.state, rollout.unconfirmed) == (R.ROLLED_BACK, ())
    assert rollout_status(engine.deps, rid)["unconfirmed_rollback"] == []
    assert engine.store.claimed_by(late) is None


def test_every_rollback_target_state_is_rolled_back(engine: Engine) -> None:
    """Rollback reaches sent, received, staged, health_ok, committed and timed_out."""
    rid = _running(engine, _spec(waves=parse_waves("100%")))
    targets = sorted(ROLLBACK_TARGETS)
    for device, target in zip(DEVICES, targets, strict=False):
        engine.store.transition(
            rid, [DeviceTransition(device, target, frozenset({D.PENDING}), "t")], now=NOW, actor="t"
        )
    assert abort_rollout(engine.deps, rid, cause="op", actor="op", now=NOW, wave=None)
    assert rollback_rollout(engine.deps, rid, now=NOW) == len(targets)
    engine.run_pushes()
    assert engine.store.devices_in(rid, [D.ROLLBACK_SENT]) == DEVICES[: len(targets)]
    assert engine.store.devices_in(rid, [D.PENDING]) == DEVICES[len(targets) :]


def test_unconfirmed_rollbacks_are_listed_at_the_deadline(engine: Engine) -> None:
    """Devices that never confirm end the rollback at its deadline, listed as unconfirmed."""
    rid = _running(engine)
    engine.run_pushes()
    command(engine.deps, rid, "abort", now=NOW, actor="op")
    with pytest.raises(RolloutError, match="can be aborted"):
        command(engine.deps, rid, "abort", now=NOW, actor="op")
    rollback_rollout(engine.deps, rid, now=NOW)
    engine.run_pushes()
    assert evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=TIMEOUT - 1)) == (
        R.ROLLING_BACK
    )
    assert evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=TIMEOUT)) == (
        R.ROLLED_BACK
    )
    assert engine.rollout(rid).unconfirmed == tuple(_wave(engine, rid, 0))
    assert rollout_status(engine.deps, rid)["unconfirmed_rollback"] == _wave(engine, rid, 0)


def test_the_tick_times_out_overdue_devices_and_the_gate_counts_them(engine: Engine) -> None:
    """sent past the device timeout -> timed_out; a wave of timed-out devices passes
    unless timeouts fail (no re-sends: a silent device times out at the device timeout)."""
    rid = _running(engine, _spec(max_resends=0))
    engine.run_pushes()
    later = NOW + timedelta(seconds=TIMEOUT + 1)
    assert tick_rollouts(engine.deps, now=later) == {rid: R.RUNNING}
    assert engine.store.devices_in(rid, [D.TIMED_OUT]) == _wave(engine, rid, 0)
    assert engine.rollout(rid).waves[0].state is W.BAKING
    key = ("certfleet_device_transitions_total", (("to", "timed_out"),))
    assert engine.metrics.counters[key] == 2


def test_timeouts_fail_the_gate_when_the_policy_says_so(engine: Engine) -> None:
    """timeouts_fail: timed-out devices are failures and abort the rollout."""
    rid = _running(engine, _spec(timeouts_fail=True, max_failure=0.0, max_resends=0))
    engine.run_pushes()
    assert tick_rollouts(engine.deps, now=NOW + timedelta(seconds=TIMEOUT + 1)) == {
        rid: R.ROLLING_BACK
    }


def test_healthy_devices_get_their_commit_once_per_resend_period(engine: Engine) -> None:
    """Overlapping evaluations send one commit per healthy device per period, then again."""
    rid = _running(engine)
    engine.run_pushes()
    canary = _wave(engine, rid, 0)
    engine.report(rid, "health_ok", *canary)
    for seconds in (0, 1, COMMIT_RESEND_SECONDS - 1):
        evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=seconds))
    assert engine.tasks.pushes(PushStep.COMMIT) == [canary]
    evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=COMMIT_RESEND_SECONDS + 1))
    assert engine.tasks.pushes(PushStep.COMMIT) == [canary, canary]


def test_a_short_device_timeout_resends_the_commit_within_a_quarter_of_it(engine: Engine) -> None:
    """With a 40 s device timeout the commit goes again after 10 s, before commit_by."""
    rid = _running(engine, _spec(device_timeout_seconds=40))
    engine.run_pushes()
    canary = _wave(engine, rid, 0)
    engine.report(rid, "health_ok", *canary)
    evaluate_rollout(engine.deps, rid, now=NOW)
    evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=9))
    assert len(engine.tasks.pushes(PushStep.COMMIT)) == 1
    evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=11))
    assert len(engine.tasks.pushes(PushStep.COMMIT)) == 2


def test_a_commit_push_sends_the_first_stored_commit_again(engine: Engine) -> None:
    """A commit moves nobody; its bundle is stored once per device and re-sent as stored."""
    rid = _running(engine)
    engine.run_pushes()
    canary = _wave(engine, rid, 0)
    engine.report(rid, "health_ok", *canary)
    assert push_batch(engine.push, rid, canary, PushStep.COMMIT, now=NOW) == 2
    first = dict(engine.publisher.sent[-2:])
    assert push_batch(engine.push, rid, canary, PushStep.COMMIT, now=NOW) == 2
    assert dict(engine.publisher.sent[-2:]) == first
    assert engine.opened(canary[0], first[canary[0]]).op == "commit"
    assert engine.store.devices_in(rid, [D.HEALTH_OK]) == canary


def test_lost_pushes_are_dispatched_again_once_after_the_grace(engine: Engine) -> None:
    """Devices still pending a device timeout after their batch was due: one re-dispatch per
    grace period, however many evaluators run."""
    rid = _running(engine)  # dispatched at NOW, its pushes then lost: nobody moved
    dispatches = len(engine.tasks.named("dispatch_wave"))
    for seconds in (1, 60, TIMEOUT - 1):
        evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=seconds))
    assert len(engine.tasks.named("dispatch_wave")) == dispatches
    later = NOW + timedelta(seconds=TIMEOUT + 5)
    evaluate_rollout(engine.deps, rid, now=later)
    evaluate_rollout(engine.deps, rid, now=later)
    assert len(engine.tasks.named("dispatch_wave")) == dispatches + 1
    evaluate_rollout(engine.deps, rid, now=later + timedelta(seconds=TIMEOUT + 1))
    assert len(engine.tasks.named("dispatch_wave")) == dispatches + 2


def test_a_wave_with_nothing_pending_is_not_dispatched_again(engine: Engine) -> None:
    """Once every device of the wave was sent its bundle, no re-dispatch however late."""
    rid = _running(engine)
    engine.run_pushes()
    dispatches = len(engine.tasks.named("dispatch_wave"))
    evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=10 * TIMEOUT))
    assert len(engine.tasks.named("dispatch_wave")) == dispatches


def test_push_rate_spreads_the_batches_of_a_wave() -> None:
    """Batch n of a wave waits n * PUSH_BATCH_SIZE / push rate seconds; batches are full."""
    fleet = [f"big-{i:04d}" for i in range(2 * PUSH_BATCH_SIZE + 50)]
    inventory = FakeInventory()
    inventory.record_states(
        [
            DeviceState(
                device_id=d, reported_at=NOW, credentials=(credential(42),), active_tags=(42,)
            )
            for d in fleet
        ],
        received_at=NOW,
    )
    engine = Engine(
        FakeRollouts(), RecordingTasks(), inventory, FakePublisher(), FakeMetrics(), FakeSigner()
    )
    rid = _running(engine, _spec(waves=parse_waves("100%"), push_rate=50.0))
    pushes = engine.tasks.named("push_batch")
    assert [len(args[2]) for args in pushes] == [PUSH_BATCH_SIZE, PUSH_BATCH_SIZE, 50]  # type: ignore[arg-type]
    assert [args[4] for args in pushes] == [0, PUSH_BATCH_SIZE / 50, 2 * PUSH_BATCH_SIZE / 50]
    assert sorted(d for args in pushes for d in args[2]) == fleet  # type: ignore[attr-defined]
    assert engine.rollout(rid).waves[0].dispatched_until == NOW.timestamp() + 8.0


def test_an_ended_rollout_whose_worker_died_still_releases_its_claims(engine: Engine) -> None:
    """completed without finished_at (the worker died between the two): the next evaluation
    finishes it."""
    rid = _running(engine)
    assert engine.store.change(rid, Change(state=R.COMPLETED))
    assert engine.rollout(rid).finished_at is None
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.COMPLETED
    assert engine.rollout(rid).finished_at == NOW
    assert engine.store.claimed_by("dev-00") is None
    assert engine.store.log(rid)[-1]["cause"] == "claims released"


def test_status_counts_add_up_to_the_wave_sizes(engine: Engine) -> None:
    """The status document's per-wave counts sum to each wave's size."""
    rid = _running(engine)
    _decide(engine, rid, 0, failing=1)
    status = rollout_status(engine.deps, rid)
    assert [sum(w["counts"].values()) for w in status["waves"]] == [2, 3, 5]
    assert status["failed_devices"] == [
        {"device_id": _wave(engine, rid, 0)[0], "state": "health_failed"}
    ]
