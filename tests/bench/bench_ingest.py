"""Benchmark: device reports through the listener, on a real redis-server and mosquitto.

    .venv/bin/python -m tests.bench.bench_ingest [--reports 100000] [--json-out FILE]

A `trust.add` rollout made by `create_rollout` over reports/3 recorded devices, every
device moved to `sent` through the rollout store; then each device's `received`,
`staged` and `health_ok` reports (what a rollout's devices publish) make the stream.
Persistent MQTT sessions subscribe before it is published, so the broker queues the
same N messages for each: the listener's (`CERTFLEET_LISTENER_CLIENT_ID`, its shared
subscriptions), a bare paho subscriber's and an aiomqtt one's. Each is then timed draining its
queue: the paho one from CONNACK to its N-th message, `certfleet listener` (a process
of its own) from its subscription until Redis shows every report validated, counted
and every device moved to `health_ok`. For reference, aiomqtt read as the listener
reads it (a batch at a time) drains the third queue doing nothing else.

Cost per report, over the listener's drain: its CPU time and redis-server's (/proc
utime+stime) and the Redis commands run (`INFO commandstats`), over the reports.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
    WaveState,
)
from orchestrator.protocol.bundle import Reason
from orchestrator.protocol.mqtt import mqtt5_client
from orchestrator.protocol.report import Phase, ReportMessage
from orchestrator.protocol.topics import Topics
from orchestrator.services.rollout import RolloutDeps, create_rollout
from simulator.pki import make_ca
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.bench.cost import CpuMeter, commandstats, subtract
from tests.bench.figures import Figure, exit_on_sigterm, report
from tests.bench.fleet import reported_states
from workers.listener import GC_THRESHOLDS, _Inbox

NOW = datetime(2026, 11, 25, tzinfo=UTC)
TIMEOUT = 30.0
PHASES = (Phase.RECEIVED, Phase.STAGED, Phase.HEALTH_OK)
SESSION_EXPIRY = 3600
PUBLISH_WINDOW = 20_000
LISTENER_ID = "bench-listener"
RAW_ID = "bench-raw"
AIOMQTT_ID = "bench-aiomqtt"
BATCH = 500
# Both queues hold the whole stream while their consumer is away.
BROKER_CONFIG = "max_queued_messages 0\nmax_queued_bytes 0\n"


class RecordedTasks:
    """`RolloutTasks` that records what the engine would enqueue instead of enqueueing it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **_: self.calls.append((name, args))


