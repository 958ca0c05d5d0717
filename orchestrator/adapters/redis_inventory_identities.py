"""The inventory's identity index in Redis: the devices' client certificates (type 1).

`certfleet:inv:keys` (hash): the SHA-256 of each reported client certificate's
SubjectPublicKeyInfo -> the first device that reported it, never forgotten, so a CSR
for a key certfleet has seen in use (another device's, or one the device held before)
is refused.

`certfleet:inv:idexp:{sec_tag}` (zset): device id -> notAfter of its type-1 item in that
tag, and `_identity` in `certfleet:inv:dev:{id}`: the device's identity tag. Both are
written by `lua/record_states.lua` in the step that applies the device's state (a newer
state replaces them, an older one changes nothing), so they cost the ingest no round
trip of their own; this module reads them. A device that names its identity tag is
indexed by that tag's certificate alone, the one it presents (a certificate left in the
old tag until its retire is no identity, and a device stops counting there once its
state names the new tag); a device that names none (an older firmware) by every type-1
item it holds.

Kept apart from `exp:{sec_tag}` (the earliest notAfter of every item in a tag, which the
CA classes read) so identities are classified and renewed by their own window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from redis.commands.core import Script

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.domain.inventory import ExpiringItem, ExpiryWindow
from orchestrator.ports import ExpiryCounts

__all__ = ["IDENTITY_INDEX", "INV", "IdentityIndexReads"]

INV: Final = "certfleet:inv:"
IDENTITY_INDEX: Final = "idexp"
"""The name of the per-tag identity expiry zset under `INV` (and the expiring_items
script's argument that selects it)."""


class IdentityIndexReads:
    """The identity queries of `RedisInventory` (set up by its constructor)."""

    _redis: RedisClient
    _expiring: Script
    """`lua/expiring_items.lua`."""

    @store_errors()
    def identity_tags_of(self, device_ids: Sequence[str]) -> dict[str, int | None]:
        """Each device's identity tag from its last applied state, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(INV + "dev:" + device_id, "_identity")
        return {d: int(v) if v else None for d, v in zip(device_ids, pipe.execute(), strict=True)}

    @store_errors()
    def key_holders(self, spki_sha256s: Sequence[str]) -> dict[str, str]:
        """Of these client keys, those a reported certificate had, with the first device."""
        if not spki_sha256s:
            return {}
        found: list[str | None] = self._redis.hmget(INV + "keys", list(spki_sha256s))  # type: ignore[assignment]  # sync client
        return {k: d for k, d in zip(spki_sha256s, found, strict=True) if d is not None}

    @store_errors()
    def expiring_identities(self, sec_tag: int, before: datetime) -> list[str]:
        """Devices whose identity certificate in `sec_tag` expires at or before `before`."""
        found = self._redis.zrangebyscore(
            f"{INV}{IDENTITY_INDEX}:{sec_tag}", "-inf", before.timestamp()
        )
        return sorted(found)  # type: ignore[arg-type]  # sync client

    @store_errors()
    def identity_expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """Three ZCOUNTs per tag on the identity index, in one round trip."""
        return index_class_counts(self._redis, IDENTITY_INDEX, sec_tags, window)

    @store_errors()
    def expiring_identity_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """Expired and expiring client certificates, soonest first, at most `limit`.

        One script call per tag reads the index and each listed certificate's subject on
        the server, as `expiring_items` does for the CA classes.
        """
        return index_expiring_items(
            self._redis, self._expiring, IDENTITY_INDEX, sec_tags, window, limit=limit
        )


def index_class_counts(
    client: RedisClient, index: str, sec_tags: Sequence[int], window: ExpiryWindow
) -> dict[int, ExpiryCounts]:
    """(expired, expiring, ok) per tag of an expiry index (`exp` or `idexp`): three
    ZCOUNTs a tag, in one round trip."""
    pipe = client.pipeline(transaction=False)
    lo, hi = window.expired_before, window.expiring_until
    for tag in sec_tags:
        key = f"{INV}{index}:{tag}"
        pipe.zcount(key, "-inf", f"({lo}")
        pipe.zcount(key, lo, hi)
        pipe.zcount(key, f"({hi}", "+inf")
    counts = pipe.execute()
    return {
        tag: (int(counts[3 * i]), int(counts[3 * i + 1]), int(counts[3 * i + 2]))
        for i, tag in enumerate(sec_tags)
    }


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
    first, at most `limit`: one `expiring_items` script call per tag, in one round trip."""
    if limit <= 0 or not sec_tags:
        return []
    pipe = client.pipeline(transaction=False)
    until = repr(window.expiring_until)
    for tag in sec_tags:
        expiring(args=[INV, tag, until, limit, index], client=pipe)
    found: list[tuple[float, str, int, str | None]] = []
    for tag, flat in zip(sec_tags, pipe.execute(), strict=True):
        for i in range(0, len(flat), 4):
            subject = flat[i + 3] if flat[i + 2] == "1" else None
            found.append((float(flat[i + 1]), flat[i], tag, subject))
    found.sort(key=lambda f: f[:3])
    return [
        ExpiringItem(
            device_id=device_id,
            sec_tag=tag,
            not_after=datetime.fromtimestamp(score, UTC),
            subject=subject,
        )
        for score, device_id, tag, subject in found[:limit]
    ]
