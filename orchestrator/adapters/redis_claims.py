"""Claims in Redis: which rollout holds each (device, sec_tag), so two never change one slot.

`certfleet:claims:{sec_tag}` (hash): device -> the id of the rollout that holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator.adapters.redis_errors import store_errors

__all__ = ["CLAIMS", "claim_devices", "release_devices"]

CLAIMS = "certfleet:claims:"


def claim_devices(
    client: Any, rollout_id: str, tags: Sequence[int], device_ids: Sequence[str]
) -> list[str]:
    """Claim (device, tag) for this rollout; return the devices held by another one.

    On any conflict nothing stays claimed.
    """
    with store_errors():
        pipe = client.pipeline(transaction=False)
        for tag in tags:
            for device in device_ids:
                pipe.hsetnx(CLAIMS + str(tag), device, rollout_id)
        won = pipe.execute()
        pairs = [(tag, d) for tag in tags for d in device_ids]
        lost = [pair for pair, ok in zip(pairs, won, strict=True) if not ok]
        if not lost:
            return []
        holders = client.pipeline(transaction=False)
        for tag, device in lost:
            holders.hget(CLAIMS + str(tag), device)
        conflicts = sorted(
            {
                d
                for (_, d), holder in zip(lost, holders.execute(), strict=True)
                if holder != rollout_id
            }
        )
        if conflicts:
            release_devices(
                client, rollout_id, tags, [d for (_, d), ok in zip(pairs, won, strict=True) if ok]
            )
        return conflicts


def release_devices(
    client: Any, rollout_id: str, tags: Sequence[int], device_ids: Iterable[str]
) -> None:
    """Drop this rollout's claims (only those it holds)."""
    devices = list(device_ids)
    with store_errors():
        for tag in tags:
            key = CLAIMS + str(tag)
            for start in range(0, len(devices), 1000):
                chunk = devices[start : start + 1000]
                holders = client.hmget(key, chunk)
                mine = [d for d, h in zip(chunk, holders, strict=True) if h == rollout_id]
                if mine:
                    client.hdel(key, *mine)
