"""Claims in Redis: which rollout holds each device, so two rollouts never change one device.

`certfleet:claims:device` (hash): device -> the id of the rollout that holds it. One
rollout at a time per device: a device keeps one undo record, so a second rollout's
change would leave the first one nothing to roll back.

Rollouts stored before claims were per device hold `certfleet:claims:{sec_tag}`
(hash: device -> rollout) per (device, sec_tag). A device such a rollout holds is held
for every new claim, and `release_devices` drops those claims too, so stored rollouts
keep working; the per-tag hashes empty (and vanish) as those rollouts end. They are
found once, by one SCAN of the keyspace, and listed in `certfleet:claims:legacy`
(set), so a claim never walks a large keyspace again; this code writes no new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from orchestrator.adapters.redis_errors import load_script, store_errors

__all__ = ["CLAIMS", "DEVICE_CLAIMS", "claim_devices", "release_devices"]

CLAIMS: Final = "certfleet:claims:"
DEVICE_CLAIMS: Final = CLAIMS + "device"
LEGACY: Final = CLAIMS + "legacy"
"""The per-tag claim hashes found by the one SCAN (set), and `…:scanned` once it ran."""
CHUNK: Final = 1000
"""Devices per script call, so Redis never runs one script for long."""


def _tag_claims(client: Any) -> list[str]:
    """The per-(device, sec_tag) claim hashes still stored (one per sec_tag in use, few)."""
    if not client.exists(LEGACY + ":scanned"):
        found = [
            k
            for k in client.scan_iter(match=CLAIMS + "*", count=1000)
            if k[len(CLAIMS) :].isdigit()
        ]
        if found:
            client.sadd(LEGACY, *found)
        client.set(LEGACY + ":scanned", "1")
    listed = sorted(client.smembers(LEGACY))
    if not listed:
        return []
    pipe = client.pipeline(transaction=False)
    for key in listed:
        pipe.exists(key)
    alive = [k for k, n in zip(listed, pipe.execute(), strict=True) if n]
    if len(alive) < len(listed):  # emptied as their rollouts ended: forget them
        client.srem(LEGACY, *(k for k in listed if k not in alive))
    return alive


def claim_devices(client: Any, rollout_id: str, device_ids: Sequence[str]) -> list[str]:
    """Claim each device for this rollout; return the devices held by another one.

    Each chunk is claimed atomically; on any conflict nothing stays claimed (chunks
    claimed before it are released) and every conflicting device is listed.
    """
    script = load_script(client, "orchestrator.adapters", "claim_devices")
    with store_errors():
        keys = [DEVICE_CLAIMS, *_tag_claims(client)]
        held: list[str] = []
        claimed: list[str] = []
        for start in range(0, len(device_ids), CHUNK):
            chunk = list(device_ids[start : start + CHUNK])
            found = script(keys=keys, args=[rollout_id, "0" if held else "1", *chunk])
            if found:
                held.extend(found)
            elif not held:
                claimed.extend(chunk)
        if held:
            _drop(client, [DEVICE_CLAIMS], rollout_id, claimed)
        return sorted(set(held))


def release_devices(client: Any, rollout_id: str, device_ids: Iterable[str]) -> None:
    """Drop this rollout's claims (only those it holds), per-tag ones stored earlier too."""
    with store_errors():
        _drop(client, [DEVICE_CLAIMS, *_tag_claims(client)], rollout_id, list(device_ids))


def _drop(client: Any, keys: Sequence[str], rollout_id: str, devices: Sequence[str]) -> None:
    for key in keys:
        for start in range(0, len(devices), CHUNK):
            chunk = devices[start : start + CHUNK]
            holders = client.hmget(key, chunk)
            mine = [d for d, h in zip(chunk, holders, strict=True) if h == rollout_id]
            if mine:
                client.hdel(key, *mine)
