"""Benchmark: the real push path (Celery `push_batch`) against a raw paho publish loop.

    .venv/bin/python -m tests.bench.bench_push [--devices 100000] [--signing-pairs 1]
        [--json-out FILE]

One throwaway redis-server and mosquitto. For each run a `trust.add` rollout over its
own `--devices` devices (one wave, 100%, an RSA 4096 CA so a bundle is about 2 KB) is
created with the real `create_rollout`; its `push_batch` tasks (batches of
`PUSH_BATCH_SIZE`) go to a real Celery worker (`celery -A workers.app worker -Q push`)
whose processes keep one MQTT session each. A run's time is from the first task sent
to the worker's `certfleet_bundles_pushed_total` reaching every device: sequence
numbers, CBOR, ES256, the Lua transitions storing the bundles, QoS 1 publishes all
acknowledged. Runs: one worker process (`--concurrency 1`) and two (`--concurrency 2`).

CPU per device pushed, for the one-process run: the worker's CPU time (its main
process and its pool child, /proc utime+stime) from the first task sent until every
bundle was acknowledged, over the devices; goal <= 220 µs (issue 15: half of the
440 µs measured before it). redis-server's and mosquitto's CPU over the same time are
printed beside it.

Baseline, in the same run on the same broker: a raw paho-mqtt loop (MQTT 5, QoS 1,
the same message expiry, the same window of unacknowledged messages) publishing the
very bundles the first run stored to the same topics, measured before and after the
worker runs (the mean is the baseline; both are printed).

Delegated signing (issue 17): the worker signs with its own key under a delegation from
the root key (the development key file here; a token is asked only per delegation, so
the push path is the same). `--signing-pairs N` adds N pairs of one-process runs, each
pair a run with the root key signing every bundle itself (`CERTFLEET_DELEGATION_HOURS=0`,
how certfleet signed before issue 17) and one under a delegation, the order alternating
from pair to pair; the figures are the delegated runs over the root's (devices/s and
worker CPU per device), and the root signatures the delegated runs cost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.adapters.celery_queue import CeleryTaskQueue
from orchestrator.adapters.delegated_signer import ROOT_SIGNATURES_METRIC
from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.config import Settings
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import PushStep, RolloutState, WaveState
from orchestrator.logs import configure_logging
from orchestrator.protocol.topics import Topics
from orchestrator.services.rollout import PUSH_BATCH_SIZE, RolloutDeps, create_rollout
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.bench.cost import CpuMeter
from tests.bench.figures import Figure, exit_on_sigterm, report
from tests.bench.fleet import reported_states
from tests.procs import BIN, Proc, start, wait_until

NOW = datetime.now(UTC)
TIMEOUT = 30.0
INFLIGHT = 100
"""Unacknowledged QoS 1 messages per connection, ours and the baseline's alike (the
bench broker's `max_inflight_messages` is 100)."""
RAW_SLICE = 20_000
CPU_GOAL_US = 220.0
"""The worker's CPU per device pushed (issue 15: half of the 440 µs before it)."""


class _NoTasks:
    """`RolloutTasks` for `create_rollout(start=False)`, which enqueues nothing."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"create_rollout enqueued {name}")


def rsa_ca_pem() -> str:
    """A self-signed RSA 4096 root (about 1.9 KB of PEM, like many public roots)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Root CA R4096")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _rollout(client: redis.Redis, prefix: str, devices: int, ca_pem: str) -> tuple[str, list[str]]:
    """A running trust.add rollout over `devices` new devices, its one wave running."""
    inventory = RedisInventory(client)
    states = reported_states(prefix, devices, now=NOW)
    for i in range(0, devices, 500):
        inventory.record_states(states[i : i + 500], received_at=NOW)
    rollouts = RedisRollouts(client)
    deps = RolloutDeps(
        store=rollouts,
        inventory=inventory,
        tasks=_NoTasks(),  # type: ignore[arg-type]
        metrics=RedisMetrics(client),
    )
    spec = RolloutSpec(
        kind="trust.add",
        ca_pems=(ca_pem,),
        tag=42,
        spare_tag=43,
        probe_host="probe.invalid",
        probe_port=8443,
        waves=parse_waves("100%"),
        device_timeout_seconds=3600,
    )
    ids = [s.device_id for s in states]
    rollout_id = create_rollout(deps, spec, now=NOW, actor="bench", start=False, devices=ids)
    running = Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)})
    rollouts.change(rollout_id, running)
    return rollout_id, ids


