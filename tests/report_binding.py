"""Reports bound to bundles: scenarios every `RolloutStore` must pass with the engine.

A report moves its device only if its (rollout, seq, op) answers a bundle certfleet
issued to that device for that step. Each scenario runs against the in-memory store
(tests/unit/test_report_binding.py) and against Redis, whose Lua script decides
(tests/integration/test_report_binding_redis.py), so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
)
from orchestrator.ports import RolloutStore
from orchestrator.protocol.bundle import Bundle, decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.rollout import PushDeps, RolloutDeps, apply_reports, push_batch
from simulator.pki import make_ca
from tests.fake_rollouts import (
    FakeMetrics,
    FakePublisher,
    FakeSequences,
    FakeSigner,
    RecordingTasks,
)
from tests.fakes import FakeInventory

__all__ = ["SCENARIOS", "SPEC", "Bench", "Scenario", "start_rollout"]

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=99))
RID = "ro-bound"
DEVICES = ["a", "b", "c"]
D = DeviceRolloutState
UNMATCHED = "certfleet_reports_unmatched_total"
SPEC = RolloutSpec(
    kind="trust.add",
    ca_pems=(CA.pem.decode(),),
    tag=42,
    spare_tag=43,
    probe_host="probe.invalid",
    probe_port=8443,
    waves=parse_waves("100%"),
)


def start_rollout(store: RolloutStore) -> None:
    """`RID` created in `store` for `DEVICES` (one wave, all on tag 42) and running."""
    store.create(
        Rollout.planned(RID, SPEC, seed="test", sizes=[len(DEVICES)], now=NOW),
        waves=[DEVICES],
        active={d: [42] for d in DEVICES},
        actor="test",
    )
    assert store.change(RID, Change(state=RolloutState.RUNNING))


@dataclass
class Bench:
    """A running rollout of `DEVICES` (all pending) in `store`, with in-memory other ports."""

    store: RolloutStore
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    sequences: FakeSequences = field(default_factory=FakeSequences)
    signer: FakeSigner = field(default_factory=FakeSigner)

    @classmethod
    def given(cls, store: RolloutStore) -> Bench:
        start_rollout(store)
        return cls(store)

    def push(self, step: PushStep, *devices: str) -> None:
        """Issue and publish `step`'s bundles to `devices`, as a push_batch task does."""
        deps = PushDeps(
            store=self.store,
            signer=self.signer,
            sequences=self.sequences,
            publisher=self.publisher,
            metrics=self.metrics,
        )
        push_batch(deps, RID, list(devices), step, now=NOW)

    def sent(self, device_id: str) -> list[Bundle]:
        """The bundles published to the device, in order."""
        return [
            decode_payload(Sign1Message.decode(data).payload)
            for to, data in self.publisher.sent
            if to == device_id
        ]

    def last_sent(self, device_id: str, op: str) -> Bundle:
        """The last `op` bundle published to the device."""
        return [b for b in self.sent(device_id) if b.op == op][-1]

    def report(
        self,
        device_id: str,
        phase: str,
        *,
        seq: int,
        op: str | None,
        reason: str = "ok",
        rollout_id: str = RID,
    ) -> set[str]:
        """The device's report, applied as the listener applies a batch."""
        deps = RolloutDeps(
            store=self.store,
            inventory=FakeInventory(),
            tasks=RecordingTasks(),
            metrics=self.metrics,
        )
        report = DeviceReport(
            device_id=device_id,
            rollout_id=rollout_id,
            seq=seq,
            op=op,
            phase=phase,
            reason=reason,
            detail="",
            time=NOW,
        )
        return apply_reports(deps, [report], now=NOW)

    def answer(self, device_id: str, phase: str, bundle: Bundle) -> set[str]:
        """The device's `phase` report about `bundle`, as a true device sends it."""
        return self.report(device_id, phase, seq=bundle.seq, op=bundle.op)

    def state(self, device_id: str) -> DeviceRolloutState:
        return self.store.device_states(RID, [device_id])[device_id]

    def unmatched(self) -> dict[str, float]:
        """`certfleet_reports_unmatched_total` by reason."""
        return {
            dict(labels)["reason"]: n
            for (name, labels), n in self.metrics.counters.items()
            if name == UNMATCHED
        }


