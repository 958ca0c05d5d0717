"""The inventory's report log in Redis: each device's latest bundle reports, counted.

Per shard (`certfleet:inv:{tag}:`, the device's): `reports:{id}` (stream, capped at about
`REPORTS_KEPT`): the device's latest bundle reports; `report_keys:{id}` (zset, capped):
"{rollout} {seq} {phase}" of its latest recorded reports -> when recorded, so a report
sent again is recorded once; `report_phases` (hash): phase -> distinct reports received
from the shard's devices (`report_phase_counts` sums the shards). Global:
`certfleet:inv:rejected` (hash): reason -> refused device messages.

`lua/record_reports.lua` appends and counts a batch of one shard's reports in one call;
a batch spanning shards goes as one call per shard in one round trip.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from redis.commands.core import Script

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.adapters.redis_inventory_identities import INV
from orchestrator.adapters.redis_keys import inventory_prefix, inventory_prefixes, shard_of
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls
from orchestrator.domain.reports import DeviceReport

__all__ = ["REPORTS_KEPT", "REPORT_KEYS_KEPT", "SCRIPT_CHUNK", "ReportLog"]

REPORTS_KEPT: Final = 50
"""Reports kept per device (approximately: XADD MAXLEN ~)."""
REPORT_KEYS_KEPT: Final = 200
"""Recorded report keys kept per device to recognise a report sent again (up to twice that)."""
SCRIPT_CHUNK: Final = 500
"""Most devices or reports in one Lua call: a longer batch goes as several calls in
one pipelined round trip, so Redis never runs one script for long."""


@functools.lru_cache(maxsize=256)
def _tags_json(tags: tuple[int, ...] | None) -> str:
    """An active tag list as stored (JSON), '' when none was reported; fleets share few."""
    return json.dumps(list(tags)) if tags is not None else ""


class ReportLog:
    """The report and rejection queries of `RedisInventory` (set up by its constructor)."""

    _redis: RedisClient
    _record_reports: Script
    """`lua/record_reports.lua`."""

    @store_errors()
    def record_reports(self, reports: Sequence[DeviceReport]) -> None:
        """XADD to each device's capped stream and count phases, in one round trip.

        The batch is split by shard, one script call per shard (and `SCRIPT_CHUNK`).
        Idempotent: a (device, rollout, seq, phase) among the device's last
        `REPORT_KEYS_KEPT` recorded is neither appended nor counted again.
        """
        if not reports:
            return
        groups: dict[int, list[DeviceReport]] = {}
        for report in reports:
            groups.setdefault(shard_of(report.device_id), []).append(report)
        calls = []
        for shard, group in groups.items():
            prefix = inventory_prefix(shard)
            for i in range(0, len(group), SCRIPT_CHUNK):
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
                    for report in group[i : i + SCRIPT_CHUNK]
                ]
                calls.append(
                    ScriptCall(
                        self._record_reports,
                        [prefix + "report_phases"],
                        [
                            prefix + "reports:",
                            REPORTS_KEPT,
                            json.dumps(batch),
                            prefix + "report_keys:",
                            REPORT_KEYS_KEPT,
                        ],
                    )
                )
        run_script_calls(self._redis, calls)

    @store_errors()
    def recent_reports(self, device_id: str, *, limit: int) -> list[DeviceReport]:
        """XREVRANGE, returned oldest first."""
        entries: list[tuple[str, dict[str, str]]] = self._redis.xrevrange(  # type: ignore[assignment]  # sync client
            self.report_stream_key(device_id), count=limit
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

    @staticmethod
    def report_stream_key(device_id: str) -> str:
        """The key of a device's report stream (in its shard)."""
        return f"{inventory_prefix(shard_of(device_id))}reports:{device_id}"

    @staticmethod
    def report_keys_key(device_id: str) -> str:
        """The key of a device's recorded report keys (zset, in its shard)."""
        return f"{inventory_prefix(shard_of(device_id))}report_keys:{device_id}"

    @staticmethod
    def counts_by_design(key: str) -> bool:
        """Whether an inventory key changes with every refused message, distinct report or
        new device by design (`rejected`, a shard's `report_phases`, `devices`, a device's
        `reports:` stream or `report_keys:`), so a check that nothing else changed leaves
        it out."""
        if key == INV + "rejected":
            return True
        if not key.startswith("certfleet:inv:{"):
            return False
        rest = key.partition("}:")[2]
        return rest in ("report_phases", "devices") or rest.startswith(("reports:", "report_keys:"))

    @store_errors()
    def report_stream_lengths(self, device_ids: Sequence[str]) -> dict[str, int]:
        """How many reports each device's stream holds (0 for none), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.xlen(self.report_stream_key(device_id))
        return {d: int(n) for d, n in zip(device_ids, pipe.execute(), strict=True)}

    @store_errors()
    def report_phase_counts(self) -> dict[str, int]:
        """Distinct reports received by phase, summed over the shards."""
        pipe = self._redis.pipeline(transaction=False)
        for prefix in inventory_prefixes():
            pipe.hgetall(prefix + "report_phases")
        counts: dict[str, int] = {}
        for raw in pipe.execute():
            for phase, n in raw.items():
                counts[phase] = counts.get(phase, 0) + int(n)
        return counts

    @store_errors()
    def count_rejection(self, reason: str, amount: int = 1) -> None:
        """HINCRBY on the rejection counter."""
        self._redis.hincrby(INV + "rejected", reason, amount)

    @store_errors()
    def rejection_counts(self) -> dict[str, int]:
        """Refused device messages by reason."""
        raw: dict[str, str] = self._redis.hgetall(INV + "rejected")  # type: ignore[assignment]  # sync client
        return {reason: int(count) for reason, count in sorted(raw.items())}
