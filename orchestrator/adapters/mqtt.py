"""Synchronous MQTT for services: one connection per process publishing bundles.

Publishing (`MqttSession.publish_many` and what calls it) goes over `_Wire`, a plain
MQTT 5 connection this module speaks itself, in the publishing thread: a batch's QoS 1
PUBLISH packets go out in a few writes and their PUBACKs are read in a few reads. paho's
client spent most of a push's MQTT CPU in its network thread (a select wake-up, a write
per packet, several reads per PUBACK: about 50 us of the 70 a bundle cost), which is
what the wire saves. A small thread only pings the broker while the session is idle.
Subscribing (the CLI's `device send`, tests) still uses a paho client of its own,
started on the first `subscribe`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.config import Settings
from orchestrator.domain.errors import TransientError
from orchestrator.logs import get_logger
from orchestrator.protocol.topics import Topics

__all__ = ["MqttSession", "MqttUnavailableError"]

log = get_logger(__name__)


class MqttUnavailableError(TransientError):
    """The MQTT broker could not be reached or did not acknowledge in time."""


ACK_RUN: Final = 50
"""Acknowledged publishes reported to `on_acked` at a time (the rest at the end)."""

KEEPALIVE_SECONDS: Final = 30
RECONNECT_MIN_DELAY_SECONDS: Final = 1
RECONNECT_MAX_DELAY_SECONDS: Final = 10
"""The subscriber's paho network thread reconnects after a lost connection, waiting `MIN`
seconds and doubling the wait after each failed attempt up to `MAX`. The publishing
wire reconnects on use: a publish finding its connection gone (or idle past the
keepalive) connects again first, and one that fails meanwhile raises
`MqttUnavailableError`, a `TransientError`, which the task retries."""

_FLUSH_BYTES: Final = 16384
"""Publishes are written once this many bytes are waiting (and before any wait)."""
_PUBACK: Final = 0x40
_DISCONNECT: Final = 0xE0
_CONNACK: Final = 0x20
_PINGREQ: Final = b"\xc0\x00"
_MAX_PACKET_ID: Final = 0xFFFF
_PROPERTY_SIZES: Final[dict[int, int]] = {
    # MQTT 5 §2.2.2.2: fixed-size properties (bytes); 0: a UTF-8 string or binary data
    # (two-byte length first), -1: a variable byte integer, -2: a string pair.
    **dict.fromkeys((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), 1),
    **dict.fromkeys((0x13, 0x21, 0x22, 0x23), 2),
    **dict.fromkeys((0x02, 0x11, 0x18, 0x27), 4),
    **dict.fromkeys((0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F), 0),
    0x0B: -1,
    0x26: -2,
}
_TCP_QUICKACK: Final[int | None] = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_RECEIVE_MAXIMUM: Final = 0x21
_SERVER_KEEP_ALIVE: Final = 0x13
_MAXIMUM_QOS: Final = 0x24


def _varint(value: int) -> bytes:
    """An MQTT variable byte integer (remaining lengths, property lengths)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def _properties(data: bytes) -> dict[int, int]:
    """The integer properties of a property block (strings and pairs skipped)."""
    found: dict[int, int] = {}
    at = 0
    while at < len(data):
        ident = data[at]
        at += 1
        size = _PROPERTY_SIZES.get(ident)
        if size is None:
            raise MqttUnavailableError(f"the broker sent an unknown MQTT property {ident:#x}")
        if size > 0:
            found[ident] = int.from_bytes(data[at : at + size], "big")
            at += size
        elif size == 0:
            at += 2 + int.from_bytes(data[at : at + 2], "big")
        elif size == -1:
            while data[at] & 0x80:
                at += 1
            at += 1
        else:
            for _ in range(2):
                at += 2 + int.from_bytes(data[at : at + 2], "big")
    return found


