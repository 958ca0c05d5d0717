"""Harness for device-protocol tests: an orchestrator side and simulated devices in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.adapters.mqtt import MqttSession
from orchestrator.adapters.root_signers import RootSigner
from orchestrator.bootstrap import Container
from orchestrator.ports import BundleSigner
from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.cose import HEADER_KID, Sign1Message, key_id
from orchestrator.protocol.delegation import delegation_of
from orchestrator.protocol.report import Phase, ReportMessage
from orchestrator.services.bundles import BundleBody, IssuedBundle, issue_bundle, send_bundle
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.services import LocalService

TOPICS = Topics("certfleet")


@dataclass
class Orchestrator:
    """The signing and publishing side, as `certfleet device send` uses it."""

    container: Container
    session: MqttSession

    @property
    def signer(self) -> BundleSigner:
        """The bundle signer: a key of this process's own under the root's delegation."""
        return self.container.signer

    @property
    def root(self) -> RootSigner:
        """The root key devices trust; it signs the root-only ops (trust-signer, revoke)."""
        return self.container.root_signer

    def issue(
        self,
        device_id: str,
        body: BundleBody,
        *,
        ttl: int = 3600,
        now: datetime | None = None,
        signer: BundleSigner | None = None,
    ) -> IssuedBundle:
        return issue_bundle(
            signer=signer or self.signer,
            sequences=self.container.sequences,
            device_id=device_id,
            rollout_id="test-rollout",
            body=body,
            now=now or datetime.now(UTC),
            ttl_seconds=ttl,
        )

    def publish(self, issued: IssuedBundle) -> None:
        send_bundle(self.session, issued, now=datetime.now(UTC))

    async def send(self, device_id: str, body: BundleBody, **kwargs: object) -> IssuedBundle:
        issued = self.issue(device_id, body, **kwargs)  # type: ignore[arg-type]
        await asyncio.to_thread(self.publish, issued)
        return issued


def make_device(
    device_id: str,
    ca_pem: bytes,
    orchestrator: Orchestrator,
    broker: LocalService,
    *,
    tag: int = 42,
    tls_port: int | None = None,
) -> DeviceAgent:
    modem = Modem()
    modem.write(tag, CredentialType.CA_CHAIN, ca_pem)
    public = orchestrator.root.public_key
    return DeviceAgent(
        Firmware(
            device_id,
            modem,
            topics=TOPICS,
            signers={key_id(public): public},
            active_tags=[tag],
            probe_timeout=5,
            tls_broker=tls_port is not None,
        ),
        broker=BrokerAddress(
            host=broker.host, port=tls_port or broker.port, tls=tls_port is not None
        ),
    )


@contextlib.asynccontextmanager
async def running(agent: DeviceAgent, *, wait_connected: bool = True) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop, reconnect_interval=0.2))
    try:
        if wait_connected:
            await until(lambda: agent.connects >= 1, timeout=10, what="device connected")
            await asyncio.sleep(0.2)  # the bundle subscription is in place
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def until(check: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def final_report(
    agent: DeviceAgent,
    issued: IssuedBundle,
    phases: set[Phase],
    timeout: float = 15,
    *,
    since: int = 0,
) -> ReportMessage:
    """The first report for this bundle in one of `phases`, among reports from `since` on.

    The device's rejection of a bundle from a signer it does not trust names no bundle
    (seq 0): for such a bundle, the first such rejection is its report. A delegated bundle's
    signer is the root key that signed its delegation.
    """
    delegation = delegation_of(issued.data)
    signer = (
        delegation.root_kid
        if delegation is not None
        else Sign1Message.decode(issued.data).protected.get(HEADER_KID)
    )
    untrusted = signer not in agent.signers

    def find() -> ReportMessage | None:
        for report in agent.reports[since:]:
            unnamed = untrusted and report.seq == 0 and report.phase is Phase.REJECTED
            if (report.seq == issued.bundle.seq or unnamed) and report.phase in phases:
                return report
        return None

    await until(find, timeout=timeout, what=f"a report in {sorted(phases)}")
    found = find()
    assert found is not None
    return found


def in_future(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
