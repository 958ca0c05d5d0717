"""A simulated fleet: provisioned devices, and the per-device mode (one connection each).

A device may leave the factory with an identity (`IdentityProvisioning`): a key made
for it and a client certificate of that key, issued by a CA of the caller's choosing,
in the identity tag. Each modem attests its keygens with the key derived from the
fleet seed and its device id (`simulator.attestation.attestation_keys_json` gives
certfleet the public halves).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.attestation import DEFAULT_FLEET_SEED
from simulator.firmware import Firmware
from simulator.modem import FunctionalMode, KeyEscrow, Modem, ModemError
from simulator.pki import IssuedCA, issue_client_cert
from simulator.probe import Prober, uncached_probe

__all__ = [
    "DEFAULT_IDENTITY_TAG",
    "IdentityProvisioning",
    "IssueIdentity",
    "build_firmwares",
    "build_fleet",
    "ca_issuer",
    "device_id",
    "provisioned_modem",
    "run_fleet",
]

DEFAULT_IDENTITY_TAG = 44
"""Identity tag A of CERTFLEET_IDENTITY_TAGS' default "44,45"."""

IssueIdentity = Callable[[str, ec.EllipticCurvePublicKey], bytes]
"""(device id, public key) -> the PEM client certificate the factory installs."""