def _pushed(metrics: RedisMetrics) -> float:
    return sum(
        value
        for (name, labels), value in metrics.snapshot().items()
        if name == "certfleet_bundles_pushed_total" and dict(labels).get("step") == "stage"
    )


def _root_signatures(metrics: RedisMetrics) -> dict[str, float]:
    """`certfleet_root_signatures_total` by purpose (delegation, bundle)."""
    return {
        dict(labels).get("purpose", ""): value
        for (name, labels), value in metrics.snapshot().items()
        if name == ROOT_SIGNATURES_METRIC
    }


def _worker(base: Path, env: dict[str, str], concurrency: int) -> Proc:
    name = f"worker-c{concurrency}"
    return start(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "workers.app",
            "worker",
            "-Q",
            "push",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--hostname",
            f"{name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        env={**env, "CERTFLEET_LOG_LEVEL": "WARNING"},
        log_dir=base,
    )


def _push_run(
    client: redis.Redis,
    settings: Settings,
    base: Path,
    env: dict[str, str],
    *,
    concurrency: int,
    rollout_id: str,
    ids: Sequence[str],
    services: dict[str, int],
) -> tuple[float, dict[str, float]]:
    """Seconds from the first `push_batch` sent until every bundle was acknowledged, and
    the CPU seconds the worker (main process and pool) and `services` used meanwhile."""
    metrics = RedisMetrics(client)
    before = _pushed(metrics)
    queue = CeleryTaskQueue.from_settings(settings)
    worker = _worker(base, env, concurrency)
    try:
        # The worker logs at WARNING: it is ready once it answers a ping.
        wait_until(
            lambda: len(queue._app.control.ping(timeout=0.5) or ()) > 0,
            timeout=60,
            what=f"{worker.name} answering",
        )
        meter = CpuMeter({"worker": worker.process.pid, **services})
        meter.start()
        started = time.perf_counter()
        for i in range(0, len(ids), PUSH_BATCH_SIZE):
            batch = ids[i : i + PUSH_BATCH_SIZE]
            queue.push_batch(rollout_id, 0, batch, PushStep.STAGE, countdown=0)
        wait_until(
            lambda: _pushed(metrics) - before >= len(ids) or worker.process.poll() is not None,
            timeout=max(120.0, len(ids) / 200),
            interval=0.02,
            what=f"{len(ids)} bundles pushed by {worker.name}",
        )
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
        if worker.process.poll() is not None:
            raise RuntimeError(f"{worker.name} died:\n{worker.log()[-3000:]}")
        return elapsed, cpu
    finally:
        worker.stop()


