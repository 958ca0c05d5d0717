"""Benchmark: recording device state, querying and scanning the fleet, on a real redis-server.

    .venv/bin/python -m tests.bench.bench_inventory [--devices 1000000] [--batch 500]
        [--json-out FILE]

Every device's state goes through `RedisInventory.record_states` in pipelined batches
(as the listener records them); a baseline in the same run on the same server writes
the same item per device with a pipelined `HSET` (the least any inventory must write).
Expiries are arranged so that "sec_tag 42 expiring within 30 days" (the `rollout
--select expiring:30` query, expired ones included) has exactly 10,000 hits (a tenth
of a smaller fleet). Then: that query, best of several; the whole `rollout plan` over
it; a full classification scan (`scan_fleet` with the default list limit) at a tenth of
the fleet and at all of it, in devices/s; Redis `used_memory` (less what clients'
buffers hold) per device before the first state and after, including one rollout over
every device made by `create_rollout` (its claims included): inventory plus one rollout
<= 700 B per device, of which the inventory <= 430 B and the rollout <= 250 B (issue
15), with the server's default encoding thresholds (`hash-max-listpack-entries 128`,
`hash-max-listpack-value 64`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from orchestrator.adapters.redis_inventory import RedisCredentialLibrary, RedisInventory
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout import RolloutSpec, parse_selector, parse_waves
from orchestrator.logs import configure_logging
from orchestrator.services.rollout import RolloutDeps, create_rollout, plan_rollout
from orchestrator.services.scan import scan_fleet
from simulator.pki import make_ca
from simulator.services import start_redis
from tests.bench.cost import stored_bytes
from tests.bench.figures import Figure, exit_on_sigterm, report

NOW = datetime(2026, 11, 25, tzinfo=UTC)
HITS = 10_000
"""Devices whose CA in sec_tag 42 expires within 30 days (or has expired)."""
QUERY_REPEATS = 7
MEMORY_GOAL = 700
"""Redis bytes per device, inventory plus one rollout over every device (issue 15)."""
INVENTORY_GOAL = 430
ROLLOUT_GOAL = 250
SCAN_REPEATS = 5


class RecordedTasks:
    """`RolloutTasks` that records what the engine would enqueue instead of enqueueing it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **_: self.calls.append((name, args))


def _days(n: int, devices: int, hits: int) -> int:
    """Device n's CA lifetime left: `hits` devices spread evenly expire within 30 days
    (one in five of them already expired), the rest in 300 days."""
    if (n * hits) // devices == ((n + 1) * hits) // devices:
        return 300
    return -5 if n % 5 == 0 else 5 + n % 25


def _states(start: int, count: int, devices: int, hits: int) -> Iterator[list[DeviceState]]:
    """The fleet's states in batches of 10,000 (a million would not fit in memory at once)."""
    for first in range(start, start + count, 10_000):
        batch = []
        for n in range(first, min(first + 10_000, start + count)):
            days = _days(n, devices, hits)
            batch.append(
                DeviceState(
                    device_id=f"bench-{n:07d}",
                    reported_at=NOW,
                    credentials=(
                        ReportedCredential(
                            sec_tag=42,
                            type=CredentialType.CA_CHAIN,
                            sha256=f"{days % 256:02x}" * 32,
                            not_after=NOW + timedelta(days=days),
                            subject="CN=Bench CA,O=certfleet",
                            issuer="CN=Bench CA,O=certfleet",
                        ),
                    ),
                    active_tags=(42,),
                )
            )
        yield batch


def _item_json(c: ReportedCredential) -> str:
    return json.dumps(
        {
            "sha256": c.sha256,
            "not_after": c.not_after.timestamp() if c.not_after else None,
            "subject": c.subject,
            "issuer": c.issuer,
        }
    )


def _baseline(client: redis.Redis, devices: int, hits: int, batch: int) -> float:
    spent = 0.0
    for states in _states(0, devices, devices, hits):
        start = time.perf_counter()
        for i in range(0, len(states), batch):
            pipe = client.pipeline(transaction=False)
            for state in states[i : i + batch]:
                c = state.credentials[0]
                pipe.hset(f"baseline:dev:{state.device_id}", "42:0", _item_json(c))
            pipe.execute()
        spent += time.perf_counter() - start
    return spent


