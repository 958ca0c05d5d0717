"""Hostile states through the real listener and Redis: refused or ignored, and nothing grows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import sha256_hex
from orchestrator.domain.inventory import DeviceState
from orchestrator.protocol import Topics
from simulator.pki import make_ca
from simulator.services import LocalService
from tests.procs import Proc, certfleet, start, wait_until

pytestmark = pytest.mark.integration

TOPICS = Topics("certfleet")
JUNK_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def listener(service_env: dict[str, str], container: Container, log_dir: Path) -> Iterator[Proc]:
    """A subscribed `certfleet listener` on the test services."""
    process = start("listener", certfleet("listener"), env=service_env, log_dir=log_dir)
    try:
        wait_until(lambda: "listener_subscribed" in process.log(), timeout=30, what="subscription")
        yield process
    finally:
        process.stop()


def _state(device_id: str, time: object, *, pems: Sequence[str] = ()) -> bytes:
    """A state message with one CA item per pem (in sec_tags 42, 43...), or one without pem."""
    credentials: list[dict[str, Any]] = [
        {"sec_tag": 42 + i, "type": 0, "sha256": sha256_hex(pem.encode()), "pem": pem}
        for i, pem in enumerate(pems)
    ] or [{"sec_tag": 42, "type": 0, "sha256": sha256_hex(device_id.encode())}]
    document = {"v": 1, "device_id": device_id, "time": time, "credentials": credentials}
    return json.dumps(document).encode()


def _publish(broker: LocalService, messages: list[tuple[str, bytes]]) -> None:
    """Publish every message at QoS 1, in order, and wait for all their PUBACKs."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        sent = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in sent:
            info.wait_for_publish(timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()


def _rejections(listener: Proc) -> set[tuple[str, str]]:
    return {
        (event["device_id"], event["reason"])
        for event in (
            json.loads(line) for line in listener.log().splitlines() if line.startswith("{")
        )
        if event.get("event") == "device_message_rejected"
    }


def _now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def test_future_state_is_refused_and_a_later_true_state_applies(
    container: Container, mqtt_service: LocalService, listener: Proc
) -> None:
    """A state dated 2099 is refused as clock_skew and freezes nothing: the true one lands."""
    # given
    _publish(mqtt_service, [(TOPICS.state("dev-1"), _state("dev-1", "2099-01-01T00:00:00Z"))])
    wait_until(
        lambda: container.inventory.rejection_counts() == {"clock_skew": 1},
        timeout=30,
        what="clock_skew counted",
    )
    assert container.inventory.device_credentials("dev-1") is None
    # when
    _publish(mqtt_service, [(TOPICS.state("dev-1"), _state("dev-1", _now()))])
    # then
    wait_until(
        lambda: container.inventory.device_credentials("dev-1") is not None,
        timeout=30,
        what="the true state applied",
    )
    assert ("dev-1", "clock_skew") in _rejections(listener)


def test_numeric_time_is_refused(
    container: Container, mqtt_service: LocalService, listener: Proc
) -> None:
    """A numeric `time` (1e10) is a schema refusal and records no device."""
    # when
    _publish(mqtt_service, [(TOPICS.state("dev-1"), _state("dev-1", 1e10))])
    # then
    wait_until(
        lambda: container.inventory.rejection_counts() == {"schema": 1},
        timeout=30,
        what="schema counted",
    )
    assert container.inventory.device_count() == 0
    assert ("dev-1", "schema") in _rejections(listener)


def test_stale_states_with_pems_add_nothing_to_the_library(
    container: Container, mqtt_service: LocalService, listener: Proc
) -> None:
    """200 states dated 2001, each carrying a new certificate, leave the library empty."""
    # given
    _publish(mqtt_service, [(TOPICS.state("dev-1"), _state("dev-1", _now(-timedelta(minutes=1))))])
    wait_until(lambda: container.inventory.device_count() == 1, timeout=30, what="a true state")
    made = datetime.now(UTC)
    stale = [
        _state(
            "dev-1",
            "2001-01-01T00:00:00Z",
            pems=[
                make_ca(
                    f"Stale {i}", not_before=made, not_after=made + timedelta(days=1)
                ).pem.decode()
            ],
        )
        for i in range(200)
    ]
    before = container.inventory.device_credentials("dev-1")
    # when: the stale states, then a marker device recorded after them
    _publish(
        mqtt_service,
        [
            *((TOPICS.state("dev-1"), payload) for payload in stale),
            (TOPICS.state("dev-marker"), _state("dev-marker", _now())),
        ],
    )
    # then
    wait_until(
        lambda: container.inventory.device_credentials("dev-marker") is not None,
        timeout=60,
        what="the marker after the stale states",
    )
    assert container.library.digests() == set()
    assert container.inventory.device_credentials("dev-1") == before
    assert container.inventory.rejection_counts() == {}


def test_unparseable_pem_is_refused_and_counted(
    container: Container, mqtt_service: LocalService, listener: Proc
) -> None:
    """A pem that is no certificate is counted as pem_invalid; the state and a good pem land."""
    # given
    made = datetime.now(UTC)
    good = make_ca("Good", not_before=made, not_after=made + timedelta(days=1)).pem.decode()
    # when
    _publish(
        mqtt_service, [(TOPICS.state("dev-1"), _state("dev-1", _now(), pems=[JUNK_PEM, good]))]
    )
    # then
    wait_until(
        lambda: container.inventory.device_credentials("dev-1") is not None,
        timeout=30,
        what="the state recorded",
    )
    assert container.inventory.rejection_counts() == {"pem_invalid": 1}
    assert container.library.digests() == {sha256_hex(good.encode())}
    held = container.inventory.device_credentials("dev-1")
    assert held is not None
    assert [c.sec_tag for c in held.credentials] == [42, 43]
    assert ("dev-1", "pem_invalid") in _rejections(listener)


def test_store_writes_a_states_pems_only_if_it_applies(container: Container) -> None:
    """RedisInventory.record_states adds the pems of applied states, not of stale ones."""
    # given
    now = datetime.now(UTC)
    newer = DeviceState(device_id="dev-1", reported_at=now, credentials=())
    older = DeviceState(device_id="dev-1", reported_at=now - timedelta(days=1), credentials=())
    container.inventory.record_states([newer], received_at=now, pems=[{"a" * 64: "kept"}])
    # when
    applied = container.inventory.record_states(
        [older, newer], received_at=now, pems=[{"b" * 64: "stale"}, {"c" * 64: "equal time"}]
    )
    # then
    assert applied == 1
    assert container.library.digests() == {"a" * 64, "c" * 64}
