"""commit_healthy's claim: each evaluation checks only the healthy devices not claimed
within the resend period, so the claim's work follows the devices, not the evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from orchestrator.domain.rollout import parse_waves
from orchestrator.domain.rollout_states import PushStep
from orchestrator.services.rollout import (
    COMMIT_RESEND_SECONDS,
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    start_rollout,
)
from orchestrator.services.rollout.evaluate import EVALUATION_LOCK_MS
from tests.fake_rollouts import FakeRollouts, trust_add_spec
from tests.rollout_rig import DEVICES, Engine, make_engine
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit


class ClaimCountingRollouts(FakeRollouts):
    """The in-memory store, keeping the devices each commit claim was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def claim_sends(
        self,
        rollout_id: str,
        step: PushStep,
        device_ids: Sequence[str],
        *,
        now: float,
        every: float,
    ) -> list[str]:
        if step is PushStep.COMMIT:
            self.asked.append(list(device_ids))
        return super().claim_sends(rollout_id, step, device_ids, now=now, every=every)


def _engine() -> tuple[Engine, ClaimCountingRollouts]:
    engine = make_engine()
    store = ClaimCountingRollouts()
    engine.store = store
    return engine, store


def _running(engine: Engine) -> str:
    spec = trust_add_spec(waves=parse_waves("100%"), max_failure=0.2)
    rid = create_rollout(engine.deps, spec, now=NOW, actor="test", start=True)
    start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    engine.run_pushes()
    return rid


def test_evaluations_ask_the_claim_only_about_devices_not_claimed_in_the_period() -> None:
    """Healthy devices arriving over many evaluations: each is asked about once per period."""
    engine, store = _engine()
    rid = _running(engine)
    first, second = DEVICES[:4], DEVICES[4:7]
    engine.report(rid, "health_ok", *first)
    evaluate_rollout(engine.deps, rid, now=NOW)
    engine.report(rid, "health_ok", *second)
    for seconds in (1, 2, 3, COMMIT_RESEND_SECONDS - 1):
        evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=seconds))
    assert store.asked == [first, second], "each device asked about once, no empty claims"
    assert engine.tasks.pushes(PushStep.COMMIT) == [first, second]
    # Past the period, the first ones are due again (their commit may have been lost).
    evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=COMMIT_RESEND_SECONDS + 0.5))
    assert store.asked[2:] == [first]
    assert engine.tasks.pushes(PushStep.COMMIT)[2:] == [first]


def test_a_device_that_committed_is_never_asked_about_again() -> None:
    """Once committed a device leaves `health_ok`: no claim asks about it, in or past the period."""
    engine, store = _engine()
    rid = _running(engine)
    engine.report(rid, "health_ok", *DEVICES)
    evaluate_rollout(engine.deps, rid, now=NOW)
    engine.run_pushes()
    engine.report(rid, "committed", *DEVICES[:5])
    for seconds in (1, COMMIT_RESEND_SECONDS + 1):
        evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=seconds))
    assert store.asked == [DEVICES, DEVICES[5:]]


class LockRecordingRollouts(FakeRollouts):
    """The in-memory store, keeping the lifetime each evaluation asked its lock for."""

    def __init__(self) -> None:
        super().__init__()
        self.lock_ttls: list[int] = []

    def lock(self, rollout_id: str, owner: str, ttl_ms: int = 30_000) -> bool:
        self.lock_ttls.append(ttl_ms)
        return super().lock(rollout_id, owner, ttl_ms)


def test_an_evaluations_lock_outlives_a_lost_release_by_seconds_not_a_device_timeout() -> None:
    """A lock whose release was lost (a killed worker, a failover that kept the lock)
    must not stall commits past a short device timeout."""
    engine = make_engine()
    store = LockRecordingRollouts()
    engine.store = store
    _running(engine)
    assert store.lock_ttls
    assert set(store.lock_ttls) == {EVALUATION_LOCK_MS}
    assert EVALUATION_LOCK_MS <= 10_000