def a_forged_committed_report_for_a_pending_device_changes_nothing(bench: Bench) -> None:
    """A `committed` report naming the rollout, for a device sent nothing, moves nothing."""
    # given a pending device, and the audit log as it stands
    before = bench.store.log(RID)
    # when it reports committed, as if it had been sent a commit
    with capture_logs() as logs:
        moved = bench.report("a", "committed", seq=1, op="commit")
    # then nothing moved, nothing was logged to the audit trail, the report counted unmatched
    assert moved == set()
    assert bench.state("a") is D.PENDING
    assert bench.store.log(RID) == before
    assert bench.unmatched() == {"no_bundle": 1}
    [event] = [e for e in logs if e["event"] == "report_unmatched"]
    assert {k: event[k] for k in ("device_id", "rollout_id", "seq", "op", "phase", "reason")} == {
        "device_id": "a",
        "rollout_id": RID,
        "seq": 1,
        "op": "commit",
        "phase": "committed",
        "reason": "no_bundle",
    }


def a_report_with_the_right_rollout_and_op_but_another_seq_changes_nothing(bench: Bench) -> None:
    """A report of the stage op with a seq never issued to the device does not move it."""
    # given a device sent its stage bundle
    bench.push(PushStep.STAGE, "a")
    [stage] = bench.sent("a")
    # when it reports about another seq, then about the one it was sent
    forged = bench.report("a", "received", seq=stage.seq + 1, op="stage")
    state_after_forged = bench.state("a")
    true = bench.answer("a", "received", stage)
    # then only the true report moved it
    assert (forged, state_after_forged) == (set(), D.SENT)
    assert (true, bench.state("a")) == ({RID}, D.RECEIVED)
    assert bench.unmatched() == {"seq": 1}


def a_phase_the_answered_op_cannot_produce_changes_nothing(bench: Bench) -> None:
    """`committed` about the stage bundle, or about a commit never sent, does not commit."""
    # given a healthy device whose commit was not sent yet
    bench.push(PushStep.STAGE, "a")
    [stage] = bench.sent("a")
    assert bench.answer("a", "health_ok", stage) == {RID}
    # when it claims a commit: with the stage's op, then with the commit op and the stage's seq
    bench.report("a", "committed", seq=stage.seq, op="stage")
    bench.report("a", "committed", seq=stage.seq, op="commit")
    # then it stays healthy, and both are counted unmatched
    assert bench.state("a") is D.HEALTH_OK
    assert bench.unmatched() == {"op": 1, "no_bundle": 1}


def a_report_for_an_earlier_resent_seq_of_the_same_step_still_applies(bench: Bench) -> None:
    """After a re-send with a fresh seq, a late report about the first bundle still counts."""
    # given a device sent its stage, then sent it again with a fresh seq (a re-send)
    bench.push(PushStep.STAGE, "a")
    [stage] = bench.sent("a")
    fresh = bench.sequences.next_sequence("a")
    [resent] = bench.store.transition(
        RID,
        [
            DeviceTransition(
                "a",
                D.SENT,
                frozenset({D.SENT}),
                "stage bundle re-sent",
                step=PushStep.STAGE,
                bundle=b"the re-sent bundle",
                seq=fresh,
            )
        ],
        now=NOW,
        actor="test",
    )
    assert resent.applied
    # when the device reports about the first bundle, then about the re-sent one
    late = bench.answer("a", "staged", stage)
    state_after_late = bench.state("a")
    newer = bench.report("a", "health_ok", seq=fresh, op="stage")
    # then both apply
    assert (late, state_after_late) == ({RID}, D.STAGED)
    assert (newer, bench.state("a")) == ({RID}, D.HEALTH_OK)
    assert bench.unmatched() == {}


