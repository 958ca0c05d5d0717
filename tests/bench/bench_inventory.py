"""Benchmark: recording device state and scanning the fleet, on a real redis-server.

    .venv/bin/python -m tests.bench.bench_inventory [--devices 100000] [--batch 500]

Prints our rates next to a baseline measured in the same run on the same server:
a pipelined `HSET` of the same item per device (the least any inventory must
write). Scan time is measured at a tenth of the fleet and at the whole fleet: a
scan that reads counts, not devices, takes about the same time at both sizes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from orchestrator.adapters.redis_inventory import RedisCredentialLibrary, RedisInventory
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState
from orchestrator.services.scan import scan_fleet
from simulator.services import start_redis

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _states(start: int, count: int) -> list[DeviceState]:
    states = []
    for n in range(start, start + count):
        # Three CAs: 1 in 10 devices expires soon, 1 in 20 has expired.
        days = 5 if n % 10 == 0 else (-5 if n % 20 == 1 else 300)
        states.append(
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
            )
        )
    return states


def _baseline(client: redis.Redis, states: list[DeviceState], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(states), batch):
        pipe = client.pipeline(transaction=False)
        for state in states[i : i + batch]:
            c = state.credentials[0]
            pipe.hset(
                f"baseline:dev:{state.device_id}",
                "42:0",
                json.dumps(
                    {
                        "sha256": c.sha256,
                        "not_after": c.not_after.timestamp() if c.not_after else None,
                        "subject": c.subject,
                        "issuer": c.issuer,
                    }
                ),
            )
        pipe.execute()
    return time.perf_counter() - start


def _ours(inventory: RedisInventory, states: list[DeviceState], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(states), batch):
        inventory.record_states(states[i : i + batch], received_at=NOW)
    return time.perf_counter() - start


def _scan_seconds(inventory: RedisInventory, library: RedisCredentialLibrary) -> float:
    start = time.perf_counter()
    scan_fleet(inventory, library, now=NOW, warning_days=30, list_limit=1000)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    devices = min(args.devices, 2_000_000)

    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        service = start_redis(Path(tmp))
        try:
            client = redis.Redis(host=service.host, port=service.port, decode_responses=True)
            inventory, library = RedisInventory(client), RedisCredentialLibrary(client)
            tenth = devices // 10
            first, rest = _states(0, tenth), _states(tenth, devices - tenth)

            base_s = _baseline(client, first + rest, args.batch)
            ours_s = _ours(inventory, first, args.batch)
            scan_small = min(_scan_seconds(inventory, library) for _ in range(5))
            ours_s += _ours(inventory, rest, args.batch)
            scan_full = min(_scan_seconds(inventory, library) for _ in range(5))
            assert inventory.device_count() == devices

            base_rate, ours_rate = devices / base_s, devices / ours_s
            print(f"devices                         {devices}")
            print(f"baseline pipelined HSET         {base_rate:12,.0f} devices/s")
            print(f"record_states (Lua + indexes)   {ours_rate:12,.0f} devices/s")
            print(f"ratio ours/baseline             {ours_rate / base_rate:12.2f}")
            print(f"scan at {tenth:>9,} devices      {scan_small * 1000:12.1f} ms")
            print(f"scan at {devices:>9,} devices      {scan_full * 1000:12.1f} ms")
            print(f"scan time ratio full/tenth      {scan_full / scan_small:12.2f}")
            client.close()
        finally:
            service.stop()


if __name__ == "__main__":
    main()
