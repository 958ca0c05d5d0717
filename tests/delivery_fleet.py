"""A rollout's engine over in-memory ports (or a real store): the harness of the
confirmed-delivery tests (tests/unit/test_confirmed_delivery.py and, against Redis,
tests/integration/test_confirmed_delivery_redis.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_states import DeviceRolloutState, PushStep, RolloutState
from orchestrator.ports import RolloutStore
from orchestrator.protocol.bundle import Bundle, open_bundle
from orchestrator.services.rollout import (
    PushDeps,
    RolloutDeps,
    apply_reports,
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    push_batch,
    start_rollout,
    tick_rollouts,
)
from tests.fake_rollouts import (
    DEVICE_TIMEOUT,
    NEW_ROOT,
    FakeMetrics,
    FakePublisher,
    FakeRollouts,
    FakeSequences,
    FakeSigner,
    PublishFailedError,
    RecordingTasks,
    trust_add_spec,
)
from tests.fakes import FakeInventory
from tests.unit.builders import NOW, credential

__all__ = ["CA", "DEVICES", "NOW", "RESEND", "SCENARIOS", "TIMEOUT", "Fleet", "Scenario", "spec"]

D = DeviceRolloutState
R = RolloutState
CA = NEW_ROOT
DEVICES = ["d1", "d2", "d3", "d4"]
TIMEOUT = DEVICE_TIMEOUT
RESEND = 100.0


def spec(**overrides: object) -> RolloutSpec:
    """The delivery scenarios' rollout: re-sends every `RESEND` seconds, at most twice."""
    return trust_add_spec(
        **{"max_failure": 0.5, "resend_after_seconds": RESEND, "max_resends": 2, **overrides}
    )


@dataclass
class Fleet:
    """One rollout's engine over in-memory ports, its single wave dispatched."""

    store: RolloutStore = field(default_factory=FakeRollouts)
    tasks: RecordingTasks = field(default_factory=RecordingTasks)
    inventory: FakeInventory = field(default_factory=FakeInventory)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    sequences: FakeSequences = field(default_factory=FakeSequences)
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    signer: FakeSigner = field(default_factory=FakeSigner)
    rid: str = ""

    @property
    def deps(self) -> RolloutDeps:
        return RolloutDeps(
            store=self.store, inventory=self.inventory, tasks=self.tasks, metrics=self.metrics
        )

    @property
    def push(self) -> PushDeps:
        return PushDeps(
            store=self.store,
            signer=self.signer,
            sequences=self.sequences,
            publisher=self.publisher,
            metrics=self.metrics,
        )

    def start(self, spec: RolloutSpec) -> None:
        self.inventory.record_states(
            [
                DeviceState(
                    device_id=d, reported_at=NOW, credentials=(credential(42),), active_tags=(42,)
                )
                for d in DEVICES
            ],
            received_at=NOW,
        )
        self.rid = create_rollout(self.deps, spec, now=NOW, actor="test", start=True)
        start_rollout(self.deps, self.rid, now=NOW, actor="test")
        evaluate_rollout(self.deps, self.rid, now=NOW)
        dispatch_wave(self.deps, self.rid, 0, now=NOW)

    def run_pushes(self, now: datetime) -> int:
        """Carry out every push_batch enqueued so far, as a worker would."""
        sent = 0
        for rid, _, ids, step, _ in self.tasks.named("push_batch"):
            sent += push_batch(self.push, rid, ids, step, now=now)  # type: ignore[arg-type]
        self.tasks.calls = [c for c in self.tasks.calls if c[0] != "push_batch"]
        return sent

    def state(self, device_id: str) -> DeviceRolloutState:
        return self.store.device_states(self.rid, [device_id])[device_id]

    def sent_to(self, device_id: str) -> list[bytes]:
        return [data for d, data in self.publisher.sent if d == device_id]

    def opened(self, device_id: str, data: bytes, now: datetime) -> Bundle:
        """The bundle as the device checks it (signature, device, sequence, expiry)."""
        return open_bundle(
            data,
            signers={self.signer.key_id: self.signer.public_key},
            device_id=device_id,
            last_seq=0,
            now=now,
        )

    def report(self, device_id: str, phase: str, bundle: Bundle, now: datetime) -> set[str]:
        return apply_reports(
            self.deps,
            [
                DeviceReport(
                    device_id=device_id,
                    rollout_id=self.rid,
                    seq=bundle.seq,
                    op=bundle.op,
                    phase=phase,
                    reason="ok",
                    detail="",
                    time=now,
                )
            ],
            now=now,
        )

    def commit(self, device_id: str, at: datetime) -> None:
        """The device answers its last stage through health_ok, then commits when told to."""
        stage = self.opened(device_id, self.sent_to(device_id)[-1], at)
        for phase in ("received", "staged", "health_ok"):
            self.report(device_id, phase, stage, at)
        evaluate_rollout(self.deps, self.rid, now=at)
        self.run_pushes(at)
        commit = self.opened(device_id, self.sent_to(device_id)[-1], at)
        self.report(device_id, "committed", commit, at)

    def tick(self, at: datetime) -> None:
        """A beat tick at `at`, and the push batches it enqueued carried out then."""
        tick_rollouts(self.deps, now=at)
        self.run_pushes(at)


