"""Scale mode's pieces without a broker: the probe cache, device slices, and devices
multiplexed on one link (order per device, held bundles, deadlines, pipelining)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import Bundle, Probe, encode_payload
from orchestrator.protocol.bundle import Credential as BundleCredential
from orchestrator.protocol.cose import key_id, sign1
from simulator.agent import BrokerAddress
from simulator.fleet import build_firmwares
from simulator.modem import FunctionalMode
from simulator.pki import make_ca
from simulator.probe import ProbeCache, ProbeResult
from simulator.scale import ScaleFleet, ScaleSpec, slice_of

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)
OLD_CA = make_ca("Old", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=10))
NEW_CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900))
KEY = ec.generate_private_key(ec.SECP256R1())
TOPICS = Topics("certfleet")
SEQ = count(1)
OK = ProbeResult(ok=True, reason=None, detail="TLSv1.2 handshake", chain_bytes=900)


class FakeClient:
    """Stands in for one MQTT connection: records publishes, optionally holds each PUBACK."""

    def __init__(self, *, hold: asyncio.Event | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._hold = hold

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, timeout: float | None = None
    ) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self._hold is not None:
                await self._hold.wait()
            self.published.append((topic, payload))
        finally:
            self.in_flight -= 1

    def phases(self, device_id: str) -> list[str]:
        """What the device published, in order: `state`, or a report's phase (op:phase)."""
        out = []
        for topic, payload in self.published:
            if topic == TOPICS.state(device_id):
                out.append("state")
            elif topic == TOPICS.report(device_id):
                report = json.loads(payload)
                out.append(f"{report['op']}:{report['phase']}")
        return out


class FakeProber:
    """A handshake that takes until released, counting how many were made."""

    def __init__(self, result: ProbeResult = OK) -> None:
        self.calls: list[tuple[str, int, tuple[bytes, ...]]] = []
        self.release = asyncio.Event()
        self.result = result

    async def __call__(
        self, host: str, port: int, ca_chains: Sequence[bytes], timeout: float
    ) -> ProbeResult:
        self.calls.append((host, port, tuple(ca_chains)))
        await self.release.wait()
        return self.result


def _spec(**overrides: Any) -> ScaleSpec:
    fields: dict[str, Any] = {
        "count": 3,
        "ca_chain": OLD_CA.pem,
        "sec_tag": 42,
        "id_prefix": "dev-",
        "broker": BrokerAddress(host="127.0.0.1", port=1),
        "topics": TOPICS,
        "signers": {key_id(KEY.public_key()): KEY.public_key()},
        "connections": 1,
    }
    fields.update(overrides)
    return ScaleSpec(**fields)


def _bundle(device_id: str, op: str, **overrides: object) -> bytes:
    now = int(datetime.now(UTC).timestamp())
    fields: dict[str, object] = {
        "device_id": device_id,
        "rollout_id": "r-1",
        "seq": next(SEQ),
        "op": op,
        "issued_at": now,
        "expires_at": now + 3600,
    }
    if op == "stage":
        fields |= {
            "tag": 43,
            "credentials": (BundleCredential(CredentialType.CA_CHAIN, NEW_CA.pem.decode()),),
            "probe": Probe(host="127.0.0.1", port=8883, tags=(43,)),
            "active": (42, 43),
            "commit_by": now + 600,
        }
    if op == "commit":
        fields |= {"tag": 43, "active": (42, 43)}
    fields.update(overrides)
    payload = encode_payload(Bundle(**fields))  # type: ignore[arg-type]
    return sign1(payload, private_key=KEY, kid=key_id(KEY.public_key()))


def _fleet(spec: ScaleSpec, prober: Any) -> ScaleFleet:
    firmwares = build_firmwares(
        range(spec.count),
        ca_chain=spec.ca_chain,
        sec_tag=spec.sec_tag,
        id_prefix=spec.id_prefix,
        topics=spec.topics,
        signers=spec.signers,
        prober=prober,
    )
    return ScaleFleet(firmwares, spec, name="test")


async def _online(fleet: ScaleFleet, client: FakeClient) -> None:
    """Attach `client` as every connection and let every device publish its first state."""
    for link in fleet._links:
        link.attach(client)  # type: ignore[arg-type]  # a fake connection
    await fleet._announce(list(fleet._devices.values()), first=True)


