"""The credential library in Redis: SHA-256 -> PEM, and each device's bounded share of it.

Layout:

- `certfleet:lib` (hash): SHA-256 -> PEM of what an operator imported (`certfleet pem
  import`), content-addressed (an entry never changes);
- `certfleet:lib:pinned` (set): the digests an operator imported, never evicted;
- `certfleet:inv:{tag}:lib` (hash, one per inventory shard, in the shard's slot):
  SHA-256 -> PEM of what the shard's devices brought with their states;
- `certfleet:inv:{tag}:lib:refs` (hash): digest -> how many of the shard's device shares
  hold it;
- `certfleet:inv:{tag}:libshare:{id}` (zset): the digests the device's applied states
  brought -> when first brought (its share, at most `LIBRARY_SHARE_MAX`);
- `certfleet:inv:{tag}:lib:evicted` (string): entries dropped from the shard's shares over
  the share bound (`evicted` sums the shards).

A device's pems join its shard's library with its state (`lua/record_states.lua`, only
when the state is applied), so recording a state touches its shard's slot alone. A
device's share keeps its `LIBRARY_SHARE_MAX` latest digests: past that the oldest
leaves the share (counted), and the entry leaves the shard's library once no share of
the shard holds it (an operator's import stays in `certfleet:lib`). So one device,
however many distinct pems it sends over its life, holds at most that many entries. A
lookup by digest reads the global library and every shard's in one pipelined round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import load_script, store_errors
from orchestrator.adapters.redis_keys import inventory_prefix, inventory_prefixes, shard_of
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls

__all__ = [
    "LIB",
    "LIBRARY_SHARE_MAX",
    "LIB_PINNED",
    "RedisCredentialLibrary",
    "shard_library_keys",
]

LIB: Final = "certfleet:lib"
LIB_PINNED: Final = LIB + ":pinned"
LIBRARY_SHARE_MAX: Final = 16
"""Library entries one device's states may hold at a time: a modem's CA and certificate
items (at most 7 active tags, a few types each) fit with room for a rotation's."""


def shard_library_keys(prefix: str) -> tuple[str, str, str]:
    """The library keys of the shard with this inventory prefix: entries, refs, evicted."""
    return prefix + "lib", prefix + "lib:refs", prefix + "lib:evicted"


def _libraries() -> list[str]:
    return [LIB, *(shard_library_keys(prefix)[0] for prefix in inventory_prefixes())]


class RedisCredentialLibrary:
    """`CredentialLibrary` on Redis: the operator's hash and one per inventory shard."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client
        self._known = load_script(client, "orchestrator.adapters", "library_known")

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
        """HEXISTS for each digest in the global library and every shard's: one script
        call per library, in one round trip."""
        if not digests:
            return set()
        wanted = list(digests)
        calls = [ScriptCall(self._known, [library], wanted) for library in _libraries()]
        found: set[str] = set()
        for held in run_script_calls(self._redis, calls):
            found.update(d for d, present in zip(wanted, held, strict=True) if present)
        return found

    @store_errors()
    def get(self, digest: str) -> str | None:
        """HGET from the global library, else the first shard's holding it."""
        pipe = self._redis.pipeline(transaction=False)
        for library in _libraries():
            pipe.hget(library, digest)
        pem = next((p for p in pipe.execute() if p is not None), None)
        return str(pem) if pem is not None else None

    @store_errors()
    def evicted(self) -> int:
        """Entries dropped from devices' shares over `LIBRARY_SHARE_MAX`, ever."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.get(shard_library_keys(prefix)[2])
        return sum(int(n or 0) for n in pipe.execute())

    @store_errors()
    def digests(self) -> set[str]:
        """Every digest the library holds, an operator's and every shard's."""
        pipe = self._redis.pipeline(transaction=False)
        for library in _libraries():
            pipe.hkeys(library)
        return {d for found in pipe.execute() for d in found}

    @store_errors()
    def share_of(self, device_id: str) -> list[str]:
        """The digests a device's share holds, oldest first (what its states brought)."""
        key = f"{inventory_prefix(shard_of(device_id))}libshare:{device_id}"
        return list(self._redis.zrange(key, 0, -1))  # type: ignore[arg-type]  # sync client
