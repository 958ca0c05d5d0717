"""The identity e2e's fleets: factory identities the test makes (a key each, certificates
CFSSL signs to expire in 10 days), run by `certfleet simulate --tls --identities`, whose
key escrow records every private key a modem comes to hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulator.attestation import make_csr
from simulator.fleet import device_id
from tests.cfssl import CfsslServer
from tests.mtls import MtlsBroker
from tests.procs import Proc, certfleet, start

__all__ = [
    "CA_TAG",
    "FACTORY",
    "FLEET_SEED",
    "NEW_TAG",
    "OLD_TAG",
    "FleetSpec",
    "Identity",
    "attestation_keys",
    "factory_identities",
    "start_fleet",
]

CA_TAG: Final = 42
OLD_TAG, NEW_TAG = 44, 45
FLEET_SEED: Final = "identity-e2e"
FACTORY: Final = {
    "expiry": "240h",
    "usages": ["digital signature", "key agreement", "client auth"],
}
"""CFSSL signs the factory identities with this profile: they expire in 10 days."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """A fleet: id prefix, how many devices, and faults by device number."""

    prefix: str
    count: int
    faults: Mapping[int, Sequence[str]] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [device_id(self.prefix, n) for n in range(self.count)]


@dataclass(frozen=True, slots=True)
class Identity:
    """A factory identity the test made: the certificate (from CFSSL) and its key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.cert_pem).serial_number


def cfssl_sign(server: CfsslServer, csr_pem: bytes, profile: str) -> bytes:
    """The certificate CFSSL signs for `csr_pem` with `profile` (its sign API, as a factory
    line would call it); CFSSL keeps it in its database, so it can revoke it later."""
    request = urllib.request.Request(  # noqa: S310 -- the test's own cfssl, over loopback http
        f"{server.url}/api/v1/cfssl/sign",
        data=json.dumps({"certificate_request": csr_pem.decode(), "profile": profile}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 -- loopback http
        body = json.loads(answer.read())
    assert body["success"], body
    return str(body["result"]["certificate"]).encode()


def factory_identities(server: CfsslServer, devices: Sequence[str]) -> dict[str, Identity]:
    """A P-256 key per device (made by the test) and its 10-day certificate from CFSSL."""
    made: dict[str, Identity] = {}
    for device in devices:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.load_der_x509_csr(make_csr(key, device)).public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        made[device] = Identity(cfssl_sign(server, csr, "factory"), key_pem)
    return made


def identities_file(path: Path, devices: Sequence[str], identities: Mapping[str, Identity]) -> Path:
    """`{device: {cert, key}}` as `certfleet simulate --identities` reads it (mode 0600)."""
    path.touch(mode=0o600)
    path.write_text(
        json.dumps(
            {
                d: {"cert": identities[d].cert_pem.decode(), "key": identities[d].key_pem.decode()}
                for d in devices
            }
        )
    )
    return path


def start_fleet(
    stack_env: dict[str, str],
    base: Path,
    logs: Path,
    spec: FleetSpec,
    *,
    identities: Mapping[str, Identity],
    broker: MtlsBroker,
) -> tuple[Proc, Path]:
    """`certfleet simulate --tls` of the fleet with the test's factory identities."""
    name = spec.prefix.rstrip("-")
    escrow = base / f"keys-{name}.jsonl"
    given = identities_file(base / f"identities-{name}.json", spec.ids(), identities)
    args = [
        *("simulate", "--devices", str(spec.count), "--id-prefix", spec.prefix, "--tls"),
        *("--ca", str(broker.pki.server_ca_file), "--tag", str(CA_TAG)),
        *("--identities", str(given), "--identity-tag", str(OLD_TAG)),
        *("--fleet-seed", FLEET_SEED, "--broker-port", str(broker.device_port)),
        *("--key-escrow", str(escrow)),
    ]
    for n, faults in spec.faults.items():
        for fault in faults:
            args += ["--fault", f"{fault}@{n}"]
    return start(f"fleet-{name}", certfleet(*args), env=stack_env, log_dir=logs), escrow


def attestation_keys(base: Path, fleets: Sequence[FleetSpec], env: Mapping[str, str]) -> None:
    """The modems' public attestation keys, as `certfleet simulate --attestation-keys-out`
    writes them per fleet, in one file (CERTFLEET_ATTESTATION_KEYS_FILE)."""
    merged: dict[str, str] = {}
    for spec in fleets:
        out = base / f"attestation-{spec.prefix.rstrip('-')}.json"
        done = subprocess.run(
            certfleet(
                *("simulate", "--devices", str(spec.count), "--id-prefix", spec.prefix),
                *("--ca", str(base / "pki" / "server-ca.pem"), "--fleet-seed", FLEET_SEED),
                *("--attestation-keys-out", str(out), "--duration", "0"),
            ),
            env={**os.environ, **env},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        merged |= json.loads(out.read_text())
    (base / "attestation-keys.json").write_text(json.dumps(merged))
