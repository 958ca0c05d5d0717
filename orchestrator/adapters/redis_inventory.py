"""The inventory and credential library in Redis.

Every per-device key lives in the device's shard (`redis_keys.shard_of`), under the
shard's prefix `certfleet:inv:{tag}:` (one hash slot per shard, so a Redis Cluster can
run each script):

- `d:{bucket}` (hash): device id -> the device's record (`redis_inventory_records`: when
  it reported, its protocol version, identity tag, active tags and items), a bucket
  holding the devices whose `bucket_of` is that number;
- `devices` (string): how many devices of the shard have a record;
- `items` (hash): item ref -> JSON of an item (SHA-256, notAfter, subject, issuer),
  content-addressed, and `items:refs` (hash): ref -> records naming it;
- `exp:{sec_tag}` (zset): device id -> earliest notAfter in that tag (the expiry index);
- `idexp:{sec_tag}` (zset): device id -> notAfter of its client certificate (type 1) in that
  tag (the identity index, `redis_inventory_identities`);
- `keys` (hash): SHA-256 of a reported client certificate's SPKI -> `<receive time>
  <device id>` of the first device of the shard that reported it (never forgotten: a key
  certfleet has seen in use gets no new certificate);
- `cadig:{sec_tag}` (hash): CA chain digest -> the shard's devices holding it in that tag;
- `cadev:{sec_tag}:{sha256}` (set): the devices holding that CA chain in that tag;
- `tags` (hash): sec_tag -> the shard's devices holding any item in it;
- `reports:{id}` (stream), `report_keys:{id}` (zset), `report_phases` (hash): the
  report log (`redis_inventory_reports`);
- `lib`, `lib:refs`, `lib:evicted`, `libshare:{id}`: the shard's part of the credential
  library (`redis_library`): a device's pems are written with its state, by the same
  script, only when the state is applied, and count against the device's bounded share.

Global keys (one key per command): `certfleet:inv:rejected` (hash: reason -> refused
device messages), `certfleet:inv:scan:last` (string: JSON of the last scan summary).

One Lua script (`lua/record_states.lua`) replaces a device's items and maintains
every index of its shard in the same atomic step, so a report costs O(items) and a scan
reads counts, not devices; it takes a batch of one shard's devices in one call (their
states JSON-encoded in one argument), and a batch spanning shards goes as one call per
shard in one pipelined round trip. Reads sum the shards' counts and merge their lists.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import load_script, store_errors
from orchestrator.adapters.redis_inventory_identities import (
    INV,
    IdentityIndexReads,
    index_class_counts,
    index_expiring_items,
)
from orchestrator.adapters.redis_inventory_pages import expiring_page
from orchestrator.adapters.redis_inventory_records import (
    BUCKETS,
    bucket_of,
    decode_record,
    encode_record,
    item_from_json,
    item_json,
    item_ref,
    record_active_tags,
    record_key,
)
from orchestrator.adapters.redis_inventory_reports import SCRIPT_CHUNK, ReportLog
from orchestrator.adapters.redis_keys import inventory_prefix, inventory_prefixes, shard_of
from orchestrator.adapters.redis_library import (
    LIBRARY_SHARE_MAX,
    RedisCredentialLibrary,
    shard_library_keys,
)
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls
from orchestrator.domain.credentials import ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiringItem, ExpiryWindow, FleetSummary
from orchestrator.ports import ExpiryCounts

__all__ = ["SCRIPT_CHUNK", "RedisCredentialLibrary", "RedisInventory"]  # re-exported for callers

_PACKAGE = "orchestrator.adapters"
"""Where `lua/` holds this adapter's scripts."""


@dataclass(frozen=True, slots=True)
class _Item:
    """One reported item as `lua/record_states.lua` takes it."""

    args: tuple[str, str, str, str, str]
    """sec_tag, type, SHA-256, notAfter ('' if none), ref."""
    entry: str
    """Its entry in the shard's `items` (sent once per script call)."""
    named: str
    """How the device's record names it."""