async def _settle(fleet: ScaleFleet) -> None:
    while fleet._tasks:
        await asyncio.gather(*list(fleet._tasks))


# -- the probe cache -------------------------------------------------------------------------


def test_concurrent_probes_of_one_key_share_one_handshake_and_later_ones_reuse_it() -> None:
    """Ten devices probing the same chains and endpoint at once make one handshake."""

    async def scenario() -> tuple[list[ProbeResult], int, int, int]:
        prober = FakeProber()
        cache = ProbeCache(probe=prober)
        waiting = [asyncio.create_task(cache("h", 443, [NEW_CA.pem], 10.0)) for _ in range(10)]
        await asyncio.sleep(0)
        prober.release.set()
        results = await asyncio.gather(*waiting)
        later = await cache("h", 443, [NEW_CA.pem], 10.0)
        return [*results, later], len(prober.calls), cache.handshakes, cache.hits

    results, calls, handshakes, hits = asyncio.run(scenario())
    assert results == [OK] * 11
    assert (calls, handshakes, hits) == (1, 1, 10)


def test_a_different_trust_set_endpoint_or_expired_entry_makes_a_new_handshake() -> None:
    """Another chain, another port, or a result older than the ttl: a real handshake again."""
    clock = [0.0]

    async def scenario() -> list[tuple[str, int, tuple[bytes, ...]]]:
        prober = FakeProber()
        prober.release.set()
        cache = ProbeCache(probe=prober, ttl=60, clock=lambda: clock[0])
        await cache("h", 443, [NEW_CA.pem], 10.0)
        await cache("h", 443, [OLD_CA.pem], 10.0)
        await cache("h", 444, [NEW_CA.pem], 10.0)
        await cache("h", 443, [NEW_CA.pem], 10.0)  # cached
        clock[0] = 61.0
        await cache("h", 443, [NEW_CA.pem], 10.0)
        return prober.calls

    calls = asyncio.run(scenario())
    assert calls == [
        ("h", 443, (NEW_CA.pem,)),
        ("h", 443, (OLD_CA.pem,)),
        ("h", 444, (NEW_CA.pem,)),
        ("h", 443, (NEW_CA.pem,)),
    ]


def test_a_refused_probe_is_keyed_by_where_it_went() -> None:
    """probe-refused devices probe 127.0.0.1:1; the healthy ones do not share their result."""

    async def scenario() -> tuple[bool, bool]:
        prober = FakeProber()
        prober.release.set()
        cache = ProbeCache(probe=prober)
        spec = _spec(count=2)
        healthy, refused = build_firmwares(
            range(2),
            ca_chain=spec.ca_chain,
            sec_tag=42,
            id_prefix="dev-",
            topics=TOPICS,
            signers=spec.signers,
            prober=cache,
        )
        refused.faults = frozenset({"probe-refused"})
        client = FakeClient()
        for firmware in (healthy, refused):
            firmware.modem.cfun(FunctionalMode.ONLINE)
            await firmware.handle(client, _bundle(firmware.device_id, "stage"))
            firmware.go_offline()
            await firmware.come_online(client)
        return prober.calls[0][:2] == ("127.0.0.1", 8883), prober.calls[1][:2] == ("127.0.0.1", 1)

    assert asyncio.run(scenario()) == (True, True)


# -- slices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("devices", "processes"), [(10, 3), (100_000, 2), (5, 5), (7, 1)])
def test_process_slices_are_disjoint_and_cover_the_fleet(devices: int, processes: int) -> None:
    """Every device number belongs to exactly one process."""
    numbers = [n for index in range(processes) for n in slice_of(devices, processes, index)]
    assert numbers == list(range(devices))


def test_tls_is_refused_in_scale_mode() -> None:
    """A shared connection cannot validate the broker with each device's own tags."""
    with pytest.raises(ValueError, match="per-device mode"):
        _spec(broker=BrokerAddress(host="127.0.0.1", port=1, tls=True))


# -- devices on a shared link ----------------------------------------------------------------


