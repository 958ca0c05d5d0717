"""The devices of one process, multiplexed on a few MQTT connections.

Each bundle is acknowledged to the broker (PUBACK) once its device has handled it,
not on receipt: a bundle whose handling failed, or that was still queued for its
device when the connection or the process ended, stays in the connection's session
and the broker sends it again on the next connect (a device whose `received` went
out before the cut sees the copy as a replay, which certfleet ignores).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import aiomqtt

from orchestrator.protocol.mqtt import DEVICE_SESSION_EXPIRY_SECONDS, acknowledge, mqtt5_client
from simulator.firmware import Firmware
from simulator.fleet import build_firmwares
from simulator.probe import ProbeCache
from simulator.scale.link import SharedLink
from simulator.scale.spec import ScaleSpec

__all__ = ["ScaleFleet", "run_scale_fleet"]

_log = logging.getLogger(__name__)

SUBSCRIBE_BATCH = 500
"""Topic filters per SUBSCRIBE packet."""
RECEIVE_MAXIMUM = 65_535
"""Bundles the broker sends a connection before their PUBACK (the most MQTT 5 allows):
a connection carries thousands of devices, each holding its bundle unacknowledged
while it handles it, so the broker's default (20, or its `max_inflight_messages`)
would let a few slow devices hold up all the others."""

Ack = Callable[[], object]
"""Acknowledges one received bundle to the broker."""


def _no_ack() -> None:
    """A bundle handed over without a broker message behind it."""


@dataclass(slots=True, eq=False)
class _Device:
    firmware: Firmware
    link: SharedLink
    inbox: deque[tuple[bytes, Ack]] = field(default_factory=deque)
    online: bool = False
    busy: bool = False
    timer: asyncio.TimerHandle | None = None


class ScaleFleet:
    """Devices multiplexed on a few MQTT connections of one process."""

    def __init__(self, firmwares: Sequence[Firmware], spec: ScaleSpec, *, name: str) -> None:
        self._spec = spec
        self._links = [
            SharedLink(
                f"{spec.id_prefix}scale-{name}-{k}of{spec.connections}",
                spec.window,
                spec.puback_timeout,
            )
            for k in range(spec.connections)
        ]
        self._devices = {
            fw.device_id: _Device(fw, self._links[n % spec.connections])
            for n, fw in enumerate(firmwares)
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        """Bundles handled."""
        self.dropped = 0
        """Bundles for devices this process does not own (left by an older session)."""

    @property
    def retries(self) -> int:
        """Publishes sent again (see `SharedLink.publish`)."""
        return sum(link.retries for link in self._links)

    @property
    def devices(self) -> dict[str, Firmware]:
        """Every device of the fleet by id."""
        return {device_id: d.firmware for device_id, d in self._devices.items()}

    async def run(
        self, stop: asyncio.Event, *, on_ready: Callable[[int], None] | None = None
    ) -> None:
        """Serve every connection until `stop`; `on_ready` once every device published its state."""
        announced = [asyncio.Event() for _ in self._links]
        serving = [
            asyncio.create_task(self._serve(link, stop, announced[k]))
            for k, link in enumerate(self._links)
        ]

        async def all_announced() -> None:
            for event in announced:
                await event.wait()

        waiting = asyncio.create_task(all_announced())
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if waiting in done and on_ready is not None:
                on_ready(len(self._devices))
            await asyncio.gather(*serving)
        finally:
            stop.set()
            for task in (*serving, *self._tasks, waiting, stopped):
                task.cancel()
            await asyncio.gather(*serving, *self._tasks, waiting, stopped, return_exceptions=True)
            for device in self._devices.values():
                if device.timer is not None:
                    device.timer.cancel()

    # -- connections -----------------------------------------------------------------------

    def _client(self, link: SharedLink) -> aiomqtt.Client:
        spec = self._spec
        client = mqtt5_client(
            spec.broker.host,
            spec.broker.port,
            client_id=link.client_id,
            session_expiry=DEVICE_SESSION_EXPIRY_SECONDS,
            keepalive=spec.keepalive,
            username=spec.broker.username,
            password=spec.broker.password,
            max_inflight=spec.window,
            manual_ack=True,
            receive_maximum=RECEIVE_MAXIMUM,
        )
        client.pending_calls_threshold = spec.window + 1  # many in flight is the point here
        return client

    async def _serve(self, link: SharedLink, stop: asyncio.Event, announced: asyncio.Event) -> None:
        """Keep `link` connected; on every connect subscribe and publish its devices' states."""
        devices = [d for d in self._devices.values() if d.link is link]
        topics = [self._spec.topics.bundle(d.firmware.device_id) for d in devices]
        while not stop.is_set():
            try:
                async with self._client(link) as client:
                    for start in range(0, len(topics), SUBSCRIBE_BATCH):
                        batch = topics[start : start + SUBSCRIBE_BATCH]
                        await client.subscribe([(topic, 1) for topic in batch])
                    link.attach(client)
                    await self._connected(client, devices, stop, announced)
            except aiomqtt.MqttError as exc:
                _log.warning("scale connection %s: %s; reconnecting", link.client_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._spec.reconnect_interval)
            finally:
                link.attach(None)

    async def _connected(
        self,
        client: aiomqtt.Client,
        devices: list[_Device],
        stop: asyncio.Event,
        announced: asyncio.Event,
    ) -> None:
        receiving = asyncio.create_task(self._receive(client))
        announcing = asyncio.create_task(self._announce(devices, first=not announced.is_set()))

        def mark(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                return
            if task.exception() is not None:
                _log.error("announcing the devices' state failed", exc_info=task.exception())
                return
            announced.set()

        announcing.add_done_callback(mark)
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({receiving, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if receiving in done:
                receiving.result()  # raises what ended the connection
        finally:
            for task in (receiving, announcing, stopped):
                task.cancel()
            await asyncio.gather(receiving, announcing, stopped, return_exceptions=True)

    async def _announce(self, devices: list[_Device], *, first: bool) -> None:
        """Every idle device publishes its state, `window` publishes in flight at a time."""
        pending: Iterator[_Device] = iter(devices)

        async def announcer() -> None:
            for device in pending:
                if first:
                    await device.firmware.come_online(device.link)
                    device.online = True  # bundles its session held come after its state
                    if device.inbox:
                        self._wake(device)
                elif not device.busy:
                    state = device.firmware.state_message().to_json()
                    topic = self._spec.topics.state(device.firmware.device_id)
                    await device.link.publish(topic, state)

        await asyncio.gather(*(announcer() for _ in range(min(self._spec.window, len(devices)))))

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            # Held until its device has handled it, for the acknowledgement: without the
            # MQTT 5 properties paho builds for every message (kilobytes each).
            message.properties = None
            payload = message.payload
            self.deliver(
                message.topic.value,
                payload if isinstance(payload, bytes) else str(payload).encode(),
                ack=functools.partial(acknowledge, client, message),
            )

    # -- devices ---------------------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes, *, ack: Ack = _no_ack) -> None:
        """A bundle arrived on `topic`: queue it for its device, which handles it in turn.

        `ack` is called once the device has handled it; a bundle for no device of this
        process is acknowledged at once (no device here would ever handle it).
        """
        parsed = self._spec.topics.parse(topic)
        device = self._devices.get(parsed[0]) if parsed and parsed[1] == "bundle" else None
        if device is None:
            self.dropped += 1
            ack()
            return
        device.inbox.append((payload, ack))
        if device.online:
            self._wake(device)

    def _wake(self, device: _Device) -> None:
        if device.busy:
            return
        device.busy = True
        task = asyncio.create_task(self._work(device))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, device: _Device) -> None:
        """What the per-device loop does between two waits: deadline, offline steps, bundles."""
        firmware = device.firmware
        try:
            while True:
                firmware.check_commit_deadline()
                while firmware.needs_offline:
                    firmware.go_offline()
                    if self._spec.offline_seconds:
                        await asyncio.sleep(self._spec.offline_seconds)
                    await firmware.come_online(device.link)
                if not device.inbox:
                    break
                payload, ack = device.inbox.popleft()
                # If handling raises, the bundle stays unacknowledged: the broker sends it
                # again on the next connect.
                await firmware.handle(device.link, payload)
                ack()
                self.handled += 1
        except Exception:
            _log.exception("device %s failed on a bundle", firmware.device_id)
        finally:
            device.busy = False
            self._arm_deadline(device)

    def _arm_deadline(self, device: _Device) -> None:
        """Wake the device when its healthy stage reaches `commit_by` without a commit."""
        if device.timer is not None:
            device.timer.cancel()
            device.timer = None
        deadline = device.firmware.commit_deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.time())
            device.timer = asyncio.get_running_loop().call_later(delay, self._wake, device)


async def run_scale_fleet(
    spec: ScaleSpec,
    *,
    numbers: range | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
    handle_signals: bool = True,
) -> ScaleFleet:
    """Run the devices `numbers` (default: all of `spec`) in this process until stopped.

    Stops on `stop`, SIGINT/SIGTERM, or after `duration` seconds; returns the fleet.
    """
    numbers = numbers if numbers is not None else range(spec.count)
    probes = ProbeCache(ttl=spec.probe_cache_seconds)
    firmwares = build_firmwares(
        numbers,
        ca_chain=spec.ca_chain,
        sec_tag=spec.sec_tag,
        id_prefix=spec.id_prefix,
        topics=spec.topics,
        signers=spec.signers,
        probe_timeout=spec.probe_timeout,
        faults=spec.faults,
        prober=probes,
    )
    fleet = ScaleFleet(firmwares, spec, name=f"{numbers.start:05d}-{numbers.stop:05d}")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    timer = loop.call_later(duration, stop.set) if duration is not None else None
    try:
        await fleet.run(stop, on_ready=on_ready)
    finally:
        if timer is not None:
            timer.cancel()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    _log.info(
        "scale fleet %s..%s stopped: %d bundles handled, %d dropped, %d publishes retried, "
        "%d probe handshakes, %d probes reused",
        numbers.start,
        numbers.stop,
        fleet.handled,
        fleet.dropped,
        fleet.retries,
        probes.handshakes,
        probes.hits,
    )
    return fleet