def _record(
    inventory: RedisInventory, start: int, count: int, *, devices: int, hits: int, batch: int
) -> float:
    spent = 0.0
    for states in _states(start, count, devices, hits):
        began = time.perf_counter()
        for i in range(0, len(states), batch):
            inventory.record_states(states[i : i + batch], received_at=NOW)
        spent += time.perf_counter() - began
    return spent


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _spec(selector: str) -> RolloutSpec:
    ca = make_ca(
        "Fleet CA 2026", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    return RolloutSpec(
        kind="trust.add",
        ca_pems=(ca.pem.decode(),),
        tag=42,
        spare_tag=43,
        probe_host="probe.invalid",
        probe_port=8443,
        waves=parse_waves("1%,10%,50%,100%"),
        selector=parse_selector(selector),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--listpack-value",
        type=int,
        default=None,
        help="set Redis hash-max-listpack-value first (default: the server's, 64)",
    )
    args = parser.parse_args()
    exit_on_sigterm()
    devices = max(1_000, min(args.devices, 2_000_000))
    hits = min(HITS, devices // 10)
    tenth = devices // 10
    list_limit = Settings().status_list_limit
    configure_logging(level="WARNING")

    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        service = start_redis(Path(tmp))
        try:
            client = redis.Redis(host=service.host, port=service.port, decode_responses=True)
            if args.listpack_value is not None:
                client.config_set("hash-max-listpack-value", args.listpack_value)
            listpack = client.config_get("hash-max-listpack-value")["hash-max-listpack-value"]
            base_s = _baseline(client, devices, hits, args.batch)
            client.flushall()
            memory_before = stored_bytes(client)

            inventory, library = RedisInventory(client), RedisCredentialLibrary(client)

            def scan() -> object:
                return scan_fleet(
                    inventory, library, now=NOW, warning_days=30, list_limit=list_limit
                )

            ours_s = _record(inventory, 0, tenth, devices=devices, hits=hits, batch=args.batch)
            scan_small_s = _best(scan, SCAN_REPEATS)
            ours_s += _record(
                inventory, tenth, devices - tenth, devices=devices, hits=hits, batch=args.batch
            )
            assert inventory.device_count() == devices
            memory_inventory = stored_bytes(client)

            scan_s = _best(scan, SCAN_REPEATS)
            summary = scan_fleet(
                inventory, library, now=NOW, warning_days=30, list_limit=list_limit
            )
            counts = summary.by_tag[42]
            assert counts.expired + counts.expiring == hits, counts
            assert counts.ok == devices - hits, counts

            until = NOW + timedelta(days=30)
            found = inventory.expiring_devices(42, until)
            assert len(found) == hits, len(found)
            query_s = _best(lambda: inventory.expiring_devices(42, until), QUERY_REPEATS)

            deps = RolloutDeps(
                store=RedisRollouts(client),
                inventory=inventory,
                tasks=RecordedTasks(),
                metrics=RedisMetrics(client),
            )
            expiring_spec = _spec("expiring:30")
            plan = plan_rollout(inventory, expiring_spec, now=NOW)
            assert sum(len(w) for w in plan.waves) == hits
            plan_s = _best(lambda: plan_rollout(inventory, expiring_spec, now=NOW), 3)

            start = time.perf_counter()
            create_rollout(deps, _spec("all"), now=NOW, actor="bench", start=False)
            create_s = time.perf_counter() - start
            memory_after = stored_bytes(client)
            client.close()
        finally:
            service.stop()

    base_rate, ours_rate = devices / base_s, devices / ours_s
    per_device = (memory_after - memory_before) / devices
    inventory_only = (memory_inventory - memory_before) / devices
    scan_rate = devices / scan_s
    figures = [
        Figure(
            section="Inventory",
            name=f"record_states, {devices:,} devices (Lua, indexes, batches of {args.batch})",
            value=ours_rate / base_rate,
            unit="ratio",
            baseline=f"pipelined HSET of the same item: {base_rate:,.0f} devices/s",
            detail=f"ours {ours_rate:,.0f} devices/s",
        ),
        Figure(
            section="Inventory",
            name=f"sec_tag 42 expiring within 30 days ({hits:,} hits), best of {QUERY_REPEATS}",
            value=query_s * 1000,
            unit="ms",
            goal="< 50 ms",
            met=query_s < 0.050,
            baseline=f"whole `rollout plan --select expiring:30`: {plan_s * 1000:,.0f} ms",
        ),
        Figure(
            section="Inventory",
            name=f"full classification scan (scan_fleet, list limit {list_limit:,})",
            value=scan_rate,
            unit="devices/s",
            goal=">= 300,000 devices/s",
            met=scan_rate >= 300_000,
            baseline=f"{scan_s * 1000:,.1f} ms at {devices:,} devices, "
            f"{scan_small_s * 1000:,.1f} ms at {tenth:,}",
        ),
        Figure(
            section="Inventory",
            name="Redis memory per device, inventory plus one rollout over all",
            value=per_device,
            unit="B",
            goal=f"<= {MEMORY_GOAL} B",
            met=per_device <= MEMORY_GOAL,
            baseline=f"used_memory less client buffers before the first state: {memory_before:,} B "
            f"(hash-max-listpack-value {listpack})",
            detail=f"inventory alone {inventory_only:,.0f} B/device; "
            f"rollout {per_device - inventory_only:,.0f} B/device "
            f"(create_rollout over {devices:,} devices took {create_s:,.1f} s)",
        ),
        Figure(
            section="Inventory",
            name="Redis memory per device, the inventory alone",
            value=inventory_only,
            unit="B",
            goal=f"<= {INVENTORY_GOAL} B",
            met=inventory_only <= INVENTORY_GOAL,
            baseline=f"used_memory after {devices:,} devices recorded: {memory_inventory:,} B",
        ),
        Figure(
            section="Inventory",
            name="Redis memory per device, one rollout over all (claims included)",
            value=per_device - inventory_only,
            unit="B",
            goal=f"<= {ROLLOUT_GOAL} B",
            met=per_device - inventory_only <= ROLLOUT_GOAL,
            baseline=f"used_memory after create_rollout: {memory_after:,} B",
        ),
    ]
    print(f"devices                         {devices:12,}")
    print(f"baseline pipelined HSET         {base_rate:12,.0f} devices/s")
    print(f"record_states (Lua + indexes)   {ours_rate:12,.0f} devices/s")
    print(f"expiring:30 query ({hits:,} hits) {query_s * 1000:12.1f} ms")
    print(f"rollout plan --select expiring  {plan_s * 1000:12.1f} ms")
    print(f"scan at {tenth:>9,} devices      {scan_small_s * 1000:12.1f} ms")
    print(f"scan at {devices:>9,} devices      {scan_s * 1000:12.1f} ms")
    print(f"memory: inventory               {inventory_only:12,.0f} B/device")
    print(f"memory: inventory + rollout     {per_device:12,.0f} B/device")
    print(f"create_rollout over all         {create_s:12.1f} s")
    report(figures, args.json_out)


if __name__ == "__main__":
    main()
