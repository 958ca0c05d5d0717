"""Per-device mode: one simulated device on its own MQTT 5 connection.

`DeviceAgent` holds a `Firmware` and carries it as a device's network stack would:
a persistent session under the device id, the bundle subscription and the state on
every connect, and a new connection whenever the firmware needs one (offline for
key store work, or a commit to prove on a TLS broker connection).

A bundle is acknowledged to the broker (PUBACK) only once the firmware has handled
it. One whose handling failed (its `received` report could not be published, the
connection dropped) or that was still waiting when the device went offline stays
unacknowledged in the device's session, and the broker sends it again on the next
connection, as a device that lost power with a bundle in hand would get it again.

Over TLS, a device with an identity presents its identity tag's client certificate and
key (mutual TLS); a commit of a new identity reconnects with it, and a broker that
refuses it sends the device back to the old one (`Firmware.connect_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiomqtt
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import QUEUED_BUNDLES_MAX
from orchestrator.protocol.mqtt import DEVICE_SESSION_EXPIRY_SECONDS, acknowledge, mqtt5_client
from orchestrator.protocol.report import ReportMessage
from simulator.firmware import Firmware
from simulator.modem import FunctionalMode, Modem
from simulator.tls_identity import present

__all__ = ["BrokerAddress", "DeviceAgent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAddress:
    """Where the devices connect; with `tls`, the server chain is validated by the active tags
    and a device with an identity presents it."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


class DeviceAgent:
    """One device with its own persistent MQTT 5 session (QoS 1) that reports on every connect.

    Its bundles are acknowledged by hand, each once handled (see the module docstring).
    """

    def __init__(self, firmware: Firmware, *, broker: BrokerAddress, keepalive: int = 60) -> None:
        if broker.tls != firmware.tls_broker:
            raise ValueError(
                f"the broker connection is {'TLS' if broker.tls else 'plain'} but the firmware "
                f"of {firmware.device_id} has tls_broker={firmware.tls_broker}; make them agree"
            )
        self.firmware = firmware
        self.broker = broker
        self.connects = 0
        self.connect_failures = 0
        self._keepalive = keepalive

    # -- the device, as its agent shows it ---------------------------------------------------

    @property
    def device_id(self) -> str:
        """The device id, also the MQTT client id."""
        return self.firmware.device_id

    @property
    def modem(self) -> Modem:
        """The device's modem and key store."""
        return self.firmware.modem

    @property
    def reports(self) -> list[ReportMessage]:
        """Every report the device made, in order."""
        return self.firmware.reports

    @property
    def active_tags(self) -> list[int]:
        """The device's active tag list."""
        return self.firmware.active_tags

    @property
    def signers(self) -> dict[bytes, ec.EllipticCurvePublicKey]:
        """Key id -> public key of the bundle signers the device trusts."""
        return self.firmware.signers

    # -- the connection loop -----------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.broker.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        chains = [chain.decode() for chain in self.firmware.broker_ca_chains()]
        if chains:
            context.load_verify_locations(cadata="".join(chains))
        identity = self.firmware.client_identity()
        if identity is not None:
            present(context, identity)
        return context

    def _client(self) -> aiomqtt.Client:
        return mqtt5_client(
            self.broker.host,
            self.broker.port,
            client_id=self.device_id,
            session_expiry=DEVICE_SESSION_EXPIRY_SECONDS,
            keepalive=self._keepalive,
            username=self.broker.username,
            password=self.broker.password,
            tls_context=self._tls_context(),
            manual_ack=True,
            # A device holds this many bundles at most; the broker queues the rest.
            receive_maximum=QUEUED_BUNDLES_MAX,
        )

    @contextlib.asynccontextmanager
    async def _connected(self, slots: asyncio.Semaphore | None) -> AsyncIterator[aiomqtt.Client]:
        client = self._client()
        if slots is not None:
            async with slots:
                await client.__aenter__()
        else:
            await client.__aenter__()
        self.modem.cfun(FunctionalMode.ONLINE)
        try:
            yield client
        finally:
            self.modem.cfun(FunctionalMode.OFFLINE)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        connect_slots: asyncio.Semaphore | None = None,
        reconnect_interval: float = 2.0,
    ) -> None:
        """Stay connected until `stop`; go offline whenever the key store must change."""
        firmware = self.firmware
        while not stop.is_set():
            try:
                async with self._connected(connect_slots) as client:
                    self.connects += 1
                    firmware.connect_succeeded()
                    await self._online(client, stop)
            except aiomqtt.MqttError:
                self.connect_failures += 1
                if not firmware.connect_failed():
                    await self._sleep(stop, reconnect_interval)
            firmware.go_offline()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    async def _online(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Serve the firmware until `stop`, or until it needs to go offline or to reconnect.

        A bundle is acknowledged once handled; if handling raises (a report that could
        not be published), it is not, and the broker sends it again after the reconnect.
        Bundles that arrived but were not handled before going offline are left
        unacknowledged too: the broker sends them again, in order, on the next connect.
        """
        firmware = self.firmware
        await client.subscribe(firmware.topics.bundle(self.device_id), qos=1)
        await firmware.come_online(client)
        while not stop.is_set():
            if firmware.needs_offline or firmware.needs_reconnect:
                return
            message = await self._next_bundle(client, stop)
            if message is not None:
                await firmware.handle(client, _payload(message))
                acknowledge(client, message)
            firmware.check_commit_deadline()

    async def _next_bundle(
        self, client: aiomqtt.Client, stop: asyncio.Event
    ) -> aiomqtt.Message | None:
        deadline = self.firmware.commit_deadline
        now = self.firmware.now().timestamp()
        timeout = None if deadline is None else max(0.0, deadline - now)
        receive = asyncio.ensure_future(client.messages.__anext__())
        stopped = asyncio.ensure_future(stop.wait())
        done, pending = await asyncio.wait(
            {receive, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return receive.result() if receive in done else None


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload).encode()
