"""The shard layout: stable, spread, one slot per shard."""

from __future__ import annotations

import zlib

from redis.crc import key_slot

from orchestrator.adapters.redis_keys import (
    SHARDS,
    by_shard,
    inventory_prefix,
    shard_of,
    shard_prefix,
)


def test_each_shard_lies_in_its_own_range_of_slots() -> None:
    for shard in range(SHARDS):
        slot = key_slot(f"{inventory_prefix(shard)}dev:x".encode())
        assert slot // (16384 // SHARDS) == shard
        assert key_slot(f"{shard_prefix('claims', shard)}x".encode()) == slot


def test_a_device_always_lands_in_the_same_shard() -> None:
    assert shard_of("nrf-000001") == zlib.crc32(b"nrf-000001") % SHARDS
    assert shard_of("nrf-000001") == shard_of("nrf-000001")


def test_devices_spread_over_every_shard() -> None:
    counts = [0] * SHARDS
    for n in range(16_000):
        counts[shard_of(f"nrf-{n:06d}")] += 1
    assert min(counts) > 800
    assert max(counts) < 1200


def test_grouping_keeps_every_device_once_in_order() -> None:
    ids = [f"d{n}" for n in range(100)]
    groups = by_shard(ids)
    assert sorted(d for group in groups.values() for d in group) == sorted(ids)
    for shard, group in groups.items():
        assert all(shard_of(d) == shard for d in group)
        assert group == [d for d in ids if shard_of(d) == shard]