def a_worker_killed_between_store_and_publish_leaves_devices_pending(
    fleet: Fleet,
) -> None:
    """Only acknowledged devices are `sent`; a re-run sends the stored bytes and moves the rest."""
    # given a rollout whose push fails after the broker acknowledged two bundles
    fleet.start(spec())
    fleet.publisher.ack_run = 1
    fleet.publisher.fail_after = 2
    # when the batch runs
    with pytest.raises(PublishFailedError):
        fleet.run_pushes(NOW)
    # then the two acknowledged devices are sent, the rest pending with a bundle stored
    states = fleet.store.device_states(fleet.rid)
    assert sorted(d for d, s in states.items() if s is D.SENT) == ["d1", "d2"]
    assert sorted(d for d, s in states.items() if s is D.PENDING) == ["d3", "d4"]
    stored = fleet.store.bundles(fleet.rid, ["d3", "d4"], PushStep.STAGE)
    assert set(stored) == {"d3", "d4"}
    # when the task is retried with the broker back
    fleet.publisher.fail_after = None
    fleet.tasks.calls = [c for c in fleet.tasks.calls if c[0] != "push_batch"]
    push_batch(fleet.push, fleet.rid, DEVICES, PushStep.STAGE, now=NOW)
    # then the pending devices got the very bytes stored, once per device, and are sent
    assert fleet.sent_to("d3") == [stored["d3"]]
    assert fleet.sent_to("d4") == [stored["d4"]]
    assert all(fleet.state(d) is D.SENT for d in DEVICES)
    assert [fleet.store.send_counts(fleet.rid, [d], PushStep.STAGE)[d] for d in DEVICES] == [
        1,
        1,
        1,
        1,
    ]


def a_batch_whose_publish_fails_before_any_ack_moves_nobody(fleet: Fleet) -> None:
    """A broker that acknowledges nothing leaves every device pending, none assumed sent."""
    # given a broker that fails the first publish
    fleet.start(spec())
    fleet.publisher.fail_after = 0
    # when the batch runs
    with pytest.raises(PublishFailedError):
        fleet.run_pushes(NOW)
    # then nobody is sent, and nobody has a deadline to time out by
    assert all(fleet.state(d) is D.PENDING for d in DEVICES)
    assert fleet.store.overdue(fleet.rid, (NOW + timedelta(days=1)).timestamp()) == []


