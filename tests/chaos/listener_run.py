"""Hostile device messages at a real listener and Redis: each refused or ignored, and counted.

The messages are `tests.chaos.messages`'s, sent in order on one connection after a
fleet of genuine devices reported and a `trust.replace` over them was created (with
no worker, so every device stays pending). A last genuine state from a sentinel
device says the listener got through them all. Then every counter must have moved by
exactly what was expected of it, every other key (inventory, credential library,
rollout, audit log) must be as it was, and the listener must still be running.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.adapters.redis_inventory import RedisInventory
from simulator.fleet import device_id
from simulator.pki import make_ca
from simulator.services import start_mosquitto, start_redis
from tests.chaos.messages import (
    FLEET,
    TOPIC,
    Generator,
    MessageOutcome,
    as_bytes,
    seed_report,
    seed_state,
)
from tests.procs import Proc, certfleet, start, wait_until

__all__ = ["run_messages"]

METRICS = "certfleet:metrics"
COUNTERS = (METRICS,)
"""Keys left out of the snapshot besides the inventory's own counters and report log
(`RedisInventory.counts_by_design`: they record every refused message and distinct
report by design, forged ones too)."""
SENTINEL = "dev-sentinel"


class _Publisher:
    """One MQTT connection publishing QoS 1, in order, many messages in flight."""

    def __init__(self, host: str, port: int) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-hostile")
        self._client.max_inflight_messages_set(500)
        self._client.connect(host, port)
        self._client.loop_start()

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self._client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published(), "the broker did not acknowledge a message"

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _keys_snapshot(client: redis.Redis, leave_out: tuple[str, ...] = ()) -> dict[str, object]:
    """Every certfleet key but the counters and the report log, by value; the fields
    named `leave_out` of a hash (a device's record) left out, and a hash left empty."""
    values: dict[str, object] = {}
    for key in sorted(client.scan_iter("certfleet:*", count=1000)):
        if key in COUNTERS or RedisInventory.counts_by_design(key):
            continue
        kind = client.type(key)
        if kind == "hash":
            fields = {f: v for f, v in client.hgetall(key).items() if f not in leave_out}
            if fields:
                values[key] = fields
        elif kind == "zset":
            values[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            values[key] = sorted(client.smembers(key))
        elif kind == "list":
            values[key] = client.lrange(key, 0, -1)
        elif kind == "stream":
            values[key] = client.xrange(key)
        else:
            values[key] = client.get(key)
    return values


def _counters(client: redis.Redis) -> Counter[str]:
    """Redis's counts in the outcomes' terms."""
    counted: Counter[str] = Counter()
    inventory = RedisInventory(client)
    for reason, n in inventory.rejection_counts().items():
        counted[f"rejected:{reason}"] = n
    for name, value in client.hgetall(METRICS).items():
        metric, labels = json.loads(name)
        if metric == "certfleet_reports_unmatched_total":
            counted[f"unmatched:{dict(labels)['reason']}"] = int(float(value))
    counted["recorded"] = sum(inventory.report_phase_counts().values())
    return counted


def _create_rollout(env: dict[str, str], base: Path) -> str:
    """A trust.replace over the whole fleet, created with no worker: every device pending."""
    now = datetime.now(UTC)
    new_ca = make_ca(
        "Chaos new CA", not_before=now - timedelta(days=1), not_after=now + timedelta(days=700)
    )
    (base / "ca2.pem").write_bytes(new_ca.pem)
    args = ["rollout", "create", "--kind", "trust.replace", "--ca", str(base / "ca2.pem")]
    args += ["--tag", "42", "--spare-tag", "43", "--probe", "127.0.0.1:9", "--waves", "100%"]
    args += ["--advance", "manual", "--name", "chaos-hostile", "--json"]
    done = subprocess.run(
        certfleet(*args), env={**env}, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return str(json.loads(done.stdout)["id"])


def _sentinel_state(device_id: str, now: datetime) -> tuple[str, bytes]:
    """An empty state message of a device no test message names."""
    empty = {"v": 1, "device_id": device_id, "time": now.isoformat(), "credentials": []}
    return f"{TOPIC}/{device_id}/state", as_bytes(empty)


def _wait_recorded(client: redis.Redis, device_id: str, *, timeout: float) -> None:
    wait_until(
        lambda: RedisInventory(client).device_credentials(device_id) is not None,
        timeout=timeout,
        what="the listener to reach the last message",
    )


def run_messages(base: Path, count: int, *, seed: int = 11) -> MessageOutcome:
    """`count` hostile messages at a listener of this run's own; what became of them."""
    redis_service = start_redis(base / "redis")
    mqtt_service = start_mosquitto(base / "mosquitto")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": mqtt_service.host,
        "CERTFLEET_MQTT_PORT": str(mqtt_service.port),
        "CERTFLEET_LOG_FORMAT": "json",
    }
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    client = redis.Redis(host=redis_service.host, port=redis_service.port, decode_responses=True)
    listener: Proc | None = None
    publisher: _Publisher | None = None
    outcome = MessageOutcome()
    try:
        listener = start("listener", certfleet("listener"), env=env, log_dir=logs)
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="the listener")
        publisher = _Publisher(mqtt_service.host, mqtt_service.port)
        now = datetime.now(UTC)
        old_ca = make_ca(
            "Chaos old CA", not_before=now - timedelta(days=300), not_after=now + timedelta(days=30)
        )
        fleet = [device_id("dev-", n) for n in range(FLEET)]
        publisher.publish_all(
            [(f"{TOPIC}/{d}/state", as_bytes(seed_state(d, now, old_ca.pem))) for d in fleet]
            + [(f"{TOPIC}/{d}/report", as_bytes(seed_report(d, now))) for d in fleet]
        )
        wait_until(
            lambda: RedisInventory(client).device_count() == FLEET, timeout=30, what="the fleet"
        )
        wait_until(
            lambda: _counters(client)["recorded"] == FLEET, timeout=30, what="the seed reports"
        )
        rollout = _create_rollout(env, base)
        before, counted_before = _keys_snapshot(client), _counters(client)

        generator = Generator(random.Random(seed), rollout, now, old_ca.pem)
        batch = []
        for _ in range(count):
            topic, payload, expected = generator.make()
            outcome.expected[expected] += 1
            batch.append((topic, payload))
        # A state after the last hostile message: once it is in the inventory the listener
        # has read every message. Its batch records states before it moves rollouts by the
        # reports it holds, so a second state, published only then, closes that batch: the
        # listener records one batch at a time, and when the second is in, the counters of
        # the batch before it are written.
        sentinels = (SENTINEL, f"{SENTINEL}-2")
        batch.append(_sentinel_state(sentinels[0], now))
        publisher.publish_all(batch)
        for sentinel in sentinels:
            if sentinel != sentinels[0]:
                publisher.publish_all([_sentinel_state(sentinel, now)])
            _wait_recorded(client, sentinel, timeout=max(60, count / 50))

        # the sentinels' own records are new, as they should be
        after = _keys_snapshot(client, leave_out=sentinels)
        delta = _counters(client)
        delta.subtract(counted_before)
        outcome.counted = +delta
        _judge(outcome, before, after)
        if listener.process.poll() is not None:
            outcome.problems.append(f"the listener exited with {listener.process.returncode}")
        if "Traceback" in listener.log():
            outcome.problems.append("the listener logged a traceback")
    finally:
        if publisher is not None:
            publisher.close()
        if listener is not None:
            listener.stop()
        client.close()
        mqtt_service.stop()
        redis_service.stop()
    return outcome


def _judge(outcome: MessageOutcome, before: dict[str, object], after: dict[str, object]) -> None:
    """Each counter moved by what was expected of it; nothing else changed."""
    forged = sum(n for kind, n in outcome.expected.items() if kind.startswith("unmatched:"))
    for kind in sorted(set(outcome.expected) | set(outcome.counted)):
        if kind in ("stale", "duplicate", "recorded"):
            continue
        if outcome.counted[kind] != outcome.expected[kind]:
            outcome.problems.append(
                f"{kind}: counted {outcome.counted[kind]}, expected {outcome.expected[kind]}"
            )
    if outcome.counted["recorded"] != forged:
        outcome.problems.append(
            f"{outcome.counted['recorded']} new reports recorded, expected the {forged} "
            "forged ones (a replayed report is recorded once)"
        )
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        outcome.problems.append(f"keys changed: {changed[:10]}")
