"""The inventory and credential library in Redis.

Layout (all keys under `certfleet:inv:`):

- `devices` (zset): device id -> time of its last applied report (device clock);
- `dev:{id}` (hash): `"{sec_tag}:{type}"` -> JSON of the item, `_received` -> receive time,
  `_active` -> the device's active tag list (JSON) when it reports one;
- `exp:{sec_tag}` (zset): device id -> earliest notAfter in that tag (the expiry index);
- `idexp:{sec_tag}` (zset): device id -> notAfter of its client certificate (type 1) in that
  tag (the identity index, `redis_inventory_identities`);
- `keys` (hash): SHA-256 of a reported client certificate's SPKI -> the first device that
  reported it (never forgotten: a key certfleet has seen in use gets no new certificate);
- `cadig:{sec_tag}` (hash): CA chain digest -> devices holding it in that tag;
- `cadev:{sec_tag}:{sha256}` (set): the devices holding that CA chain in that tag;
- `tags` (hash): sec_tag -> devices holding any item in it;
- `rejected` (hash): reason -> refused device messages;
- `reports:{id}` (stream, capped): the device's latest bundle reports;
- `report_keys:{id}` (zset, capped): "{rollout} {seq} {phase}" of the device's latest
  recorded reports -> when recorded, so a report sent again is recorded once;
- `report_phases` (hash): phase -> distinct reports received;
- `scan:last` (string): JSON of the last scan summary;
- `_v` in `dev:{id}`: the protocol version of the device's last applied state; `_identity`:
  its identity tag (the sec_tag whose client certificate it presents), when it reports one;
- the credential library (`certfleet:lib`, see `redis_library`): a device's pems are
  written with its state, by the same script, only when the state is applied, and
  count against the device's bounded share of the library.

One Lua script (`lua/record_states.lua`) replaces a device's items and maintains
every index in the same atomic step, so a report costs O(items) and a scan reads
counts, not devices; it takes a whole batch of devices in one call (their states
JSON-encoded in one argument), so the client packs one command per batch, not one per
device. The scripts touch keys they derive at run time, so this layout serves a single
Redis or Sentinel; Redis Cluster needs the per-tag keys split by slot.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import load_script, store_errors
from orchestrator.adapters.redis_inventory_identities import (
    INV,
    IdentityIndexReads,
    index_class_counts,
    index_expiring_items,
)
from orchestrator.adapters.redis_library import (
    LIB,
    LIB_EVICTED,
    LIB_PINNED,
    LIB_REFS,
    LIBRARY_SHARE_MAX,
    RedisCredentialLibrary,
)
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiringItem, ExpiryWindow, FleetSummary
from orchestrator.domain.reports import DeviceReport
from orchestrator.ports import ExpiryCounts

__all__ = ["RedisCredentialLibrary", "RedisInventory"]  # the library re-exported for callers

REPORTS_KEPT = 50
"""Reports kept per device (approximately: XADD MAXLEN ~)."""
REPORT_KEYS_KEPT = 200
"""Recorded report keys kept per device to recognise a report sent again (up to twice that)."""

_PACKAGE = "orchestrator.adapters"
"""Where `lua/` holds this adapter's scripts."""

SCRIPT_CHUNK = 500
"""Most devices or reports in one Lua call: a longer batch goes as several calls in
one pipelined round trip, so Redis never runs one script for long."""


def _item_json(credential: ReportedCredential) -> str:
    return json.dumps(
        {
            "sha256": credential.sha256,
            "not_after": credential.not_after.timestamp() if credential.not_after else None,
            "subject": credential.subject,
            "issuer": credential.issuer,
        },
        separators=(",", ":"),
    )


@functools.lru_cache(maxsize=256)
def _tags_json(tags: tuple[int, ...] | None) -> str:
    """An active tag list as stored (JSON), '' when none was reported; fleets share few."""
    return json.dumps(list(tags)) if tags is not None else ""


@functools.lru_cache(maxsize=4096)
def _item_args(c: ReportedCredential) -> tuple[str, ...]:
    """One item as `lua/record_states.lua` takes it (a fleet's devices share a few CA items)."""
    return (
        f"{c.sec_tag}:{int(c.type)}",
        _item_json(c),
        str(c.sec_tag),
        str(int(c.type)),
        c.sha256,
        repr(c.not_after.timestamp()) if c.not_after is not None else "",
    )


def _item_from_json(field: str, value: str) -> ReportedCredential:
    tag, typ = field.split(":")
    data = json.loads(value)
    not_after = data.get("not_after")
    return ReportedCredential(
        sec_tag=int(tag),
        type=CredentialType(int(typ)),
        sha256=data["sha256"],
        not_after=datetime.fromtimestamp(not_after, UTC) if not_after is not None else None,
        subject=data.get("subject"),
        issuer=data.get("issuer"),
    )


