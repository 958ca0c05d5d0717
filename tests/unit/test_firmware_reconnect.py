"""The firmware's commit over a TLS broker connection, driven directly (no broker, no MQTT).

A commit that changes the tags the broker is validated with is an explicit state,
`needs_reconnect`, which the transport answers with `connect_succeeded` or
`connect_failed`; the firmware never raises to leave a connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import Bundle, Probe, Reason, encode_payload
from orchestrator.protocol.bundle import Credential as BundleCredential
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.report import Phase
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.pki import make_ca
from simulator.probe import ProbeResult

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)
OLD_CA = make_ca("Old", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=10))
NEW_CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900))
KEY = ec.generate_private_key(ec.SECP256R1())
TOPICS = Topics("certfleet")
SEQ = count(1)


class FakeLink:
    """Stands in for the MQTT connection: records what the device publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload))

    def told(self) -> list[str]:
        """`state`, or a report's phase, in the order published."""
        return [
            "state" if topic.endswith("/state") else json.loads(payload)["phase"]
            for topic, payload in self.published
        ]


async def _healthy_probe(
    host: str, port: int, ca_chains: Sequence[bytes], timeout: float
) -> ProbeResult:
    return ProbeResult(ok=True, reason=None, detail="TLSv1.2 handshake", chain_bytes=900)


def _bundle(op: str) -> bytes:
    now = int(NOW.timestamp())
    fields: dict[str, object] = {
        "device_id": "dev-1",
        "rollout_id": "r-1",
        "seq": next(SEQ),
        "op": op,
        "issued_at": now,
        "expires_at": now + 3600,
        "tag": 43,
    }
    if op == "stage":
        fields |= {
            "credentials": (BundleCredential(CredentialType.CA_CHAIN, NEW_CA.pem.decode()),),
            "probe": Probe(host="127.0.0.1", port=8883, tags=(43,)),
            "active": (42, 43),
            "commit_by": now + 600,
        }
    payload = encode_payload(Bundle(**fields))  # type: ignore[arg-type]
    return sign1(payload, private_key=KEY, kid=key_id(KEY.public_key()))


def _firmware(*, tls_broker: bool) -> Firmware:
    modem = Modem()
    modem.write(42, CredentialType.CA_CHAIN, OLD_CA.pem)
    return Firmware(
        "dev-1",
        modem,
        topics=TOPICS,
        signers={key_id(KEY.public_key()): KEY.public_key()},
        active_tags=[42],
        prober=_healthy_probe,
        tls_broker=tls_broker,
    )


async def _committed(firmware: Firmware) -> FakeLink:
    """Stage (offline write, probe), then commit; return the link the commit came over."""
    await firmware.handle(FakeLink(), _bundle("stage"))
    firmware.go_offline()
    await firmware.come_online(FakeLink())
    link = FakeLink()
    await firmware.handle(link, _bundle("commit"))
    return link


def test_over_a_plain_connection_a_commit_is_told_at_once() -> None:
    """Without TLS to the broker: the new state, then `committed`, on the same connection."""
    # given
    firmware = _firmware(tls_broker=False)
    # when
    link = asyncio.run(_committed(firmware))
    # then
    assert link.told() == ["received", "state", "committed"]
    assert not firmware.needs_reconnect
    assert firmware.active_tags == [42, 43]


def test_over_tls_a_commit_waits_for_a_connection_the_new_tags_validate() -> None:
    """With TLS: nothing told yet, a reconnect asked for; once connected, state then committed."""

    async def scenario() -> tuple[list[str], bool, list[str], bool]:
        firmware = _firmware(tls_broker=True)
        link = await _committed(firmware)
        asked = firmware.needs_reconnect
        firmware.go_offline()
        firmware.connect_succeeded()
        reconnected = FakeLink()
        await firmware.come_online(reconnected)
        return link.told(), asked, reconnected.told(), firmware.needs_reconnect

    # when
    before, asked, after, still_asked = asyncio.run(scenario())
    # then
    assert before == ["received"]
    assert asked
    assert after == ["state", "committed"]
    assert not still_asked


def test_a_failed_connection_with_the_new_tags_falls_back_to_the_old_ones() -> None:
    """The broker's chain did not validate: previous tags, the staged tag deleted, `fallback`."""

    async def scenario() -> tuple[Firmware, bool, bool, list[str]]:
        firmware = _firmware(tls_broker=True)
        await _committed(firmware)
        firmware.go_offline()
        fell_back = firmware.connect_failed()
        again = firmware.connect_failed()
        firmware.go_offline()
        firmware.connect_succeeded()
        reconnected = FakeLink()
        await firmware.come_online(reconnected)
        return firmware, fell_back, again, reconnected.told()

    # when
    firmware, fell_back, again, told = asyncio.run(scenario())
    # then
    assert (fell_back, again) == (True, False), "only the first failure is the commit's"
    assert firmware.active_tags == [42]
    assert not firmware.modem.exists(43, CredentialType.CA_CHAIN)
    assert told == ["state", "fallback"]
    assert (firmware.reports[-1].phase, firmware.reports[-1].reason) == (
        Phase.FALLBACK,
        Reason.BROKER_UNREACHABLE,
    )


def test_an_agent_refuses_a_firmware_that_disagrees_about_tls() -> None:
    """A TLS broker address with a firmware that would not prove its commits is a mistake."""
    # given
    firmware = _firmware(tls_broker=False)
    # when / then
    with pytest.raises(ValueError, match="make them agree"):
        DeviceAgent(firmware, broker=BrokerAddress(host="127.0.0.1", port=1, tls=True))