def raw_publish(service: LocalService, messages: Sequence[tuple[str, bytes]]) -> float:
    """Seconds for a bare paho loop: MQTT 5, QoS 1, expiry set, `INFLIGHT` window, all acked."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(INFLIGHT)
    client.connect(service.host, service.port, keepalive=30)
    client.loop_start()
    try:
        wait_until(client.is_connected, timeout=TIMEOUT, what="baseline client connected")
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.MessageExpiryInterval = 3600
        started = time.perf_counter()
        # paho's message ids are 16 bits: more than 65,535 unacknowledged and it refuses
        # to queue (ERR_QUEUE_SIZE), so the loop waits for its acks every RAW_SLICE.
        for first in range(0, len(messages), RAW_SLICE):
            infos = [
                client.publish(topic, data, qos=1, properties=properties)
                for topic, data in messages[first : first + RAW_SLICE]
            ]
            for info in infos:
                info.wait_for_publish(TIMEOUT)
                if not info.is_published():
                    raise RuntimeError("baseline publish not acknowledged")
        return time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True, slots=True)
class _SigningRun:
    """One one-process run of a signing pair: who signed, how fast, at what cost."""

    delegated: bool
    seconds: float
    worker_cpu: float
    bundle_bytes: float
    root_signatures: dict[str, float]


def _signing_pairs(
    client: redis.Redis,
    settings: Settings,
    base: Path,
    env: dict[str, str],
    *,
    pairs: int,
    devices: int,
    ca_pem: str,
    services: dict[str, int],
) -> list[_SigningRun]:
    """`pairs` pairs of one-process runs, the root signing every bundle in one and a
    delegated key in the other, the order alternating from pair to pair."""
    runs: list[_SigningRun] = []
    metrics = RedisMetrics(client)
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for delegated in order:
            name = f"p{pair}{'d' if delegated else 'r'}-"
            rollout_id, ids = _rollout(client, name, devices, ca_pem)
            hours = env.get("CERTFLEET_DELEGATION_HOURS", "48") if delegated else "0"
            before = _root_signatures(metrics)
            seconds, cpu = _push_run(
                client,
                settings,
                base,
                {**env, "CERTFLEET_DELEGATION_HOURS": hours},
                concurrency=1,
                rollout_id=rollout_id,
                ids=ids,
                services=services,
            )
            after = _root_signatures(metrics)
            stored = RedisRollouts(client).bundles(rollout_id, ids[:1000], PushStep.STAGE)
            runs.append(
                _SigningRun(
                    delegated=delegated,
                    seconds=seconds,
                    worker_cpu=cpu["worker"],
                    bundle_bytes=sum(map(len, stored.values())) / max(1, len(stored)),
                    root_signatures={
                        k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)
                    },
                )
            )
    return runs


def _signing_figures(runs: Sequence[_SigningRun], devices: int) -> list[Figure]:
    """Delegated over root: devices/s, worker CPU per device, and the root's signatures."""
    root = [r for r in runs if not r.delegated]
    dlg = [r for r in runs if r.delegated]
    if not root or not dlg:
        return []

    def rate(rs: Sequence[_SigningRun]) -> float:
        return devices * len(rs) / sum(r.seconds for r in rs)

    def cpu_us(rs: Sequence[_SigningRun]) -> float:
        return sum(r.worker_cpu for r in rs) / (devices * len(rs)) * 1e6

    def each(rs: Sequence[_SigningRun], of: str) -> str:
        values = [devices / r.seconds if of == "rate" else r.worker_cpu / devices * 1e6 for r in rs]
        return " and ".join(f"{v:,.0f}" for v in values)

    dlg_rate, root_rate = rate(dlg), rate(root)
    dlg_cpu, root_cpu = cpu_us(dlg), cpu_us(root)
    token = sum(r.root_signatures.get("delegation", 0.0) for r in dlg)
    token_bundles = sum(r.root_signatures.get("bundle", 0.0) for r in dlg)
    size_text = (
        f"bundles {dlg[0].bundle_bytes:,.0f} B delegated, {root[0].bundle_bytes:,.0f} B root-signed"
    )
    return [
        Figure(
            "Push",
            f"delegated signing over the root key signing each bundle, 1 worker process, "
            f"{devices:,} devices ({len(dlg)} run{'s' * (len(dlg) > 1)} each, alternating)",
            dlg_rate / root_rate,
            "ratio",
            goal=">= 0.95",
            met=dlg_rate / root_rate >= 0.95,
            baseline=f"root key signing each bundle (CERTFLEET_DELEGATION_HOURS=0): "
            f"{root_rate:,.0f} devices/s (runs {each(root, 'rate')})",
            detail=f"delegated {dlg_rate:,.0f} devices/s (runs {each(dlg, 'rate')}); {size_text}",
        ),
        Figure(
            "Push",
            "worker CPU per device pushed, delegated over root-signed",
            dlg_cpu / root_cpu,
            "ratio",
            goal="<= 1.05",
            met=dlg_cpu / root_cpu <= 1.05,
            baseline=f"root-signed: {root_cpu:,.1f} µs per device (runs {each(root, 'cpu')})",
            detail=f"delegated: {dlg_cpu:,.1f} µs per device (runs {each(dlg, 'cpu')})",
        ),
        Figure(
            "Push",
            f"root key signatures per delegated run of {devices:,} bundles",
            token / len(dlg),
            "signatures",
            goal="one per worker process",
            met=token == len(dlg) and token_bundles == 0,
            baseline=f"root-signed runs: {devices:,} per run (every bundle)",
            detail=f"delegation {token:,.0f}, bundle {token_bundles:,.0f} over {len(dlg)} run(s)",
        ),
    ]