def a_silent_device_is_re_sent_a_fresh_stage_max_resends_times_then_times_out(fleet: Fleet) -> None:
    """Each re-send is a new bundle (new seq, new expiry) of the stage; then `timed_out`."""
    # given a device that never answers its stage
    fleet.start(spec())
    fleet.run_pushes(NOW)
    [first] = fleet.sent_to("d1")
    # when the tick runs at each re-send time, then at the device timeout after the last
    second_at = NOW + timedelta(seconds=RESEND)
    third_at = second_at + timedelta(seconds=RESEND)
    fleet.tick(NOW + timedelta(seconds=RESEND - 1))
    early = fleet.sent_to("d1")
    fleet.tick(second_at)
    fleet.tick(third_at)
    fleet.tick(third_at + timedelta(seconds=TIMEOUT - 1))
    state_before_timeout = fleet.state("d1")
    fleet.tick(third_at + timedelta(seconds=TIMEOUT))
    # then nothing went before the re-send time, two fresh stages went, then it timed out
    assert early == [first]
    sent = fleet.sent_to("d1")
    opened = [
        fleet.opened("d1", data, at)
        for data, at in zip(sent, [NOW, second_at, third_at], strict=True)
    ]
    assert [b.op for b in opened] == ["stage", "stage", "stage"]
    assert len({b.seq for b in opened}) == 3
    assert opened[0].expires_at < opened[1].expires_at < opened[2].expires_at
    assert fleet.store.send_counts(fleet.rid, ["d1"], PushStep.STAGE) == {"d1": 3}
    assert state_before_timeout is D.SENT
    assert fleet.state("d1") is D.TIMED_OUT


def a_report_answering_an_earlier_re_sent_bundle_still_applies(fleet: Fleet) -> None:
    """The device may answer the first bundle after it was re-sent: that answer counts."""
    # given a device that was re-sent its stage once
    fleet.start(spec())
    fleet.run_pushes(NOW)
    later = NOW + timedelta(seconds=RESEND)
    fleet.tick(later)
    first, resent = fleet.sent_to("d1")
    # when it reports `received` about the first bundle
    moved = fleet.report("d1", "received", fleet.opened("d1", first, NOW), later)
    # then the report moves it, and no further re-send goes to it
    assert moved == {fleet.rid}
    assert fleet.state("d1") is D.RECEIVED
    fleet.tick(later + timedelta(seconds=RESEND))
    assert fleet.sent_to("d1") == [first, resent]


def a_device_that_answered_before_its_re_send_time_times_out_later(
    fleet: Fleet,
) -> None:
    """A device stuck after `received` gets no re-send; it times out a device timeout after."""
    # given a device that reported `received` and then nothing
    fleet.start(spec())
    fleet.run_pushes(NOW)
    [first] = fleet.sent_to("d1")
    fleet.report("d1", "received", fleet.opened("d1", first, NOW), NOW)
    # when the tick runs at the re-send time, just before the timeout, and at it
    fleet.tick(NOW + timedelta(seconds=RESEND))
    fleet.tick(NOW + timedelta(seconds=TIMEOUT - 1))
    before = fleet.state("d1")
    fleet.tick(NOW + timedelta(seconds=TIMEOUT))
    # then it got no second bundle and timed out only at the device timeout
    assert fleet.sent_to("d1") == [first]
    assert (before, fleet.state("d1")) == (D.RECEIVED, D.TIMED_OUT)


def without_re_sends_a_silent_device_times_out_at_the_device_timeout(fleet: Fleet) -> None:
    """max_resends 0 keeps the old rule: one bundle, `timed_out` a device timeout later."""
    # given a rollout that never re-sends
    fleet.start(spec(max_resends=0))
    fleet.run_pushes(NOW)
    # when the tick runs before and at the device timeout
    fleet.tick(NOW + timedelta(seconds=TIMEOUT - 1))
    before = fleet.state("d1")
    fleet.tick(NOW + timedelta(seconds=TIMEOUT))
    # then one bundle went, and it timed out at the device timeout
    assert len(fleet.sent_to("d1")) == 1
    assert (before, fleet.state("d1")) == (D.SENT, D.TIMED_OUT)


