"""Benchmark: worker and listener memory (RSS) at a small fleet and at a large one.

    .venv/bin/python -m tests.bench.bench_memory [--devices 1000000] [--small 10000]
        [--json-out FILE]

One throwaway redis-server and mosquitto; one `certfleet listener` and one Celery
worker (`celery -A workers.app worker -Q control,scan --concurrency 1 --pool
prefork`), both started once and kept for the whole run.

Listener: device state messages as the devices send them (`StateMessage`, one CA
chain item in sec_tag 42, active tags [42]) are published by a raw paho client (MQTT
5, QoS 1, a window of unacknowledged messages) for the first `--small` devices; once
the inventory holds them all, the listener's VmRSS is read; then the rest up to
`--devices`, and VmRSS again. The publisher never runs more than `LAG` messages
ahead of what the inventory holds, so both sizes see the same small backlog: the
listener acknowledges a QoS 1 message on receipt and queues it until a batch takes
it, so a backlog sits in its memory, and one that grew with the publisher's lead
would measure the publisher's speed rather than the fleet's size.

Worker: at each size, through the worker, `scan_fleet`, then a `trust.add` rollout
over the whole fleet (the real `create_rollout`, one wave of 100%) has its wave
dispatched (`dispatch_wave`: every device's `push_batch` task enqueued; no worker
consumes the push queue, so its tasks are counted and dropped) and evaluated
(`evaluate_rollout`); then VmRSS and VmHWM (peak) of the pool child that ran them.
The same worker process serves both sizes: the figure is one long-lived process's
growth, which is what an operator sees, and a leak would show in it too; the peak
(VmHWM) says whether the large fleet ever needed more memory, even if freed since.

Redis: `INFO used_memory` less what clients' buffers hold (`stored_bytes`), before the
first state and around each `create_rollout`;
per device at `--devices`: the inventory (what the listener recorded, less the small
run's rollout) and one rollout over every device with its claims. Goal (issue 15):
inventory plus one rollout <= 700 B per device, of which the inventory <= 430 B and
the rollout <= 250 B, with the server's default encoding thresholds.

Baseline, in the same run: the same process's RSS at `--small` devices.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis
from celery import Celery
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.adapters.celery_queue import (
    TASK_DISPATCH_WAVE,
    TASK_EVALUATE_ROLLOUT,
    TASK_SCAN_FLEET,
    celery_config,
)
from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import RolloutState, WaveState
from orchestrator.logs import configure_logging
from orchestrator.protocol import CredentialEntry, StateMessage, Topics, sha256_hex
from orchestrator.services.rollout import PUSH_BATCH_SIZE, RolloutDeps, create_rollout
from simulator.pki import make_ca
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.bench.bench_inventory import INVENTORY_GOAL, MEMORY_GOAL, ROLLOUT_GOAL
from tests.bench.cost import stored_bytes
from tests.bench.figures import Figure, exit_on_sigterm, report
from tests.procs import BIN, Proc, certfleet, start, wait_until

NOW = datetime.now(UTC)
INFLIGHT = 100
"""Unacknowledged QoS 1 publishes (the bench broker's `max_inflight_messages` is 100)."""
CHUNK = 1_000
"""State messages built and published at a time."""
LAG = 2_000
"""Most published state messages the inventory may not hold yet."""
STALL_SECONDS = 60.0
"""A wait fails when what it waits for has not moved for this long."""
GOAL = 1.10
KIB = 1024


class _NoTasks:
    """`RolloutTasks` for `create_rollout(start=False)`, which enqueues nothing."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"create_rollout enqueued {name}")


@dataclass(frozen=True, slots=True)
class Memory:
    """A process's resident set now and at its peak, in bytes, and its thread count."""

    rss: int
    peak: int
    threads: int


def memory(pid: int) -> Memory:
    """VmRSS, VmHWM and Threads of `pid` from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                fields[name] = int(value.split()[0])
    return Memory(rss=fields["VmRSS"] * KIB, peak=fields["VmHWM"] * KIB, threads=fields["Threads"])


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


def _mib(n: int) -> str:
    return f"{n / KIB / KIB:,.1f} MiB"


def _wait_moving(what: str, progress: Callable[[], int], target: int, alive: Proc) -> None:
    """Wait until `progress()` reaches `target`; fail if it stalls or `alive` dies."""
    last, moved = progress(), time.monotonic()
    while last < target:
        if alive.process.poll() is not None:
            raise RuntimeError(
                f"{alive.name} exited while waiting for {what}:\n{alive.log()[-3000:]}"
            )
        if time.monotonic() - moved > STALL_SECONDS:
            raise RuntimeError(
                f"{what}: stuck at {last:,} of {target:,} for {STALL_SECONDS:.0f}s "
                f"(see {alive.log_file})"
            )
        time.sleep(0.05)
        now = progress()
        if now != last:
            last, moved = now, time.monotonic()


class StatePublisher:
    """A raw paho client publishing device state messages, paced by the inventory."""

    def __init__(self, service: LocalService, topics: Topics, entry: CredentialEntry) -> None:
        self._topics = topics
        self._entry = entry
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-devices", protocol=mqtt.MQTTv5
        )
        self._client.max_inflight_messages_set(INFLIGHT)
        self._client.connect(service.host, service.port, keepalive=60)
        self._client.loop_start()
        wait_until(self._client.is_connected, timeout=30, what="the publisher's CONNACK")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _messages(self, first: int, stop: int) -> Iterator[tuple[str, bytes]]:
        for n in range(first, stop):
            device_id = f"mem-{n:07d}"
            message = StateMessage(
                device_id=device_id, time=NOW, credentials=[self._entry], active_tags=[42]
            )
            yield self._topics.state(device_id), message.to_json()

    def publish(self, first: int, stop: int, inventory: RedisInventory, listener: Proc) -> None:
        """Devices `first` .. `stop - 1` report; return once the inventory holds them all."""
        for start_at in range(first, stop, CHUNK):
            end = min(stop, start_at + CHUNK)
            _wait_moving("the listener catching up", inventory.device_count, end - LAG, listener)
            infos = [
                self._client.publish(topic, data, qos=1)
                for topic, data in self._messages(start_at, end)
            ]
            for info in infos:
                info.wait_for_publish(STALL_SECONDS)
                if not info.is_published():
                    raise RuntimeError("a state message was not acknowledged by the broker")
        _wait_moving(f"{stop:,} devices in the inventory", inventory.device_count, stop, listener)


class WorkerRun:
    """The worker's fleet-sized work at one fleet size, through Celery."""

    def __init__(self, client: redis.Redis, settings: Settings, app: Celery) -> None:
        self._client = client
        self._app = app
        self._settings = settings
        ca = make_ca(
            "Bench Renewed CA",
            not_before=NOW - timedelta(days=1),
            not_after=NOW + timedelta(days=400),
        )
        self._ca_pem = ca.pem.decode()
        self._previous: str | None = None
        self.rollout_bytes: dict[int, int] = {}
        """Redis used_memory each `create_rollout` added, by fleet size."""

    def _deps(self) -> RolloutDeps:
        return RolloutDeps(
            store=RedisRollouts(self._client),
            inventory=RedisInventory(self._client),
            tasks=_NoTasks(),  # type: ignore[arg-type]
            metrics=RedisMetrics(self._client),
        )

    def _call(self, name: str, args: list[Any], queue: str, timeout: float) -> Any:
        result = self._app.send_task(name, args=args, queue=queue)
        try:
            return result.get(timeout=timeout)
        finally:
            result.forget()

    def run(self, devices: int) -> dict[str, float]:
        """scan_fleet, then a rollout over the fleet dispatched and evaluated; seconds of each."""
        deps = self._deps()
        timeout = max(120.0, devices / 2_000)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        summary = self._call(TASK_SCAN_FLEET, [], "scan", timeout)
        seconds["scan_fleet"] = time.perf_counter() - started
        if summary["devices"] != devices:
            raise RuntimeError(f"scan_fleet saw {summary['devices']} devices, {devices} expected")
        if self._previous is not None:  # its claims would keep the devices from a new rollout
            ids = list(deps.store.device_states(self._previous))
            deps.store.release(self._previous, [42, 43], ids)
            deps.store.set_active(self._previous, False)
        spec = RolloutSpec(
            kind="trust.add",
            ca_pems=(self._ca_pem,),
            tag=42,
            spare_tag=43,
            probe_host="probe.invalid",
            probe_port=8443,
            waves=parse_waves("100%"),
            device_timeout_seconds=3600,
        )
        before = stored_bytes(self._client)
        started = time.perf_counter()
        rollout_id = create_rollout(deps, spec, now=NOW, actor="bench", start=False)
        seconds["create_rollout (bench process)"] = time.perf_counter() - started
        self.rollout_bytes[devices] = stored_bytes(self._client) - before
        self._previous = rollout_id
        deps.store.change(
            rollout_id,
            Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)}),
        )
        started = time.perf_counter()
        dispatched = self._call(TASK_DISPATCH_WAVE, [rollout_id, 0], "control", timeout)
        seconds["dispatch_wave"] = time.perf_counter() - started
        batches = int(self._client.llen("push"))
        if dispatched != devices or batches != math.ceil(devices / PUSH_BATCH_SIZE):
            raise RuntimeError(
                f"dispatch_wave: {dispatched} devices in {batches} push tasks, "
                f"{devices} in {math.ceil(devices / PUSH_BATCH_SIZE)} expected"
            )
        self._client.delete("push")
        started = time.perf_counter()
        state = self._call(TASK_EVALUATE_ROLLOUT, [rollout_id], "control", timeout)
        seconds["evaluate_rollout"] = time.perf_counter() - started
        if state != "running":
            raise RuntimeError(f"evaluate_rollout left the rollout {state}, running expected")
        return seconds


