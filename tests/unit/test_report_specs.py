"""Reports applied with the listener's spec cache: the rollout is read once, not per batch."""

from __future__ import annotations

import pytest

from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import DeviceRolloutState
from orchestrator.services.rollout import (
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    start_rollout,
)
from orchestrator.services.rollout.reports import RolloutSpecs, apply_reports
from tests.fake_rollouts import FakeRollouts, trust_add_spec
from tests.rollout_rig import DEVICES, Engine, make_engine
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit

D = DeviceRolloutState


class CountingRollouts(FakeRollouts):
    """The in-memory store, counting its reads of a rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, rollout_id: str) -> Rollout | None:
        self.reads += 1
        return super().get(rollout_id)


def _engine() -> Engine:
    engine = make_engine()
    engine.store = CountingRollouts()
    return engine


def _sent(engine: Engine) -> str:
    """A rollout over every device, its only wave's stage pushed."""
    spec = trust_add_spec(waves=parse_waves("100%"), max_failure=0.2)
    rid = create_rollout(engine.deps, spec, now=NOW, actor="test", start=True)
    start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    engine.run_pushes()
    return rid


def _report(engine: Engine, rid: str, device: str, phase: str) -> DeviceReport:
    seq, op = engine.answered(device, phase)
    return DeviceReport(
        device_id=device,
        rollout_id=rid,
        seq=seq,
        op=op,
        phase=phase,
        reason="ok",
        detail="",
        time=NOW,
    )


def test_batches_sharing_a_spec_cache_read_their_rollout_once() -> None:
    """Three batches of one report each: one read of the rollout, and every device moves."""
    engine = _engine()
    rid = _sent(engine)
    store = engine.store
    assert isinstance(store, CountingRollouts)
    specs = RolloutSpecs()
    before = store.reads
    for device in DEVICES[:3]:
        moved = apply_reports(
            engine.deps, [_report(engine, rid, device, "staged")], now=NOW, specs=specs
        )
        assert moved == {rid}
    assert store.reads - before == 1
    states = store.device_states(rid, DEVICES[:3])
    assert states == dict.fromkeys(DEVICES[:3], D.STAGED)


def test_without_a_cache_each_batch_reads_its_rollout() -> None:
    """The default (no cache kept by the caller): a read per batch, as before."""
    engine = _engine()
    rid = _sent(engine)
    store = engine.store
    assert isinstance(store, CountingRollouts)
    before = store.reads
    for device in DEVICES[:2]:
        apply_reports(engine.deps, [_report(engine, rid, device, "staged")], now=NOW)
    assert store.reads - before == 2


def test_an_unknown_rollout_is_not_remembered() -> None:
    """A report of a rollout the store does not know is unmatched, and asked about again."""
    engine = _engine()
    store = engine.store
    assert isinstance(store, CountingRollouts)
    specs = RolloutSpecs()
    report = DeviceReport(
        device_id="dev-00",
        rollout_id="ro-none",
        seq=1,
        op="stage",
        phase="staged",
        reason="ok",
        detail="",
        time=NOW,
    )
    for _ in range(2):
        assert apply_reports(engine.deps, [report], now=NOW, specs=specs) == set()
    assert store.reads == 2
    unmatched = ("certfleet_reports_unmatched_total", (("reason", "unknown_rollout"),))
    assert engine.metrics.counters[unmatched] == 2


def test_a_known_spec_is_read_once_and_an_unknown_one_each_time() -> None:
    """The known rollout's spec is the same object every time; an unknown id costs a read."""
    engine = _engine()
    rid = _sent(engine)
    store = engine.store
    assert isinstance(store, CountingRollouts)
    specs = RolloutSpecs(most=1)
    before = store.reads
    spec = specs.get(engine.deps, rid)
    assert spec is not None
    assert specs.get(engine.deps, rid) is spec
    assert store.reads - before == 1
    assert specs.get(engine.deps, "ro-none") is None  # unknown: not kept, nothing dropped
    assert specs.get(engine.deps, rid) is spec
    assert store.reads - before == 2
