"""A scale-mode fleet whose modems the suite can read: `python -m tests.chaos.devices`.

The devices are the simulator's (`simulator.scale`, one process, a few shared MQTT
connections), provisioned with the CA chain in sec_tag 42 and trusting the bundle
signer of `CERTFLEET_SIGNING_KEY_FILE`. Every second, and once more when stopped
(SIGTERM), the process writes what each device's own modem holds to `--out` (JSON,
replaced atomically): the active tag list, the digest of each item, the last seq
accepted. It also keeps the devices it ever found without an active CA chain item
(sampled each second), since a device must never be left unable to validate a server.
This is the devices' word on where they stand, not certfleet's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.config import Settings
from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.cose import key_id
from simulator.agent import BrokerAddress
from simulator.firmware import Firmware
from simulator.fleet import build_firmwares
from simulator.probe import ProbeCache
from simulator.scale import ScaleFleet, ScaleSpec

__all__ = ["device_view", "main"]

SEC_TAG = 42
DUMP_SECONDS = 1.0


def device_view(firmware: Firmware) -> dict[str, Any]:
    """What one device's modem holds, as the suite reads it."""
    modem = firmware.modem
    return {
        "active": list(firmware.active_tags),
        "items": {
            f"{item.sec_tag}:{int(item.type)}": modem.digest(item.sec_tag, item.type)
            for item in modem.items()
        },
        "last_seq": firmware.last_seq,
    }


def _trusted(firmware: Firmware) -> bool:
    return any(firmware.modem.exists(t, CredentialType.CA_CHAIN) for t in firmware.active_tags)


def _signers(settings: Settings) -> dict[bytes, ec.EllipticCurvePublicKey]:
    key = serialization.load_pem_private_key(settings.signing_key_file.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = key.public_key()
    return {key_id(public): public}


def _write(out: Path, devices: dict[str, Firmware], untrusted: set[str]) -> None:
    document = {
        "devices": {device_id: device_view(fw) for device_id, fw in devices.items()},
        "ever_untrusted": sorted(untrusted),
    }
    part = out.with_suffix(".part")
    part.write_text(json.dumps(document))
    os.replace(part, out)


async def _run(count: int, ca: Path, prefix: str, out: Path) -> None:
    settings = Settings()
    spec = ScaleSpec(
        count=count,
        ca_chain=ca.read_bytes(),
        sec_tag=SEC_TAG,
        id_prefix=prefix,
        broker=BrokerAddress(host=settings.mqtt_host, port=settings.mqtt_port),
        topics=Topics(settings.topic_prefix),
        signers=_signers(settings),
        connections=4,
    )
    firmwares = build_firmwares(
        range(count),
        ca_chain=spec.ca_chain,
        sec_tag=SEC_TAG,
        id_prefix=prefix,
        topics=spec.topics,
        signers=spec.signers,
        prober=ProbeCache(ttl=spec.probe_cache_seconds),
    )
    fleet = ScaleFleet(firmwares, spec, name="chaos")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    untrusted: set[str] = set()

    async def sample() -> None:
        while not stop.is_set():
            untrusted.update(d for d, fw in fleet.devices.items() if not _trusted(fw))
            _write(out, fleet.devices, untrusted)
            await asyncio.sleep(DUMP_SECONDS)

    sampler = asyncio.create_task(sample())
    try:
        await fleet.run(stop, on_ready=lambda n: print(f"ready: {n} devices", flush=True))
    finally:
        sampler.cancel()
        untrusted.update(d for d, fw in fleet.devices.items() if not _trusted(fw))
        _write(out, fleet.devices, untrusted)


def main() -> None:
    """Run the fleet until SIGTERM, writing the modems' contents to --out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--prefix", default="dev-")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(_run(args.count, args.ca, args.prefix, args.out))


if __name__ == "__main__":
    main()
