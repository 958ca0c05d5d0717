"""A planned rollout as `RedisRollouts` writes it: the key of each part, and the first write.

The layout itself is described in `redis_rollouts`; this module names the keys
(`rollout_key`) and writes a planned rollout's parts in one transaction
(`write_planned`), so the store's module stays about reading and moving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from orchestrator.adapters.redis_rollout_codec import encode_rollout
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import DeviceRolloutState

__all__ = ["ROLLOUTS", "rollout_key", "write_planned"]

ROLLOUTS: Final = "certfleet:rollouts"
CHUNK: Final = 1000
"""Devices per HSET or SADD: a million-device plan is many modest commands, not one huge."""


def rollout_key(rollout_id: str, name: str) -> str:
    """The key of one part of a rollout; every part shares the hash tag `{rollout_id}`."""
    return f"certfleet:ro:{{{rollout_id}}}:{name}"


def write_planned(
    pipe: Any,
    rollout: Rollout,
    *,
    waves: Sequence[Sequence[str]],
    active: Mapping[str, Sequence[int]],
    versions: Mapping[str, int],
    actor: str,
) -> None:
    """Queue the writes of a planned rollout on `pipe` (a transaction the caller executes):
    the meta hash, every device `pending` in its wave, the counts, each device's active
    tags and protocol version, the rollout's index entry and its first log line."""
    rid = rollout.id
    pending = DeviceRolloutState.PENDING.value
    pipe.hset(rollout_key(rid, "meta"), mapping=encode_rollout(rollout))
    for index, members in enumerate(waves):
        for start in range(0, len(members), CHUNK):
            chunk = list(members[start : start + CHUNK])
            pipe.hset(rollout_key(rid, "dev"), mapping=dict.fromkeys(chunk, pending))
            pipe.hset(rollout_key(rid, "wave"), mapping=dict.fromkeys(chunk, str(index)))
            pipe.sadd(rollout_key(rid, f"w:{index}"), *chunk)
            pipe.sadd(rollout_key(rid, f"s:{pending}"), *chunk)
        pipe.hset(rollout_key(rid, f"counts:{index}"), pending, len(members))
    items = list(active.items())  # once: a copy per chunk made a million devices quadratic
    for start in range(0, len(items), CHUNK):
        pipe.hset(
            rollout_key(rid, "active"),
            mapping={d: json.dumps(list(tags)) for d, tags in items[start : start + CHUNK]},
        )
    # v1 is what a device left out reads as: only other versions are written
    newer = [(d, str(v)) for d, v in versions.items() if v != 1]
    for start in range(0, len(newer), CHUNK):
        pipe.hset(rollout_key(rid, "v"), mapping=dict(newer[start : start + CHUNK]))
    pipe.zadd(ROLLOUTS, {rid: rollout.created_at.timestamp()})
    pipe.xadd(rollout_key(rid, "log"), rollout.created_entry(actor=actor).as_fields())
