"""A simulated fleet for the identity e2e, in a process of its own, that tells the test its keys.

    python -m tests.e2e.identity_fleet SPEC.json

It runs what `certfleet simulate --tls --identity-ca ...` runs (the same modem, firmware
and MQTT transport), with two differences the test needs: each device leaves the factory with the
identity the test made for it (a key and a certificate that CFSSL signed, both in the
spec, as a factory would install them), and every private key a modem comes to hold,
the factory's and each one `%KEYGEN` makes, is appended to the spec's `keys_out` file.
That file is the test's own record, outside everything certfleet records: the e2e
searches every message, log and Redis key for each key in it.

The spec (JSON): `prefix`, `count`, `ca_file` (the broker's server CA, put in `tag`),
`tag`, `identity_tag`, `identities` (device id -> {"cert": PEM, "key": PEM}),
`faults` (device number as text -> fault names), `foreign_keys` (device number as text ->
the number of the device whose factory key its `%KEYGEN` answers with, with the fault
`csr-reused-key`), `broker_port` (the mutual-TLS
listener), `fleet_seed`, `keys_out`. Settings (broker host, topic prefix, signer) come
from the environment as for `certfleet simulate`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.config import Settings
from orchestrator.logs import configure_logging
from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.cose import key_id
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.firmware import Firmware
from simulator.fleet import device_id, run_fleet
from simulator.modem import FunctionalMode, Modem, StoredItem

__all__ = ["RecordingModem", "main"]

_WRITE_LOCK = threading.Lock()


class RecordingModem(Modem):
    """A modem that appends every private key it comes to hold to `keys_out` (PKCS#8 PEM)."""

    def __init__(self, *, keys_out: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keys_out = keys_out

    def reuse_for_keygen(self, key_pem: bytes) -> None:
        """Make `%KEYGEN` return a CSR of this key (with the `csr-reused-key` fault): a
        modem answering with another device's key."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._last_key = key

    def _store_key(self, sec_tag: int, key: ec.EllipticCurvePrivateKey) -> StoredItem:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with _WRITE_LOCK, self._keys_out.open("ab") as out:
            out.write(pem)
        return super()._store_key(sec_tag, key)


def _firmware(spec: dict[str, Any], n: int, topics: Topics, signers: Any) -> Firmware:
    name = device_id(spec["prefix"], n)
    faults = frozenset(spec["faults"].get(str(n), ()))
    modem = RecordingModem(
        keys_out=Path(spec["keys_out"]),
        device_id=name,
        fleet_seed=spec["fleet_seed"],
        faults=faults,
    )
    modem.cfun(FunctionalMode.OFFLINE)
    modem.write(spec["tag"], CredentialType.CA_CHAIN, Path(spec["ca_file"]).read_bytes())
    identity = spec["identities"][name]
    modem.write(spec["identity_tag"], CredentialType.CLIENT_CERT, identity["cert"].encode())
    modem.write(spec["identity_tag"], CredentialType.CLIENT_KEY, identity["key"].encode())
    foreign = spec["foreign_keys"].get(str(n))
    if foreign is not None:
        modem.reuse_for_keygen(
            spec["identities"][device_id(spec["prefix"], foreign)]["key"].encode()
        )
    return Firmware(
        name,
        modem,
        topics=topics,
        signers=signers,
        active_tags=[spec["tag"]],
        faults=faults,
        tls_broker=True,
        identity_tag=spec["identity_tag"],
    )


def main(argv: list[str]) -> None:
    """Run the fleet of the spec file `argv[0]` until SIGTERM."""
    spec = json.loads(Path(argv[0]).read_text())
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    signer = serialization.load_pem_private_key(
        settings.signing_key_file.read_bytes(), password=None
    )
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    signers = {key_id(signer.public_key()): signer.public_key()}
    topics = Topics(settings.topic_prefix)
    broker = BrokerAddress(host=settings.mqtt_host, port=spec["broker_port"], tls=True)
    agents = [
        DeviceAgent(_firmware(spec, n, topics, signers), broker=broker)
        for n in range(spec["count"])
    ]
    print(f"ready: {len(agents)} devices", file=sys.stderr, flush=True)
    asyncio.run(run_fleet(agents))


if __name__ == "__main__":
    main(sys.argv[1:])
