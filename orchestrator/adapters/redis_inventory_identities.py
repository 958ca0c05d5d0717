"""The inventory's identity index in Redis, and the reads every expiry index shares.

`certfleet:inv:{tag}:keys` (hash, one per shard): the SHA-256 of each reported client
certificate's SubjectPublicKeyInfo -> `<receive time> <device id>` of the first device of
the shard that reported it (the earliest over the shards is the key's first holder),
never forgotten, so a CSR for a key certfleet has seen in use (another device's, or
one the device held before) is refused; `key_holders` reads every shard's.

`certfleet:inv:{tag}:idexp:{sec_tag}` (zset): device id -> notAfter of its type-1 item in
that tag, and the identity tag in the device's record (`redis_inventory_records`). Both
are written by `lua/record_states.lua` in the step that applies the device's state (a
newer state replaces them, an older one changes nothing), so they cost the ingest no
round trip of their own; this module reads them. A device that names its identity tag
is indexed by that tag's certificate alone, the one it presents (a certificate left in
the old tag until its retire is no identity, and a device stops counting there once its
state names the new tag); a device that names none (an older firmware) by every type-1
item it holds.

Kept apart from `exp:{sec_tag}` (the earliest notAfter of every item in a tag, which the
CA classes read) so identities are classified and renewed by their own window. Both
indexes are split by shard: counts are summed over the shards, lists merged.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from redis.commands.core import Script

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.adapters.redis_inventory_records import (
    BUCKETS,
    decode_record,
    record_key,
)
from orchestrator.adapters.redis_keys import inventory_prefixes
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls
from orchestrator.domain.inventory import ExpiringItem, ExpiryWindow
from orchestrator.ports import ExpiryCounts

__all__ = ["IDENTITY_INDEX", "INV", "IdentityIndexReads"]

INV: Final = "certfleet:inv:"
"""The prefix of the inventory's global keys (`rejected`, `scan:last`)."""
IDENTITY_INDEX: Final = "idexp"
"""The name of the per-tag identity expiry zset of a shard (and the expiring_items
script's argument that selects it)."""
FIRST_PAGE_SLACK: Final = 8
"""Entries read past an even split of the limit on a shard's first page, with a quarter
more: the shards' shares of a list vary (about the square root of a share), and a shard
whose first page falls short costs the merge a round trip of its own."""


