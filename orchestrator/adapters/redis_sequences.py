"""Per-device bundle sequence numbers in Redis.

Keys: `certfleet:seq:<device_id>`, a string holding the last seq issued to the device
(an integer, INCR'd), one per device that was ever sent a bundle, with no hash tag: each
lies in its own slot, and every command touches one key, so a Redis Cluster spreads them
over its masters. A batch's numbers are one pipelined round trip of INCRs, which the
cluster client splits by node (non-transactional: each INCR is atomic by itself).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors

__all__ = ["RedisSequences"]

SEQ = "certfleet:seq:"


class RedisSequences:
    """`SequenceStore`: INCR on `certfleet:seq:{device_id}`, atomic across processes."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client

    def next_sequence(self, device_id: str) -> int:
        """INCR."""
        with store_errors():
            return int(self._redis.incr(SEQ + device_id))

    def next_sequences(self, device_ids: Sequence[str]) -> dict[str, int]:
        """Pipelined INCRs."""
        if not device_ids:
            return {}
        with store_errors():
            pipe = self._redis.pipeline(transaction=False)
            for device_id in device_ids:
                pipe.incr(SEQ + device_id)
            return {d: int(n) for d, n in zip(device_ids, pipe.execute(), strict=True)}
