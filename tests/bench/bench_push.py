"""Benchmark: pushing signed bundles to devices, on a real redis-server and mosquitto.

    .venv/bin/python -m tests.bench.bench_push [--devices 5000]

Times `push_batch` over a fleet in batches of `PUSH_BATCH_SIZE`, the whole cost per
device: sequence INCR, payload CBOR, ES256 signature, the Lua transition storing the
bundle, and a QoS 1 publish that waits for its PUBACK (one persistent `MqttSession`).
Baseline in the same run on the same broker: a bare paho-mqtt loop (MQTT 5, QoS 1)
publishing the very bytes just pushed, waiting for each PUBACK as `MqttSession` does,
and a variant waiting once per batch (what pipelined publishes would gain). Signing
alone (ES256 over the same to-be-signed bytes) and timers around the stores, the
signer and the publisher during the push split its cost per device.
"""

from __future__ import annotations

import argparse
import tempfile
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

from orchestrator.adapters.file_signer import FileSigner, generate_key_file
from orchestrator.adapters.mqtt import MqttSession
from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.adapters.redis_sequences import RedisSequences
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.logs import configure_logging
from orchestrator.protocol.cose import Sign1Message
from orchestrator.protocol.topics import Topics
from orchestrator.services.rollout_engine import PUSH_BATCH_SIZE, RolloutDeps, push_batch
from orchestrator.services.rollouts import create_rollout
from simulator.pki import make_ca
from simulator.services import LocalService, start_mosquitto, start_redis

NOW = datetime(2026, 11, 25, tzinfo=UTC)
TIMEOUT = 10.0


class RecordedTasks:
    """`RolloutTasks` that records what the engine would enqueue instead of enqueueing it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **_: self.calls.append((name, args))


class Timed:
    """Forwards to `target`, adding the time spent in each method call to `spent[name]`."""

    def __init__(self, target: Any, name: str, spent: dict[str, float]) -> None:
        self._target, self._name, self._spent = target, name, spent

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._spent[self._name] += time.perf_counter() - start

        return timed


def _states(devices: int) -> list[DeviceState]:
    ca = ReportedCredential(
        sec_tag=42,
        type=CredentialType.CA_CHAIN,
        sha256="ab" * 32,
        not_after=NOW + timedelta(days=20),
        subject="CN=Fleet CA 2025,O=certfleet",
        issuer="CN=Fleet CA 2025,O=certfleet",
    )
    return [
        DeviceState(
            device_id=f"bench-{n:07d}", reported_at=NOW, credentials=(ca,), active_tags=(42,)
        )
        for n in range(devices)
    ]


def _raw_publish(
    mqtt_service: LocalService, messages: Sequence[tuple[str, bytes]], *, wait_every: int
) -> float:
    """Bare paho, MQTT 5, QoS 1, same expiry property; wait for PUBACKs every `wait_every`."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(max(20, wait_every))
    client.connect(mqtt_service.host, mqtt_service.port, keepalive=30)
    client.loop_start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError("baseline client did not connect")
            time.sleep(0.01)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = 300
        start = time.perf_counter()
        for i in range(0, len(messages), wait_every):
            infos = [
                client.publish(topic, data, qos=1, properties=properties)
                for topic, data in messages[i : i + wait_every]
            ]
            for info in infos:
                info.wait_for_publish(TIMEOUT)
                if not info.is_published():
                    raise RuntimeError("baseline publish not acknowledged")
        return time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()


def _sign_alone(signer: FileSigner, bundles: Sequence[bytes]) -> float:
    to_sign = [Sign1Message.decode(data).sig_structure() for data in bundles]
    start = time.perf_counter()
    for tbs in to_sign:
        signer.sign(tbs)
    return time.perf_counter() - start


