"""Claims in Redis: which rollout holds each device, so two rollouts never change one device.

One rollout at a time per device: a device keeps one undo record, so a second
rollout's change would leave the first one nothing to roll back.

A device's claim lives in its shard (`redis_keys.shard_of`), in one of `BUCKETS`
small hashes: `certfleet:claims:{tag}:<b>` (hash: device -> the id of the rollout
that holds it), `b` picked by `claim_bucket` from the device id's CRC-32 (the bits
above those that pick the shard). A bucket holds about `devices / (16 * BUCKETS)`
devices, so up to some five million devices each stays within Redis's compact
listpack encoding (128 entries); past that it still works, as a plain hash.

Claiming is one script call per shard (and per `CHUNK` devices), each atomic in its
slot (`lua/claim_devices.lua`). Across shards it is not: a conflict in a later shard
releases what the earlier ones took for this rollout (compensation), so on any
conflict nothing stays claimed. A process that dies between shards leaves claims
held by a rollout that was never stored: before its first shard, a claim writes the
rollout's `claiming` mark (`certfleet:ro:{id}:claiming`, `CLAIMING_SECONDS`), and a
claim held by a rollout that is neither stored (its meta hash) nor marked is stale:
the next claim of those devices takes it over.

Rollouts stored before claims were sharded hold `certfleet:claims:device` (hash:
device -> rollout), and rollouts stored before claims were per device hold
`certfleet:claims:{sec_tag}` (hash: device -> rollout) per (device, sec_tag). A
device such a rollout holds is held for every new claim, and `release_devices`
drops those claims too, so stored rollouts keep working; these hashes empty (and
vanish) as those rollouts end, and this code writes no new ones. They are read one
key per command (any slot). The per-tag ones are found once, by one SCAN of the
keyspace (every primary of a cluster), and listed in `certfleet:claims:legacy`
(set), so a claim never walks a large keyspace again.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from redis.cluster import RedisCluster

from orchestrator.adapters.redis_errors import load_script, store_errors
from orchestrator.adapters.redis_keys import SHARDS, shard_prefix
from orchestrator.adapters.redis_rollout_plan import rollout_key
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls

__all__ = [
    "BUCKETS",
    "CLAIMING_SECONDS",
    "DEVICE_CLAIMS",
    "claim_bucket",
    "claim_devices",
    "claim_holders",
    "legacy_claims_key",
    "release_devices",
]

CLAIMS: Final = "certfleet:claims:"
DEVICE_CLAIMS: Final = CLAIMS + "device"
"""The one claims hash of rollouts stored before claims were sharded (read and released)."""
LEGACY: Final = CLAIMS + "legacy"
"""The per-tag claim hashes found by the one SCAN (set), and `…:scanned` once it ran."""
BUCKETS: Final = 4096
"""Claim hashes per shard (fixed: it names the keys)."""
CHUNK: Final = 1000
"""Devices per script call, so Redis never runs one script for long."""
CLAIMING_SECONDS: Final = 600
"""How long a rollout being claimed holds its devices before it is stored."""


def claim_bucket(device_id: str) -> str:
    """The key of the hash holding a device's claim, in the device's shard."""
    crc = zlib.crc32(device_id.encode())
    return f"{shard_prefix('claims', crc % SHARDS)}{(crc // SHARDS) % BUCKETS}"


def legacy_claims_key(sec_tag: int) -> str:
    """The per-(device, sec_tag) claims hash of rollouts stored before claims were per device."""
    return f"{CLAIMS}{sec_tag}"


def _by_slot(device_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """(bucket key, device) pairs grouped by shard prefix, each group in the order given."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for device_id in device_ids:
        key = claim_bucket(device_id)
        groups.setdefault(key[: key.rindex(":") + 1], []).append((key, device_id))
    return groups


def _chunks(device_ids: Iterable[str]) -> Iterator[list[tuple[str, str]]]:
    """(bucket key, device) pairs, one shard and at most `CHUNK` devices a chunk."""
    for pairs in _by_slot(device_ids).values():
        for start in range(0, len(pairs), CHUNK):
            yield pairs[start : start + CHUNK]


