"""Per-device bundle sequence numbers in Redis."""

from __future__ import annotations

import redis

from orchestrator.adapters.redis_inventory import store_errors

__all__ = ["RedisSequences"]

SEQ = "certfleet:seq:"


class RedisSequences:
    """`SequenceStore`: INCR on `certfleet:seq:{device_id}`, atomic across processes."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def next_sequence(self, device_id: str) -> int:
        """INCR."""
        with store_errors():
            return int(self._redis.incr(SEQ + device_id))