def _push(deps: RolloutDeps, rollout_id: str, device_ids: Sequence[str]) -> tuple[float, int]:
    sent = 0
    start = time.perf_counter()
    for i in range(0, len(device_ids), PUSH_BATCH_SIZE):
        sent += push_batch(deps, rollout_id, device_ids[i : i + PUSH_BATCH_SIZE], "stage", now=NOW)
    return time.perf_counter() - start, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5_000)
    args = parser.parse_args()
    devices = max(PUSH_BATCH_SIZE, min(args.devices, 100_000))
    configure_logging(level="WARNING")

    with tempfile.TemporaryDirectory(prefix="certfleet-bench-") as tmp:
        base = Path(tmp)
        redis_service = start_redis(base / "redis")
        mqtt_service = start_mosquitto(base / "mosquitto")
        publisher: MqttSession | None = None
        try:
            client = redis.Redis(
                host=redis_service.host, port=redis_service.port, decode_responses=True
            )
            inventory = RedisInventory(client)
            states = _states(devices)
            for i in range(0, devices, 500):
                inventory.record_states(states[i : i + 500], received_at=NOW)
            generate_key_file(base / "signing-key.pem")
            signer = FileSigner(base / "signing-key.pem")
            settings = Settings(mqtt_host=mqtt_service.host, mqtt_port=mqtt_service.port)
            publisher = MqttSession(settings, client_id="bench-push", timeout=TIMEOUT)
            spent = dict.fromkeys(("sign", "incr", "store", "publish"), 0.0)
            tasks = RecordedTasks()
            deps = RolloutDeps(
                rollouts=Timed(RedisRollouts(client), "store", spent),  # type: ignore[arg-type]
                inventory=inventory,
                signer=Timed(signer, "sign", spent),
                sequences=Timed(RedisSequences(client), "incr", spent),
                publisher=Timed(publisher, "publish", spent),
                tasks=tasks,
            )
            ca = make_ca(
                "Fleet CA 2026",
                not_before=NOW - timedelta(days=1),
                not_after=NOW + timedelta(days=700),
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
            deps.rollouts.set_meta(rollout_id, {"state": "running", "wave:0:state": "running"})
            device_ids = sorted(s.device_id for s in states)
            spent.update(dict.fromkeys(spent, 0.0))

            ours_s, sent = _push(deps, rollout_id, device_ids)
            assert sent == devices, (sent, devices)
            assert not tasks.calls, tasks.calls
            stored = RedisRollouts(client).bundles(rollout_id, device_ids, "stage")
            assert len(stored) == devices
            topics = Topics(settings.topic_prefix)
            messages = [(topics.bundle(d), stored[d]) for d in device_ids]
            each_s = _raw_publish(mqtt_service, messages, wait_every=1)
            batch_s = _raw_publish(mqtt_service, messages, wait_every=PUSH_BATCH_SIZE)
            # mosquitto leaves Nagle on by default: its PUBACKs to a pipelining client
            # wait for delayed ACKs. The same loop on a broker with TCP_NODELAY:
            nodelay = start_mosquitto(base / "nodelay", extra_config="set_tcp_nodelay true\n")
            try:
                nodelay_s = _raw_publish(nodelay, messages, wait_every=PUSH_BATCH_SIZE)
            finally:
                nodelay.stop()
            sign_s = _sign_alone(signer, list(stored.values()))
            client.close()
        finally:
            if publisher is not None:
                publisher.close()
            mqtt_service.stop()
            redis_service.stop()

    def per_device(seconds: float) -> str:
        return f"{seconds / devices * 1e6:12.0f} us"

    other = ours_s - sum(spent.values())
    size = sum(len(data) for _, data in messages) / devices
    print(f"devices                          {devices:12,}  ({size:,.0f} B bundles)")
    print(f"baseline paho, PUBACK each       {devices / each_s:12,.0f} devices/s")
    print(f"baseline paho, PUBACK per 200    {devices / batch_s:12,.0f} devices/s")
    print(f"  same, broker set_tcp_nodelay   {devices / nodelay_s:12,.0f} devices/s")
    print(f"push_batch (ours)                {devices / ours_s:12,.0f} devices/s")
    print(f"ratio ours/PUBACK each           {each_s / ours_s:12.2f}")
    print(f"ratio ours/PUBACK per 200        {batch_s / ours_s:12.2f}")
    print(f"ratio ours/same, nodelay         {nodelay_s / ours_s:12.2f}")
    print(f"ours per device                  {per_device(ours_s)}")
    print(f"  sign (ES256, in push)          {per_device(spent['sign'])}")
    print(f"  Redis INCR sequence            {per_device(spent['incr'])}")
    print(f"  Redis rollout store (Lua etc.) {per_device(spent['store'])}")
    print(f"  publish + PUBACK               {per_device(spent['publish'])}")
    print(f"  other (CBOR, COSE, Py)         {per_device(other)}")
    print(f"ES256 sign alone                 {per_device(sign_s)}")
    print(f"paho publish alone, PUBACK each  {per_device(each_s)}")


if __name__ == "__main__":
    main()
