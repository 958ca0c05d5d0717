"""A whole certfleet stack for end-to-end tests: services, worker, beat, listener, fleets."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.redis_inventory import RedisInventory
from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.procs import BIN, Proc, celery_worker, certfleet, start, wait_until
from tests.tlsserver import tls_server

NOW = datetime.now(UTC)


@dataclass
class Stack:
    env: dict[str, str]
    redis: redis.Redis
    mqtt: LocalService
    dir: Path
    ca1: IssuedCA
    ca2: IssuedCA
    probe_port: int
    fleets: dict[str, Proc]
    logs: Path
    procs: list[Proc]
    """Every process started for the stack (stopped at the end, in reverse)."""

    @property
    def worker(self) -> Proc:
        return next(p for p in reversed(self.procs) if p.name.startswith("worker"))

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            certfleet(*args), env=self.env, capture_output=True, timeout=timeout, check=False
        )

    def status(self, rollout_id: str) -> dict[str, Any]:
        done = self.run("rollout", "status", rollout_id, "--json")
        assert done.returncode == 0, done.stderr
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def wait_final(self, rollout_id: str, timeout: float = 240) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            status = self.status(rollout_id)
            ended = ("completed", "completed_with_timeouts", "rolled_back")
            return status if status["state"] in ended else None

        return wait_until(final, timeout=timeout, interval=1.0, what=f"{rollout_id} to end")

    def active_tags(self, device_id: str) -> list[int]:
        active = RedisInventory(self.redis).active_tags_of([device_id])[device_id]
        return list(active or ())


def start_fleet(
    env: dict[str, str],
    base: Path,
    logs: Path,
    prefix: str,
    count: int,
    *,
    faults: Sequence[str],
    scale: Sequence[str] = (),
) -> Proc:
    """`certfleet simulate` for `count` devices `{prefix}NNNNN` holding CA1 in sec_tag 42.

    `scale` (e.g. `("--scale", "--processes", "2")`) adds the scale mode's options.
    """
    args = [
        "simulate",
        "--devices",
        str(count),
        "--ca",
        str(base / "ca1.pem"),
        "--tag",
        "42",
        "--id-prefix",
        prefix,
    ]
    for fault in faults:
        args += ["--fault", fault]
    args += scale
    return start(f"fleet-{prefix.rstrip('-')}", certfleet(*args), env=env, log_dir=logs)


@dataclass(frozen=True)
class StackSetup:
    """What every whole-stack run prepares before it starts a process."""

    env: dict[str, str]
    ca1: IssuedCA
    ca2: IssuedCA
    server: IssuedCert
    logs: Path


def prepare_stack(base: Path, redis_service: LocalService, mqtt: LocalService) -> StackSetup:
    """A signing key, the settings naming the services, CA1 and CA2 (PEMs in `base`), a
    probe server certificate under CA2, and the log directory."""
    key = base / "signing-key.pem"
    generate_key_file(key)
    env = {
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": mqtt.host,
        "CERTFLEET_MQTT_PORT": str(mqtt.port),
        "CERTFLEET_SIGNING_KEY_FILE": str(key),
        "CERTFLEET_TICK_INTERVAL_SECONDS": "1",
        "CERTFLEET_LOG_FORMAT": "json",
    }
    ca1 = make_ca(
        "Fleet CA 2025", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=30)
    )
    ca2 = make_ca(
        "Fleet CA 2026", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    (base / "ca1.pem").write_bytes(ca1.pem)
    (base / "ca2.pem").write_bytes(ca2.pem)
    server = issue_server_cert(
        ca2, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=90)
    )
    logs = base / "logs"
    logs.mkdir()
    return StackSetup(env, ca1, ca2, server, logs)


@contextlib.contextmanager
def running_stack(
    base: Path, fleets: Sequence[tuple[str, int, Sequence[str]]], *, scale: Sequence[str] = ()
) -> Iterator[Stack]:
    """Everything running; each fleet (id prefix, devices, faults) on CA1 in sec_tag 42;
    a probe endpoint under CA2. `scale`: the fleets run in scale mode with these options."""
    redis_service = start_redis(base / "redis")
    mqtt_service = start_mosquitto(base / "mosquitto")
    setup = prepare_stack(base, redis_service, mqtt_service)
    env, ca1, ca2, server, logs = setup.env, setup.ca1, setup.ca2, setup.server, setup.logs
    procs: list[Proc] = []
    client = redis.Redis(host=redis_service.host, port=redis_service.port, decode_responses=True)
    try:
        procs.append(start("listener", certfleet("listener"), env=env, log_dir=logs))
        wait_until(lambda: "listener_subscribed" in procs[0].log(), timeout=30, what="listener")
        procs.append(celery_worker(logs, env))
        procs.append(
            start("beat", [str(BIN / "celery"), "-A", "workers.app", "beat"], env=env, log_dir=logs)
        )
        stack_fleets: dict[str, Proc] = {}
        for prefix, count, faults in fleets:
            stack_fleets[prefix] = start_fleet(
                env, base, logs, prefix, count, faults=faults, scale=scale
            )
            procs.append(stack_fleets[prefix])
        total = sum(count for _, count, _ in fleets)
        wait_until(
            lambda: RedisInventory(client).device_count() == total,
            timeout=90,
            what="fleets reported",
        )
        with tls_server(server.pem, server.key_pem) as (_, port):
            yield Stack(env, client, mqtt_service, base, ca1, ca2, port, stack_fleets, logs, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()
        client.close()
        mqtt_service.stop()
        redis_service.stop()


class BundleWatch:
    """A test subscriber on every bundle topic: which devices were sent anything."""

    def __init__(self, service: LocalService, *, keep_payloads: bool = False) -> None:
        self.devices: set[str] = set()
        self.payloads: list[tuple[str, bytes]] = []
        self._keep = keep_payloads
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.connect(service.host, service.port)
        self._client.loop_start()
        self._client.subscribe("certfleet/+/bundle", qos=1)
        assert self._ready.wait(10)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            device = message.topic.split("/")[1]
            self.devices.add(device)
            if self._keep:
                self.payloads.append((device, bytes(message.payload)))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def sizes_add_up(status: dict[str, Any]) -> None:
    """Per-wave counts sum to the wave sizes, and totals to the whole rollout."""
    for wave in status["waves"]:
        assert sum(wave["counts"].values()) == wave["size"], wave
    assert sum(status["totals"].values()) == sum(w["size"] for w in status["waves"])
