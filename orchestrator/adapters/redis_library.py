"""The credential library in Redis: SHA-256 -> PEM, and each device's bounded share of it.

Layout:

- `certfleet:lib` (hash): SHA-256 -> PEM, content-addressed (an entry never changes);
- `certfleet:lib:pinned` (set): digests an operator imported (`certfleet pem import`),
  never evicted;
- `certfleet:lib:refs` (hash): digest -> how many devices' shares hold it;
- `certfleet:inv:libshare:{id}` (zset): the digests the device's applied states
  brought -> when first brought (its share, at most `LIBRARY_SHARE_MAX`);
- `certfleet:lib:evicted` (string): entries dropped from shares over the share bound.

A device's pems join the library with its state (`lua/record_states.lua`, only when the
state is applied). A device's share keeps its `LIBRARY_SHARE_MAX` latest digests: past
that the oldest leaves the share (counted), and the entry leaves the library once no
share holds it and no operator pinned it. So one device, however many distinct pems it
sends over its life, holds at most that many entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors

__all__ = [
    "LIB",
    "LIBRARY_SHARE_MAX",
    "LIB_EVICTED",
    "LIB_PINNED",
    "LIB_REFS",
    "RedisCredentialLibrary",
]

LIB: Final = "certfleet:lib"
LIB_PINNED: Final = LIB + ":pinned"
LIB_REFS: Final = LIB + ":refs"
LIB_EVICTED: Final = LIB + ":evicted"
LIBRARY_SHARE_MAX: Final = 16
"""Library entries one device's states may hold at a time: a modem's CA and certificate
items (at most 7 active tags, a few types each) fit with room for a rotation's."""


class RedisCredentialLibrary:
    """`CredentialLibrary` on one Redis hash."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client

    @store_errors()
    def add(self, pems: Mapping[str, str]) -> int:
        """HSETNX each entry and pin it (an operator's import is never evicted)."""
        if not pems:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for digest, pem in pems.items():
            pipe.hsetnx(LIB, digest, pem)
        pipe.sadd(LIB_PINNED, *pems)
        return sum(int(new) for new in pipe.execute()[:-1])

    @store_errors()
    def known(self, digests: Sequence[str]) -> set[str]:
        """HEXISTS for each digest, pipelined."""
        if not digests:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for digest in digests:
            pipe.hexists(LIB, digest)
        return {d for d, present in zip(digests, pipe.execute(), strict=True) if present}

    @store_errors()
    def get(self, digest: str) -> str | None:
        """HGET."""
        pem = self._redis.hget(LIB, digest)
        return str(pem) if pem is not None else None

    @store_errors()
    def evicted(self) -> int:
        """Entries dropped from devices' shares over `LIBRARY_SHARE_MAX`, ever."""
        return int(self._redis.get(LIB_EVICTED) or 0)