def _script_args(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The script's KEYS (each bucket once) and its (key index, device) arguments."""
    keys: dict[str, int] = {}
    args: list[str] = []
    for key, device in pairs:
        args += [str(keys.setdefault(key, len(keys) + 1)), device]
    return list(keys), args


def _legacy_keys(client: Any) -> list[str]:
    """The claim hashes of rollouts stored before (few), those still holding devices."""
    if not client.exists(LEGACY + ":scanned"):
        # A cluster's SCAN walks one node: ask every primary (the only cluster branch here).
        where = {"target_nodes": RedisCluster.PRIMARIES} if isinstance(client, RedisCluster) else {}
        found = [
            k
            for k in client.scan_iter(match=CLAIMS + "*", count=1000, **where)
            if k[len(CLAIMS) :].isdigit()
        ]
        if found:
            client.sadd(LEGACY, *found)
        client.set(LEGACY + ":scanned", "1")
    listed = sorted(client.smembers(LEGACY))
    pipe = client.pipeline(transaction=False)
    for key in [DEVICE_CLAIMS, *listed]:
        pipe.exists(key)
    device_hash, *alive_flags = pipe.execute()
    alive = [k for k, n in zip(listed, alive_flags, strict=True) if n]
    if len(alive) < len(listed):  # emptied as their rollouts ended: forget them
        client.srem(LEGACY, *(k for k in listed if k not in alive))
    return [DEVICE_CLAIMS, *alive] if device_hash else alive


def _legacy_held(
    client: Any, keys: Sequence[str], rollout_id: str, devices: Sequence[str]
) -> set[str]:
    """The devices another rollout holds in the claim hashes stored before."""
    held: set[str] = set()
    for key in keys:
        for start in range(0, len(devices), CHUNK):
            chunk = devices[start : start + CHUNK]
            holders = client.hmget(key, chunk)
            held.update(d for d, h in zip(chunk, holders, strict=True) if h and h != rollout_id)
    return held


def _stale(client: Any, holders: Iterable[str]) -> set[str]:
    """The holders that are neither stored rollouts nor being claimed (a claim that died)."""
    ordered = sorted(set(holders))
    pipe = client.pipeline(transaction=False)
    for holder in ordered:
        pipe.exists(rollout_key(holder, "meta"))
        pipe.exists(rollout_key(holder, "claiming"))
    found = pipe.execute()
    return {h for i, h in enumerate(ordered) if not found[2 * i] and not found[2 * i + 1]}


def claim_devices(client: Any, rollout_id: str, device_ids: Sequence[str]) -> list[str]:
    """Claim each device for this rollout; return the devices held by another one.

    One script call per shard chunk, each atomic; on any conflict nothing stays
    claimed (chunks claimed before it are released: compensation across shards) and
    every conflicting device is listed. A claim held by a rollout neither stored nor
    being claimed (see the module docstring) is taken over.
    """
    script = load_script(client, "orchestrator.adapters", "claim_devices")
    with store_errors():
        client.set(rollout_key(rollout_id, "claiming"), "1", ex=CLAIMING_SECONDS)
        legacy = _legacy_keys(client)
        held = _legacy_held(client, legacy, rollout_id, device_ids) if legacy else set()
        stale: set[str] = set()
        claimed: list[str] = []
        for pairs in _chunks(device_ids):
            keys, args = _script_args(pairs)
            while True:
                found = script(
                    keys=keys, args=[rollout_id, "0" if held else "1", " ".join(stale), *args]
                )
                holders = dict(zip(found[::2], found[1::2], strict=True))
                newly_stale = _stale(client, holders.values()) if holders else set()
                if not newly_stale:
                    break
                stale |= newly_stale  # take those over: the same chunk again
            if holders:
                held.update(holders)
            elif not held:
                claimed.extend(device for _, device in pairs)
        if held:
            _release(client, rollout_id, claimed)
        return sorted(held)


def release_devices(client: Any, rollout_id: str, device_ids: Iterable[str]) -> None:
    """Drop this rollout's claims (only those it holds), those stored earlier too."""
    devices = list(device_ids)
    with store_errors():
        for key in _legacy_keys(client):
            for start in range(0, len(devices), CHUNK):
                chunk = devices[start : start + CHUNK]
                holders = client.hmget(key, chunk)
                mine = [d for d, h in zip(chunk, holders, strict=True) if h == rollout_id]
                if mine:
                    client.hdel(key, *mine)
        _release(client, rollout_id, devices)


def _release(client: Any, rollout_id: str, devices: Sequence[str]) -> None:
    """Drop this rollout's sharded claims on the devices: one script call per shard chunk."""
    script = load_script(client, "orchestrator.adapters", "release_claims")
    calls = []
    for pairs in _chunks(devices):
        keys, args = _script_args(pairs)
        calls.append(ScriptCall(script, keys, [rollout_id, *args]))
    run_script_calls(client, calls)


def claim_holders(client: Any, device_ids: Sequence[str]) -> dict[str, str]:
    """The rollout holding each claimed device (sharded claims; devices unclaimed left out)."""
    with store_errors():
        pipe = client.pipeline(transaction=False)
        for device in device_ids:
            pipe.hget(claim_bucket(device), device)
        return {d: h for d, h in zip(device_ids, pipe.execute(), strict=True) if h is not None}
