"""Rollback answers that undo nothing: scenarios every `RolloutStore` and `InventoryStore`
must pass with the engine.

A `rejected` report with `nothing_to_undo` or `superseded` that answers the rollback
bundle moves its device to `undo_refused`, never to `rolled_back`; the rollback's
evaluation then counts it rolled back only if its inventory shows none of the
rollout's new CA in an active tag. Each scenario runs against the in-memory stores
(tests/unit/test_rollout_undo_refused.py) and against Redis
(tests/integration/test_redis_undo_refused.py), whose Lua script binds the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from orchestrator.domain.inventory import DeviceState
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
from orchestrator.ports import InventoryStore, RolloutStore
from orchestrator.protocol.bundle import Bundle, decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.rollout import (
    PushDeps,
    RolloutDeps,
    abort_rollout,
    apply_reports,
    evaluate_rollout,
    push_batch,
    rollout_status,
)
from simulator.pki import make_ca
from tests.fake_rollouts import (
    FakeMetrics,
    FakePublisher,
    FakeSequences,
    FakeSigner,
    RecordingTasks,
)
from tests.unit.builders import credential

__all__ = ["SCENARIOS", "UndoBench", "UndoScenario"]

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=99))
RID = "ro-undo"
DEVICES = ["a", "b", "c"]
D = DeviceRolloutState
SPEC = RolloutSpec(
    kind="trust.add",
    ca_pems=(CA.pem.decode(),),
    tag=42,
    spare_tag=43,
    probe_host="probe.invalid",
    probe_port=8443,
    waves=parse_waves("100%"),
)


@dataclass
class UndoBench:
    """A rollout of `DEVICES`, all committed, aborted, each sent its rollback bundle."""

    store: RolloutStore
    inventory: InventoryStore
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    sequences: FakeSequences = field(default_factory=FakeSequences)
    signer: FakeSigner = field(default_factory=FakeSigner)
    tasks: RecordingTasks = field(default_factory=RecordingTasks)

    @classmethod
    def given(cls, store: RolloutStore, inventory: InventoryStore) -> UndoBench:
        store.create(
            Rollout.planned(RID, SPEC, seed="test", sizes=[len(DEVICES)], now=NOW),
            waves=[DEVICES],
            active={d: [42] for d in DEVICES},
            actor="test",
        )
        assert store.change(RID, Change(state=RolloutState.RUNNING))
        bench = cls(store, inventory)
        bench.push(PushStep.STAGE)
        committed = [
            DeviceTransition(d, D.COMMITTED, frozenset({D.SENT}), "test: committed")
            for d in DEVICES
        ]
        assert all(r.applied for r in store.transition(RID, committed, now=NOW, actor="test"))
        assert abort_rollout(bench.deps, RID, cause="test", actor="op", now=NOW, wave=None)
        bench.push(PushStep.ROLLBACK)
        assert store.devices_in(RID, [D.ROLLBACK_SENT]) == DEVICES
        return bench

    @property
    def deps(self) -> RolloutDeps:
        return RolloutDeps(
            store=self.store, inventory=self.inventory, tasks=self.tasks, metrics=self.metrics
        )

    def push(self, step: PushStep) -> None:
        """Issue and publish `step`'s bundles to every device, as a push_batch task does."""
        deps = PushDeps(
            store=self.store,
            signer=self.signer,
            sequences=self.sequences,
            publisher=self.publisher,
            metrics=self.metrics,
        )
        push_batch(deps, RID, DEVICES, step, now=NOW)

    def sent(self, device_id: str, op: str) -> Bundle:
        """The last `op` bundle published to the device."""
        bundles = [
            decode_payload(Sign1Message.decode(data).payload)
            for to, data in self.publisher.sent
            if to == device_id
        ]
        return [b for b in bundles if b.op == op][-1]

    def answer(
        self, device_id: str, phase: str, reason: str, *, seq: int | None = None, op: str = ""
    ) -> set[str]:
        """The device's report about its rollback bundle (or the given seq and op)."""
        rollback = self.sent(device_id, "rollback")
        report = DeviceReport(
            device_id=device_id,
            rollout_id=RID,
            seq=rollback.seq if seq is None else seq,
            op=op or rollback.op,
            phase=phase,
            reason=reason,
            detail="",
            time=NOW,
        )
        return apply_reports(self.deps, [report], now=NOW)

    def reports_state(self, device_id: str, *, new_ca_in: int | None) -> None:
        """The device's state: CA1 in 42, and the rollout's new CA in `new_ca_in` if given."""
        items = [credential(42)]
        active = [42]
        if new_ca_in is not None:
            items.append(credential(new_ca_in, sha256=SPEC.new_ca_digest))
            active.append(new_ca_in)
        state = DeviceState(
            device_id=device_id,
            reported_at=NOW + timedelta(seconds=1),
            credentials=tuple(items),
            active_tags=tuple(active),
        )
        assert self.inventory.record_states([state], received_at=NOW) == 1

    def state(self, device_id: str) -> DeviceRolloutState:
        return self.store.device_states(RID, [device_id])[device_id]

    def evaluate(self) -> str:
        return evaluate_rollout(self.deps, RID, now=NOW + timedelta(seconds=5))

    def causes(self, device_id: str) -> list[str]:
        """The audit log's causes of the device's moves, in order."""
        return [e["cause"] for e in self.store.log(RID) if e.get("subject") == device_id]