def a_rollout_with_a_timed_out_device_ends_completed_with_timeouts(fleet: Fleet) -> None:
    """Every wave passed but a device never confirmed: completed_with_timeouts, claims released."""
    # given a rollout where three devices commit and one never answers
    fleet.start(spec(max_resends=0))
    fleet.run_pushes(NOW)
    for device in DEVICES[:3]:
        fleet.commit(device, NOW)
    # when the silent device times out, the gate passes the wave and its bake ends
    later = NOW + timedelta(seconds=TIMEOUT)
    fleet.tick(later)
    fleet.tick(later + timedelta(seconds=1))
    # then the rollout says some devices did not confirm, names them, and has ended
    rollout = fleet.store.get(fleet.rid)
    assert rollout is not None
    assert rollout.state is R.COMPLETED_WITH_TIMEOUTS
    assert rollout.unconfirmed == ("d4",)
    assert rollout.ended
    assert rollout.finished_at is not None
    fleet.tick(later + timedelta(seconds=2))  # the next tick reads it finished
    assert fleet.rid not in fleet.store.active_ids()
    assert fleet.store.claim("ro-next", [42, 43], DEVICES) == [], "claims released"
    log = fleet.store.log(fleet.rid)
    assert any(e["to"] == "completed_with_timeouts" and "1 devices" in e["cause"] for e in log)


def a_rollout_whose_devices_all_committed_ends_completed(fleet: Fleet) -> None:
    """Every device committed: plain `completed`, nothing unconfirmed."""
    # given a rollout where every device commits
    fleet.start(spec())
    fleet.run_pushes(NOW)
    for device in DEVICES:
        fleet.commit(device, NOW)
    # when the gate passes the wave and its bake ends
    fleet.tick(NOW + timedelta(seconds=1))
    fleet.tick(NOW + timedelta(seconds=2))
    # then it is completed
    rollout = fleet.store.get(fleet.rid)
    assert rollout is not None
    assert (rollout.state, rollout.unconfirmed) == (R.COMPLETED, None)


def a_device_that_answered_before_its_ack_was_recorded_still_times_out(fleet: Fleet) -> None:
    """A report that beats the acknowledgement (the worker died) still gives a deadline."""
    # given a push whose worker died before it recorded any acknowledgement
    fleet.start(spec())
    fleet.publisher.fail_after = 0
    with pytest.raises(PublishFailedError):
        fleet.run_pushes(NOW)
    fleet.tasks.calls = [c for c in fleet.tasks.calls if c[0] != "push_batch"]  # task lost
    stored = fleet.store.bundles(fleet.rid, ["d1"], PushStep.STAGE)["d1"]
    # when the device, which got its bundle all the same, reports `received` and then nothing
    fleet.report("d1", "received", fleet.opened("d1", stored, NOW), NOW)
    fleet.tick(NOW + timedelta(seconds=TIMEOUT - 1))
    before = fleet.state("d1")
    fleet.tick(NOW + timedelta(seconds=TIMEOUT))
    # then it times out a device timeout after its answer, like any device that went silent
    assert (before, fleet.state("d1")) == (D.RECEIVED, D.TIMED_OUT)


Scenario = Callable[[Fleet], None]
SCENARIOS: list[Scenario] = [
    a_worker_killed_between_store_and_publish_leaves_devices_pending,
    a_batch_whose_publish_fails_before_any_ack_moves_nobody,
    a_silent_device_is_re_sent_a_fresh_stage_max_resends_times_then_times_out,
    a_report_answering_an_earlier_re_sent_bundle_still_applies,
    a_device_that_answered_before_its_re_send_time_times_out_later,
    without_re_sends_a_silent_device_times_out_at_the_device_timeout,
    a_rollout_with_a_timed_out_device_ends_completed_with_timeouts,
    a_rollout_whose_devices_all_committed_ends_completed,
    a_device_that_answered_before_its_ack_was_recorded_still_times_out,
]