def _wait(what: str, done: Callable[[], bool], *, timeout: float, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def _client(client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    return client


def _connect(client: mqtt.Client, service: LocalService, *, clean_start: bool) -> None:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY
    client.connect(
        service.host, service.port, keepalive=60, clean_start=clean_start, properties=properties
    )


def _subscribe_session(service: LocalService, client_id: str, topics: Sequence[str]) -> None:
    """Open a persistent session holding `topics`, then leave it so the broker queues for it."""
    client = _client(client_id)
    acked = threading.Event()
    client.on_subscribe = lambda *_: acked.set()
    _connect(client, service, clean_start=True)
    client.loop_start()
    try:
        for topic in topics:
            acked.clear()
            client.subscribe(topic, qos=1)
            if not acked.wait(TIMEOUT):
                raise RuntimeError(f"{client_id}: no SUBACK for {topic}")
    finally:
        client.disconnect()
        client.loop_stop()


def _publish(service: LocalService, messages: Sequence[tuple[str, bytes]]) -> float:
    client = _client("bench-publisher")
    _connect(client, service, clean_start=True)
    client.loop_start()
    try:
        _wait("the publisher's CONNACK", client.is_connected, timeout=TIMEOUT)
        start = time.perf_counter()
        # In windows: a packet id (mid) must not be reused while it awaits its PUBACK.
        for i in range(0, len(messages), PUBLISH_WINDOW):
            infos = [
                client.publish(topic, data, qos=1)
                for topic, data in messages[i : i + PUBLISH_WINDOW]
            ]
            for info in infos:
                info.wait_for_publish(TIMEOUT)
                if not info.is_published():
                    raise RuntimeError("publish not acknowledged")
        return time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()


def _raw_drain(service: LocalService, expected: int) -> float:
    """Seconds from CONNACK until a bare paho subscriber has received `expected` messages."""
    client = _client(RAW_ID)
    received = 0
    started, finished = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    def on_connect(*_: Any) -> None:
        times["start"] = time.perf_counter()
        started.set()

    def on_message(_client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received == expected:
            times["end"] = time.perf_counter()
            finished.set()

    client.on_connect = on_connect
    client.on_message = on_message
    _connect(client, service, clean_start=False)
    client.loop_start()
    try:
        if not finished.wait(TIMEOUT * 4):
            raise RuntimeError(f"raw subscriber received {received} of {expected}")
        return times["end"] - times["start"]
    finally:
        client.disconnect()
        client.loop_stop()


def _aiomqtt_drain(service: LocalService, expected: int) -> float:
    """Seconds from connect until aiomqtt, read as the listener reads it, has `expected`."""

    async def drain() -> float:
        inbox = _Inbox()
        client = mqtt5_client(
            service.host,
            service.port,
            client_id=AIOMQTT_ID,
            session_expiry=SESSION_EXPIRY,
            inbox=inbox,
        )
        start = time.perf_counter()
        async with client:
            received = 0
            async with asyncio.timeout(TIMEOUT * 4):
                async for _ in client.messages:
                    received += 1 + len(inbox.take(BATCH - 1))
                    if received >= expected:
                        return time.perf_counter() - start
        raise RuntimeError(f"aiomqtt received {received} of {expected}")

    thresholds = gc.get_threshold()
    gc.freeze()  # as the listener runs: its heap out of the collector's passes
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return asyncio.run(drain())
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _listener_drain(
    redis_service: LocalService,
    mqtt_service: LocalService,
    workdir: Path,
    done: Callable[[], bool],
    client: redis.Redis,
) -> tuple[float, dict[str, float], dict[str, int]]:
    """Seconds from `certfleet listener`'s subscription until `done()` holds in Redis; the
    CPU seconds of the listener and redis-server meanwhile; the Redis commands run."""
    env = {
        **os.environ,
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": mqtt_service.host,
        "CERTFLEET_MQTT_PORT": str(mqtt_service.port),
        "CERTFLEET_LISTENER_CLIENT_ID": LISTENER_ID,
        "CERTFLEET_LOG_FORMAT": "json",
    }
    log_path = workdir / "listener.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("certfleet")), "listener"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(
            "the listener's subscription",
            lambda: b"listener_subscribed" in log_path.read_bytes(),
            timeout=TIMEOUT,
            every=0.002,
        )
        meter = CpuMeter({"listener": process.pid, "redis-server": redis_service.process.pid})
        commands = commandstats(client)
        meter.start()
        start = time.perf_counter()
        _wait("the listener's drain", done, timeout=TIMEOUT * 10, every=0.02)
        elapsed = time.perf_counter() - start
        cpu = meter.stop()
        return elapsed, cpu, subtract(commandstats(client), commands)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rollout(client: redis.Redis, device_ids: Sequence[str]) -> str:
    """A started `trust.add` rollout over the devices, each moved to `sent`."""
    deps = RolloutDeps(
        store=RedisRollouts(client),
        inventory=RedisInventory(client),
        tasks=RecordedTasks(),
        metrics=RedisMetrics(client),
    )
    ca = make_ca(
        "Fleet CA 2026", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    spec = RolloutSpec(
        kind="trust.add",
        ca_pems=(ca.pem.decode(),),
        tag=42,
        spare_tag=43,
        probe_host="probe.invalid",
        probe_port=8443,
        waves=parse_waves("100%"),
    )
    rollout_id = create_rollout(deps, spec, now=NOW, actor="bench", start=False)
    deps.store.change(
        rollout_id,
        Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)}),
    )
    for i in range(0, len(device_ids), 1000):
        results = deps.store.transition(
            rollout_id,
            [
                DeviceTransition(
                    device_id=d,
                    new=DeviceRolloutState.SENT,
                    allowed=frozenset({DeviceRolloutState.PENDING}),
                    cause="bench",
                    deadline=NOW.timestamp() + 3600,
                    step=PushStep.STAGE,
                    bundle=b"bench",
                    seq=1,  # the seq every report answers
                )
                for d in device_ids[i : i + 1000]
            ],
            now=NOW,
            actor="bench",
        )
        assert all(r.applied for r in results)
    return rollout_id


