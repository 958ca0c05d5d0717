"""A scale-mode device whose report was in flight when Mosquitto died carries on once the
broker is back, instead of waiting out the PUBACK timeout on the dead connection.

The chaos suite's broker crash (RELIABILITY.md) left 9 to 14 of 300 devices unconfirmed:
each had a report in flight at the SIGKILL, aiomqtt kept that publish waiting for a PUBACK
that could never come (60 s, the scale fleet's timeout), and the device handled nothing
meanwhile, neither the rest of its stage nor the stages certfleet sent it again, so the
rollout's 30 s device timeout passed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import Bundle, Probe, encode_payload
from orchestrator.protocol.bundle import Credential as BundleCredential
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.mqtt import mqtt5_client
from simulator.agent import BrokerAddress
from simulator.fleet import build_firmwares
from simulator.pki import make_ca
from simulator.probe import ProbeResult
from simulator.scale import ScaleFleet, ScaleSpec
from simulator.services import LocalService, free_port, start_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = Topics("certfleet")
KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.now(UTC)
CA1 = make_ca("Kill CA 1", not_before=NOW, not_after=NOW.replace(year=NOW.year + 1))
CA2 = make_ca("Kill CA 2", not_before=NOW, not_after=NOW.replace(year=NOW.year + 2))
DEVICE = "kill-00000"
PUBACK_TIMEOUT = 60.0
"""The scale fleet's default: far longer than the test waits for the device."""
AFTER_RESTART = 15.0
"""How long the device may take, once the broker is back, to finish its stage."""
BROKER_CONFIG = "autosave_interval 1\n"
"""Saved every second, so the witness's session is on disk before the crash."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[list[LocalService]]:
    """A Mosquitto of this test's own with persistence (the session's one must never die)."""
    services = [start_mosquitto(tmp_path / "mq", persistent=True, extra_config=BROKER_CONFIG)]
    yield services
    services[-1].stop()


async def _healthy(host: str, port: int, chains: Sequence[bytes], timeout: float) -> ProbeResult:
    """A probe that passes: the staged CA validates the server."""
    return ProbeResult(ok=True, reason=None, detail="TLSv1.2 handshake", chain_bytes=900)


def _stage() -> bytes:
    now = int(time.time())
    bundle = Bundle(
        device_id=DEVICE,
        rollout_id="r-kill",
        seq=1,
        op="stage",
        issued_at=now,
        expires_at=now + 3600,
        tag=43,
        credentials=(BundleCredential(CredentialType.CA_CHAIN, CA2.pem.decode()),),
        probe=Probe(host="127.0.0.1", port=8883, tags=(43,)),
        active=(42, 43),
        commit_by=now + 600,
    )
    return sign1(encode_payload(bundle), private_key=KEY, kid=key_id(KEY.public_key()))


def _fleet(broker: LocalService) -> ScaleFleet:
    spec = ScaleSpec(
        count=1,
        ca_chain=CA1.pem,
        sec_tag=42,
        id_prefix="kill-",
        broker=BrokerAddress(host=broker.host, port=broker.port),
        topics=TOPICS,
        signers={key_id(KEY.public_key()): KEY.public_key()},
        connections=1,
        reconnect_interval=0.2,
        puback_timeout=PUBACK_TIMEOUT,
    )
    firmwares = build_firmwares(
        range(1),
        ca_chain=spec.ca_chain,
        sec_tag=spec.sec_tag,
        id_prefix=spec.id_prefix,
        topics=spec.topics,
        signers=spec.signers,
        prober=_healthy,
    )
    return ScaleFleet(firmwares, spec, name="kill")


async def _witness(
    broker: LocalService, subscribed: asyncio.Event, seen: list[dict[str, object]]
) -> None:
    """A persistent subscriber to the device's reports that reconnects: what reached the broker."""
    client_id = f"kill-witness-{free_port()}"
    while True:
        try:
            client = mqtt5_client(broker.host, broker.port, client_id=client_id, session_expiry=600)
            async with client:
                await client.subscribe(TOPICS.report(DEVICE), qos=1)
                subscribed.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    seen.append(json.loads(message.payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.05)


async def _until(check: object, *, timeout: float, what: str) -> float:
    """Wait for `check()` (bounded); returns the seconds it took."""
    assert callable(check)
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def test_a_report_in_flight_when_the_broker_dies_is_sent_again_after_the_restart(
    broker: list[LocalService], tmp_path: Path
) -> None:
    """SIGKILL while the device awaits the PUBACK of `received`: it finishes its stage at once."""
    first = broker[0]

    async def scenario() -> tuple[float, list[str], int, int]:
        fleet = _fleet(first)
        stop, ready, subscribed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        seen: list[dict[str, object]] = []
        serving = asyncio.create_task(fleet.run(stop, on_ready=lambda _: ready.set()))
        witness = asyncio.create_task(_witness(first, subscribed, seen))
        try:
            await asyncio.wait_for(asyncio.gather(ready.wait(), subscribed.wait()), timeout=15)
            await asyncio.sleep(2.5)  # two autosaves: the witness's session is on disk
            firmware = fleet.devices[DEVICE]
            # given a broker that stops answering, and a stage the device takes meanwhile:
            # its `received` report goes out, and no PUBACK comes back
            os.kill(first.process.pid, signal.SIGSTOP)
            fleet.deliver(TOPICS.bundle(DEVICE), _stage())
            await _until(lambda: firmware.reports, timeout=5, what="the received report made")
            await asyncio.sleep(0.3)  # written to the socket
            # when the broker is killed there and restarted on its port from its files
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
            broker.append(
                start_mosquitto(
                    first.workdir, port=first.port, persistent=True, extra_config=BROKER_CONFIG
                )
            )
            # then the device finishes its stage soon, not after the PUBACK timeout
            took = await _until(
                lambda: any(r.get("phase") == "health_ok" for r in seen),
                timeout=AFTER_RESTART,
                what="the device's health_ok at the witness",
            )
            return took, [str(r["phase"]) for r in seen], firmware.last_seq, fleet.retries
        finally:
            stop.set()
            witness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await witness
            await asyncio.wait_for(serving, timeout=15)

    took, phases, last_seq, retries = asyncio.run(scenario())

    assert took < AFTER_RESTART < PUBACK_TIMEOUT
    # the report the crash cut (the stopped broker never read it) was sent again on
    # the new connection, and the rest of the stage followed, each once, in order
    assert phases == ["received", "staged", "health_ok"]
    assert last_seq == 1
    assert retries >= 1