UndoScenario = Callable[[UndoBench], None]


def a_refused_undo_whose_inventory_shows_no_new_ca_counts_as_rolled_back(bench: UndoBench) -> None:
    """nothing_to_undo, and no active tag holds the new CA: undo_refused, then rolled_back
    "verified by inventory", both in the audit log."""
    bench.reports_state("a", new_ca_in=None)
    assert bench.answer("a", "rejected", "nothing_to_undo") == {RID}
    assert bench.state("a") is D.UNDO_REFUSED
    bench.evaluate()
    assert bench.state("a") is D.ROLLED_BACK
    first, second = bench.causes("a")[-2:]
    assert "rejected/nothing_to_undo" in first
    assert "not a confirmed undo" in first
    assert second.startswith("rolled back, verified by inventory")
    assert rollout_status(bench.deps, RID)["undo_refused"] == {"count": 0, "devices": []}


def a_superseded_device_still_trusting_the_new_ca_stays_undo_refused(bench: UndoBench) -> None:
    """superseded, and the new CA is still in an active tag: the device stays undo_refused and
    status lists it; the rollout does not wait for it."""
    bench.reports_state("b", new_ca_in=43)
    bench.answer("b", "rejected", "superseded")
    for other in ("a", "c"):
        bench.answer(other, "rolled_back", "ok")
    assert bench.evaluate() == RolloutState.ROLLED_BACK.value
    assert bench.state("b") is D.UNDO_REFUSED
    status = rollout_status(bench.deps, RID)
    assert status["undo_refused"] == {"count": 1, "devices": ["b"]}
    assert status["totals"]["undo_refused"] == 1
    assert status["totals"]["rolled_back"] == 2


def a_device_without_a_reported_active_list_is_not_verified(bench: UndoBench) -> None:
    """An inventory that holds no active list for the device proves nothing: undo_refused."""
    bench.answer("c", "rejected", "nothing_to_undo")
    bench.evaluate()
    assert bench.state("c") is D.UNDO_REFUSED


def an_undo_refusal_must_answer_the_rollback_bundle(bench: UndoBench) -> None:
    """nothing_to_undo about the stage's seq, or with the stage op, moves nothing: the
    refusal is bound to the rollback bundle as every report is."""
    stage = bench.sent("a", "stage")
    bench.answer("a", "rejected", "nothing_to_undo", seq=stage.seq)
    bench.answer("a", "rejected", "nothing_to_undo", seq=stage.seq, op="stage")
    assert bench.state("a") is D.ROLLBACK_SENT


def another_rejection_of_the_rollback_is_no_undo_refusal(bench: UndoBench) -> None:
    """A rollback rejected for another reason (expired, unsafe_active) leaves the device
    rollback_sent: it is neither rolled back nor an undo refusal."""
    bench.reports_state("a", new_ca_in=None)
    bench.answer("a", "rejected", "bundle_expired")
    bench.answer("a", "rejected", "unsafe_active")
    bench.evaluate()
    assert bench.state("a") is D.ROLLBACK_SENT


def a_refusal_after_the_rollback_ended_is_still_checked(bench: UndoBench) -> None:
    """A device that answers nothing_to_undo after the rollback's deadline ended it is
    checked against its inventory too (the listener's evaluation of the ended rollout)."""
    late = NOW + timedelta(hours=1)
    assert evaluate_rollout(bench.deps, RID, now=late) == RolloutState.ROLLED_BACK.value
    bench.reports_state("a", new_ca_in=None)
    bench.answer("a", "rejected", "nothing_to_undo")
    assert bench.state("a") is D.UNDO_REFUSED
    assert evaluate_rollout(bench.deps, RID, now=late) == RolloutState.ROLLED_BACK.value
    assert bench.state("a") is D.ROLLED_BACK


SCENARIOS: tuple[UndoScenario, ...] = (
    a_refused_undo_whose_inventory_shows_no_new_ca_counts_as_rolled_back,
    a_superseded_device_still_trusting_the_new_ca_stays_undo_refused,
    a_device_without_a_reported_active_list_is_not_verified,
    an_undo_refusal_must_answer_the_rollback_bundle,
    another_rejection_of_the_rollback_is_no_undo_refusal,
    a_refusal_after_the_rollback_ended_is_still_checked,
)
