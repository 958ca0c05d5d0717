"""One MQTT connection shared by many devices, as each of them publishes through it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

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
        self._gone = asyncio.Event()
        self.retries = 0
        """Publishes sent again: no PUBACK in time, or the connection dropped meanwhile."""

    def attach(self, client: aiomqtt.Client | None) -> None:
        """The connection is up (`client`) or down (None)."""
        if client is not self._client:
            # aiomqtt leaves a publish that lost its connection waiting for its
            # timeout: tell the publishes on the old connection it is gone.
            self._gone.set()
            self._gone = asyncio.Event()
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
        duplicate; the connection loop notices a dead connection by itself). A cut one
        is sent again as soon as the next connection is up, not after its timeout: a
        device waiting a minute on a dead connection holds its bundles that long, and
        a rollout times it out meanwhile.
        """
        async with self._window:
            while True:
                await self._up.wait()
                client, gone = self._client, self._gone
                assert client is not None  # noqa: S101 -- set whenever up
                try:
                    if await _acknowledged(
                        client.publish(topic, payload, qos=qos, timeout=self._puback_timeout),
                        gone,
                    ):
                        return
                    self.retries += 1  # the connection went before its PUBACK came
                except aiomqtt.MqttError:
                    self.retries += 1
                    if self._client is client:
                        await asyncio.sleep(0.1)


async def _acknowledged(publishing: Awaitable[None], gone: asyncio.Event) -> bool:
    """Await `publishing` unless the connection is `gone` first: True once acknowledged."""
    sending = asyncio.ensure_future(publishing)
    lost = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, lost):
            task.cancel()
        await asyncio.gather(sending, lost, return_exceptions=True)
    if sending.cancelled():
        return False
    sending.result()  # raises what failed the publish
    return True
