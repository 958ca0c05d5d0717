"""Simulated devices acknowledge a bundle to the broker only once they handled it, over a
real Mosquitto: a bundle whose handling failed is sent again by the broker."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest

from orchestrator.adapters.mqtt import MqttSession
from orchestrator.config import Settings
from orchestrator.protocol import QUEUED_BUNDLES_MAX
from orchestrator.protocol.cose import key_id
from orchestrator.services.bundles import BundleBody, stage_body
from simulator.agent import BrokerAddress
from simulator.fleet import build_firmwares
from simulator.pki import issue_server_cert, make_ca
from simulator.scale import ScaleFleet, ScaleSpec
from simulator.services import LocalService, free_port
from tests.integration.devices import TOPICS, Orchestrator, in_future, make_device, running, until
from tests.tlsserver import tls_server

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
CA1 = make_ca("Acks CA 1", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=60))
CA2 = make_ca("Acks CA 2", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=800))


@pytest.fixture
def witness(service_env: dict[str, str]) -> Iterator[MqttSession]:
    """A subscriber to every device's reports: what reached the broker."""
    session = MqttSession(Settings(), client_id=f"acks-witness-{free_port()}")
    session.subscribe(f"{TOPICS.prefix}/+/report")
    yield session
    session.close()


def _stage(*, probe_port: int | None = None) -> BundleBody:
    """A stage of CA2 in tag 43; without a `probe_port` nobody answers its probe (health_failed)."""
    return stage_body(
        ca_pems=[CA2.pem.decode()],
        tag=43,
        probe_host="127.0.0.1",
        probe_port=probe_port or free_port(),
        probe_tags=[43],
        active_after=[42, 43],
        commit_by=in_future(60),
    )


def _phases(
    witness: MqttSession, seen: list[dict[str, Any]], device_id: str, seq: int
) -> list[str]:
    """The phases of `device_id`'s reports on bundle `seq` that reached the broker so far."""
    seen += [json.loads(payload) for _, payload in witness.drain(0.05)]
    return [r["phase"] for r in seen if r.get("device_id") == device_id and r.get("seq") == seq]


