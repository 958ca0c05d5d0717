"""Carry an inventory stored before the shards over to them (a one-time upgrade step).

Before the inventory was sharded, one Redis held it under global keys:
`certfleet:inv:devices` (zset: device id -> time of its last applied report),
`certfleet:inv:dev:{id}` (hash: `"{sec_tag}:{type}"` -> item JSON, `_active`, `_v`,
`_identity`, `_received`) and `certfleet:inv:keys` (hash: client key -> the first device
that reported it). `migrate_legacy_inventory` records every such device's state in its
shard (`RedisInventory.record_states`: a state the device has sent since is newer and
stays) and every seen client key in the reporting device's shard, dated before any
report, so a key certfleet saw in use before the upgrade is still refused. It reads
the legacy keys a page at a time (ZSCAN, HSCAN: one key each), may run again (it only
adds what is missing), and leaves the legacy keys for the operator to delete
(`delete_legacy_inventory`). The credential library needs no step: `certfleet:lib` is
still read first. A device's report stream starts afresh in its shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.adapters.redis_inventory_records import item_from_json
from orchestrator.adapters.redis_keys import by_shard, inventory_prefix
from orchestrator.domain.inventory import DeviceState

__all__ = ["LegacyMigration", "delete_legacy_inventory", "migrate_legacy_inventory"]

LEGACY: Final = "certfleet:inv:"
PAGE: Final = 500
"""Devices or client keys read and recorded at a time."""


@dataclass(frozen=True, slots=True)
class LegacyMigration:
    """What one run carried over."""

    devices: int
    """Legacy device states recorded (a newer state already in the shard kept instead)."""
    client_keys: int
    """Seen client keys found in the legacy hash."""


def _state(device_id: str, reported: float, fields: dict[str, str]) -> DeviceState:
    items = []
    for field, value in fields.items():
        if field.startswith("_"):
            continue
        tag, typ = field.split(":")
        items.append(item_from_json(int(tag), int(typ), value))
    active = fields.get("_active")
    return DeviceState(
        device_id=device_id,
        reported_at=datetime.fromtimestamp(reported, UTC),
        credentials=tuple(sorted(items, key=lambda c: (c.sec_tag, c.type))),
        active_tags=tuple(json.loads(active)) if active else None,
        protocol_version=int(fields.get("_v", 1)),
        identity_tag=int(fields["_identity"]) if fields.get("_identity") else None,
    )


def migrate_legacy_inventory(client: RedisClient, *, now: datetime) -> LegacyMigration:
    """Record the legacy inventory's devices and seen client keys in their shards."""
    inventory = RedisInventory(client)
    devices = 0
    page: list[tuple[str, float]] = []
    for entry in client.zscan_iter(LEGACY + "devices", count=PAGE):
        page.append((str(entry[0]), float(entry[1])))
        if len(page) == PAGE:
            devices += _migrate_devices(client, inventory, page, now=now)
            page = []
    if page:
        devices += _migrate_devices(client, inventory, page, now=now)
    keys = 0
    held: dict[str, str] = {}
    for key, device in client.hscan_iter(LEGACY + "keys", count=PAGE):
        held[str(key)] = str(device)
        if len(held) == PAGE:
            keys += _migrate_keys(client, held)
            held = {}
    if held:
        keys += _migrate_keys(client, held)
    return LegacyMigration(devices=devices, client_keys=keys)


def _migrate_devices(
    client: RedisClient, inventory: RedisInventory, page: list[tuple[str, float]], *, now: datetime
) -> int:
    pipe = client.pipeline(transaction=False)
    for device_id, _ in page:
        pipe.hgetall(f"{LEGACY}dev:{device_id}")
    states = [
        _state(device_id, reported, fields)
        for (device_id, reported), fields in zip(page, pipe.execute(), strict=True)
    ]
    return inventory.record_states(states, received_at=now)


def _migrate_keys(client: RedisClient, held: dict[str, str]) -> int:
    """Each key in its first holder's shard, dated 0 (before any report): it replaces
    a holder recorded there since the upgrade, who came later."""
    shard_of_device = {d: s for s, ids in by_shard(held.values()).items() for d in ids}
    keys = [
        (inventory_prefix(shard_of_device[device]) + "keys", key) for key, device in held.items()
    ]
    pipe = client.pipeline(transaction=False)
    for shard_keys, key in keys:
        pipe.hget(shard_keys, key)
    current = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for (shard_keys, key), device, found in zip(keys, held.values(), current, strict=True):
        if found is None or not str(found).startswith("0 "):
            pipe.hset(shard_keys, key, f"0 {device}")
    pipe.execute()
    return len(held)


def delete_legacy_inventory(client: RedisClient) -> int:
    """Delete the legacy inventory's keys (after `migrate_legacy_inventory`): its device
    hashes, device index, per-tag indexes, client keys, report streams and counts, one
    key per command. Returns how many keys were deleted."""
    deleted = 0
    legacy_per_key = (
        "dev:",
        "exp:",
        "idexp:",
        "cadig:",
        "cadev:",
        "reports:",
        "report_keys:",
        "libshare:",
    )
    names = ("devices", "keys", "tags", "report_phases")
    for pattern in [f"{LEGACY}{p}*" for p in legacy_per_key] + [LEGACY + n for n in names]:
        for key in client.scan_iter(match=pattern, count=PAGE):
            if "{" not in str(key):  # a shard's key carries its hash tag
                deleted += int(client.delete(key))
    return deleted
