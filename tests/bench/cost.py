"""What a benchmark run costs certfleet: CPU time per process tree, Redis commands, MQTT messages.

- CPU: `/proc/<pid>/stat` utime + stime + cutime + cstime summed over a process and
  all its live descendants (a Celery worker's pool children included; a child that
  exited moved its time into its parent's cutime/cstime, so the sum never loses it),
  read before and after; the delta in seconds per named component.
- Redis: `INFO commandstats` calls per command, before and after.
- MQTT: the broker's own counters (`$SYS/broker/publish/messages/received` and
  `.../sent`, mosquitto started with `sys_interval 1`), read by a subscriber to `$SYS`
  only, so it adds no traffic on certfleet's topics.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "SYS_INTERVAL_CONFIG",
    "BrokerCounters",
    "CpuMeter",
    "commandstats",
    "cpu_seconds",
    "descendants",
    "stored_bytes",
    "subtract",
]

TICKS = os.sysconf("SC_CLK_TCK")
SYS_INTERVAL_CONFIG = "sys_interval 1\n"
"""mosquitto configuration: publish the `$SYS` counters every second."""
RECEIVED = "$SYS/broker/publish/messages/received"
SENT = "$SYS/broker/publish/messages/sent"


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime + cutime + cstime in ticks) of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def _all_stats() -> dict[int, tuple[int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _stat(int(entry))
            if got is not None:
                found[int(entry)] = got
    return found


def descendants(pid: int, stats: Mapping[int, tuple[int, int]] | None = None) -> list[int]:
    """`pid` and every live process below it."""
    stats = _all_stats() if stats is None else stats
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (ppid, _) in stats.items() if ppid == parent]
        tree += kids
        frontier += kids
    return tree


def cpu_seconds(pid: int, stats: Mapping[int, tuple[int, int]] | None = None) -> float:
    """CPU seconds used so far by `pid` and its descendants, reaped ones included."""
    stats = _all_stats() if stats is None else stats
    return sum(stats[p][1] for p in descendants(pid, stats) if p in stats) / TICKS


class CpuMeter:
    """CPU seconds of named process trees between `start()` and `stop()`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        stats = _all_stats()
        return {name: cpu_seconds(pid, stats) for name, pid in self._pids.items()}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.seconds = {name: after[name] - self._before[name] for name in self._pids}
        return self.seconds


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls so far per Redis command (`INFO commandstats`), e.g. {"evalsha": 1234}."""
    info: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in info.items()
        if name.startswith("cmdstat_")
    }


def stored_bytes(client: redis.Redis, *, timeout: float = 30.0) -> int:
    """Redis `used_memory` less what its clients' buffers hold, once nothing awaits lazy freeing.

    A client's query and output buffers count in `used_memory` and shrink only when
    the server gets round to it (a pipeline of scripts leaves a large query buffer
    behind for a while), and a deleted big key may be freed in the background: either
    would put a client's traffic, not the data, into a bytes-per-device figure.
    """
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = client.info("memory")
        if int(info.get("lazyfree_pending_objects", 0)) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    buffers = sum(
        int(info.get(name, 0))
        for name in ("mem_clients_normal", "mem_clients_slaves", "mem_aof_buffer")
    )
    return int(info["used_memory"]) - buffers


def subtract(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """Per-key differences, zero ones left out, largest first."""
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in delta.items() if v), key=lambda kv: -kv[1]))


@dataclass
class BrokerCounters:
    """mosquitto's `$SYS` publish counters, kept current by a subscriber to `$SYS` only."""

    host: str
    port: int

    def __post_init__(self) -> None:
        self._values: dict[str, int] = {}
        self._seen = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-sys", protocol=mqtt.MQTTv5
        )
        self._client.on_connect = lambda c, *_: c.subscribe([(RECEIVED, 0), (SENT, 0)])
        self._client.on_message = self._on_message
        self._client.connect(self.host, self.port, keepalive=60)
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._seen:
            self._values[message.topic] = int(message.payload)
            self._seen.notify_all()

    def read(self, timeout: float = 10.0) -> tuple[int, int]:
        """(received, sent) as of now: mosquitto publishes a counter (retained) only when it
        changed, at most once per `sys_interval`, so this waits two intervals first."""
        time.sleep(2.2)
        with self._seen:
            if not self._seen.wait_for(lambda: len(self._values) == 2, timeout=timeout):
                raise RuntimeError("the broker published no $SYS publish counters")
            return self._values[RECEIVED], self._values[SENT]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