def test_a_bundle_whose_received_report_failed_is_redelivered_and_handled(
    orchestrator: Orchestrator,
    mqtt_service: LocalService,
    witness: MqttSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection drops under the `received` report: the broker sends the bundle again."""
    device_id = "dev-ack-once"
    real_publish = aiomqtt.Client.publish
    cut: list[str] = []

    async def publish(
        self: aiomqtt.Client, topic: str, payload: Any = None, *a: Any, **k: Any
    ) -> None:
        # given a link that drops the first time the device reports `received`
        if not cut and topic == TOPICS.report(device_id) and b'"received"' in payload:
            cut.append(topic)
            link = self._client.socket()
            assert isinstance(link, socket.socket)
            link.shutdown(socket.SHUT_RDWR)
            raise aiomqtt.MqttError("the connection dropped before the report was acknowledged")
        await real_publish(self, topic, payload, *a, **k)

    monkeypatch.setattr(aiomqtt.Client, "publish", publish)

    async def scenario() -> tuple[int, list[str]]:
        agent = make_device(device_id, CA1.pem, orchestrator, mqtt_service)
        seen: list[dict[str, Any]] = []
        async with running(agent):
            # when a stage bundle reaches the device
            stage = await orchestrator.send(device_id, _stage())
            seq = stage.bundle.seq
            await until(
                lambda: "health_failed" in _phases(witness, seen, device_id, seq),
                timeout=20,
                what="the bundle handled after the reconnect",
            )
        return agent.connects, _phases(witness, seen, device_id, seq)

    connects, phases = asyncio.run(scenario())

    # then the first handling failed, the device reconnected, and the broker's copy was
    # handled in full: each report once, none lost
    assert cut, "the fault was injected"
    assert connects >= 2
    assert phases == ["received", "staged", "health_failed"]


def test_a_bundle_that_arrived_before_an_offline_step_is_handled_after_it(
    orchestrator: Orchestrator, mqtt_service: LocalService, witness: MqttSession
) -> None:
    """A bundle left unhandled when the device went offline comes again and is handled."""
    device_id = "dev-ack-offline"
    server = issue_server_cert(CA2, not_before=NOW - timedelta(days=1), not_after=in_future(3600))

    async def scenario() -> tuple[list[str], list[str]]:
        agent = make_device(device_id, CA1.pem, orchestrator, mqtt_service)
        seen: list[dict[str, Any]] = []
        with tls_server(server.pem, server.key_pem) as (_, port):
            async with running(agent):
                # given a stage, which takes the device offline to write its key store,
                # and its commit right behind it, in the client's queue by then
                stage = await orchestrator.send(device_id, _stage(probe_port=port))
                commit = await orchestrator.send(device_id, BundleBody(op="commit", tag=43))
                # when the device comes back online and its probe passes
                await until(
                    lambda: "committed" in _phases(witness, seen, device_id, commit.bundle.seq),
                    timeout=20,
                    what="the commit handled",
                )
        return (
            _phases(witness, seen, device_id, stage.bundle.seq),
            _phases(witness, seen, device_id, commit.bundle.seq),
        )

    staged, committed = asyncio.run(scenario())

    # then both were handled, in order, each once
    assert staged == ["received", "staged", "health_ok"]
    assert committed == ["received", "committed"]


def test_a_device_holds_at_most_its_receive_maximum_of_bundles_unacknowledged(
    orchestrator: Orchestrator,
    mqtt_service: LocalService,
    witness: MqttSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a device works on a bundle the broker sends it only 3 more (Receive Maximum 4)."""
    device_id = "dev-ack-window"
    agent = make_device(device_id, CA1.pem, orchestrator, mqtt_service)
    real_handle = agent.firmware.handle
    waiting: list[int] = []

    async def slow_first(link: aiomqtt.Client, payload: bytes) -> None:
        if not waiting:
            await asyncio.sleep(1.0)  # the broker sends what it may meanwhile
            waiting.append(len(link.messages))
        await real_handle(link, payload)

    monkeypatch.setattr(agent.firmware, "handle", slow_first)

    async def scenario() -> list[list[str]]:
        seen: list[dict[str, Any]] = []
        async with running(agent):
            # given more bundles than a device holds (commits of nothing: each refused)
            sent = [
                await orchestrator.send(device_id, BundleBody(op="commit", tag=43))
                for _ in range(QUEUED_BUNDLES_MAX + 2)
            ]
            seqs = [issued.bundle.seq for issued in sent]
            # when the device has worked through them
            await until(
                lambda: all(_phases(witness, seen, device_id, seq) for seq in seqs),
                timeout=20,
                what="every bundle answered",
            )
        return [_phases(witness, seen, device_id, seq) for seq in seqs]

    answers = asyncio.run(scenario())

    # then the broker held the rest back while the first was unacknowledged, and
    # every bundle was answered once
    assert waiting == [QUEUED_BUNDLES_MAX - 1]
    assert answers == [["rejected"]] * (QUEUED_BUNDLES_MAX + 2)


def _scale_spec(orchestrator: Orchestrator, broker: LocalService) -> ScaleSpec:
    public = orchestrator.root.public_key
    return ScaleSpec(
        count=3,
        ca_chain=CA1.pem,
        sec_tag=42,
        id_prefix="acks-",
        broker=BrokerAddress(host=broker.host, port=broker.port),
        topics=TOPICS,
        signers={key_id(public): public},
        probe_timeout=1,
        connections=1,
        reconnect_interval=0.2,
    )


def _scale_fleet(spec: ScaleSpec) -> ScaleFleet:
    firmwares = build_firmwares(
        range(spec.count),
        ca_chain=spec.ca_chain,
        sec_tag=spec.sec_tag,
        id_prefix=spec.id_prefix,
        topics=spec.topics,
        signers=spec.signers,
        probe_timeout=spec.probe_timeout,
    )
    # Each run is the same process restarted: the same connection, so the same session.
    return ScaleFleet(firmwares, spec, name="acks")


async def _serve(fleet: ScaleFleet, ready: asyncio.Event, done: asyncio.Event) -> None:
    """Run `fleet`, set `ready` once every device published its first state, stop on `done`."""
    stop = asyncio.Event()
    serving = asyncio.create_task(fleet.run(stop, on_ready=lambda _: ready.set()))
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(serving, timeout=15)


def test_scale_mode_gets_a_bundle_again_when_its_device_failed_on_it(
    orchestrator: Orchestrator,
    mqtt_service: LocalService,
    witness: MqttSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bundle a scale-mode device failed on is not acknowledged: the restarted fleet gets it."""
    spec = _scale_spec(orchestrator, mqtt_service)
    device_id = "acks-00001"

    async def scenario() -> tuple[int, list[str]]:
        seen: list[dict[str, Any]] = []
        # given a fleet whose device fails on its first bundle (a flash error, say)
        first = _scale_fleet(spec)
        ready, failed = asyncio.Event(), asyncio.Event()

        async def failing(link: object, payload: bytes) -> None:
            failed.set()
            raise RuntimeError("flash write failed")

        monkeypatch.setattr(first.devices[device_id], "handle", failing)
        serving = asyncio.create_task(_serve(first, ready, failed))
        await asyncio.wait_for(ready.wait(), timeout=15)
        stage = await orchestrator.send(device_id, _stage())
        await serving
        assert first.handled == 0

        # when the fleet's process starts again on the same connections
        second = _scale_fleet(spec)
        ready, handled = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(_serve(second, ready, handled))
        await until(
            lambda: "health_failed" in _phases(witness, seen, device_id, stage.bundle.seq),
            timeout=20,
            what="the redelivered bundle handled",
        )
        handled.set()
        await serving
        return second.handled, _phases(witness, seen, device_id, stage.bundle.seq)

    handled, phases = asyncio.run(scenario())

    # then the broker sent the bundle again and the device handled it once, in full
    assert handled == 1
    assert phases == ["received", "staged", "health_failed"]