def _reports(rollout_id: str, device_ids: Sequence[str], topics: Topics) -> list[tuple[str, bytes]]:
    """Every device's received, staged, health_ok reports, phase by phase over the fleet."""
    return [
        (
            topics.report(d),
            ReportMessage(
                device_id=d,
                rollout_id=rollout_id,
                seq=1,
                op="stage",
                phase=phase,
                reason=Reason.OK,
                time=NOW + timedelta(seconds=n),
                active_tags=[42],
            ).to_json(),
        )
        for n, phase in enumerate(PHASES)
        for d in device_ids
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    exit_on_sigterm()
    devices = max(1, min(args.reports, 1_500_000) // len(PHASES))
    reports = devices * len(PHASES)

    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        base = Path(tmp)
        redis_service = start_redis(base / "redis")
        mqtt_service = start_mosquitto(base / "mosquitto", extra_config=BROKER_CONFIG)
        try:
            client = redis.Redis(
                host=redis_service.host, port=redis_service.port, decode_responses=True
            )
            inventory = RedisInventory(client)
            states = reported_states("bench-", devices, now=NOW)
            for i in range(0, devices, 500):
                inventory.record_states(states[i : i + 500], received_at=NOW)
            device_ids = sorted(s.device_id for s in states)
            rollout_id = _rollout(client, device_ids)
            topics = Topics("certfleet")
            messages = _reports(rollout_id, device_ids, topics)
            size = sum(len(data) for _, data in messages) / reports

            _subscribe_session(
                mqtt_service,
                LISTENER_ID,
                [topics.shared_subscription("state"), topics.shared_subscription("report")],
            )
            _subscribe_session(mqtt_service, RAW_ID, [f"{topics.prefix}/+/report"])
            _subscribe_session(mqtt_service, AIOMQTT_ID, [f"{topics.prefix}/+/report"])
            publish_s = _publish(mqtt_service, messages)

            raw_s = _raw_drain(mqtt_service, reports)
            aiomqtt_s = _aiomqtt_drain(mqtt_service, reports)
            rollouts = RedisRollouts(client)

            def drained() -> bool:
                counted = sum(inventory.report_phase_counts().values())
                moved = rollouts.wave_counts(rollout_id, 1)[0].get("health_ok", 0)
                return bool(counted >= reports and moved >= devices)

            ours_s, cpu, commands = _listener_drain(
                redis_service, mqtt_service, base, drained, client
            )
            counts = rollouts.wave_counts(rollout_id, 1)[0]
            assert counts.get("health_ok") == devices, counts
            assert sum(counts.values()) == devices, counts
            client.close()
        finally:
            mqtt_service.stop()
            redis_service.stop()

    raw_rate, ours_rate = reports / raw_s, reports / ours_s
    ratio = raw_s / ours_s
    aiomqtt_rate = reports / aiomqtt_s
    listener_us = cpu["listener"] / reports * 1e6
    calls = sum(commands.values())
    by_command = ", ".join(f"{name} {n / reports:.2f}" for name, n in list(commands.items())[:8])
    figures = [
        Figure(
            section="Ingest",
            name=f"listener: {reports:,} reports validated, transitioned, counted",
            value=ratio,
            unit="ratio",
            goal=">= 0.8",
            met=ratio >= 0.8,
            baseline=f"bare paho subscriber draining the same queue: {raw_rate:,.0f} reports/s",
            detail=f"listener {ours_rate:,.0f} reports/s; {size:.0f} B reports; "
            f"published at {reports / publish_s:,.0f}/s",
        ),
        Figure(
            section="Ingest",
            name="for reference: aiomqtt alone, read as the listener reads it, no processing",
            value=raw_s / aiomqtt_s,
            unit="ratio",
            baseline=f"bare paho subscriber: {raw_rate:,.0f} reports/s",
            detail=f"aiomqtt {aiomqtt_rate:,.0f} reports/s",
        ),
        Figure(
            section="Ingest",
            name="listener CPU per report (validated, transitioned, counted)",
            value=listener_us,
            unit="µs",
            baseline=f"redis-server meanwhile: {cpu['redis-server'] / reports * 1e6:,.0f} µs "
            f"per report, {calls / reports:.2f} commands per report",
            detail=f"commands per report: {by_command}",
        ),
    ]
    print(f"reports {reports:,} ({devices:,} devices x {len(PHASES)}), {size:.0f} B each")
    print(f"publish (paho, QoS 1)             {reports / publish_s:12,.0f} reports/s")
    print(f"baseline bare paho drain          {raw_rate:12,.0f} reports/s")
    print(f"aiomqtt drain, no processing      {aiomqtt_rate:12,.0f} reports/s")
    print(f"certfleet listener drain          {ours_rate:12,.0f} reports/s")
    report(figures, args.json_out)


if __name__ == "__main__":
    main()