def _worker(base: Path, env: dict[str, str]) -> Proc:
    return start(
        "worker",
        [
            str(BIN / "celery"),
            "-A",
            "workers.app",
            "worker",
            "-Q",
            "control,scan",
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--hostname",
            f"bench-memory-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        env={**env, "CERTFLEET_LOG_LEVEL": "WARNING"},
        log_dir=base,
    )


def _pool_child(worker: Proc) -> int:
    [child] = wait_until(
        lambda: children(worker.process.pid), timeout=60, what="the worker's pool process"
    )
    return child


def _figures(process: str, measured: Sequence[Memory], sizes: tuple[int, int]) -> list[Figure]:
    """RSS and peak RSS at the large fleet over the same at the small one."""
    small, large = measured
    figures = []
    for label, before, after in (
        ("RSS", small.rss, large.rss),
        ("peak RSS (VmHWM)", small.peak, large.peak),
    ):
        ratio = after / before
        figures.append(
            Figure(
                "Memory",
                f"{process} {label}, {sizes[1]:,} over {sizes[0]:,} devices",
                ratio,
                "ratio",
                goal=f"<= {GOAL:.2f}",
                met=ratio <= GOAL,
                baseline=f"{process} {label} at {sizes[0]:,} devices: {_mib(before)}",
                detail=(
                    f"{_mib(after)} at {sizes[1]:,} devices; "
                    f"threads {small.threads} then {large.threads}"
                ),
            )
        )
    return figures


def _redis_figures(
    devices: int, empty: int, recorded: int, small_rollout: int, rollout: int
) -> list[Figure]:
    """Redis bytes per device: the inventory, one rollout, both."""
    inventory = (recorded - empty - small_rollout) / devices
    per_rollout = rollout / devices
    total = inventory + per_rollout
    return [
        Figure(
            "Memory",
            f"Redis per device, inventory plus one rollout over all, {devices:,} devices",
            total,
            "B",
            goal=f"<= {MEMORY_GOAL} B",
            met=total <= MEMORY_GOAL,
            baseline=f"used_memory less client buffers before the first state: {empty:,} B",
            detail=f"inventory {inventory:,.0f} B/device, rollout {per_rollout:,.0f} B/device",
        ),
        Figure(
            "Memory",
            "Redis per device, the inventory alone (as the listener recorded it)",
            inventory,
            "B",
            goal=f"<= {INVENTORY_GOAL} B",
            met=inventory <= INVENTORY_GOAL,
            baseline=f"used_memory with the fleet recorded: {recorded:,} B, "
            f"of which the small run's rollout {small_rollout:,} B",
        ),
        Figure(
            "Memory",
            "Redis per device, one rollout over all (claims included)",
            per_rollout,
            "B",
            goal=f"<= {ROLLOUT_GOAL} B",
            met=per_rollout <= ROLLOUT_GOAL,
            baseline=f"create_rollout added {rollout:,} B",
        ),
    ]


def run(devices: int, small: int) -> tuple[list[Figure], dict[str, str]]:
    """Measure; return the figures and the time each step took."""
    timings: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        base = Path(tmp)
        redis_service = start_redis(base / "redis")
        mqtt_service = start_mosquitto(base / "mosquitto")
        procs: list[Proc] = []
        try:
            env = {
                "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
                "CERTFLEET_MQTT_HOST": mqtt_service.host,
                "CERTFLEET_MQTT_PORT": str(mqtt_service.port),
                "CERTFLEET_LOG_FORMAT": "json",
            }
            settings = Settings(
                redis_url=env["CERTFLEET_REDIS_URL"],
                mqtt_host=mqtt_service.host,
                mqtt_port=mqtt_service.port,
            )
            # A rollout of a million devices is written in one transaction: give it time.
            client = redis.Redis(
                host=redis_service.host,
                port=redis_service.port,
                decode_responses=True,
                socket_timeout=600,
            )
            inventory = RedisInventory(client)
            app = Celery("certfleet-bench")
            app.conf.update(celery_config(settings))

            listener = start("listener", certfleet("listener"), env=env, log_dir=base)
            procs.append(listener)
            wait_until(
                lambda: (
                    "listener_subscribed" in listener.log() or listener.process.poll() is not None
                ),
                timeout=60,
                what="the listener's subscription",
            )
            worker = _worker(base, env)
            procs.append(worker)
            wait_until(
                lambda: bool(app.control.ping(timeout=0.5)),
                timeout=60,
                what="the worker answering",
            )
            child = _pool_child(worker)

            ca = make_ca(
                "Bench Fleet CA",
                not_before=NOW - timedelta(days=300),
                not_after=NOW + timedelta(days=20),
            )
            entry = CredentialEntry(
                sec_tag=42,
                type=CredentialType.CA_CHAIN,
                sha256=sha256_hex(ca.pem),
                not_after=ca.certificate.not_valid_after_utc,
                subject=ca.certificate.subject.rfc4514_string(),
                issuer=ca.certificate.issuer.rfc4514_string(),
            )
            publisher = StatePublisher(mqtt_service, Topics(settings.topic_prefix), entry)
            work = WorkerRun(client, settings, app)
            listener_mem, worker_mem = [], []
            empty = stored_bytes(client)
            recorded = 0
            begun = 0
            for size in (small, devices):
                started = time.perf_counter()
                publisher.publish(begun, size, inventory, listener)
                timings[f"{size:,}: state messages {begun:,}..{size - 1:,} recorded"] = (
                    f"{time.perf_counter() - started:.1f} s"
                )
                begun = size
                recorded = stored_bytes(client)
                listener_mem.append(memory(listener.process.pid))
                for step, secs in work.run(size).items():
                    timings[f"{size:,}: {step}"] = f"{secs:.1f} s"
                if children(worker.process.pid) != [child]:
                    raise RuntimeError("the worker's pool process changed during the run")
                worker_mem.append(memory(child))
            publisher.close()
            client.close()
        finally:
            for proc in reversed(procs):
                proc.stop()
            mqtt_service.stop()
            redis_service.stop()

    sizes = (small, devices)
    figures = [
        *_redis_figures(
            devices, empty, recorded, work.rollout_bytes[small], work.rollout_bytes[devices]
        ),
        *_figures("listener", listener_mem, sizes),
        *_figures("worker (pool process)", worker_mem, sizes),
    ]
    return figures, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    exit_on_sigterm()
    if not 0 < args.small < args.devices:
        parser.error("--small must be at least 1 and below --devices")
    configure_logging(level="WARNING")
    started = time.perf_counter()
    figures, timings = run(args.devices, args.small)
    report(figures, args.json_out)
    for step, took in timings.items():
        print(f"  {step}: {took}")
    print(f"  whole run: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
