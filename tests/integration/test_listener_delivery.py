"""At-least-once from broker to Redis: the listener acknowledges only what it recorded.

Each test runs its own Mosquitto and Redis, since a listener with a persistent session
stays subscribed after it stops and would take a share of any other test's messages.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.report import ReportMessage
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.pki import make_ca
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.procs import Proc, certfleet, start, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = Topics("certfleet")
CLIENT_ID = "certfleet-listener-test-0"
FLEET_MAX = 500
"""The most devices a test here runs (their ids are dev-0000 on)."""
PHASES = ("received", "staged", "health_ok", "committed")


@dataclass
class Services:
    """A Redis and a Mosquitto of one test, and the listener's settings for them."""

    store: LocalService
    broker: LocalService
    env: dict[str, str]

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.store.host, port=self.store.port, decode_responses=True)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Redis and Mosquitto for this test only; the listener gets a fixed client id."""
    redis_service = start_redis(tmp_path / "redis")
    broker = start_mosquitto(tmp_path / "mosquitto")
    env = {
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": broker.host,
        "CERTFLEET_MQTT_PORT": str(broker.port),
        "CERTFLEET_TOPIC_PREFIX": "certfleet",
        "CERTFLEET_LOG_FORMAT": "json",
        "CERTFLEET_LISTENER_CLIENT_ID": CLIENT_ID,
    }
    holder = Services(redis_service, broker, env)
    yield holder
    holder.broker.stop()
    holder.store.stop()


def _states(count: int) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    ca = make_ca(
        "Delivery CA", not_before=now - timedelta(days=1), not_after=now + timedelta(days=90)
    )
    messages = []
    for n in range(count):
        modem = Modem()
        modem.write(42, CredentialType.CA_CHAIN, ca.pem)
        device_id = f"dev-{n:04d}"
        payload = Firmware(device_id, modem, topics=TOPICS).state_message().to_json()
        messages.append((TOPICS.state(device_id), payload))
    return messages


def _report(device_id: str, seq: int, phase: str) -> tuple[str, bytes]:
    message = ReportMessage.model_validate(
        {
            "device_id": device_id,
            "rollout_id": "r-delivery",
            "seq": seq,
            "phase": phase,
            "reason": "ok",
            "time": datetime.now(UTC).isoformat(),
        }
    )
    return TOPICS.report(device_id), message.to_json()


def _stream(devices: int) -> list[tuple[str, bytes]]:
    """Per device: its state and four reports; every tenth message published twice."""
    messages: list[tuple[str, bytes]] = []
    for topic, payload in _states(devices):
        device_id = TOPICS.parse(topic)[0]  # type: ignore[index]  # a state topic
        messages.append((topic, payload))
        messages += [_report(device_id, 1, phase) for phase in PHASES]
    return [m for i, m in enumerate(messages) for _ in range(2 if i % 10 == 0 else 1)]


class Witness:
    """A plain subscriber of every device topic, counting distinct messages."""

    def __init__(self, broker: LocalService) -> None:
        self.seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._subscribed = 0
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        for channel in ("state", "report"):
            self._client.subscribe(f"certfleet/+/{channel}", qos=1)
        wait_until(lambda: self._subscribed == 2, timeout=10, what="witness subscribed")

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed += 1

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.add((message.topic, bytes(message.payload)))

    def counts(self) -> tuple[int, int]:
        """(distinct states, distinct reports) seen."""
        with self._lock:
            states = sum(1 for topic, _ in self.seen if topic.endswith("/state"))
            return states, len(self.seen) - states

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class Publisher(threading.Thread):
    """Publishes messages at QoS 1 in small groups, as a fleet's stream."""

    def __init__(self, broker: LocalService, messages: list[tuple[str, bytes]]) -> None:
        super().__init__(daemon=True)
        self.messages = messages
        self.published = 0
        self._broker = broker

    def run(self) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect(self._broker.host, self._broker.port)
        client.loop_start()
        try:
            for start_at in range(0, len(self.messages), 20):
                infos = [
                    client.publish(topic, payload, qos=1)
                    for topic, payload in self.messages[start_at : start_at + 20]
                ]
                for info in infos:
                    info.wait_for_publish(timeout=30)
                self.published = start_at + len(infos)
                time.sleep(0.01)
        finally:
            client.loop_stop()
            client.disconnect()


def _recorded(client: redis.Redis) -> tuple[int, int, int]:
    """(devices, reports counted by phase, reports in the devices' streams) in Redis."""
    inventory = RedisInventory(client)
    phases = sum(inventory.report_phase_counts().values())
    ids = [f"dev-{n:04d}" for n in range(FLEET_MAX)]
    streams = sum(inventory.report_stream_lengths(ids).values())
    return inventory.device_count(), phases, streams


def _listener(services: Services, log_dir: Path, name: str, **extra: str) -> Proc:
    proc = start(name, certfleet("listener"), env={**services.env, **extra}, log_dir=log_dir)
    wait_until(
        lambda: "listener_subscribed" in proc.log() or proc.process.poll() is not None,
        timeout=60,
        what=f"{name} subscribed",
    )
    assert proc.process.poll() is None, proc.log()
    return proc