def ca_issuer(
    ca: IssuedCA, *, not_after: datetime, not_before: datetime | None = None
) -> IssueIdentity:
    """Client certificates for `CN=<device id>` signed by `ca`, valid until `not_after`."""
    start = not_before or datetime.now(UTC) - timedelta(days=1)

    def issue(device: str, public_key: ec.EllipticCurvePublicKey) -> bytes:
        certificate = issue_client_cert(
            ca, device, public_key, not_before=start, not_after=not_after
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    return issue


@dataclass(frozen=True, slots=True)
class IdentityProvisioning:
    """Give each device an identity at the factory, in `tag`: the certificate and key `given`
    for it, else a fresh key and `issue`'s certificate of it."""

    issue: IssueIdentity | None
    tag: int = DEFAULT_IDENTITY_TAG
    given: Mapping[str, tuple[bytes, bytes]] = field(default_factory=dict)
    """device id -> (certificate PEM, private key PEM), made elsewhere (another CA's tool)."""

    def identity_of(self, device: str) -> tuple[bytes, bytes]:
        """The certificate and key PEM the factory installs in `device`."""
        if device in self.given:
            return self.given[device]
        if self.issue is None:
            raise ValueError(f"no identity given for {device} and no CA to issue one")
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.issue(device, key.public_key()), key_pem


@dataclass(frozen=True, slots=True)
class _Factory:
    """How every device of a fleet leaves the factory."""

    ca_chain: bytes
    sec_tag: int
    identity: IdentityProvisioning | None = None
    fleet_seed: str = DEFAULT_FLEET_SEED
    faults: frozenset[str] = frozenset()
    device_faults: Mapping[int, frozenset[str]] = field(default_factory=dict)
    key_escrow: KeyEscrow | None = None
    _made: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    def faults_of(self, n: int) -> frozenset[str]:
        return self.faults | self.device_faults.get(n, frozenset())

    def identity_of(self, device: str) -> tuple[bytes, bytes] | None:
        """The factory identity of `device` (the same each time it is asked), if any."""
        if self.identity is None:
            return None
        if device not in self._made:
            self._made[device] = self.identity.identity_of(device)
        return self._made[device]


def _check_identity(modem: Modem, tag: int, device: str) -> None:
    """The factory's identity must work: a P-256 key the modem can use, of the certificate."""
    try:
        held = modem.client_identity(tag)
    except ModemError as exc:
        raise ValueError(f"{device}: the identity key is not a P-256 private key ({exc})") from None
    certified = x509.load_pem_x509_certificate(held.certificate_pem).public_key()
    if not isinstance(certified, ec.EllipticCurvePublicKey) or (
        certified.public_numbers() != held.key.public_key().public_numbers()
    ):
        raise ValueError(f"{device}: the identity certificate is not of its key")


def _private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("an identity key must be an EC private key")
    return key


def provisioned_modem(
    ca_chain: bytes,
    sec_tag: int,
    *,
    device_id: str = "",
    identity: IdentityProvisioning | None = None,
    fleet_seed: str = DEFAULT_FLEET_SEED,
    faults: frozenset[str] = frozenset(),
    key_escrow: KeyEscrow | None = None,
    made: tuple[bytes, bytes] | None = None,
    foreign: tuple[bytes, bytes] | None = None,
) -> Modem:
    """A modem as the factory leaves it: `ca_chain` in `sec_tag` (and an identity), offline.

    `made` is the identity to install (else `identity` makes one); `foreign`, another
    device's, whose key a `csr-foreign-key` keygen answers with.
    """
    modem = Modem(
        device_id=device_id,
        fleet_seed=fleet_seed,
        faults=faults,
        key_escrow=key_escrow,
        foreign_key=_private_key(foreign[1]) if foreign is not None else None,
    )
    modem.cfun(FunctionalMode.OFFLINE)
    modem.write(sec_tag, CredentialType.CA_CHAIN, ca_chain)
    if identity is not None:
        certificate, key_pem = made or identity.identity_of(device_id)
        modem.write(identity.tag, CredentialType.CLIENT_CERT, certificate)
        modem.write(identity.tag, CredentialType.CLIENT_KEY, key_pem)  # kept inside from now on
        _check_identity(modem, identity.tag, device_id)
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
    identity: IdentityProvisioning | None = None,
    fleet_seed: str = DEFAULT_FLEET_SEED,
    device_faults: Mapping[int, frozenset[str]] | None = None,
    key_escrow: KeyEscrow | None = None,
) -> list[DeviceAgent]:
    """`count` devices named `{id_prefix}{n:05d}`, each with `ca_chain` in `sec_tag`.

    Each device's active tag list is `[sec_tag]`, and it trusts bundles signed by `signers`.
    With `identity`, each also has a client certificate and key in `identity.tag`, which
    it presents to a TLS broker. `device_faults` adds faults to the devices numbered;
    `key_escrow` is told every private key the modems hold (a test's search for leaks).
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
        identity=identity,
        fleet_seed=fleet_seed,
        device_faults=device_faults,
        key_escrow=key_escrow,
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
    identity: IdentityProvisioning | None = None,
    fleet_seed: str = DEFAULT_FLEET_SEED,
    device_faults: Mapping[int, frozenset[str]] | None = None,
    key_escrow: KeyEscrow | None = None,
) -> list[Firmware]:
    """The devices numbered `numbers` as `build_fleet` makes them, without a connection each."""
    factory = _Factory(
        ca_chain=ca_chain,
        sec_tag=sec_tag,
        identity=identity,
        fleet_seed=fleet_seed,
        faults=faults,
        device_faults=device_faults or {},
        key_escrow=key_escrow,
    )
    return [
        _firmware(
            factory,
            n,
            id_prefix=id_prefix,
            topics=topics,
            signers=signers,
            probe_timeout=probe_timeout,
            prober=prober,
            tls_broker=tls_broker,
        )
        for n in numbers
    ]


def _firmware(
    factory: _Factory,
    n: int,
    *,
    id_prefix: str,
    topics: Topics,
    signers: Mapping[bytes, ec.EllipticCurvePublicKey] | None,
    probe_timeout: float,
    prober: Prober,
    tls_broker: bool,
) -> Firmware:
    name = device_id(id_prefix, n)
    faults = factory.faults_of(n)
    # csr-foreign-key: the keygen answers with the factory key of the next device
    neighbour = device_id(id_prefix, n + 1) if "csr-foreign-key" in faults else None
    modem = provisioned_modem(
        factory.ca_chain,
        factory.sec_tag,
        device_id=name,
        identity=factory.identity,
        fleet_seed=factory.fleet_seed,
        faults=faults,
        key_escrow=factory.key_escrow,
        made=factory.identity_of(name),
        foreign=factory.identity_of(neighbour) if neighbour is not None else None,
    )
    return Firmware(
        name,
        modem,
        topics=topics,
        signers=signers,
        active_tags=[factory.sec_tag],
        probe_timeout=probe_timeout,
        faults=faults,
        prober=prober,
        tls_broker=tls_broker,
        identity_tag=factory.identity.tag if factory.identity is not None else None,
    )


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
