"""Where a device's keys live: the inventory's fixed shards, one hash slot each.

Redis Cluster runs a script or a transaction only over keys of one hash slot. The
per-device state (inventory, indexes, claims) is therefore split into `SHARDS` shards
by a stable hash of the device id (CRC-32), and every key of a shard carries the
shard's hash tag, so one script call touches one slot. A single Redis holds the same
keys; the layout does not depend on the deployment.

The tags are chosen so that shard `s` lies in slots `s * 1024 ... s * 1024 + 1023`:
a cluster whose masters split the 16,384 slots evenly (what `redis-cli --cluster
create` does) holds `SHARDS / masters` shards on each, give or take one
(`tests/unit/test_redis_keys.py` checks the slots). The number of shards is part of the
stored layout: changing it moves every device to another key, so it is fixed here.

A rollout's keys share the tag `{rollout_id}` (`redis_rollout_plan.rollout_key`); the
few global keys (`certfleet:rollouts`, `certfleet:plans`, ...) are read or written one
key per command.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from typing import Final

__all__ = [
    "SHARDS",
    "SHARD_TAGS",
    "by_shard",
    "inventory_prefix",
    "inventory_prefixes",
    "shard_of",
    "shard_prefix",
]

SHARD_TAGS: Final = (
    "i0.10", "i1.13", "i2.23", "i3.20", "i4.3", "i5.0", "i6.40", "i7.43",
    "i8.23", "i9.20", "i10.63", "i11.60", "i12.2", "i13.1", "i14.13", "i15.10",
)  # fmt: skip
"""Hash tag of each shard: `{i<s>.<k>}`, the first `k` whose slot falls in shard s's
1,024-slot range."""

SHARDS: Final = len(SHARD_TAGS)
"""How many shards the per-device state is split into (fixed: it names the keys)."""


def shard_of(device_id: str) -> int:
    """The shard holding a device's state: CRC-32 of its id (UTF-8), modulo `SHARDS`."""
    return zlib.crc32(device_id.encode()) % SHARDS


def shard_prefix(area: str, shard: int) -> str:
    """The key prefix of one shard of an area, e.g. `certfleet:inv:{i5.0}:`."""
    return f"certfleet:{area}:{{{SHARD_TAGS[shard]}}}:"


def inventory_prefix(shard: int) -> str:
    """The prefix of every inventory key of a shard (`certfleet:inv:{tag}:`)."""
    return shard_prefix("inv", shard)


@functools.cache
def inventory_prefixes() -> tuple[str, ...]:
    """Every shard's inventory prefix, shard 0 first (what a read across the shards walks)."""
    return tuple(inventory_prefix(s) for s in range(SHARDS))


def by_shard(device_ids: Iterable[str]) -> dict[int, list[str]]:
    """Device ids grouped by shard, each group in the order given."""
    groups: dict[int, list[str]] = {}
    for device_id in device_ids:
        groups.setdefault(shard_of(device_id), []).append(device_id)
    return groups
