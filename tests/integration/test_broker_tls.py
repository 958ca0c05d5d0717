"""The seed's outage and its cure on a real Mosquitto TLS listener.

The broker serves its old chain (under CA1) on one TLS listener and the renewed
chain (under CA2) on another. A device that trusts only CA1 cannot connect to the
renewed listener; after a committed stage of CA2 it can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.mqtt import MqttSession
from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings
from orchestrator.protocol.report import Phase
from orchestrator.services.bundles import BundleBody, stage_body
from simulator.pki import IssuedCert, issue_server_cert, make_ca
from simulator.services import LocalService, free_port, start_mosquitto
from tests.integration.devices import Orchestrator, final_report, in_future, make_device, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = datetime.now(UTC)


def _tls_listener(port: int, cert: IssuedCert, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert.pem)
    (directory / "key.pem").write_bytes(cert.key_pem)
    return (
        f"listener {port} 127.0.0.1\n"
        f"certfile {directory / 'cert.pem'}\n"
        f"keyfile {directory / 'key.pem'}\n"
        "tls_version tlsv1.2\n"
    )


@pytest.fixture
def tls_broker(
    tmp_path: Path, service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalService, int, int, object]]:
    """Mosquitto with a plain listener (services), TLS under CA1 and TLS under CA2."""
    window = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=30)}
    ca1 = make_ca(
        "Broker CA 1", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=60)
    )
    ca2 = make_ca(
        "Broker CA 2", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    old_port, new_port = free_port(), free_port()
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        extra_config=_tls_listener(old_port, issue_server_cert(ca1, **window), tmp_path / "old")
        + _tls_listener(new_port, issue_server_cert(ca2, **window), tmp_path / "new"),
    )
    monkeypatch.setenv("CERTFLEET_MQTT_PORT", str(broker.port))
    yield broker, old_port, new_port, (ca1, ca2)
    broker.stop()


def test_a_device_reaches_the_renewed_broker_only_after_committing_the_new_ca(
    tls_broker: tuple[LocalService, int, int, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trusting CA1 only, the renewed listener is out of reach; after committing CA2 it is not."""
    broker, old_port, new_port, cas = tls_broker
    ca1, ca2 = cas  # type: ignore[misc]
    key = tmp_path / "signing.pem"
    generate_key_file(key)
    monkeypatch.setenv("CERTFLEET_SIGNING_KEY_FILE", str(key))
    container = bootstrap(Settings(), logging=False)
    session = MqttSession(container.settings)
    orchestrator = Orchestrator(container, session)

    async def scenario() -> None:
        agent = make_device("dev-seed", ca1.pem, orchestrator, broker, tls_port=new_port)
        # The outage: the renewed chain does not validate with CA1.
        async with running(agent, wait_connected=False):
            await asyncio.sleep(1.5)
        assert agent.connects == 0
        assert agent.connect_failures >= 1

        # The cure, delivered over the listener the device still trusts.
        agent.broker = replace(agent.broker, port=old_port)
        async with running(agent):
            stage = await orchestrator.send(
                agent.device_id,
                stage_body(
                    ca_pems=[ca2.pem.decode()],
                    tag=43,
                    probe_host="127.0.0.1",
                    probe_port=new_port,
                    probe_tags=[43],
                    active_after=[42, 43],
                    commit_by=in_future(60),
                ),
            )
            health = await final_report(
                agent, stage, {Phase.HEALTH_OK, Phase.HEALTH_FAILED, Phase.REJECTED}
            )
            assert health.phase is Phase.HEALTH_OK
            commit = await orchestrator.send(agent.device_id, BundleBody(op="commit", tag=43))
            committed = await final_report(agent, commit, {Phase.COMMITTED, Phase.FALLBACK})
            assert committed.phase is Phase.COMMITTED
        assert agent.active_tags == [42, 43]

        connects = agent.connects
        agent.broker = replace(agent.broker, port=new_port)
        async with running(agent, wait_connected=False):
            await asyncio.sleep(1.5)
        assert agent.connects == connects + 1, "the renewed listener accepts the device now"

    try:
        asyncio.run(scenario())
    finally:
        session.close()
        container.close()
