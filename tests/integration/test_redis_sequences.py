"""RedisSequences against a real Redis or a Redis Cluster: each device's numbers start at 1
and rise by one per bundle, whether taken one at a time or a batch's in one round trip,
and no two takers ever get the same number for a device."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.adapters.redis_sequences import RedisSequences
from orchestrator.bootstrap import Container

pytestmark = pytest.mark.integration

DEVICES = [f"seq-{i:03d}" for i in range(300)]
"""Enough devices that a cluster's three masters each hold some."""


def test_a_batch_and_single_takes_count_up_per_device(container: Container) -> None:
    """1 for every device of the first batch, 2 for the next, then 3 alone; none for none."""
    # given
    sequences = RedisSequences(container.redis)
    # when
    first = sequences.next_sequences(DEVICES)
    second = sequences.next_sequences(DEVICES[::-1])
    alone = sequences.next_sequence(DEVICES[7])
    # then
    assert first == dict.fromkeys(DEVICES, 1)
    assert second == dict.fromkeys(DEVICES, 2)
    assert alone == 3
    assert sequences.next_sequences([]) == {}


def test_concurrent_takers_never_share_a_number(container: Container) -> None:
    """Four takers of the same devices at once: every device's numbers are 1..4, each once."""
    # given
    sequences = RedisSequences(container.redis)
    # when
    with ThreadPoolExecutor(max_workers=4) as pool:
        taken = list(pool.map(lambda _: sequences.next_sequences(DEVICES), range(4)))
    # then
    for device in DEVICES:
        assert sorted(t[device] for t in taken) == [1, 2, 3, 4]