class RedisInventory(IdentityIndexReads):
    """`InventoryStore` on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client
        self._record_states = load_script(client, _PACKAGE, "record_states")
        self._record_reports = load_script(client, _PACKAGE, "record_reports")
        self._expiring = load_script(client, _PACKAGE, "expiring_items")

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

        A state's `pems` are HSETNX'd into the library by the same script, only when
        the state is applied, so a stale state adds nothing, and each device's share
        of the library stays within `LIBRARY_SHARE_MAX` (the oldest evicted, counted).
        Its client `keys` join `keys` (client key -> first device) the same way.
        """
        if not states:
            return 0
        if pems and len(pems) != len(states):
            raise ValueError(f"{len(pems)} pem mappings for {len(states)} states")
        if keys and len(keys) != len(states):
            raise ValueError(f"{len(keys)} key lists for {len(states)} states")
        pipe = self._redis.pipeline(transaction=False)
        received = repr(received_at.timestamp())
        for i in range(0, len(states), SCRIPT_CHUNK):
            batch = [
                [
                    state.device_id,
                    repr(state.reported_at.timestamp()),
                    _tags_json(state.active_tags),
                    [_item_args(c) for c in state.credentials],
                    list(pems[i + j].items()) if pems else [],
                    str(state.protocol_version),
                    str(state.identity_tag) if state.identity_tag is not None else "",
                    list(keys[i + j]) if keys else [],
                ]
                for j, state in enumerate(states[i : i + SCRIPT_CHUNK])
            ]
            self._record_states(
                keys=[INV + "devices", LIB, LIB_REFS, LIB_PINNED, LIB_EVICTED],
                args=[INV, received, json.dumps(batch), LIBRARY_SHARE_MAX],
                client=pipe,
            )
        return sum(int(applied) for applied in pipe.execute())

    @store_errors()
    def record_reports(self, reports: Sequence[DeviceReport]) -> None:
        """XADD to each device's capped stream and count phases, in one round trip.

        Idempotent: a (device, rollout, seq, phase) among the device's last
        `REPORT_KEYS_KEPT` recorded is neither appended nor counted again.
        """
        if not reports:
            return
        pipe = self._redis.pipeline(transaction=False)
        for i in range(0, len(reports), SCRIPT_CHUNK):
            batch = [
                [
                    report.device_id,
                    report.rollout_id,
                    str(report.seq),
                    report.op or "",
                    report.phase,
                    report.reason,
                    report.detail,
                    report.time.isoformat(),
                    _tags_json(report.active_tags),
                ]
                for report in reports[i : i + SCRIPT_CHUNK]
            ]
            self._record_reports(
                keys=[INV + "report_phases"],
                args=[
                    INV + "reports:",
                    REPORTS_KEPT,
                    json.dumps(batch),
                    INV + "report_keys:",
                    REPORT_KEYS_KEPT,
                ],
                client=pipe,
            )
        pipe.execute()

    @store_errors()
    def recent_reports(self, device_id: str, *, limit: int) -> list[DeviceReport]:
        """XREVRANGE, returned oldest first."""
        entries: list[tuple[str, dict[str, str]]] = self._redis.xrevrange(  # type: ignore[assignment]  # sync client
            f"{INV}reports:{device_id}", count=limit
        )
        reports = []
        for _, fields in reversed(entries):
            active = fields.get("active_tags")
            reports.append(
                DeviceReport(
                    device_id=device_id,
                    rollout_id=fields["rollout_id"],
                    seq=int(fields["seq"]),
                    op=fields["op"] or None,
                    phase=fields["phase"],
                    reason=fields["reason"],
                    detail=fields["detail"],
                    time=datetime.fromisoformat(fields["time"]),
                    active_tags=tuple(json.loads(active)) if active else None,
                )
            )
        return reports

    @store_errors()
    def count_rejection(self, reason: str, amount: int = 1) -> None:
        """HINCRBY on the rejection counter."""
        self._redis.hincrby(INV + "rejected", reason, amount)

    @store_errors()
    def rejection_counts(self) -> dict[str, int]:
        """Refused device messages by reason."""
        raw: dict[str, str] = self._redis.hgetall(INV + "rejected")  # type: ignore[assignment]  # sync client
        return {reason: int(count) for reason, count in sorted(raw.items())}

    @store_errors()
    def device_count(self) -> int:
        """ZCARD of the device index."""
        return int(self._redis.zcard(INV + "devices"))

    @store_errors()
    def device_credentials(self, device_id: str) -> DeviceState | None:
        """What one device last reported."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zscore(INV + "devices", device_id)
        pipe.hgetall(INV + "dev:" + device_id)
        reported, fields = pipe.execute()
        if reported is None:
            return None
        active = fields.get("_active")
        return DeviceState(
            device_id=device_id,
            reported_at=datetime.fromtimestamp(float(reported), UTC),
            active_tags=tuple(json.loads(active)) if active else None,
            protocol_version=int(fields.get("_v", 1)),
            identity_tag=int(fields["_identity"]) if fields.get("_identity") else None,
            credentials=tuple(
                sorted(
                    (_item_from_json(f, v) for f, v in fields.items() if not f.startswith("_")),
                    key=lambda c: (c.sec_tag, c.type),
                )
            ),
        )

    @store_errors()
    def sec_tags(self) -> list[int]:
        """The sec_tags held by at least one device."""
        raw: dict[str, str] = self._redis.hgetall(INV + "tags")  # type: ignore[assignment]  # sync client
        return sorted(int(tag) for tag, holders in raw.items() if int(holders) > 0)

    @store_errors()
    def expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """Three ZCOUNTs per tag, in one round trip."""
        return index_class_counts(self._redis, "exp", sec_tags, window)

    @store_errors()
    def ca_digest_counts(self, sec_tags: Sequence[int]) -> dict[int, dict[str, int]]:
        """The `cadig:{tag}` hashes."""
        pipe = self._redis.pipeline(transaction=False)
        for tag in sec_tags:
            pipe.hgetall(f"{INV}cadig:{tag}")
        return {
            tag: {digest: int(n) for digest, n in raw.items() if int(n) > 0}
            for tag, raw in zip(sec_tags, pipe.execute(), strict=True)
        }

    @store_errors()
    def expiring_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """A range query on each tag's index with the subjects, merged soonest first.

        One script call per tag reads the index and each listed item's subject on
        the server, so a list of 10,000 costs no 10,000 commands to the client.
        """
        return index_expiring_items(
            self._redis, self._expiring, "exp", sec_tags, window, limit=limit
        )

    @store_errors()
    def device_ids(self) -> list[str]:
        """Every device that has reported."""
        return list(self._redis.zrange(INV + "devices", 0, -1))  # type: ignore[arg-type]  # sync client

    @store_errors()
    def expiring_devices(self, sec_tag: int, until: datetime) -> list[str]:
        """Devices whose notAfter in `sec_tag` is at or before `until` (expired ones too)."""
        return list(
            self._redis.zrangebyscore(f"{INV}exp:{sec_tag}", "-inf", until.timestamp())  # type: ignore[arg-type]  # sync client
        )

    @store_errors()
    def devices_with_ca(self, sec_tag: int, sha256: str) -> list[str]:
        """Devices whose CA chain in `sec_tag` has this digest."""
        return sorted(self._redis.smembers(f"{INV}cadev:{sec_tag}:{sha256}"))  # type: ignore[arg-type]  # sync client

    @store_errors()
    def active_tags_of(self, device_ids: Sequence[str]) -> dict[str, tuple[int, ...] | None]:
        """Each device's reported active tag list (None where it reported none)."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(INV + "dev:" + device_id, "_active")
        return {
            d: tuple(json.loads(v)) if v else None
            for d, v in zip(device_ids, pipe.execute(), strict=True)
        }

    @store_errors()
    def protocol_versions(self, device_ids: Sequence[str]) -> dict[str, int]:
        """Each device's protocol version (1 where none was recorded)."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hget(INV + "dev:" + device_id, "_v")
        return {d: int(v or 1) for d, v in zip(device_ids, pipe.execute(), strict=True)}

    @store_errors()
    def active_ca_digests(self, device_ids: Sequence[str]) -> dict[str, dict[int, str]]:
        """Per device, the CA chain digest in each of its active sec_tags."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hgetall(INV + "dev:" + device_id)
        found: dict[str, dict[int, str]] = {}
        for device_id, fields in zip(device_ids, pipe.execute(), strict=True):
            active = json.loads(fields["_active"]) if fields.get("_active") else []
            found[device_id] = {
                tag: json.loads(fields[f"{tag}:0"])["sha256"]
                for tag in active
                if f"{tag}:0" in fields
            }
        return found

    @store_errors()
    def save_summary(self, summary: FleetSummary) -> None:
        """SET `scan:last`."""
        self._redis.set(INV + "scan:last", json.dumps(summary.as_json()))

    @store_errors()
    def last_summary(self) -> FleetSummary | None:
        """GET `scan:last`."""
        raw = self._redis.get(INV + "scan:last")
        return FleetSummary.from_json(json.loads(raw)) if raw else None
