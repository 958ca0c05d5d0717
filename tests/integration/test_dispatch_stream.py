"""`dispatch_wave` against a real Redis: the wave read in chunks, batches enqueued as they fill."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from orchestrator.adapters.redis_rollouts import SCAN_COUNT, RedisRollouts
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
from orchestrator.services.rollout import PUSH_BATCH_SIZE, RolloutDeps, dispatch_wave

pytestmark = pytest.mark.integration

RID = "ro-20261125-120000-d15p"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CANARY = [f"c-{i:04d}" for i in range(5)]
WAVE = [f"w-{i:05d}" for i in range(2_345)]
"""Large enough that Redis keeps the wave's set as a hash table and SSCAN takes many steps."""
SENT = set(WAVE[::7])
"""Devices of the wave that already have their stage bundle."""
PUSH_RATE = 400.0


def _spec(*, push_rate: float | None) -> RolloutSpec:
    return RolloutSpec(
        kind="trust.add",
        ca_pems=("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",),
        tag=42,
        spare_tag=43,
        probe_host="broker.example.net",
        probe_port=8883,
        waves=parse_waves("1%,100%"),
        push_rate=push_rate,
    )


@dataclass
class Pushes:
    """`RolloutTasks` that records push_batch calls and how much of the wave was read by then."""

    chunks_read: list[int]
    calls: list[tuple[int, list[str], str, float, int]] = field(default_factory=list)

    def push_batch(
        self, rollout_id: str, wave: int, device_ids: Sequence[str], step: str, *, countdown: float
    ) -> None:
        assert rollout_id == RID
        self.calls.append((wave, list(device_ids), step, countdown, self.chunks_read[0]))

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"dispatch_wave enqueued {name}")


class CountingRollouts(RedisRollouts):
    """The real store, counting the chunks `scan_wave` has handed out."""

    def __init__(self, container: Container) -> None:
        super().__init__(container.redis)
        self.chunks_read = [0]

    def scan_wave(
        self,
        rollout_id: str,
        wave: int,
        states: Iterable[DeviceRolloutState],
        *,
        count: int = SCAN_COUNT,
    ) -> Iterator[list[str]]:
        for chunk in super().scan_wave(rollout_id, wave, states, count=count):
            self.chunks_read[0] += 1
            yield chunk


def _rollout(container: Container, rollouts: RedisRollouts, *, push_rate: float | None) -> None:
    """Wave 1 running; a seventh of its devices already `sent`."""
    rollouts.create(
        Rollout.planned(
            RID,
            _spec(push_rate=push_rate),
            seed="test",
            sizes=[len(CANARY), len(WAVE)],
            now=NOW,
        ),
        waves=[CANARY, WAVE],
        active=dict.fromkeys([*CANARY, *WAVE], (42,)),
        actor="test",
    )
    assert rollouts.change(
        RID,
        Change(
            state=RolloutState.RUNNING,
            current=1,
            waves={0: WaveChange(state=WaveState.PASSED), 1: WaveChange(state=WaveState.RUNNING)},
        ),
    )
    rollouts.transition(
        RID,
        [
            DeviceTransition(
                device_id=d,
                new=DeviceRolloutState.SENT,
                allowed=frozenset({DeviceRolloutState.PENDING}),
                cause="test",
            )
            for d in sorted(SENT)
        ],
        now=NOW,
        actor="test",
    )


def _deps(container: Container, rollouts: RedisRollouts, tasks: Pushes) -> RolloutDeps:
    return RolloutDeps(
        store=rollouts,
        inventory=container.inventory,
        tasks=tasks,  # type: ignore[arg-type]
        metrics=container.metrics,
    )


@pytest.fixture
def rollouts(container: Container) -> CountingRollouts:
    return CountingRollouts(container)


def test_every_pending_device_of_the_wave_goes_out_once_in_full_batches(
    container: Container, rollouts: CountingRollouts
) -> None:
    """Each pending device of the wave is in exactly one batch; only the last batch is short."""
    _rollout(container, rollouts, push_rate=None)
    tasks = Pushes(rollouts.chunks_read)

    dispatched = dispatch_wave(_deps(container, rollouts, tasks), RID, 1, now=NOW)

    pending = sorted(set(WAVE) - SENT)
    batches = [devices for _, devices, _, _, _ in tasks.calls]
    assert dispatched == len(pending)
    assert sorted(d for batch in batches for d in batch) == pending
    assert [len(b) for b in batches[:-1]] == [PUSH_BATCH_SIZE] * (len(batches) - 1)
    assert 0 < len(batches[-1]) <= PUSH_BATCH_SIZE
    assert {(wave, step, countdown) for wave, _, step, countdown, _ in tasks.calls} == {
        (1, "stage", 0)
    }


def test_batches_are_enqueued_while_the_wave_is_still_being_read(
    container: Container, rollouts: CountingRollouts
) -> None:
    """The first batch leaves after a chunk or two of the wave, not after the whole wave."""
    _rollout(container, rollouts, push_rate=None)
    tasks = Pushes(rollouts.chunks_read)

    dispatch_wave(_deps(container, rollouts, tasks), RID, 1, now=NOW)

    chunks_at_first_batch = tasks.calls[0][4]
    assert rollouts.chunks_read[0] > 2
    assert chunks_at_first_batch < rollouts.chunks_read[0]


def test_batches_are_paced_by_the_push_rate(
    container: Container, rollouts: CountingRollouts
) -> None:
    """Batch n waits n * PUSH_BATCH_SIZE / push_rate seconds."""
    _rollout(container, rollouts, push_rate=PUSH_RATE)
    tasks = Pushes(rollouts.chunks_read)

    dispatch_wave(_deps(container, rollouts, tasks), RID, 1, now=NOW)

    assert [countdown for _, _, _, countdown, _ in tasks.calls] == [
        n * PUSH_BATCH_SIZE / PUSH_RATE for n in range(len(tasks.calls))
    ]


def test_a_wave_that_is_not_running_dispatches_nothing(
    container: Container, rollouts: CountingRollouts
) -> None:
    """The canary wave has passed: dispatching it again enqueues nothing and reads nothing."""
    _rollout(container, rollouts, push_rate=None)
    tasks = Pushes(rollouts.chunks_read)

    assert dispatch_wave(_deps(container, rollouts, tasks), RID, 0, now=NOW) == 0
    assert tasks.calls == []
    assert rollouts.chunks_read == [0]


def test_scan_wave_gives_the_wave_in_chunks_of_the_asked_states(
    container: Container, rollouts: CountingRollouts
) -> None:
    """Chunks are sorted, hold only devices in the asked states, and together the whole set."""
    _rollout(container, rollouts, push_rate=None)

    sent, pending = DeviceRolloutState.SENT, DeviceRolloutState.PENDING
    chunks = list(rollouts.scan_wave(RID, 1, [sent], count=100))
    canary = list(rollouts.scan_wave(RID, 0, [pending, sent]))

    assert len(chunks) > 1
    assert all(chunk == sorted(chunk) for chunk in chunks)
    assert sorted(d for chunk in chunks for d in chunk) == sorted(SENT)
    assert [sorted(d for chunk in canary for d in chunk)] == [CANARY]
