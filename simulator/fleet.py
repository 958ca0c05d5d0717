"""A simulated fleet: provisioned devices, and the per-device mode (one connection each)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.firmware import Firmware
from simulator.modem import FunctionalMode, Modem
from simulator.probe import Prober, uncached_probe

__all__ = ["build_firmwares", "build_fleet", "device_id", "provisioned_modem", "run_fleet"]


def provisioned_modem(ca_chain: bytes, sec_tag: int) -> Modem:
    """A modem as the factory leaves it: `ca_chain` in `sec_tag`, offline."""
    modem = Modem()
    modem.cfun(FunctionalMode.OFFLINE)
    modem.write(sec_tag, CredentialType.CA_CHAIN, ca_chain)
    return modem


def device_id(id_prefix: str, n: int) -> str:
    """The id of the fleet's `n`-th device, the same in every simulator mode."""
    return f"{id_prefix}{n:05d}"


def build_fleet(
    *,
    count: int,
    ca_chain: bytes,
    sec_tag: int,
    id_prefix: str,
    broker: BrokerAddress,
    topics: Topics,
    signers: Mapping[bytes, ec.EllipticCurvePublicKey] | None = None,
    probe_timeout: float = 10.0,
    faults: frozenset[str] = frozenset(),
) -> list[DeviceAgent]:
    """`count` devices named `{id_prefix}{n:05d}`, each with `ca_chain` in `sec_tag`.

    Each device's active tag list is `[sec_tag]`, and it trusts bundles signed by `signers`.
    """
    firmwares = build_firmwares(
        range(count),
        ca_chain=ca_chain,
        sec_tag=sec_tag,
        id_prefix=id_prefix,
        topics=topics,
        signers=signers,
        probe_timeout=probe_timeout,
        faults=faults,
        tls_broker=broker.tls,
    )
    return [DeviceAgent(firmware, broker=broker) for firmware in firmwares]


def build_firmwares(
    numbers: range,
    *,
    ca_chain: bytes,
    sec_tag: int,
    id_prefix: str,
    topics: Topics,
    signers: Mapping[bytes, ec.EllipticCurvePublicKey] | None = None,
    probe_timeout: float = 10.0,
    faults: frozenset[str] = frozenset(),
    prober: Prober = uncached_probe,
    tls_broker: bool = False,
) -> list[Firmware]:
    """The devices numbered `numbers` as `build_fleet` makes them, without a connection each."""
    return [
        Firmware(
            device_id(id_prefix, n),
            provisioned_modem(ca_chain, sec_tag),
            topics=topics,
            signers=signers,
            active_tags=[sec_tag],
            probe_timeout=probe_timeout,
            faults=faults,
            prober=prober,
            tls_broker=tls_broker,
        )
        for n in range(numbers.start, numbers.stop, numbers.step)
    ]


async def run_fleet(
    agents: Sequence[DeviceAgent],
    *,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    connect_concurrency: int = 50,
    handle_signals: bool = True,
) -> None:
    """Run every agent until `stop`, SIGINT/SIGTERM, or `duration` seconds."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    slots = asyncio.Semaphore(connect_concurrency)
    tasks = [asyncio.create_task(agent.run(stop, connect_slots=slots)) for agent in agents]
    try:
        if duration is not None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=duration)
            except TimeoutError:
                stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
