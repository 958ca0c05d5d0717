"""Synchronous MQTT for services: one paho client per process, publishing bundles."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.config import Settings
from orchestrator.domain.errors import TransientError
from orchestrator.protocol.topics import Topics

__all__ = ["MqttSession", "MqttUnavailableError"]


class MqttUnavailableError(TransientError):
    """The MQTT broker could not be reached or did not acknowledge in time."""


ACK_RUN: Final = 50
"""Acknowledged publishes reported to `on_acked` at a time (the rest at the end)."""

RECONNECT_MIN_DELAY_SECONDS: Final = 1
RECONNECT_MAX_DELAY_SECONDS: Final = 10
"""paho's network thread reconnects after a lost connection, waiting `MIN` seconds and
doubling the wait after each failed attempt up to `MAX`. paho's own cap is 120 s, so a
worker could stay away for two minutes after a broker outage of one; with 10 s it is
back at most 10 s after the broker. A push that fails meanwhile raises
`MqttUnavailableError`, a `TransientError`, which the task retries."""


class _Acks:
    """The publishes handed to paho and not yet reported acknowledged, oldest first."""

    def __init__(self, on_acked: Callable[[list[str]], None] | None) -> None:
        self._on_acked = on_acked
        self._pending: deque[tuple[str, mqtt.MQTTMessageInfo]] = deque()
        self._done: list[str] = []
        self.total = 0

    def handed(self, topic: str, info: mqtt.MQTTMessageInfo) -> None:
        self._pending.append((topic, info))

    def settle(self, *, wait_until: float | None) -> None:
        """Take acknowledged publishes off the front; wait for each until `wait_until`."""
        while self._pending:
            topic, info = self._pending[0]
            try:
                if wait_until is not None:
                    info.wait_for_publish(max(0.001, wait_until - time.monotonic()))
                published = info.is_published()
            except (RuntimeError, ValueError) as exc:
                raise MqttUnavailableError(f"publish to {topic} failed: {exc}") from None
            if not published:
                if wait_until is None:
                    return
                raise MqttUnavailableError(f"no PUBACK for {topic} within the timeout")
            self._pending.popleft()
            self._done.append(topic)
            self.total += 1
            if len(self._done) >= ACK_RUN:
                self.report()

    def report(self) -> None:
        """Hand the acknowledged topics not yet reported to `on_acked`."""
        done, self._done = self._done, []
        if done and self._on_acked is not None:
            self._on_acked(done)

    def salvage(self) -> None:
        """On an error: report what was acknowledged already, without waiting."""
        with contextlib.suppress(MqttUnavailableError):
            self.settle(wait_until=None)
        self.report()


class MqttSession:
    """A connected paho client (MQTT 5) that publishes with QoS 1 and can subscribe."""

    def __init__(
        self, settings: Settings, *, client_id: str | None = None, timeout: float = 10
    ) -> None:
        self._topics = Topics(settings.topic_prefix)
        self._timeout = timeout
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"certfleet-{socket.gethostname()}-{os.getpid()}",
            protocol=mqtt.MQTTv5,
        )
        # Publishes are pipelined up to this many unacknowledged QoS 1 messages (the
        # broker's receive maximum bounds it: mosquitto's max_inflight_messages).
        self._client.max_inflight_messages_set(settings.mqtt_max_inflight)
        self._client.reconnect_delay_set(
            min_delay=RECONNECT_MIN_DELAY_SECONDS, max_delay=RECONNECT_MAX_DELAY_SECONDS
        )
        if settings.mqtt_username:
            self._client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        try:
            self._client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30)
        except OSError as exc:
            raise MqttUnavailableError(
                f"cannot reach MQTT at {settings.mqtt_host}:{settings.mqtt_port}: {exc}"
            ) from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise MqttUnavailableError("the MQTT broker did not accept the connection in time")

    def _on_connect(self, *args: object) -> None:
        self._connected.set()

    def _on_subscribe(self, *args: object) -> None:
        self._subscribed.set()

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK."""
        self._subscribed.clear()
        self._client.subscribe(topic, qos=1)
        if not self._subscribed.wait(self._timeout):
            raise MqttUnavailableError(f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, *, expiry_seconds: int | None = None) -> None:
        """QoS 1; returns once the broker acknowledged (PUBACK)."""
        self.publish_many([(topic, payload)], expiry_seconds=expiry_seconds)

    def publish_many(
        self,
        messages: Iterable[tuple[str, bytes]],
        *,
        expiry_seconds: int | None = None,
        on_acked: Callable[[list[str]], None] | None = None,
    ) -> int:
        """QoS 1, pipelined: hand every message to the network thread, then wait for all PUBACKs.

        paho keeps at most `mqtt_max_inflight` unacknowledged and queues the rest, so
        the broker sees a steady window instead of one round trip per message. Each
        message is handed over as `messages` yields it; returns how many were acked.
        `on_acked` gets the topics acknowledged, in publish order, `ACK_RUN` at a time
        as PUBACKs come in (checked without waiting between hand-overs), the rest at the
        end; on an error those acknowledged before it are reported, then it goes up.
        """
        properties = None
        if expiry_seconds is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
            properties.MessageExpiryInterval = expiry_seconds
        acks = _Acks(on_acked)
        try:
            # Only paho's own failures become MqttUnavailableError: what `messages`
            # raises while it makes the next bundle (a signer, a store) goes up as it is.
            for topic, payload in messages:
                try:
                    info = self._client.publish(topic, payload, qos=1, properties=properties)
                except (RuntimeError, ValueError) as exc:
                    raise MqttUnavailableError(f"publish to {topic} failed: {exc}") from None
                acks.handed(topic, info)
                acks.settle(wait_until=None)
            acks.settle(wait_until=time.monotonic() + self._timeout)
        except BaseException:
            acks.salvage()
            raise
        acks.report()
        return acks.total

    def publish_bundle(self, device_id: str, data: bytes, *, expiry_seconds: int) -> None:
        """`BundlePublisher`: the device's bundle topic."""
        self.publish(self._topics.bundle(device_id), data, expiry_seconds=expiry_seconds)

    def publish_bundles(
        self,
        bundles: Iterable[tuple[str, bytes]],
        *,
        expiry_seconds: int,
        on_acked: Callable[[list[str]], None] | None = None,
    ) -> int:
        """`BundlePublisher`: many devices' bundle topics, pipelined."""
        handed: deque[str] = deque()  # devices in publish order, acknowledged ones taken off

        def topics() -> Iterator[tuple[str, bytes]]:
            for device_id, data in bundles:
                handed.append(device_id)
                yield self._topics.bundle(device_id), data

        def acked(done: list[str]) -> None:
            devices = [handed.popleft() for _ in done]
            if on_acked is not None:
                on_acked(devices)

        return self.publish_many(topics(), expiry_seconds=expiry_seconds, on_acked=acked)

    def drain(self, timeout: float) -> Iterator[tuple[str, bytes]]:
        """Received messages, waiting up to `timeout` seconds for each next one."""
        while True:
            try:
                yield self.messages.get(timeout=timeout)
            except queue.Empty:
                return

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
