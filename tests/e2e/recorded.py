"""What an end-to-end run recorded, and a search of it for private keys.

`Witness` keeps every MQTT message on a listener (`#`); `RedisMonitor` every command Redis
ran; `redis_everything` every key and value Redis holds. `find_leaks` looks for each key
in every form it could take there: the raw scalar (in every DER, and as Redis's MONITOR
escapes bytes), hex, decimal, and base64/base64url at each byte alignment (which is what
any PEM or base64 DER of the key holds, once line breaks are taken out).
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["RedisMonitor", "Witness", "find_leaks", "key_forms", "redis_everything", "redis_repr"]


class Witness:
    """A client on the services' listener subscribed to `#`: every MQTT message, kept."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.connect(host, port)
        self._client.loop_start()
        assert self._ready.wait(10), "the witness did not subscribe"

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def seen(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class RedisMonitor:
    """Every command Redis executes (MONITOR), appended to a file: Celery's task messages
    pass through Redis and are gone once consumed, so a search needs their record."""

    def __init__(self, url: str, out: Path) -> None:
        self._client = redis.Redis.from_url(url)
        self._out = out
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Raw lines: Redis writes each command escaped (sdscatrepr: printable ASCII as is,
        # other bytes as \\xhh), which the search renders its patterns into as well.
        with self._out.open("ab") as out:
            while not self._closed.is_set():
                with (
                    contextlib.suppress(redis.RedisError, OSError, ValueError),
                    self._client.monitor() as monitor,  # type: ignore[no-untyped-call]  # redis-py's
                ):
                    while not self._closed.is_set():
                        out.write(bytes(monitor.connection.read_response()) + b"\n")
                        out.flush()
                self._closed.wait(0.2)  # a dropped MONITOR: start it again

    def close(self) -> None:
        self._closed.set()
        self._client.close()


def redis_repr(data: bytes) -> bytes:
    """How Redis's MONITOR writes bytes (sdscatrepr)."""
    escapes = {
        0x5C: b"\\\\",
        0x22: b'\\"',
        0x0A: b"\\n",
        0x0D: b"\\r",
        0x09: b"\\t",
        0x07: b"\\a",
        0x08: b"\\b",
    }
    return b"".join(
        escapes.get(c) or (bytes([c]) if 0x20 <= c < 0x7F else b"\\x%02x" % c) for c in data
    )


def key_forms(key: ec.EllipticCurvePrivateKey) -> tuple[list[bytes], list[bytes]]:
    """(binary forms, text forms) of a key: the raw scalar (in every DER and PEM too), as
    Redis's MONITOR escapes it; its hex, decimal, and base64/base64url at each alignment
    (a PEM or base64 DER holds one of them)."""
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    texts = [
        scalar.hex().encode(),
        scalar.hex().upper().encode(),
        str(int.from_bytes(scalar)).encode(),
    ]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + scalar)
        core = encoded[(pad * 4 + 2) // 3 + 1 : -3]
        texts += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return [scalar, redis_repr(scalar)], texts


def redis_everything(url: str) -> bytes:
    """Every key of the Redis at `url` with its value (by type) and its DUMP."""
    client: Any = redis.Redis.from_url(url)  # bytes in, bytes out
    parts: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            parts += [key, client.dump(key) or b""]
            if kind == "string":
                parts.append(client.get(key) or b"")
            elif kind == "hash":
                parts += [b for pair in client.hgetall(key).items() for b in pair]
            elif kind == "list":
                parts += client.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(client.smembers(key))
            elif kind == "zset":
                parts += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                parts += [
                    v for _, entry in client.xrange(key) for pair in entry.items() for v in pair
                ]
    finally:
        client.close()
    return b"\n".join(parts)


def find_leaks(keys: list[ec.EllipticCurvePrivateKey], recorded: dict[str, bytes]) -> list[str]:
    """Where any form of any key occurs in what was recorded."""
    text = {where: re.sub(rb"\\n|\\r|[\r\n]", b"", data) for where, data in recorded.items()}
    found: list[str] = []
    for key in keys:
        binary, texts = key_forms(key)
        for where, data in recorded.items():
            found += [f"{where}: raw scalar" for form in binary if form in data]
            found += [f"{where}: text form" for form in texts if form in text[where]]
    return found
