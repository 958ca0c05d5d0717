"""What certfleet last published of the CRL, and the debounce of refreshes, in Redis.

- `certfleet:id:crl:published` (hash): `digest` (SHA-256 of the revoked serials the CRL
  listed) and `at` (epoch seconds) of the last publish;
- `certfleet:id:crl:refresh` (string, PX): set while a coalesced refresh is pending.

Each command touches one of them (on a cluster, each in whatever slot its name has).
"""

from __future__ import annotations

from typing import Any, Final

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors

__all__ = ["PUBLISHED", "REFRESH", "RedisCrlPublications"]

PUBLISHED: Final = "certfleet:id:crl:published"
REFRESH: Final = "certfleet:id:crl:refresh"


class RedisCrlPublications:
    """`CrlPublications` on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    def last_published(self) -> tuple[str, float] | None:
        """HGETALL of the published hash (None before the first publish)."""
        with store_errors():
            found = self._redis.hgetall(PUBLISHED)
        if not found or "digest" not in found or "at" not in found:
            return None
        return str(found["digest"]), float(found["at"])

    def record_published(self, digest: str, at: float) -> None:
        """HSET digest and time together."""
        with store_errors():
            self._redis.hset(PUBLISHED, mapping={"digest": digest, "at": repr(at)})

    def claim_refresh(self, ttl_ms: int) -> bool:
        """SET NX PX: the first caller in the window gets it."""
        with store_errors():
            return bool(self._redis.set(REFRESH, "1", nx=True, px=max(1, ttl_ms)))