def run(devices: int, *, signing_pairs: int = 1) -> list[Figure]:
    """Measure; return the figures."""
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        base = Path(tmp)
        redis_service = start_redis(base / "redis")
        mqtt_service = start_mosquitto(base / "mosquitto")
        try:
            client = redis.Redis(
                host=redis_service.host, port=redis_service.port, decode_responses=True
            )
            key_file = base / "signing-key.pem"
            generate_key_file(key_file)
            env = {
                "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
                "CERTFLEET_MQTT_HOST": mqtt_service.host,
                "CERTFLEET_MQTT_PORT": str(mqtt_service.port),
                "CERTFLEET_MQTT_MAX_INFLIGHT": str(INFLIGHT),
                "CERTFLEET_SIGNING_KEY_FILE": str(key_file),
            }
            settings = Settings(
                redis_url=env["CERTFLEET_REDIS_URL"],
                mqtt_host=mqtt_service.host,
                mqtt_port=mqtt_service.port,
            )
            ca_pem = rsa_ca_pem()
            one_id, one_ids = _rollout(client, "one-", devices, ca_pem)
            two_id, two_ids = _rollout(client, "two-", devices, ca_pem)
            services = {
                "redis-server": redis_service.process.pid,
                "mosquitto": mqtt_service.process.pid,
            }
            one_s, one_cpu = _push_run(
                client,
                settings,
                base,
                env,
                concurrency=1,
                rollout_id=one_id,
                ids=one_ids,
                services=services,
            )
            two_s, _ = _push_run(
                client,
                settings,
                base,
                env,
                concurrency=2,
                rollout_id=two_id,
                ids=two_ids,
                services=services,
            )
            stored = RedisRollouts(client).bundles(one_id, one_ids, PushStep.STAGE)
            if len(stored) != devices:
                raise RuntimeError(f"{len(stored)} bundles stored, {devices} expected")
            topics = Topics(settings.topic_prefix)
            messages = [(topics.bundle(d), stored[d]) for d in one_ids]
            raw_s = [raw_publish(mqtt_service, messages) for _ in range(2)]
            del stored
            signing = _signing_pairs(
                client,
                settings,
                base,
                env,
                pairs=signing_pairs,
                devices=devices,
                ca_pem=ca_pem,
                services=services,
            )
            client.close()
        finally:
            mqtt_service.stop()
            redis_service.stop()

    size = sum(len(data) for _, data in messages) / devices
    raw_rate = devices / (sum(raw_s) / len(raw_s))
    one_rate, two_rate = devices / one_s, devices / two_s
    worker_us = one_cpu["worker"] / devices * 1e6
    raw_text = (
        f"raw paho QoS 1 loop, window {INFLIGHT}: {raw_rate:,.0f}/s "
        f"(runs {devices / raw_s[0]:,.0f} and {devices / raw_s[1]:,.0f})"
    )
    return [
        Figure(
            "Push",
            f"push_batch via Celery, 1 worker process, {devices:,} devices, {size:,.0f} B bundles",
            one_rate / raw_rate,
            "ratio",
            goal=">= 0.9",
            met=one_rate / raw_rate >= 0.9,
            baseline=raw_text,
            detail=f"ours {one_rate:,.0f} devices/s",
        ),
        Figure(
            "Push",
            "2 worker processes over 1",
            two_rate / one_rate,
            "ratio",
            goal=">= 1.7",
            met=two_rate / one_rate >= 1.7,
            baseline=f"1 process: {one_rate:,.0f} devices/s",
            detail=f"2 processes {two_rate:,.0f} devices/s",
        ),
        Figure(
            "Push",
            "worker CPU per device pushed (main process and pool, 1 worker process)",
            worker_us,
            "µs",
            goal=f"<= {CPU_GOAL_US:,.0f} µs",
            met=worker_us <= CPU_GOAL_US,
            baseline="issue 15's starting point: 440 µs",
            detail=f"meanwhile redis-server {one_cpu['redis-server'] / devices * 1e6:,.0f} µs, "
            f"mosquitto {one_cpu['mosquitto'] / devices * 1e6:,.0f} µs per device; "
            f"{one_s:,.1f} s",
        ),
        *_signing_figures(signing, devices),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument(
        "--signing-pairs",
        type=int,
        default=1,
        help="pairs of one-process runs, root-signed and delegated (0: none)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    exit_on_sigterm()
    configure_logging(level="WARNING")
    figures = run(max(PUSH_BATCH_SIZE, args.devices), signing_pairs=max(0, args.signing_pairs))
    report(figures, args.json_out)


if __name__ == "__main__":
    main()
