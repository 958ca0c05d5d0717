"""Scale mode: many simulated devices per process and per MQTT connection.

Every device runs the same `Firmware` as in per-device mode; only the transport
differs. A process holds a slice of the fleet and spreads it over a few MQTT 5
connections (persistent sessions with stable client ids, QoS 1), each subscribed to
the bundle topics of its own devices, so the broker delivers every bundle once, to
the process that owns the device. Bundles are handled concurrently, each device's
in order; publishes are pipelined within a window of unacknowledged QoS 1 messages.
A device's offline step (`CFUN=4`) is its own: bundles that arrive meanwhile are
held, as its broker session would hold them, and handled once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import aiomqtt
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.protocol import Topics
from simulator.device import SESSION_EXPIRY_SECONDS, BrokerAddress, Firmware
from simulator.fleet import build_firmwares
from simulator.probe import ProbeCache

__all__ = ["ScaleFleet", "ScaleSpec", "run_scale_fleet", "run_scale_processes", "slice_of"]

_log = logging.getLogger(__name__)

SUBSCRIBE_BATCH = 500
"""Topic filters per SUBSCRIBE packet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSpec:
    """A scale-mode fleet: devices `{id_prefix}{n:05d}`, n < `count`, with `ca_chain` in `sec_tag`.

    Args:
        connections: MQTT connections per process.
        window: most unacknowledged QoS 1 publishes per connection.
        offline_seconds: how long a device stays offline (`CFUN=4`) for key store work.
        probe_cache_seconds: how long a probe result serves other devices with the same key.
        puback_timeout: seconds a publish waits for its PUBACK before it is sent again.
    """

    count: int
    ca_chain: bytes
    sec_tag: int
    id_prefix: str
    broker: BrokerAddress
    topics: Topics
    signers: Mapping[bytes, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    probe_timeout: float = 10.0
    faults: frozenset[str] = frozenset()
    connections: int = 4
    window: int = 100
    offline_seconds: float = 0.0
    probe_cache_seconds: float = 60.0
    keepalive: int = 60
    reconnect_interval: float = 2.0
    puback_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.connections < 1 or self.window < 1:
            raise ValueError("count, connections and window must be at least 1")
        if self.broker.tls:
            raise ValueError(
                "scale mode shares each connection between devices, so it cannot validate the "
                "broker with each device's own tags; use the per-device mode for --tls"
            )


def slice_of(count: int, processes: int, index: int) -> range:
    """The device numbers process `index` of `processes` owns: disjoint, together all."""
    return range(count * index // processes, count * (index + 1) // processes)


@dataclass(slots=True, eq=False)
class _Device:
    firmware: Firmware
    link: _Link
    inbox: deque[bytes] = field(default_factory=deque)
    online: bool = False
    busy: bool = False
    timer: asyncio.TimerHandle | None = None


class _Link:
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


class ScaleFleet:
    """Devices multiplexed on a few MQTT connections of one process."""

    def __init__(self, firmwares: Sequence[Firmware], spec: ScaleSpec, *, name: str) -> None:
        self._spec = spec
        self._links = [
            _Link(
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
        """Publishes sent again (see `_Link.publish`)."""
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

    def _client(self, link: _Link) -> aiomqtt.Client:
        spec = self._spec
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        client = aiomqtt.Client(
            spec.broker.host,
            spec.broker.port,
            identifier=link.client_id,
            username=spec.broker.username,
            password=spec.broker.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=spec.keepalive,
            max_inflight_messages=spec.window,
        )
        client.pending_calls_threshold = spec.window + 1  # many in flight is the point here
        return client

    async def _serve(self, link: _Link, stop: asyncio.Event, announced: asyncio.Event) -> None:
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
            payload = message.payload
            self.deliver(
                message.topic.value,
                payload if isinstance(payload, bytes) else str(payload).encode(),
            )

    # -- devices ---------------------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes) -> None:
        """A bundle arrived on `topic`: queue it for its device, which handles it in turn."""
        parsed = self._spec.topics.parse(topic)
        device = self._devices.get(parsed[0]) if parsed and parsed[1] == "bundle" else None
        if device is None:
            self.dropped += 1
            return
        device.inbox.append(payload)
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
                await firmware.handle(device.link, device.inbox.popleft())
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


def _child(spec: ScaleSpec, numbers: range, duration: float | None, ready: Connection) -> None:
    """One process of `run_scale_processes`: its slice until a signal or its parent dies."""

    async def main() -> None:
        stop = asyncio.Event()
        parent = os.getppid()
        loop = asyncio.get_running_loop()
        # Python-level handlers outlive the loop: a second SIGTERM (the parent passes it
        # on, and a process group gets it too) must not kill a process that is stopping.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))

        async def orphaned() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
            stop.set()

        watch = asyncio.create_task(orphaned())
        try:
            await run_scale_fleet(
                spec,
                numbers=numbers,
                duration=duration,
                stop=stop,
                on_ready=ready.send,
                handle_signals=False,
            )
        finally:
            watch.cancel()

    asyncio.run(main())


def run_scale_processes(
    spec: ScaleSpec,
    *,
    processes: int,
    duration: float | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> int:
    """Run the fleet in `processes` OS processes, each owning a disjoint slice.

    Blocks until every process ended (SIGINT/SIGTERM are passed on to them); calls
    `on_ready` with the device count once every process is ready. Returns the number
    of processes that exited with an error.
    """
    context = multiprocessing.get_context("fork")  # the spec (keys, chains) is inherited
    children = []
    readers: list[Connection] = []
    for index in range(processes):
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(
            target=_child,
            args=(spec, slice_of(spec.count, processes, index), duration, writer),
            name=f"certfleet-scale-{index}",
        )
        child.start()
        writer.close()
        children.append(child)
        readers.append(reader)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ready = 0
        waiting = list(readers)
        while any(child.is_alive() for child in children):
            sentinels = [child.sentinel for child in children]
            for source in wait([*waiting, *sentinels], timeout=1.0):
                if isinstance(source, Connection):
                    waiting.remove(source)
                    with contextlib.suppress(EOFError):  # a process that died before ready
                        ready += int(source.recv())
                    if not waiting and ready == spec.count and on_ready is not None:
                        on_ready(ready)
        for child in children:
            child.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return sum(1 for child in children if child.exitcode != 0)
