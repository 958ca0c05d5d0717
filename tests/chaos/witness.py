"""A witness subscriber: every report the devices publish, to compare with what Redis recorded.

It holds a persistent session of its own (QoS 1) and subscribes again on every
connect, so a broker restart that lost its session loses it nothing it could have
got. A report is known by (device, rollout, seq, phase), the key certfleet records it
under (`RedisInventory.report_keys_key`); a report the witness saw and Redis does
not hold was lost on its way to Redis.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.protocol.report import ReportMessage

__all__ = ["Witness", "recorded_reports"]

ReportKey = tuple[str, str, int, str]


class Witness:
    """Subscribes to every device's report topic and keeps the distinct reports seen."""

    def __init__(self, host: str, port: int, *, prefix: str = "certfleet") -> None:
        self.seen: set[ReportKey] = set()
        self.deliveries = 0
        self._topic = f"{prefix}/+/report"
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="chaos-witness", protocol=mqtt.MQTTv5
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self._client.connect(host, port, clean_start=False, properties=properties)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the witness could not subscribe"

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(self._topic, qos=1)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            report = ReportMessage.model_validate_json(message.payload)
        except ValueError:
            return
        with self._lock:
            self.deliveries += 1
            self.seen.add((report.device_id, report.rollout_id, report.seq, report.phase.value))

    def snapshot(self) -> set[ReportKey]:
        with self._lock:
            return set(self.seen)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def recorded_reports(client: redis.Redis, devices: set[str]) -> set[ReportKey]:
    """The reports Redis recorded for `devices`, by the same key."""
    keys: set[ReportKey] = set()
    pipe = client.pipeline(transaction=False)
    ordered = sorted(devices)
    for device in ordered:
        pipe.zrange(RedisInventory.report_keys_key(device), 0, -1)
    for device, members in zip(ordered, pipe.execute(), strict=True):
        for member in members:
            rollout, seq, phase = member.rsplit(" ", 2)
            keys.add((device, rollout, int(seq), phase))
    return keys