def _until_all_recorded(
    services: Services, witness: Witness, *, devices: int, unrecordable: int = 0
) -> None:
    client = services.client()
    expected_reports = devices * len(PHASES)
    wait_until(
        lambda: (
            witness.counts() == (devices, expected_reports + unrecordable)
            and _recorded(client) == (devices, expected_reports, expected_reports)
        ),
        timeout=120,
        interval=0.5,
        what=f"{devices} states and {expected_reports} reports recorded",
    )


def test_listener_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
    services: Services, log_dir: Path
) -> None:
    """SIGKILLed holding messages, restarted with its session: each distinct message counts once."""
    devices = 500
    messages = _stream(devices)
    witness = Witness(services.broker)
    listener = _listener(services, log_dir, "listener-1", CERTFLEET_LISTENER_BATCH_SIZE="50")
    publisher = Publisher(services.broker, messages)
    client = services.client()
    try:
        publisher.start()
        wait_until(lambda: _recorded(client)[1] > 200, timeout=60, what="reports recorded")
        # Redis paused: the listener now holds messages it cannot record yet.
        services.store.process.send_signal(signal.SIGSTOP)
        try:
            held = publisher.published
            wait_until(lambda: publisher.published > held + 300, timeout=60, what="stream on")
            listener.stop(signal.SIGKILL)
        finally:
            services.store.process.send_signal(signal.SIGCONT)
        time.sleep(0.5)  # the stream goes on while no listener is connected
        listener = _listener(services, log_dir, "listener-2", CERTFLEET_LISTENER_BATCH_SIZE="50")
        publisher.join(timeout=120)
        assert not publisher.is_alive()
        _until_all_recorded(services, witness, devices=devices)
    finally:
        listener.stop()
        witness.close()

    assert publisher.published == len(messages) > devices * (1 + len(PHASES))
    assert _recorded(client) == (devices, devices * len(PHASES), devices * len(PHASES))


def test_listener_waits_out_a_redis_restart_and_then_records_everything(
    services: Services, log_dir: Path
) -> None:
    """Redis down for seconds mid-stream: the listener stays up, retries, records every message."""
    devices = 250
    witness = Witness(services.broker)
    # Batches of 10 and a Receive Maximum of 20: the broker holds the rest of the stream.
    listener = _listener(services, log_dir, "listener", CERTFLEET_LISTENER_BATCH_SIZE="10")
    publisher = Publisher(services.broker, _stream(devices))
    client = services.client()
    try:
        publisher.start()
        wait_until(lambda: _recorded(client)[1] > 100, timeout=60, what="reports recorded")
        client.shutdown(save=True)
        services.store.process.wait(timeout=30)
        wait_until(
            lambda: "listener_dependency_unavailable" in listener.log(),
            timeout=30,
            what="the listener waiting for Redis",
        )
        time.sleep(3)
        services.store = start_redis(services.store.workdir, port=services.store.port)
        client = services.client()
        publisher.join(timeout=120)
        _until_all_recorded(services, witness, devices=devices)
        assert listener.process.poll() is None, listener.log()
    finally:
        listener.stop()
        witness.close()

    assert listener.process.returncode == 0


def test_a_message_the_store_fails_on_is_counted_and_acknowledged_and_the_rest_recorded(
    services: Services, log_dir: Path
) -> None:
    """A report the Lua script fails on counts once as store_error, is acked; the rest land."""
    client = services.client()
    # XADD on it fails in the script
    client.set(RedisInventory.report_stream_key("dev-poison"), "not a stream")
    devices = 20
    messages = _stream(devices)
    poison = _report("dev-poison", 1, "received")
    messages.insert(len(messages) // 2, poison)
    witness = Witness(services.broker)
    listener = _listener(services, log_dir, "listener-1")
    try:
        Publisher(services.broker, messages).run()
        _until_all_recorded(services, witness, devices=devices, unrecordable=1)
        wait_until(
            lambda: RedisInventory(client).rejection_counts() == {"store_error": 1},
            timeout=30,
            what="store_error counted",
        )
        listener.stop()
        # Restarted with the same session: the poison message was acknowledged, not kept.
        listener = _listener(services, log_dir, "listener-2")
        Publisher(services.broker, [_report("dev-0000", 2, "received")]).run()
        wait_until(
            lambda: _recorded(client)[1] == devices * len(PHASES) + 1,
            timeout=30,
            what="the report after the restart",
        )
    finally:
        listener.stop()
        witness.close()

    assert RedisInventory(client).rejection_counts() == {"store_error": 1}
    assert listener.process.returncode == 0
    rejections = [
        json.loads(line)
        for line in (log_dir / "listener-1.log").read_text().splitlines()
        if line.startswith("{") and "device_message_rejected" in line
    ]
    assert [(r["device_id"], r["reason"]) for r in rejections] == [("dev-poison", "store_error")]
