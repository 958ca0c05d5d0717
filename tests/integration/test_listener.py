"""The listener with a real Mosquitto and Redis: good reports recorded, bad ones refused."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from orchestrator.bootstrap import Container
from orchestrator.protocol import CredentialType, StateMessage, Topics
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.pki import make_ca
from simulator.services import LocalService, start_mosquitto
from tests.procs import certfleet, start, wait_until

pytestmark = pytest.mark.integration

TOPICS = Topics("certfleet")


def _good_state(device_id: str) -> bytes:
    now = datetime.now(UTC)
    ca = make_ca(
        "Listener CA", not_before=now - timedelta(days=1), not_after=now + timedelta(days=90)
    )
    modem = Modem()
    modem.write(42, CredentialType.CA_CHAIN, ca.pem)
    agent = Firmware(device_id, modem, topics=TOPICS)
    return agent.state_message().to_json()


def _publish_all(host: str, port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_bad_messages_are_refused_counted_and_logged_while_good_ones_land(
    service_env: dict[str, str], container: Container, mqtt_service: LocalService, log_dir: Path
) -> None:
    """Non-JSON, schema-invalid, oversized, mismatched messages are counted; good ones land."""
    listener = start("listener", certfleet("listener"), env=service_env, log_dir=log_dir)
    try:
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="subscription")
        oversized = json.loads(_good_state("dev-big"))
        oversized["credentials"][0]["subject"] = "x" * 1000
        oversized["credentials"] = [
            {**oversized["credentials"][0], "sec_tag": n} for n in range(20)
        ]
        bad = [
            (TOPICS.state("dev-bad-1"), b"\xff not json {"),
            (TOPICS.state("dev-bad-2"), json.dumps({"v": 1, "device_id": "dev-bad-2"}).encode()),
            (TOPICS.state("dev-big"), json.dumps(oversized).encode()),
            (TOPICS.state("dev-victim"), _good_state("dev-liar")),
        ]
        assert len(bad[2][1]) > 16 * 1024
        _publish_all(
            mqtt_service.host,
            mqtt_service.port,
            [
                (TOPICS.state("dev-good-1"), _good_state("dev-good-1")),
                *bad,
                (TOPICS.state("dev-good-2"), _good_state("dev-good-2")),
            ],
        )
        wait_until(
            lambda: (
                container.inventory.device_count() == 2
                and sum(container.inventory.rejection_counts().values()) == 4
            ),
            timeout=20,
            what="2 recorded and 4 rejected",
        )
        status = json.loads(
            subprocess.run(
                certfleet("fleet", "status", "--json"), capture_output=True, check=True
            ).stdout
        )
    finally:
        listener.stop()

    assert status["rejected_reports"] == {
        "not_json": 1,
        "schema": 1,
        "too_large": 1,
        "topic_mismatch": 1,
    }
    assert status["devices"] == 2
    assert container.inventory.device_credentials("dev-good-2") is not None
    assert container.inventory.device_credentials("dev-liar") is None
    assert container.inventory.device_credentials("dev-victim") is None
    rejections = [
        json.loads(line)
        for line in listener.log().splitlines()
        if line.startswith("{") and "device_message_rejected" in line
    ]
    assert {(r["device_id"], r["reason"]) for r in rejections} == {
        ("dev-bad-1", "not_json"),
        ("dev-bad-2", "schema"),
        ("dev-big", "too_large"),
        ("dev-victim", "topic_mismatch"),
    }
    assert all(r["detail"] for r in rejections)


def test_listener_reconnects_after_the_broker_restarts(
    service_env: dict[str, str], container: Container, tmp_path: Path, log_dir: Path
) -> None:
    """The broker goes away and comes back on the same port; reports after that still land."""
    broker = start_mosquitto(tmp_path / "mq")
    env = {**service_env, "CERTFLEET_MQTT_PORT": str(broker.port)}
    listener = start("listener", certfleet("listener"), env=env, log_dir=log_dir)
    try:
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="subscription")
        _publish_all(broker.host, broker.port, [(TOPICS.state("before"), _good_state("before"))])
        wait_until(lambda: container.inventory.device_count() == 1, timeout=20, what="first report")

        broker.stop()
        wait_until(lambda: "listener_disconnected" in listener.log(), timeout=20, what="disconnect")
        broker = start_mosquitto(tmp_path / "mq", port=broker.port)
        wait_until(
            lambda: listener.log().count("listener_subscribed") >= 2, timeout=30, what="resubscribe"
        )
        _publish_all(broker.host, broker.port, [(TOPICS.state("after"), _good_state("after"))])
        wait_until(
            lambda: container.inventory.device_count() == 2, timeout=20, what="second report"
        )
    finally:
        listener.stop()
        broker.stop()

    assert container.inventory.device_credentials("after") is not None
    assert listener.process.returncode == 0


def test_state_message_round_trips_through_the_simulator_model() -> None:
    """What a simulated device publishes is a valid state message for its own topic."""
    payload = _good_state("dev-rt")
    message = StateMessage.model_validate_json(payload)
    assert message.device_id == "dev-rt"
    assert [(c.sec_tag, c.type) for c in message.credentials] == [(42, CredentialType.CA_CHAIN)]