def test_a_stage_then_commit_follows_the_per_device_order_with_the_commit_held_offline() -> None:
    """The commit arrives while the device is offline for its write: it is held, then handled
    after the state, the queued report and the probe, exactly as in per-device mode."""

    async def scenario() -> tuple[list[str], list[str], int]:
        prober = FakeProber()
        prober.release.set()
        fleet = _fleet(_spec(offline_seconds=0.05), ProbeCache(probe=prober))
        client = FakeClient()
        await _online(fleet, client)
        fleet.deliver("certfleet/dev-00001/bundle", _bundle("dev-00001", "stage"))
        await asyncio.sleep(0.01)  # offline now, writing
        fleet.deliver("certfleet/dev-00001/bundle", _bundle("dev-00001", "commit"))
        await _settle(fleet)
        return client.phases("dev-00001"), client.phases("dev-00002"), fleet.handled

    device, other, handled = asyncio.run(scenario())
    assert device == [
        "state",
        "stage:received",
        "state",
        "stage:staged",
        "stage:health_ok",
        "commit:received",
        "state",
        "commit:committed",
    ]
    assert other == ["state"]
    assert handled == 2


def test_bundles_for_devices_of_other_processes_are_dropped_and_counted() -> None:
    """A bundle topic of a device this process does not own changes nothing."""

    async def scenario() -> tuple[int, int, list[tuple[str, bytes]]]:
        fleet = _fleet(_spec(), ProbeCache(probe=FakeProber()))
        client = FakeClient()
        await _online(fleet, client)
        before = list(client.published)
        fleet.deliver("certfleet/dev-00099/bundle", _bundle("dev-00099", "stage"))
        fleet.deliver("certfleet/dev-00001/state", b"{}")
        await _settle(fleet)
        return fleet.dropped, fleet.handled, client.published[len(before) :]

    dropped, handled, after = asyncio.run(scenario())
    assert (dropped, handled, after) == (2, 0, [])


def test_a_bundle_held_by_the_session_is_handled_after_the_first_state() -> None:
    """A bundle delivered before the device announced itself waits for its state message."""

    async def scenario() -> list[str]:
        prober = FakeProber()
        prober.release.set()
        fleet = _fleet(_spec(count=1), ProbeCache(probe=prober))
        client = FakeClient()
        fleet.deliver("certfleet/dev-00000/bundle", _bundle("dev-00000", "stage"))
        await _online(fleet, client)
        await _settle(fleet)
        return client.phases("dev-00000")

    assert asyncio.run(scenario())[:2] == ["state", "stage:received"]


def test_a_healthy_stage_without_a_commit_falls_back_at_its_deadline() -> None:
    """No commit by `commit_by`: the device wakes by itself, deletes the stage, reports fallback."""

    async def scenario() -> tuple[list[str], list[int]]:
        prober = FakeProber()
        prober.release.set()
        fleet = _fleet(_spec(count=1), ProbeCache(probe=prober))
        client = FakeClient()
        await _online(fleet, client)
        commit_by = int(datetime.now(UTC).timestamp()) + 1
        fleet.deliver(
            "certfleet/dev-00000/bundle", _bundle("dev-00000", "stage", commit_by=commit_by)
        )
        await _settle(fleet)
        await asyncio.sleep(max(0.0, commit_by - datetime.now(UTC).timestamp()) + 0.2)
        await _settle(fleet)
        firmware = fleet.devices["dev-00000"]
        return client.phases("dev-00000"), [i.sec_tag for i in firmware.modem.items()]

    phases, tags = asyncio.run(scenario())
    assert phases[-3:] == ["stage:health_ok", "state", "stage:fallback"]
    assert tags == [42]


def test_first_states_are_pipelined_within_the_window() -> None:
    """Ten devices, a window of four: four states in flight at once, never more, all ten sent."""

    async def scenario() -> tuple[int, int]:
        hold = asyncio.Event()
        fleet = _fleet(_spec(count=10, window=4), ProbeCache(probe=FakeProber()))
        client = FakeClient(hold=hold)
        announcing = asyncio.create_task(_online(fleet, client))
        await asyncio.sleep(0.05)
        in_flight = client.in_flight
        hold.set()
        await announcing
        return in_flight, len(client.published)

    in_flight, published = asyncio.run(scenario())
    assert (in_flight, published) == (4, 10)