class IdentityIndexReads:
    """The identity queries of `RedisInventory` (set up by its constructor)."""

    _redis: RedisClient
    _expiring: Script
    """`lua/expiring_items.lua`."""
    _counts: Script
    """`lua/index_counts.lua`."""

    @store_errors()
    def identity_tags_of(self, device_ids: Sequence[str]) -> dict[str, int | None]:
        """Each device's identity tag from its last applied state, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(record_key(device_id), device_id)
        return {
            d: decode_record(raw).identity_tag if raw else None
            for d, raw in zip(device_ids, pipe.execute(), strict=True)
        }

    @store_errors()
    def key_holders(self, spki_sha256s: Sequence[str]) -> dict[str, str]:
        """Of these client keys, those a reported certificate had, with the first device
        that reported it (every shard's `keys` read, the earliest kept, one round trip)."""
        if not spki_sha256s:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.hmget(prefix + "keys", list(spki_sha256s))
        first: dict[str, tuple[float, str]] = {}
        for holders in pipe.execute():
            for key, held in zip(spki_sha256s, holders, strict=True):
                if held is not None:
                    at, _, device = held.partition(" ")
                    if key not in first or float(at) < first[key][0]:
                        first[key] = (float(at), device)
        return {key: device for key, (_, device) in first.items()}

    @store_errors()
    def expiring_identities(self, sec_tag: int, before: datetime) -> list[str]:
        """Devices whose identity certificate in `sec_tag` expires at or before `before`."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.zrangebyscore(f"{prefix}{IDENTITY_INDEX}:{sec_tag}", "-inf", before.timestamp())
        return sorted(d for found in pipe.execute() for d in found)

    @store_errors()
    def identity_expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """The identity index's classes per tag, the shards summed, in one round trip."""
        return index_class_counts(self._redis, self._counts, IDENTITY_INDEX, sec_tags, window)

    @store_errors()
    def expiring_identity_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """Expired and expiring client certificates, soonest first, at most `limit`.

        Script calls per tag and shard read the index and each listed certificate's
        subject on the server, as `expiring_items` does for the CA classes.
        """
        return index_expiring_items(
            self._redis, self._expiring, IDENTITY_INDEX, sec_tags, window, limit=limit
        )


def index_class_counts(
    client: RedisClient,
    counts: Script,
    index: str,
    sec_tags: Sequence[int],
    window: ExpiryWindow,
) -> dict[int, ExpiryCounts]:
    """(expired, expiring, ok) per tag of an expiry index (`exp` or `idexp`): one
    `index_counts` script call a shard for every tag, summed, in one round trip."""
    if not sec_tags:
        return {}
    bounds = [repr(window.expired_before), repr(window.expiring_until)]
    calls = [
        ScriptCall(counts, [f"{prefix}{index}:{tag}" for tag in sec_tags], bounds)
        for prefix in inventory_prefixes()
    ]
    summed = [0] * (3 * len(sec_tags))
    for found in run_script_calls(client, calls):
        for i, n in enumerate(found):
            summed[i] += int(n)
    return {
        tag: (summed[3 * i], summed[3 * i + 1], summed[3 * i + 2]) for i, tag in enumerate(sec_tags)
    }


_Entry = tuple[float, str, int, str | None]
"""(notAfter, device id, sec_tag, subject) of a listed item."""


def _listed(score: float, device_id: str, tag: int, subject: str | None) -> ExpiringItem:
    return ExpiringItem(
        device_id=device_id,
        sec_tag=tag,
        not_after=datetime.fromtimestamp(score, UTC),
        subject=subject,
    )


def index_expiring_items(
    client: RedisClient,
    expiring: Script,
    index: str,
    sec_tags: Sequence[int],
    window: ExpiryWindow,
    *,
    limit: int,
) -> list[ExpiringItem]:
    """The expired and expiring entries of an expiry index with their subjects, soonest
    first, at most `limit`: a k-way merge of the (tag, shard) lists, each read in pages.

    The first pages (an even share of `limit` and a little more each) go in one round
    trip; a list whose page the merge used up before `limit` was reached is read
    further (its next page twice as long), so a skewed fleet costs a few round trips
    more, and the result is exact.
    """
    if limit <= 0 or not sec_tags:
        return []
    prefixes = inventory_prefixes()
    streams = [(tag, prefix) for tag in sec_tags for prefix in prefixes]
    until = repr(window.expiring_until)
    even = -(-limit // len(prefixes))
    page = even + even // 4 + FIRST_PAGE_SLACK
    offsets = [0] * len(streams)
    sizes = [page] * len(streams)
    done = [False] * len(streams)
    buffers: list[list[_Entry]] = [[] for _ in streams]

    def read(which: list[int]) -> None:
        calls = [
            ScriptCall(
                expiring,
                [f"{streams[i][1]}{index}:{streams[i][0]}"],
                [streams[i][1], streams[i][0], until, offsets[i], sizes[i], index, BUCKETS],
            )
            for i in which
        ]
        for i, flat in zip(which, run_script_calls(client, calls), strict=True):
            tag = streams[i][0]
            entries: list[_Entry] = []
            for j in range(0, len(flat), 4):
                row = flat[j : j + 4]
                entries.append((float(row[1]), row[0], tag, row[3] if row[2] == "1" else None))
            offsets[i] += len(entries)
            done[i] = len(entries) < sizes[i]
            sizes[i] *= 2
            buffers[i] = entries[::-1]  # popped from the end: soonest last

    read(list(range(len(streams))))
    if all(done):  # every list read whole: one sort of the sorted runs
        merged = sorted(entry for entries in buffers for entry in entries)[:limit]
        return [_listed(*entry) for entry in merged]
    heap = [(*buffers[i].pop(), i) for i in range(len(streams)) if buffers[i]]
    heapq.heapify(heap)
    found: list[ExpiringItem] = []
    while heap and len(found) < limit:
        score, device_id, tag, subject, i = heapq.heappop(heap)
        found.append(_listed(score, device_id, tag, subject))
        if not buffers[i] and not done[i] and len(found) < limit:
            read([i])
        if buffers[i]:
            heapq.heappush(heap, (*buffers[i].pop(), i))
    return found
