"""A rollout's per-device layout in Redis: key names, each device's record, the first write.

The layout itself is described in `redis_rollouts`; this module names the keys
(`rollout_key`), spells a device's record (`encode_record`, `state_of`, `active_of`,
`version_of`), picks its bucket (`Layout`) and writes a planned rollout
(`write_planned`), so the store's module stays about reading and moving.

A device's record is one field of a small hash, `…:d:<b>` (device -> record), `b`
the CRC-32 of the device id modulo the rollout's bucket count (about one bucket per
`BUCKET_DEVICES` devices, stored in the meta hash's `buckets` field), so every bucket
stays within Redis's compact listpack encoding. The record is
`"<state> <wave> <active tags> <protocol version>"`, the tags comma-separated (`-` for
none), e.g. `"pending 0 42,43 1"`; the transition script rewrites its first word. A
wave's devices are listed once, newline-separated, in strings of `MEMBERS_CHUNK`
(`…:m:<wave>:<chunk>`): a device id holds neither a space nor a newline
(`protocol.topics.DEVICE_ID_PATTERN`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.adapters.redis_rollout_codec import encode_rollout
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import DeviceRolloutState

__all__ = [
    "BUCKET_DEVICES",
    "MEMBERS_CHUNK",
    "ROLLOUTS",
    "Layout",
    "active_of",
    "encode_record",
    "record_args",
    "rollout_key",
    "state_of",
    "version_of",
    "write_planned",
]

ROLLOUTS: Final = "certfleet:rollouts"
BUCKET_DEVICES: Final = 64
"""Devices per record bucket on average (a bucket stays under 128 fields, listpack)."""
MEMBERS_CHUNK: Final = 1000
"""Devices per string of a wave's member list (`…:m:<wave>:<chunk>`)."""
UNSET: Final = DeviceRolloutState.PENDING.value
"""The state that has no per-state set: every device starts in it (a scan finds them)."""


def rollout_key(rollout_id: str, name: str) -> str:
    """The key of one part of a rollout; every part shares the hash tag `{rollout_id}`."""
    return f"certfleet:ro:{{{rollout_id}}}:{name}"


def encode_record(state: str, wave: int, active: Iterable[int], version: int) -> str:
    """A device's record as stored: `"<state> <wave> <active tags> <protocol version>"`."""
    return f"{state} {wave} {','.join(str(t) for t in active) or '-'} {version}"


@dataclass(frozen=True)
class Layout:
    """How one rollout's devices are laid out: its record buckets and wave sizes."""

    rollout_id: str
    buckets: int
    sizes: tuple[int, ...]

    @classmethod
    def planned(cls, rollout_id: str, sizes: Sequence[int]) -> Layout:
        """The layout of a new rollout of waves of `sizes`."""
        return cls(rollout_id, max(1, -(-sum(sizes) // BUCKET_DEVICES)), tuple(sizes))

    def bucket(self, device_id: str) -> int:
        return zlib.crc32(device_id.encode()) % self.buckets

    def bucket_key(self, bucket: int) -> str:
        return rollout_key(self.rollout_id, f"d:{bucket}")

    def member_keys(self, wave: int) -> list[str]:
        """The strings listing a wave's devices, in order."""
        chunks = -(-self.sizes[wave] // MEMBERS_CHUNK)
        return [rollout_key(self.rollout_id, f"m:{wave}:{c}") for c in range(chunks)]

    def all_buckets(self, per_call: int = 256) -> Iterator[list[str]]:
        """Every record bucket's key, `per_call` at a time."""
        for start in range(0, self.buckets, per_call):
            stop = min(start + per_call, self.buckets)
            yield [self.bucket_key(b) for b in range(start, stop)]


def write_planned(
    pipe: Any,
    rollout: Rollout,
    *,
    waves: Sequence[Sequence[str]],
    active: Mapping[str, Sequence[int]],
    versions: Mapping[str, int],
    actor: str,
) -> Layout:
    """Queue the writes of a planned rollout's own keys on `pipe` (a transaction of the
    rollout's slot that the caller executes): the meta hash with the layout, every
    device's record `pending` in its wave, the waves' member lists, the counts and the
    first log line. The index entry (`ROLLOUTS`, another slot) is the caller's."""
    rid = rollout.id
    layout = Layout.planned(rid, [len(w) for w in waves])
    buckets: dict[int, dict[str, str]] = {}
    for index, members in enumerate(waves):
        for device in members:
            record = encode_record(UNSET, index, active.get(device, ()), versions.get(device, 1))
            buckets.setdefault(layout.bucket(device), {})[device] = record
        for key, start in zip(
            layout.member_keys(index), range(0, len(members), MEMBERS_CHUNK), strict=True
        ):
            pipe.set(key, "\n".join(members[start : start + MEMBERS_CHUNK]))
        pipe.hset(rollout_key(rid, f"counts:{index}"), UNSET, len(members))
    for bucket, records in buckets.items():
        pipe.hset(layout.bucket_key(bucket), mapping=records)
    pipe.hset(
        rollout_key(rid, "meta"), mapping={**encode_rollout(rollout), "buckets": layout.buckets}
    )
    pipe.xadd(rollout_key(rid, "log"), rollout.created_entry(actor=actor).as_fields())
    pipe.delete(rollout_key(rid, "claiming"))
    return layout


def state_of(record: str) -> str:
    """The state a stored record holds (its first word), without reading the rest."""
    return record[: record.index(" ")]


def active_of(record: str) -> list[int]:
    """The active tags a stored record holds (its third word)."""
    tags = record.split(" ", 3)[2]
    return [] if tags == "-" else [int(t) for t in tags.split(",")]


def version_of(record: str) -> int:
    """The protocol version a stored record holds (its last word)."""
    return int(record[record.rindex(" ") + 1 :])


def record_args(layout: Layout, device_ids: Iterable[str]) -> list[str]:
    """The records script's arguments: (bucket, device) pairs, flattened."""
    args: list[str] = []
    for device in device_ids:
        args += [str(layout.bucket(device)), device]
    return args
