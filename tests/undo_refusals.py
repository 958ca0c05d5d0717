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
from datetime import timedelta

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout_states import DeviceTransition, PushStep, RolloutState
from orchestrator.ports import InventoryStore, RolloutStore
from orchestrator.services.rollout import (
    RolloutDeps,
    abort_rollout,
    apply_reports,
    evaluate_rollout,
    rollout_status,
)
from tests.fake_rollouts import RecordingTasks
from tests.fakes import FakeInventory
from tests.report_binding import DEVICES, NOW, RID, SPEC, Bench, D, start_rollout
from tests.unit.builders import credential

__all__ = ["SCENARIOS", "UndoBench", "UndoScenario"]


@dataclass
class UndoBench(Bench):
    """The rollout of `Bench`, all devices committed, aborted, each sent its rollback bundle;
    with an inventory, which the rollback's evaluation reads."""

    inventory: InventoryStore = field(default_factory=FakeInventory)
    tasks: RecordingTasks = field(default_factory=RecordingTasks)

    @classmethod
    def given_with(cls, store: RolloutStore, inventory: InventoryStore) -> UndoBench:
        start_rollout(store)
        bench = cls(store=store, inventory=inventory)
        bench.push(PushStep.STAGE, *DEVICES)
        committed = [
            DeviceTransition(d, D.COMMITTED, frozenset({D.SENT}), "test: committed")
            for d in DEVICES
        ]
        assert all(r.applied for r in store.transition(RID, committed, now=NOW, actor="test"))
        assert abort_rollout(bench.deps, RID, cause="test", actor="op", now=NOW, wave=None)
        bench.push(PushStep.ROLLBACK, *DEVICES)
        assert store.devices_in(RID, [D.ROLLBACK_SENT]) == DEVICES
        return bench

    @property
    def deps(self) -> RolloutDeps:
        return RolloutDeps(
            store=self.store, inventory=self.inventory, tasks=self.tasks, metrics=self.metrics
        )

    def reply(
        self, device_id: str, phase: str, reason: str, *, seq: int | None = None, op: str = ""
    ) -> set[str]:
        """The device's report about its rollback bundle (or the given seq and op)."""
        rollback = self.last_sent(device_id, "rollback")
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
    assert bench.reply("a", "rejected", "nothing_to_undo") == {RID}
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
    bench.reply("b", "rejected", "superseded")
    for other in ("a", "c"):
        bench.reply(other, "rolled_back", "ok")
    assert bench.evaluate() == RolloutState.ROLLED_BACK.value
    assert bench.state("b") is D.UNDO_REFUSED
    status = rollout_status(bench.deps, RID)
    assert status["undo_refused"] == {"count": 1, "devices": ["b"]}
    assert status["totals"]["undo_refused"] == 1
    assert status["totals"]["rolled_back"] == 2


def a_device_without_a_reported_active_list_is_not_verified(bench: UndoBench) -> None:
    """An inventory that holds no active list for the device proves nothing: undo_refused."""
    bench.reply("c", "rejected", "nothing_to_undo")
    bench.evaluate()
    assert bench.state("c") is D.UNDO_REFUSED


def an_undo_refusal_must_answer_the_rollback_bundle(bench: UndoBench) -> None:
    """nothing_to_undo about the stage's seq, or with the stage op, moves nothing: the
    refusal is bound to the rollback bundle as every report is."""
    stage = bench.last_sent("a", "stage")
    bench.reply("a", "rejected", "nothing_to_undo", seq=stage.seq)
    bench.reply("a", "rejected", "nothing_to_undo", seq=stage.seq, op="stage")
    assert bench.state("a") is D.ROLLBACK_SENT


def another_rejection_of_the_rollback_is_no_undo_refusal(bench: UndoBench) -> None:
    """A rollback rejected for another reason (expired, unsafe_active) leaves the device
    rollback_sent: it is neither rolled back nor an undo refusal."""
    bench.reports_state("a", new_ca_in=None)
    bench.reply("a", "rejected", "bundle_expired")
    bench.reply("a", "rejected", "unsafe_active")
    bench.evaluate()
    assert bench.state("a") is D.ROLLBACK_SENT


def a_refusal_after_the_rollback_ended_is_still_checked(bench: UndoBench) -> None:
    """A device that answers nothing_to_undo after the rollback's deadline ended it is
    checked against its inventory too (the listener's evaluation of the ended rollout)."""
    late = NOW + timedelta(hours=1)
    assert evaluate_rollout(bench.deps, RID, now=late) == RolloutState.ROLLED_BACK.value
    bench.reports_state("a", new_ca_in=None)
    bench.reply("a", "rejected", "nothing_to_undo")
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
