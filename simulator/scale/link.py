"""One MQTT connection shared by many devices, as each of them publishes through it."""

from __future__ import annotations

import asyncio

import aiomqtt

__all__ = ["SharedLink"]


class SharedLink:
    """One MQTT connection as the devices on it see it: publish, wait for PUBACK, pipelined."""

    def __init__(self, client_id: str, window: int, puback_timeout: float) -> None:
        self.client_id = client_id
        self._window = asyncio.Semaphore(window)
        self._puback_timeout = puback_timeout
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self.retries = 0
        """Publishes sent again: no PUBACK in time, or the connection dropped meanwhile."""

    def attach(self, client: aiomqtt.Client | None) -> None:
        """The connection is up (`client`) or down (None)."""
        self._client = client
        if client is None:
            self._up.clear()
        else:
            self._up.set()

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish once the connection is up and wait for its PUBACK; at least once.

        At most `window` publishes wait for their PUBACK at a time, the others wait
        for a turn without a clock running, so a busy moment is no timeout. A publish
        with no PUBACK in time, or cut by a reconnect, is sent again (QoS 1 allows a
        duplicate; the connection loop notices a dead connection by itself).
        """
        async with self._window:
            while True:
                await self._up.wait()
                client = self._client
                assert client is not None  # noqa: S101 -- set whenever up
                try:
                    await client.publish(topic, payload, qos=qos, timeout=self._puback_timeout)
                    return
                except aiomqtt.MqttError:
                    self.retries += 1
                    if self._client is client:
                        await asyncio.sleep(0.1)
