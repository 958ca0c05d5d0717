"""A simulated device: a modem model and an MQTT session that reports its state."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.protocol import StateMessage, Topics
from simulator.modem import FunctionalMode, Modem

__all__ = ["BrokerAddress", "DeviceAgent"]

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600
"""How long the broker keeps a sleeping device's session and QoS 1 messages."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAddress:
    """Where the devices connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None


class DeviceAgent:
    """One device: connects with a persistent MQTT 5 session and reports on every connect."""

    def __init__(
        self,
        device_id: str,
        modem: Modem,
        *,
        broker: BrokerAddress,
        topics: Topics,
        keepalive: int = 60,
    ) -> None:
        topics.state(device_id)  # validates the id as a topic level
        self.device_id = device_id
        self.modem = modem
        self._broker = broker
        self._topics = topics
        self._keepalive = keepalive
        self.connects = 0

    def state_message(self, *, now: datetime | None = None) -> StateMessage:
        """What `AT%CMNG=1` and `AT%CERTEXPIRY` give, as the `state` message."""
        return StateMessage(
            device_id=self.device_id,
            time=now or datetime.now(UTC),
            credentials=[item.to_entry() for item in self.modem.items()],
        )

    def _client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            identifier=self.device_id,
            username=self._broker.username,
            password=self._broker.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=self._keepalive,
        )

    async def run(
        self,
        stop: asyncio.Event,
        *,
        connect_slots: asyncio.Semaphore | None = None,
        reconnect_interval: float = 2.0,
    ) -> None:
        """Stay connected until `stop`; report state on each connect; disconnect cleanly."""
        while not stop.is_set():
            try:
                if connect_slots is not None:
                    async with connect_slots:
                        client = await self._connect()
                else:
                    client = await self._connect()
                try:
                    await client.publish(
                        self._topics.state(self.device_id),
                        self.state_message().to_json(),
                        qos=1,
                    )
                    await stop.wait()
                finally:
                    await client.__aexit__(None, None, None)
                    self.modem.cfun(FunctionalMode.OFFLINE)
            except aiomqtt.MqttError:
                self.modem.cfun(FunctionalMode.OFFLINE)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=reconnect_interval)

    async def _connect(self) -> aiomqtt.Client:
        client = self._client()
        await client.__aenter__()
        self.modem.cfun(FunctionalMode.ONLINE)
        self.connects += 1
        return client