def a_rejection_naming_the_rollout_from_an_unverified_bundle_changes_nothing(
    bench: Bench,
) -> None:
    """A stranger's bundle naming the rollout cannot knock a device out of it."""
    # given a pending device and one sent its stage bundle
    bench.push(PushStep.STAGE, "b")
    [stage] = bench.sent("b")
    # when each rejects a forged bundle that carried the rollout id and a seq of its own
    for device in ("a", "b"):
        bench.report(device, "rejected", seq=9000, op="stage", reason="bad_signature")
    # then neither moved; each rejection is counted unmatched
    assert (bench.state("a"), bench.state("b")) == (D.PENDING, D.SENT)
    assert bench.unmatched() == {"no_bundle": 1, "seq": 1}
    # and a rejection of the bundle it was sent does move it
    assert bench.report("b", "rejected", seq=stage.seq, op="stage", reason="tag_in_use") == {RID}
    assert bench.state("b") is D.REJECTED


def the_commit_and_rollback_bundles_match_by_their_own_seqs(bench: Bench) -> None:
    """A commit and a rollback are matched by the seq stored with them; a dropped one's is not."""
    # given a healthy device sent its commit, and a second commit bundle dropped as not first
    bench.push(PushStep.STAGE, "a")
    [stage] = bench.sent("a")
    bench.answer("a", "health_ok", stage)
    bench.push(PushStep.COMMIT, "a")
    commit = bench.sent("a")[-1]
    dropped = bench.sequences.next_sequence("a")
    bench.store.put_bundles_if_absent(RID, PushStep.COMMIT, {"a": b"later"}, seqs={"a": dropped})
    # when it reports committed about the dropped bundle, then about the one it was sent
    bench.report("a", "committed", seq=dropped, op="commit")
    state_after_dropped = bench.state("a")
    bench.answer("a", "committed", commit)
    # then only the one sent commits it
    assert (commit.op, state_after_dropped, bench.state("a")) == (
        "commit",
        D.HEALTH_OK,
        D.COMMITTED,
    )
    # and a rollback's report matches the rollback bundle's seq
    assert bench.store.change(RID, Change(state=RolloutState.ROLLING_BACK))
    bench.push(PushStep.ROLLBACK, "a")
    rollback = bench.sent("a")[-1]
    assert bench.report("a", "rolled_back", seq=commit.seq, op="rollback") == set()
    assert bench.answer("a", "rolled_back", rollback) == {RID}
    assert bench.state("a") is D.ROLLED_BACK
    assert bench.unmatched() == {"seq": 2}


def reports_about_no_rollout_or_no_step_are_counted_and_replays_ignored(bench: Bench) -> None:
    """An unknown rollout, a missing or foreign op: unmatched; a replay rejection: neither."""
    # given a device sent its stage bundle
    bench.push(PushStep.STAGE, "a")
    [stage] = bench.sent("a")
    # when it reports about another rollout, without an op, with trust-signer, and a replay
    bench.report("a", "received", seq=stage.seq, op="stage", rollout_id="ro-none")
    bench.report("a", "received", seq=stage.seq, op=None)
    bench.report("a", "committed", seq=stage.seq, op="trust-signer")
    bench.report("a", "rejected", seq=stage.seq, op="stage", reason="replay")
    # then it did not move, and each but the replay is counted by its reason
    assert bench.state("a") is D.SENT
    assert bench.unmatched() == {"unknown_rollout": 1, "op": 2}


Scenario = Callable[[Bench], None]
SCENARIOS: list[Scenario] = [
    a_forged_committed_report_for_a_pending_device_changes_nothing,
    a_report_with_the_right_rollout_and_op_but_another_seq_changes_nothing,
    a_phase_the_answered_op_cannot_produce_changes_nothing,
    a_report_for_an_earlier_resent_seq_of_the_same_step_still_applies,
    a_rejection_naming_the_rollout_from_an_unverified_bundle_changes_nothing,
    the_commit_and_rollback_bundles_match_by_their_own_seqs,
    reports_about_no_rollout_or_no_step_are_counted_and_replays_ignored,
]
"""Every scenario; each must hold against any `RolloutStore`."""
