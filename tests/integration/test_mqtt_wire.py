"""`MqttSession`'s publishing connection against a real mosquitto: it logs in with the
services' username and password (and is refused with a wrong one), its publishes reach a
subscriber with their bytes and message expiry, a window smaller than the batch keeps
them in order, and a broker restarted between two pushes costs the second nothing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.adapters.mqtt import MqttSession, MqttUnavailableError
from orchestrator.config import Settings
from orchestrator.protocol.topics import Topics
from simulator.services import LocalService, start_mosquitto
from tests.procs import wait_until

pytestmark = pytest.mark.integration

TOPICS = Topics(Settings(redis_url="redis://127.0.0.1:1/0").topic_prefix)


def _settings(broker: LocalService, **overrides: object) -> Settings:
    return Settings(
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        redis_url="redis://127.0.0.1:1/0",
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalService]:
    service = start_mosquitto(tmp_path / "mosquitto")
    yield service
    service.stop()


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[LocalService]:
    """A mosquitto that lets in user `certfleet` with password `s3cret` only."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["/usr/bin/mosquitto_passwd", "-c", "-b", str(passwords), "certfleet", "s3cret"],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o600)
    service = start_mosquitto(
        tmp_path / "locked", extra_config=f"allow_anonymous false\npassword_file {passwords}\n"
    )
    yield service
    service.stop()


class _Witness:
    """A bare paho subscriber to every bundle topic, keeping each message as it came."""

    def __init__(self, broker: LocalService) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="wire-witness", protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(self.client.is_connected, timeout=10, what="witness connected")
        self.client.subscribe(f"{TOPICS.prefix}/+/bundle", qos=1)
        time.sleep(0.3)  # the SUBACK

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_services_login_is_used_and_a_wrong_password_refused(
    locked_broker: LocalService,
) -> None:
    """Right username and password: publishes go through; a wrong password: refused."""
    # given / when
    session = MqttSession(
        _settings(locked_broker, mqtt_username="certfleet", mqtt_password="s3cret"), timeout=5
    )
    try:
        sent = session.publish_bundles([("dev-login", b"bundle")], expiry_seconds=60)
    finally:
        session.close()
    # then
    assert sent == 1
    with pytest.raises(MqttUnavailableError, match="refused the connection"):
        MqttSession(
            _settings(locked_broker, mqtt_username="certfleet", mqtt_password="wrong"), timeout=5
        )


def test_publishes_arrive_whole_in_order_with_their_expiry_through_a_small_window(
    broker: LocalService,
) -> None:
    """A batch ten times the window, bundles of several sizes: every one is acknowledged,
    reported in publish order, and reaches a subscriber byte for byte, QoS 1, with the
    message expiry asked for."""
    # given
    witness = _Witness(broker)
    session = MqttSession(_settings(broker, mqtt_max_inflight=3), timeout=10)
    bundles = [(f"dev-{i:02d}", bytes([i]) * (i * 97 + 1)) for i in range(30)]
    acked: list[str] = []
    try:
        # when
        sent = session.publish_bundles(iter(bundles), expiry_seconds=321, on_acked=acked.extend)
        wait_until(lambda: len(witness.messages) >= len(bundles), timeout=10, what="delivery")
    finally:
        session.close()
        witness.close()
    # then
    assert sent == len(bundles)
    assert acked == [device for device, _ in bundles]
    got = {m.topic: m for m in witness.messages}
    for device, data in bundles:
        message = got[TOPICS.bundle(device)]
        assert message.payload == data
        assert message.qos == 1
        expiry = vars(message.properties).get("MessageExpiryInterval")
        assert expiry is not None
        assert 0 < expiry <= 321


def test_a_broker_restarted_between_two_pushes_costs_the_second_nothing(
    broker: LocalService, tmp_path: Path
) -> None:
    """The connection the broker dropped is noticed before the next push, which connects
    again and goes through on its first try."""
    # given a session that pushed once
    session = MqttSession(_settings(broker), timeout=5)
    restarted: LocalService | None = None
    try:
        assert session.publish_bundles([("dev-a", b"one")], expiry_seconds=60) == 1
        # when the broker restarts on the same port
        broker.stop()
        restarted = start_mosquitto(tmp_path / "mosquitto", port=broker.port)
        # then the next push goes through
        assert session.publish_bundles([("dev-a", b"two")], expiry_seconds=60) == 1
    finally:
        session.close()
        if restarted is not None:
            restarted.stop()


def test_an_idle_session_keeps_its_connection(broker: LocalService) -> None:
    """Idle for twice its keepalive, past when the broker drops a silent client (1.5
    times it), the session pinged and still publishes on the connection it opened."""
    # given
    session = MqttSession(_settings(broker), timeout=5, keepalive=2)
    try:
        assert session.publish_bundles([("dev-idle", b"one")], expiry_seconds=60) == 1
        # when
        time.sleep(4.5)
        # then
        assert session.publish_bundles([("dev-idle", b"two")], expiry_seconds=60) == 1
        assert session._wire.connects == 1
    finally:
        session.close()