class _Wire:
    """One MQTT 5 connection for QoS 1 publishes, spoken directly over a socket.

    Publishes are pipelined: at most `window` unacknowledged (the smaller of
    `mqtt_max_inflight` and the broker's Receive Maximum), written in batches, their
    PUBACKs read as they come. Any PUBACK acknowledges its publish, as it did with paho.
    """

    def __init__(self, settings: Settings, client_id: str, timeout: float, keepalive: int) -> None:
        self._settings = settings
        self._client_id = client_id
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._inbox = bytearray()
        self._next_id = 0
        self._asked_keepalive = keepalive
        self._keepalive = keepalive
        self.connects = 0
        self._last_sent = 0.0
        self.window = settings.mqtt_max_inflight

    # -- connection ----------------------------------------------------------------------

    def ready(self) -> None:
        """Connected and fresh: connect again if the broker left or the keepalive ran out."""
        idle = time.monotonic() - self._last_sent
        if self._sock is not None and (
            (self._keepalive and idle > self._keepalive) or self._closed_by_broker()
        ):
            self.close()
        if self._sock is None:
            self._connect()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise MqttUnavailableError("the MQTT connection is closed")
        return self._sock

    def _closed_by_broker(self) -> bool:
        sock = self._socket()
        try:
            sock.settimeout(0.0)
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not data:
            return True
        self._inbox += data  # late PUBACKs of an abandoned batch: dropped on reading
        return False

    def _connect(self) -> None:
        settings = self._settings
        try:
            sock = socket.create_connection(
                (settings.mqtt_host, settings.mqtt_port), timeout=self._timeout
            )
        except OSError as exc:
            raise MqttUnavailableError(
                f"cannot reach MQTT at {settings.mqtt_host}:{settings.mqtt_port}: {exc}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._inbox = sock, bytearray()
        flags = 0x02  # clean start: a lost connection's publishes are the task's to retry
        payload = _string(self._client_id)
        if settings.mqtt_username:
            flags |= 0x80
            payload += _string(settings.mqtt_username)
            if settings.mqtt_password is not None:
                flags |= 0x40
                payload += _string(settings.mqtt_password)
        body = (
            _string("MQTT")
            + bytes([5, flags])
            + struct.pack("!H", self._asked_keepalive)
            + b"\x00"  # no properties
            + payload
        )
        try:
            self._send(bytes([0x10]) + _varint(len(body)) + body)
            kind, connack = self._packet(time.monotonic() + self._timeout)
        except MqttUnavailableError:
            self.close()
            raise
        if kind != _CONNACK or len(connack) < 3 or connack[1] != 0:
            self.close()
            code = connack[1] if kind == _CONNACK and len(connack) > 1 else None
            raise MqttUnavailableError(f"the MQTT broker refused the connection (reason {code})")
        size, at = self._varint_at(connack, 2)
        props = _properties(connack[at : at + size])
        if props.get(_MAXIMUM_QOS, 2) < 1:
            self.close()
            raise MqttUnavailableError("the MQTT broker does not take QoS 1 publishes")
        self.window = max(
            1, min(self._settings.mqtt_max_inflight, props.get(_RECEIVE_MAXIMUM, 65535))
        )
        self._keepalive = props.get(_SERVER_KEEP_ALIVE, self._asked_keepalive)
        self.connects += 1

    @staticmethod
    def _varint_at(data: bytearray | bytes, at: int) -> tuple[int, int]:
        """The variable byte integer at `at`: (value, offset after it)."""
        value, shift = 0, 0
        while True:
            if at >= len(data):
                raise MqttUnavailableError("a truncated MQTT packet")
            byte = data[at]
            value |= (byte & 0x7F) << shift
            at += 1
            if not byte & 0x80:
                return value, at
            shift += 7
            if shift > 21:
                raise MqttUnavailableError("a malformed MQTT length")

    def ping_if_idle(self) -> None:
        """A PINGREQ if nothing was sent for half the keepalive, so the broker keeps an
        idle connection; what came in meanwhile (its PINGRESPs) is read and dropped."""
        idle = time.monotonic() - self._last_sent
        if self._sock is None or not self._keepalive or idle < self._keepalive / 2:
            return
        with contextlib.suppress(MqttUnavailableError):
            self.acks(wait_until=None)
            self._send(_PINGREQ)

    def close(self) -> None:
        """Disconnect (DISCONNECT, normal) and drop the socket."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendall(bytes([_DISCONNECT, 0]))
        sock.close()

    # -- packets -------------------------------------------------------------------------

    def publish_packet(self, topic: str, payload: bytes, properties: bytes) -> tuple[int, bytes]:
        """A QoS 1 PUBLISH of `payload` to `topic` with its packet id: (id, bytes)."""
        if not topic or "+" in topic or "#" in topic or "\0" in topic:
            raise MqttUnavailableError(f"publish to {topic!r} failed: not a topic name")
        self._next_id = self._next_id % _MAX_PACKET_ID + 1
        head = _string(topic) + struct.pack("!H", self._next_id) + properties
        return self._next_id, b"".join((b"\x32", _varint(len(head) + len(payload)), head, payload))

    def _send(self, data: bytes) -> None:
        sock = self._socket()
        try:
            sock.settimeout(self._timeout)
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise MqttUnavailableError(f"the MQTT connection failed: {exc}") from None
        self._last_sent = time.monotonic()

    def send(self, packets: list[bytes]) -> None:
        """Write the packets, in order."""
        if packets:
            self._send(b"".join(packets))

    def _fill(self, wait_until: float | None) -> bool:
        """Read what arrived; with `wait_until`, wait for something until then."""
        sock = self._socket()
        try:
            if wait_until is None:
                sock.settimeout(0.0)  # non-blocking: BlockingIOError if nothing came
                data = sock.recv(65536)
            else:
                left = wait_until - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                # Acknowledge the broker's segments at once while we wait for its
                # PUBACKs: a broker without TCP_NODELAY holds small packets back until
                # its last one is acknowledged, which a delayed ACK makes 40 ms.
                if _TCP_QUICKACK is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                sock.settimeout(left)
                data = sock.recv(65536)
        except BlockingIOError:
            return False
        except TimeoutError:
            raise MqttUnavailableError("no PUBACK within the timeout") from None
        except OSError as exc:
            self.close()
            raise MqttUnavailableError(f"the MQTT connection failed: {exc}") from None
        if not data:
            self.close()
            raise MqttUnavailableError("the MQTT broker closed the connection")
        self._inbox += data
        return True

    def _next_packet(self) -> tuple[int, bytes] | None:
        """The next whole packet received: (first byte, body), or None."""
        inbox = self._inbox
        if len(inbox) < 2:
            return None
        try:
            size, at = self._varint_at(inbox, 1)
        except MqttUnavailableError:
            if len(inbox) < 5:
                return None
            raise
        if len(inbox) < at + size:
            return None
        kind, body = inbox[0], bytes(inbox[at : at + size])
        del inbox[: at + size]
        return kind, body

    def _packet(self, wait_until: float) -> tuple[int, bytes]:
        while (packet := self._next_packet()) is None:
            self._fill(wait_until)
        return packet

    def acks(self, *, wait_until: float | None) -> list[int]:
        """Packet ids acknowledged in what arrived; with `wait_until`, wait for a packet
        until then if none has.

        Raises:
            MqttUnavailableError: the broker disconnected, or nothing came in time.
        """
        ids: list[int] = []
        got = False
        while True:
            packet = self._next_packet()
            if packet is None:
                if wait_until is None:
                    if self._fill(None):
                        continue
                    return ids
                if got:
                    return ids
                self._fill(wait_until)
                continue
            got = True
            kind, body = packet
            if kind & 0xF0 == _PUBACK and len(body) >= 2:
                if len(body) > 2 and body[2] >= 0x80:
                    log.warning("mqtt_publish_refused", reason_code=body[2])
                ids.append(int.from_bytes(body[:2], "big"))
            elif kind & 0xF0 == _DISCONNECT:
                self.close()
                reason = body[0] if body else 0
                raise MqttUnavailableError(f"the MQTT broker disconnected (reason {reason:#x})")

    @property
    def connected(self) -> bool:
        return self._sock is not None


class _Acks:
    """The publishes written and not yet reported acknowledged, in publish order."""

    def __init__(self, on_acked: Callable[[list[str]], None] | None) -> None:
        self._on_acked = on_acked
        self.pending: dict[int, str] = {}  # packet id -> topic, in publish order
        self._acked: set[int] = set()
        self._done: list[str] = []
        self.total = 0

    def take(self, packet_ids: Iterable[int]) -> None:
        """Mark acknowledged; move the acknowledged front of the queue to the reported."""
        for packet_id in packet_ids:
            if packet_id in self.pending:
                self._acked.add(packet_id)
        while self.pending:
            first = next(iter(self.pending))
            if first not in self._acked:
                break
            self._acked.discard(first)
            self._done.append(self.pending.pop(first))
            self.total += 1
            if len(self._done) >= ACK_RUN:
                self.report()

    def report(self) -> None:
        """Hand the acknowledged topics not yet reported to `on_acked`."""
        done, self._done = self._done, []
        if done and self._on_acked is not None:
            self._on_acked(done)


class MqttSession:
    """A connected MQTT 5 publisher (QoS 1, `_Wire`) that can also subscribe (paho)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str | None = None,
        timeout: float = 10,
        keepalive: int = KEEPALIVE_SECONDS,
    ) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._timeout = timeout
        self._client_id = client_id or f"certfleet-{socket.gethostname()}-{os.getpid()}"
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        # Publishes are pipelined up to `mqtt_max_inflight` unacknowledged QoS 1
        # messages (the broker's receive maximum bounds it: mosquitto's
        # max_inflight_messages).
        self._wire = _Wire(settings, self._client_id, timeout, keepalive)
        self._wire.ready()
        # An idle worker's connection stays up: a thread that wakes once a second and
        # pings when nothing was sent for half the keepalive (the broker's, if it set one).
        self._stopped = threading.Event()
        self._pinger = threading.Thread(
            target=self._keep_alive, args=(1.0,), name="mqtt-keepalive", daemon=True
        )
        self._pinger.start()

    def _keep_alive(self, every: float) -> None:
        while not self._stopped.wait(every):
            with self._lock:
                self._wire.ping_if_idle()

    def _subscriber(self) -> mqtt.Client:
        """The paho client subscriptions go through, connected on first use."""
        if self._client is not None:
            return self._client
        settings = self._settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{self._client_id}-sub", protocol=mqtt.MQTTv5
        )
        client.reconnect_delay_set(
            min_delay=RECONNECT_MIN_DELAY_SECONDS, max_delay=RECONNECT_MAX_DELAY_SECONDS
        )
        if settings.mqtt_username:
            client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        try:
            client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=KEEPALIVE_SECONDS)
        except OSError as exc:
            raise MqttUnavailableError(
                f"cannot reach MQTT at {settings.mqtt_host}:{settings.mqtt_port}: {exc}"
            ) from None
        client.loop_start()
        if not self._connected.wait(self._timeout):
            client.disconnect()
            client.loop_stop()
            raise MqttUnavailableError("the MQTT broker did not accept the connection in time")
        self._client = client
        return client

    def _on_connect(self, *args: object) -> None:
        self._connected.set()

    def _on_subscribe(self, *args: object) -> None:
        self._subscribed.set()

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK."""
        client = self._subscriber()
        self._subscribed.clear()
        client.subscribe(topic, qos=1)
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
        """QoS 1, pipelined: write messages as they come, then wait for every PUBACK.

        At most the wire's window (`mqtt_max_inflight`, or less if the broker says so)
        is unacknowledged at a time, so the broker sees a steady window instead of one
        round trip per message. Each message is taken as `messages` yields it; returns
        how many were acked. `on_acked` gets the topics acknowledged, in publish order,
        `ACK_RUN` at a time as PUBACKs come in (read without waiting between messages),
        the rest at the end; on an error those acknowledged before it are reported, then
        it goes up (and the connection, with publishes unanswered, is dropped: the next
        publish connects again, and the task's retry sends them again).
        """
        properties = b"\x00"
        if expiry_seconds is not None:
            # Message Expiry Interval (MQTT 5 §3.3.2.3.3), the only property.
            properties = b"\x05\x02" + struct.pack("!I", expiry_seconds)
        with self._lock:
            return self._publish_many(messages, properties, on_acked)

    def _publish_many(
        self,
        messages: Iterable[tuple[str, bytes]],
        properties: bytes,
        on_acked: Callable[[list[str]], None] | None,
    ) -> int:
        wire = self._wire
        wire.ready()
        acks = _Acks(on_acked)
        waiting: list[bytes] = []
        size = 0
        try:
            # Only the wire's failures are MqttUnavailableError: what `messages` raises
            # while it makes the next bundle (a signer, a store) goes up as it is.
            for topic, payload in messages:
                while len(acks.pending) >= wire.window:
                    wire.send(waiting)
                    waiting, size = [], 0
                    acks.take(wire.acks(wait_until=time.monotonic() + self._timeout))
                packet_id, packet = wire.publish_packet(topic, payload, properties)
                acks.pending[packet_id] = topic
                waiting.append(packet)
                size += len(packet)
                if size >= _FLUSH_BYTES:
                    wire.send(waiting)
                    waiting, size = [], 0
                    acks.take(wire.acks(wait_until=None))
            wire.send(waiting)
            deadline = time.monotonic() + self._timeout
            while acks.pending:
                acks.take(wire.acks(wait_until=deadline))
        except BaseException:
            self._salvage(acks)
            raise
        acks.report()
        return acks.total

    def _salvage(self, acks: _Acks) -> None:
        """On an error: report what was acknowledged already, without waiting."""
        wire = self._wire
        if wire.connected:
            with contextlib.suppress(MqttUnavailableError):
                acks.take(wire.acks(wait_until=None))
        acks.report()
        if acks.pending:
            wire.close()

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
        """Disconnect cleanly (and stop the subscriber's network thread)."""
        self._stopped.set()
        with self._lock:
            self._wire.close()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
