"""Reading a rollout's device records: its layout, records by device, every record, waves.

`RedisRollouts` reads a device's state, wave, active tags and protocol version from its
record (`redis_rollout_plan.encode_record`, in the rollout's bucket `…:d:<b>`); this module
finds them. A rollout's layout (bucket count, wave sizes) is written once with it and
never changes, so it is read once per store and kept.

Rollouts stored before the records hold `…:dev` (hash: device -> state), `…:wave`
(device -> wave index), `…:active` (device -> JSON tag list), `…:v` (device ->
version, if not 1), `…:w:<i>` (set: wave i's devices) and `…:s:pending` (set). The
first read of such a rollout rewrites it as records (`_upgrade`): one transaction of
its slot, watched on its meta and state hashes, so a concurrent upgrade or a transition
by a process still running the code before makes it start again; the per-state sets
of the other states keep their meaning and stay.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

import redis

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import load_script
from orchestrator.adapters.redis_rollout_plan import (
    MEMBERS_CHUNK,
    UNSET,
    Layout,
    encode_record,
    record_args,
    rollout_key,
)
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls

__all__ = ["LAYOUTS_KEPT", "RECORDS_PER_CALL", "DeviceRecords"]

LAYOUTS_KEPT: Final = 1024
"""Rollout layouts a store keeps in memory (a layout never changes once written)."""
RECORDS_PER_CALL: Final = 500
"""Most records one script call reads, so Redis never runs one script for long."""
_LEGACY: Final = ("dev", "wave", "active", "v")


class DeviceRecords:
    """The device records of rollouts, read by device, all at once, or by wave."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client
        self._script = load_script(client, "orchestrator.adapters", "rollout_records")
        self._layouts: dict[str, Layout] = {}
        self._last: tuple[str, tuple[str, ...], list[str | None]] | None = None

    def remember(self, layout: Layout) -> None:
        """Keep a layout just written."""
        if len(self._layouts) >= LAYOUTS_KEPT:
            self._layouts.clear()
        self._layouts[layout.rollout_id] = layout

    def layout(self, rollout_id: str) -> Layout:
        """The rollout's layout (a rollout not stored reads as one of no device)."""
        layout = self._layouts.get(rollout_id)
        if layout is not None:
            return layout
        meta = rollout_key(rollout_id, "meta")
        buckets, sizes = self._redis.hmget(meta, ["buckets", "sizes"])
        if buckets is None and sizes is not None:
            buckets = self._upgrade(rollout_id)
        if buckets is None:
            return Layout(rollout_id, 1, ())
        layout = Layout(rollout_id, int(buckets), tuple(json.loads(sizes)))
        self.remember(layout)
        return layout

    def records(self, rollout_id: str, device_ids: Sequence[str]) -> list[str | None]:
        """Each device's record as stored, in order (None for a device not in the
        rollout); `redis_rollout_plan.state_of` and its siblings read it."""
        layout = self.layout(rollout_id)
        meta, prefix = rollout_key(rollout_id, "meta"), rollout_key(rollout_id, "d:")
        calls = [
            ScriptCall(
                self._script,
                [meta],
                [prefix, *record_args(layout, device_ids[start : start + RECORDS_PER_CALL])],
            )
            for start in range(0, len(device_ids), RECORDS_PER_CALL)
        ]
        replies = run_script_calls(self._redis, calls)
        found: list[str | None] = [r or None for reply in replies for r in reply]
        self._last = (rollout_id, tuple(device_ids), found)
        return found

    def planned(self, rollout_id: str, device_ids: Sequence[str]) -> list[str | None]:
        """Each device's record, for what it holds since the rollout was planned (wave,
        active tags, version: never rewritten): the last records read if they were these
        devices' (a push reads their states, then their tags and versions), else read."""
        last = self._last
        if last is not None and last[0] == rollout_id and last[1] == tuple(device_ids):
            return last[2]
        return self.records(rollout_id, device_ids)

    def every(self, rollout_id: str) -> Iterator[tuple[str, str]]:
        """Every device of the rollout and its record as stored, a few buckets at a time."""
        for keys in self.layout(rollout_id).all_buckets():
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            for found in pipe.execute():
                yield from found.items()

    def members(self, rollout_id: str, wave: int) -> Iterator[list[str]]:
        """A wave's devices, a member string (up to 1,000 devices) at a time."""
        layout = self.layout(rollout_id)
        if not 0 <= wave < len(layout.sizes):
            return
        for key in layout.member_keys(wave):
            listed = self._redis.get(key)
            if listed:
                yield listed.split("\n")

    def _upgrade(self, rollout_id: str) -> str | None:
        """Rewrite a rollout stored before the records as records; its bucket count."""
        meta = rollout_key(rollout_id, "meta")
        watched = [meta, *(rollout_key(rollout_id, name) for name in _LEGACY)]
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    buckets, sizes = pipe.hmget(meta, ["buckets", "sizes"])
                    if buckets is not None or sizes is None:
                        pipe.unwatch()
                        return str(buckets) if buckets is not None else None
                    stored = [pipe.hgetall(rollout_key(rollout_id, name)) for name in _LEGACY]
                    layout = Layout.planned(rollout_id, json.loads(sizes))
                    pipe.multi()
                    _write_records(pipe, layout, stored)
                    pipe.execute()
                    return str(layout.buckets)
                except redis.WatchError:
                    continue


def _write_records(pipe: Any, layout: Layout, stored: Sequence[dict[str, str]]) -> None:
    """Queue the records of a rollout stored before (its `_LEGACY` hashes, in that
    order), and drop what they replace."""
    states, waves, active, versions = stored
    rid = layout.rollout_id
    buckets: dict[int, dict[str, str]] = {}
    members: list[list[str]] = [[] for _ in layout.sizes]
    for device, state in states.items():
        wave = int(waves[device])
        tags = tuple(json.loads(active[device])) if device in active else ()
        record = encode_record(state, wave, tags, int(versions.get(device, 1)))
        buckets.setdefault(layout.bucket(device), {})[device] = record
        members[wave].append(device)
    for bucket, records in buckets.items():
        pipe.hset(layout.bucket_key(bucket), mapping=records)
    for wave, devices in enumerate(members):
        devices.sort()
        for key, start in zip(
            layout.member_keys(wave), range(0, len(devices), MEMBERS_CHUNK), strict=False
        ):
            pipe.set(key, "\n".join(devices[start : start + MEMBERS_CHUNK]))
        pipe.delete(rollout_key(rid, f"w:{wave}"))
    pipe.delete(*(rollout_key(rid, name) for name in _LEGACY))
    pipe.delete(rollout_key(rid, f"s:{UNSET}"))
    pipe.hset(rollout_key(rid, "meta"), "buckets", layout.buckets)