@functools.lru_cache(maxsize=4096)
def _item(c: ReportedCredential) -> _Item:
    """An item's arguments (a fleet's devices share a few CA items: cached)."""
    entry = item_json(c)
    ref = item_ref(entry)
    not_after = repr(c.not_after.timestamp()) if c.not_after is not None else ""
    typ = str(int(c.type))
    return _Item(
        args=(str(c.sec_tag), typ, c.sha256, not_after, ref),
        entry=entry,
        named=f"{c.sec_tag}:{typ}:{ref}",
    )


def _state_args(
    state: DeviceState, pems: Mapping[str, str], keys: Sequence[str], entries: dict[str, str]
) -> list[object]:
    """One state as `lua/record_states.lua` takes it, its items' entries added to
    `entries`; of two items with the same sec_tag and type, the later is kept."""
    credentials = state.credentials
    if len(credentials) == 1:
        items = [_item(credentials[0])]
    else:
        items = list({(c.sec_tag, c.type): _item(c) for c in credentials}.values())
    for item in items:
        entries[item.args[4]] = item.entry
    reported = state.reported_at.timestamp()
    return [
        state.device_id,
        bucket_of(state.device_id),
        repr(reported),
        encode_record(
            reported,
            state.protocol_version,
            state.identity_tag,
            state.active_tags,
            " ".join(item.named for item in items),
        ),
        [item.args for item in items],
        list(pems.items()),
        str(state.identity_tag) if state.identity_tag is not None else "",
        list(keys),
    ]


