"""A wave whose push was lost is dispatched again, once, a device timeout after it was due."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.bootstrap import Container
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    RolloutState,
    WaveState,
)
from orchestrator.services.rollout import RolloutDeps, dispatch_wave, evaluate_rollout

pytestmark = pytest.mark.integration

RID = "ro-20261125-120000-r3d1"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
TIMEOUT = 300.0
DEVICES = [f"d-{i:03d}" for i in range(30)]


@dataclass
class Tasks:
    """`RolloutTasks` recording what the engine enqueues."""

    calls: list[tuple[str, int, int]] = field(default_factory=list)

    def push_batch(
        self, rollout_id: str, wave: int, device_ids: Sequence[str], step: str, *, countdown: float
    ) -> None:
        self.calls.append(("push_batch", wave, len(device_ids)))

    def dispatch_wave(self, rollout_id: str, wave: int) -> None:
        self.calls.append(("dispatch_wave", wave, 0))

    def evaluate_rollout(self, rollout_id: str, *, countdown: float = 0) -> None:
        self.calls.append(("evaluate_rollout", 0, 0))


@pytest.fixture
def deps(container: Container) -> RolloutDeps:
    """One running wave of 30 pending devices, as after a dispatch whose pushes all failed."""
    rollouts = RedisRollouts(container.redis)
    spec = RolloutSpec(
        kind="trust.add",
        ca_pems=("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",),
        tag=42,
        spare_tag=43,
        probe_host="broker.example.net",
        probe_port=8883,
        waves=parse_waves("100%"),
        device_timeout_seconds=TIMEOUT,
    )
    rollouts.create(
        Rollout.planned(RID, spec, seed="test", sizes=[len(DEVICES)], now=NOW),
        waves=[DEVICES],
        active=dict.fromkeys(DEVICES, (42,)),
        actor="test",
    )
    assert rollouts.change(
        RID,
        Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)}),
    )
    return RolloutDeps(
        store=rollouts,
        inventory=container.inventory,
        tasks=Tasks(),  # type: ignore[arg-type]
        metrics=container.metrics,
    )


def _dispatches(deps: RolloutDeps) -> int:
    return sum(1 for name, _, _ in deps.tasks.calls if name == "dispatch_wave")  # type: ignore[attr-defined]


def test_pending_devices_are_dispatched_again_once_after_a_device_timeout(
    deps: RolloutDeps,
) -> None:
    # given: the wave was dispatched (its pushes then lost: nobody moved)
    assert dispatch_wave(deps, RID, 0, now=NOW) == len(DEVICES)
    # when: evaluations within the device timeout after the push was due
    for seconds in (1, 60, TIMEOUT - 1):
        evaluate_rollout(deps, RID, now=NOW + timedelta(seconds=seconds))
    # then
    assert _dispatches(deps) == 0
    # when: past it, two evaluators at once
    later = NOW + timedelta(seconds=TIMEOUT + 5)
    evaluate_rollout(deps, RID, now=later)
    evaluate_rollout(deps, RID, now=later)
    # then: one new dispatch, and the next only a device timeout after this one
    assert _dispatches(deps) == 1
    evaluate_rollout(deps, RID, now=later + timedelta(seconds=TIMEOUT - 1))
    assert _dispatches(deps) == 1
    evaluate_rollout(deps, RID, now=later + timedelta(seconds=TIMEOUT + 1))
    assert _dispatches(deps) == 2


def test_a_wave_with_nothing_pending_is_not_dispatched_again(deps: RolloutDeps) -> None:
    # given
    dispatch_wave(deps, RID, 0, now=NOW)
    rollouts = deps.store
    rollouts.transition(
        RID,
        [
            DeviceTransition(
                device_id=d,
                new=DeviceRolloutState.SENT,
                allowed=frozenset({DeviceRolloutState.PENDING}),
                cause="t",
            )
            for d in DEVICES
        ],
        now=NOW,
        actor="test",
    )
    # when
    evaluate_rollout(deps, RID, now=NOW + timedelta(seconds=10 * TIMEOUT))
    # then
    assert _dispatches(deps) == 0
