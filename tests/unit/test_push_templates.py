"""push_batch makes a batch's bundles from shared templates: each device still gets the
bundle its own active tags, protocol version, id and seq call for."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
    WaveState,
)
from orchestrator.services.rollout import create_rollout, push_batch
from tests.fake_rollouts import (
    FakeMetrics,
    FakePublisher,
    FakeRollouts,
    FakeSigner,
    RecordingTasks,
    trust_add_spec,
)
from tests.fakes import FakeInventory
from tests.rollout_rig import Engine
from tests.unit.builders import NOW, credential

pytestmark = pytest.mark.unit

ACTIVE = {f"dev-{i:02d}": ((42,), (42, 44), (44, 42))[i % 3] for i in range(12)}
"""Three kinds of active lists among the devices, interleaved in the batch."""
VERSION = {device: 1 + i % 2 for i, device in enumerate(ACTIVE)}


def _engine() -> Engine:
    inventory = FakeInventory()
    inventory.record_states(
        [
            DeviceState(
                device_id=d,
                reported_at=NOW,
                credentials=tuple(credential(t) for t in sorted(ACTIVE[d])),
                active_tags=ACTIVE[d],
                protocol_version=VERSION[d],
            )
            for d in ACTIVE
        ],
        received_at=NOW,
    )
    return Engine(
        FakeRollouts(), RecordingTasks(), inventory, FakePublisher(), FakeMetrics(), FakeSigner()
    )


def test_each_device_gets_its_own_active_list_version_id_and_seq() -> None:
    """Stage and commit over devices of three active lists and two versions, interleaved:
    every bundle opens for its device only, with its own seq, its list made active, and
    `undo_by` in a v2 device's commit only."""
    # given
    engine = _engine()
    spec = trust_add_spec()
    rid = create_rollout(
        engine.deps, spec, now=NOW, actor="test", start=False, devices=list(ACTIVE)
    )
    running = Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)})
    engine.store.change(rid, running)
    # when
    assert push_batch(engine.push, rid, list(ACTIVE), PushStep.STAGE, now=NOW) == len(ACTIVE)
    stages = dict(engine.publisher.sent)
    healthy = [
        DeviceTransition(
            device_id=d,
            new=DeviceRolloutState.HEALTH_OK,
            allowed=frozenset({DeviceRolloutState.SENT}),
            cause="the device proved the new trust",
        )
        for d in ACTIVE
    ]
    assert all(r.applied for r in engine.store.transition(rid, healthy, now=NOW, actor="test"))
    assert push_batch(engine.push, rid, list(ACTIVE), PushStep.COMMIT, now=NOW) == len(ACTIVE)
    commits = dict(engine.publisher.sent[len(ACTIVE) :])
    # then
    seqs = set()
    for device, active in ACTIVE.items():
        stage = engine.opened(device, stages[device])
        commit = engine.opened(device, commits[device])
        expected = tuple(spec.active_after(list(active)))
        assert (stage.device_id, stage.op, stage.active, stage.version) == (
            device,
            "stage",
            expected,
            VERSION[device],
        )
        assert (commit.op, commit.active, commit.version) == ("commit", expected, VERSION[device])
        assert (commit.undo_by is not None) is (VERSION[device] == 2)
        seqs |= {(device, stage.seq), (device, commit.seq)}
        assert stage.seq < commit.seq
    assert len(seqs) == 2 * len(ACTIVE)


class _RacedRollouts(FakeRollouts):
    """A store where another run stored `device`'s stage first, between this run's read
    of the stored bundles and its own store."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device

    def put_bundles_if_absent(
        self,
        rollout_id: str,
        step: PushStep,
        bundles: Mapping[str, bytes],
        *,
        seqs: Mapping[str, int],
    ) -> int:
        if self.device in bundles:
            super().put_bundles_if_absent(
                rollout_id, step, {self.device: b"the other run's bundle"}, seqs={self.device: 99}
            )
        return super().put_bundles_if_absent(rollout_id, step, bundles, seqs=seqs)


def test_a_device_whose_bundle_another_run_stored_first_gets_those_bytes() -> None:
    """The store keeps the first bundle of a step; push sends each device what was kept:
    the racing run's bytes to that device, its own to the rest of the chunk."""
    # given
    engine = _engine()
    raced = "dev-04"
    engine.store = _RacedRollouts(raced)
    rid = create_rollout(
        engine.deps, trust_add_spec(), now=NOW, actor="test", start=False, devices=list(ACTIVE)
    )
    running = Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)})
    engine.store.change(rid, running)
    # when
    assert push_batch(engine.push, rid, list(ACTIVE), PushStep.STAGE, now=NOW) == len(ACTIVE)
    # then
    sent = dict(engine.publisher.sent)
    assert sent[raced] == b"the other run's bundle"
    assert sent == engine.store.bundles(rid, list(ACTIVE), PushStep.STAGE)
    for device in set(ACTIVE) - {raced}:
        assert engine.opened(device, sent[device]).device_id == device
