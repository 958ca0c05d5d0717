"""The expiring list of the inventory in pages: after or before an item, by device id prefix.

The list is every (device, sec_tag) of the expiry index (`exp:{sec_tag}` of each shard)
whose notAfter is at or before the window's end, ordered by (notAfter, device id,
sec_tag). A page is asked for by its neighbour (the item it follows or precedes), not
by an offset: `lua/expiring_page.lua` places the cursor in each (tag, shard) index by
rank in O(log n) and reads on from there, so the 20,000th page of a million-device list
costs what the first does. Its lists are merged exactly, as `index_expiring_items`
merges the scan's.

A device id prefix is matched on the server while the index is read by rank (the
window's end is a rank too, so no score is compared per entry): a call examines at most
a budget of entries (doubling from call to call, up to `EXAMINE_MAX`), so Redis never
runs one script for long. A page of a prefix costs the entries examined until the page
is full: few for a prefix many listed devices have, the whole list for one that none
has (about a third of a second for a list of a million on one Redis).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from redis.commands.core import Script

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_inventory_identities import FIRST_PAGE_SLACK
from orchestrator.adapters.redis_inventory_records import BUCKETS
from orchestrator.adapters.redis_keys import inventory_prefixes
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls
from orchestrator.domain.inventory import ExpiringItem, ExpiryWindow

__all__ = ["EXAMINE_FIRST", "EXAMINE_MAX", "expiring_page"]

EXAMINE_FIRST: Final = 2_000
"""Entries a (tag, shard) list's first call examines when a prefix filters them."""
EXAMINE_MAX: Final = 32_000
"""The most entries one call examines (the budget doubles up to this)."""

_Entry = tuple[float, str, int, str | None]
"""(notAfter, device id, sec_tag, subject) of a listed item."""


@dataclass(slots=True)
class _Stream:
    """One (tag, shard) index being read."""

    tag: int
    prefix: str
    wanted: int
    examine: int
    position: str = ""
    exhausted: bool = False
    buffer: list[_Entry] = field(default_factory=list)
    """Entries read and not merged yet, the next one last."""


def _score(at: datetime) -> str:
    """A notAfter as the index stores it."""
    return repr(at.timestamp())


def expiring_page(
    client: RedisClient,
    script: Script,
    sec_tags: Sequence[int],
    window: ExpiryWindow,
    *,
    limit: int,
    after: ExpiringItem | None,
    before: ExpiringItem | None,
    device_id_prefix: str,
) -> list[ExpiringItem]:
    """Up to `limit` items of the expiring list, soonest first: the first ones, those
    right after `after`, or those right before `before`; only devices whose id starts
    with `device_id_prefix`."""
    if after is not None and before is not None:
        raise ValueError("a page follows an item or precedes one, not both")
    if limit <= 0 or not sec_tags:
        return []
    direction: Literal["asc", "desc"] = "desc" if before is not None else "asc"
    cursor = before if before is not None else after
    prefixes = inventory_prefixes()
    even = -(-limit // len(prefixes))
    wanted = even + even // 4 + FIRST_PAGE_SLACK
    examine = max(wanted, EXAMINE_FIRST) if device_id_prefix else wanted
    streams = [_Stream(tag, prefix, wanted, examine) for tag in sec_tags for prefix in prefixes]
    until = repr(window.expiring_until)

    def start_args(stream: _Stream) -> list[object]:
        if stream.position or cursor is None:
            return [stream.position, "", "", "0"]
        # Past the cursor's own (notAfter, device id) in this tag when the tag sorts
        # at or before the cursor's (asc), or strictly before it (desc).
        if direction == "asc":
            inclusive = stream.tag <= cursor.sec_tag
        else:
            inclusive = stream.tag < cursor.sec_tag
        return ["", _score(cursor.not_after), cursor.device_id, "1" if inclusive else "0"]

    def read(which: Sequence[_Stream]) -> None:
        calls = [
            ScriptCall(
                script,
                [f"{s.prefix}exp:{s.tag}"],
                [
                    s.prefix,
                    s.tag,
                    until,
                    direction,
                    *start_args(s),
                    s.wanted,
                    s.examine,
                    device_id_prefix,
                    BUCKETS,
                ],
            )
            for s in which
        ]
        for s, reply in zip(which, run_script_calls(client, calls), strict=True):
            s.position, s.exhausted = str(reply[0]), reply[1] == "1"
            rows = reply[2:]
            entries = [
                (float(rows[j + 1]), rows[j], s.tag, rows[j + 3] if rows[j + 2] == "1" else None)
                for j in range(0, len(rows), 4)
            ]
            s.buffer = entries[::-1]
            s.wanted *= 2
            s.examine = min(max(s.examine * 2, s.wanted), EXAMINE_MAX)

    def drain(s: _Stream) -> Iterator[_Entry]:
        while True:
            while s.buffer:
                yield s.buffer.pop()
            if s.exhausted:
                return
            read([s])

    read(streams)
    while needy := [s for s in streams if not s.buffer and not s.exhausted]:
        read(needy)  # every list that found nothing yet, together, until it finds or ends
    merged = heapq.merge(*(drain(s) for s in streams), reverse=direction == "desc")
    page = list(itertools.islice(merged, limit))
    if direction == "desc":
        page.reverse()
    return [
        ExpiringItem(
            device_id=device_id,
            sec_tag=tag,
            not_after=datetime.fromtimestamp(score, UTC),
            subject=subject,
        )
        for score, device_id, tag, subject in page
    ]