class RedisInventory(IdentityIndexReads, ReportLog):
    """`InventoryStore` on Redis (one Redis or a Redis Cluster: the same keys)."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client
        self._record_states = load_script(client, _PACKAGE, "record_states")
        self._record_reports = load_script(client, _PACKAGE, "record_reports")
        self._expiring = load_script(client, _PACKAGE, "expiring_items")
        self._expiring_page = load_script(client, _PACKAGE, "expiring_page")
        self._counts = load_script(client, _PACKAGE, "index_counts")
        self._device_ids = load_script(client, _PACKAGE, "shard_device_ids")

    @store_errors()
    def record_states(
        self,
        states: Sequence[DeviceState],
        *,
        received_at: datetime,
        pems: Sequence[Mapping[str, str]] = (),
        keys: Sequence[Sequence[str]] = (),
    ) -> int:
        """Apply reports in one round trip; older reports than the stored are ignored.

        The batch is split by shard, one script call per shard (and `SCRIPT_CHUNK`), all
        in one non-transactional pipeline. A state's `pems` are HSETNX'd into its shard's
        library by the same script, only when the state is applied, so a stale state adds
        nothing, and each device's share of the library stays within `LIBRARY_SHARE_MAX`
        (the oldest evicted, counted). Its client `keys` join its shard's `keys` (client
        key -> first device) the same way.
        """
        if not states:
            return 0
        if pems and len(pems) != len(states):
            raise ValueError(f"{len(pems)} pem mappings for {len(states)} states")
        if keys and len(keys) != len(states):
            raise ValueError(f"{len(keys)} key lists for {len(states)} states")
        groups: dict[int, list[int]] = {}
        for i, state in enumerate(states):
            groups.setdefault(shard_of(state.device_id), []).append(i)
        calls = []
        received = repr(received_at.timestamp())
        for shard, indexes in groups.items():
            prefix = inventory_prefix(shard)
            lib, refs, evicted = shard_library_keys(prefix)
            for at in range(0, len(indexes), SCRIPT_CHUNK):
                entries: dict[str, str] = {}
                batch = [
                    _state_args(
                        states[i], pems[i] if pems else {}, keys[i] if keys else (), entries
                    )
                    for i in indexes[at : at + SCRIPT_CHUNK]
                ]
                counts = [prefix + "devices", prefix + "items", prefix + "items:refs"]
                calls.append(
                    ScriptCall(
                        self._record_states,
                        [*counts, lib, refs, evicted],
                        [prefix, received, json.dumps([entries, batch]), LIBRARY_SHARE_MAX],
                    )
                )
        return sum(int(n) for n in run_script_calls(self._redis, calls))

    @store_errors()
    def device_count(self) -> int:
        """The shards' device counters, summed."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.get(prefix + "devices")
        return sum(int(n or 0) for n in pipe.execute())

    @store_errors()
    def reported_at(self, device_ids: Sequence[str]) -> dict[str, datetime]:
        """When each device that has reported sent its last applied state (its clock)."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(record_key(device_id), device_id)
        return {
            d: datetime.fromtimestamp(decode_record(raw).reported_at, UTC)
            for d, raw in zip(device_ids, pipe.execute(), strict=True)
            if raw
        }

    @store_errors()
    def device_credentials(self, device_id: str) -> DeviceState | None:
        """What one device last reported."""
        raw = self._redis.hget(record_key(device_id), device_id)
        if raw is None:
            return None
        record = decode_record(str(raw))
        entries: list[str | None] = []
        if record.items:
            entries = self._redis.hmget(  # type: ignore[assignment]  # sync client
                inventory_prefix(shard_of(device_id)) + "items", [ref for _, _, ref in record.items]
            )
        return DeviceState(
            device_id=device_id,
            reported_at=datetime.fromtimestamp(record.reported_at, UTC),
            active_tags=record.active_tags,
            protocol_version=record.protocol_version,
            identity_tag=record.identity_tag,
            credentials=tuple(
                sorted(
                    (
                        item_from_json(tag, typ, entry)
                        for (tag, typ, _), entry in zip(record.items, entries, strict=True)
                        if entry is not None
                    ),
                    key=lambda c: (c.sec_tag, c.type),
                )
            ),
        )

    @store_errors()
    def sec_tags(self) -> list[int]:
        """The sec_tags held by at least one device (every shard's `tags`)."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.hgetall(prefix + "tags")
        held = {int(tag) for raw in pipe.execute() for tag, n in raw.items() if int(n) > 0}
        return sorted(held)

    @store_errors()
    def expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """The expiry index's classes per tag, the shards summed, in one round trip."""
        return index_class_counts(self._redis, self._counts, "exp", sec_tags, window)

    @store_errors()
    def ca_digest_counts(self, sec_tags: Sequence[int]) -> dict[int, dict[str, int]]:
        """The `cadig:{tag}` hashes of every shard, summed."""
        pipe = self._redis.pipeline(transaction=False)
        for tag in sec_tags:
            for prefix in inventory_prefixes():
                pipe.hgetall(f"{prefix}cadig:{tag}")
        found = pipe.execute()
        counts: dict[int, dict[str, int]] = {}
        shards = len(inventory_prefixes())
        for i, tag in enumerate(sec_tags):
            summed: dict[str, int] = {}
            for raw in found[i * shards : (i + 1) * shards]:
                for digest, n in raw.items():
                    if int(n) > 0:
                        summed[digest] = summed.get(digest, 0) + int(n)
            counts[tag] = summed
        return counts

    @store_errors()
    def expiring_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """A range query on each tag's index with the subjects, merged soonest first.

        Script calls per tag and shard read the index and each listed item's subject on
        the server, so a list of 10,000 costs no 10,000 commands to the client.
        """
        return index_expiring_items(
            self._redis, self._expiring, "exp", sec_tags, window, limit=limit
        )

    @store_errors()
    def expiring_page(
        self,
        sec_tags: Sequence[int],
        window: ExpiryWindow,
        *,
        limit: int,
        after: ExpiringItem | None = None,
        before: ExpiringItem | None = None,
        device_id_prefix: str = "",
    ) -> list[ExpiringItem]:
        """A page of the expiring list next to an item, by rank in each (tag, shard)
        index (`redis_inventory_pages`): as cheap deep in the list as at its head."""
        return expiring_page(
            self._redis,
            self._expiring_page,
            sec_tags,
            window,
            limit=limit,
            after=after,
            before=before,
            device_id_prefix=device_id_prefix,
        )

    @store_errors()
    def device_ids(self) -> list[str]:
        """Every device that has reported: one script call a shard reads its buckets'
        fields, in one round trip."""
        calls = [
            ScriptCall(self._device_ids, [prefix + "devices"], [prefix, BUCKETS])
            for prefix in inventory_prefixes()
        ]
        return [str(d) for ids in run_script_calls(self._redis, calls) for d in ids]

    @store_errors()
    def expiring_devices(self, sec_tag: int, until: datetime) -> list[str]:
        """Devices whose notAfter in `sec_tag` is at or before `until` (expired ones too),
        shard after shard (each shard's soonest first)."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.zrangebyscore(f"{prefix}exp:{sec_tag}", "-inf", until.timestamp())
        return [d for found in pipe.execute() for d in found]

    @store_errors()
    def devices_with_ca(self, sec_tag: int, sha256: str) -> list[str]:
        """Devices whose CA chain in `sec_tag` has this digest."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.smembers(f"{prefix}cadev:{sec_tag}:{sha256}")
        return sorted(d for members in pipe.execute() for d in members)

    def _records(self, device_ids: Sequence[str]) -> list[str | None]:
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(record_key(device_id), device_id)
        return list(pipe.execute())

    @store_errors()
    def active_tags_of(self, device_ids: Sequence[str]) -> dict[str, tuple[int, ...] | None]:
        """Each device's reported active tag list (None where it reported none)."""
        return {
            d: record_active_tags(raw) if raw else None
            for d, raw in zip(device_ids, self._records(device_ids), strict=True)
        }

    @store_errors()
    def protocol_versions(self, device_ids: Sequence[str]) -> dict[str, int]:
        """Each device's protocol version (1 where none was recorded)."""
        return {
            d: int(raw.split(";", 2)[1]) if raw else 1
            for d, raw in zip(device_ids, self._records(device_ids), strict=True)
        }

    @store_errors()
    def active_ca_digests(self, device_ids: Sequence[str]) -> dict[str, dict[int, str]]:
        """Per device, the CA chain digest in each of its active sec_tags (two round
        trips: the records, then the items they name)."""
        wanted: dict[str, dict[int, str]] = {}
        for device_id, raw in zip(device_ids, self._records(device_ids), strict=True):
            record = decode_record(raw) if raw else None
            active = set(record.active_tags or ()) if record else set()
            wanted[device_id] = {
                tag: ref
                for tag, typ, ref in (record.items if record else ())
                if typ == 0 and tag in active
            }
        lookups = sorted(
            {(shard_of(d), ref) for d, refs in wanted.items() for ref in refs.values()}
        )
        pipe = self._redis.pipeline(transaction=False)
        for shard, ref in lookups:
            pipe.hget(inventory_prefix(shard) + "items", ref)
        entries = {
            key: json.loads(entry)["sha256"]
            for key, entry in zip(lookups, pipe.execute(), strict=True)
            if entry is not None
        }
        return {
            d: {
                tag: entries[(shard_of(d), ref)]
                for tag, ref in refs.items()
                if (shard_of(d), ref) in entries
            }
            for d, refs in wanted.items()
        }

    @store_errors()
    def save_summary(self, summary: FleetSummary) -> None:
        """SET `scan:last`."""
        self._redis.set(INV + "scan:last", json.dumps(summary.as_json()))

    @store_errors()
    def last_summary(self) -> FleetSummary | None:
        """GET `scan:last`."""
        raw = self._redis.get(INV + "scan:last")
        return FleetSummary.from_json(json.loads(raw)) if raw else None
