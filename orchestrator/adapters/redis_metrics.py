"""Counters and gauges shared by every certfleet process, kept in one Redis hash.

Workers, listeners and the API each count what they do here; `/metrics` reads the
hash at scrape time, so the numbers add up across processes and restarts.

Key: `certfleet:metrics` (hash): JSON `[name, [[label, value], ...]]` -> the counter's or
gauge's value. One key, one command each time (on a cluster, in that key's slot).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors

__all__ = ["METRICS_KEY", "RedisMetrics"]

METRICS_KEY = "certfleet:metrics"


def _field(name: str, labels: Mapping[str, str] | None) -> str:
    return json.dumps([name, sorted((labels or {}).items())], separators=(",", ":"))


class RedisMetrics:
    """`Metrics` port: HINCRBYFLOAT for counters, HSET for gauges."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    def incr(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1) -> None:
        """Add to a counter."""
        with store_errors():
            self._redis.hincrbyfloat(METRICS_KEY, _field(name, labels), amount)

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set a gauge."""
        with store_errors():
            self._redis.hset(METRICS_KEY, _field(name, labels), value)

    def snapshot(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every metric: (name, sorted labels) -> value."""
        with store_errors():
            raw: dict[str, str] = self._redis.hgetall(METRICS_KEY)
        values = {}
        for field, value in raw.items():
            name, labels = json.loads(field)
            values[(name, tuple((k, v) for k, v in labels))] = float(value)
        return values
