"""A simulated device rotates the identity it presents to a real Mosquitto mutual-TLS listener.

The listener is the shipped one (`tests/mtls.py`: require_certificate,
use_identity_as_username, the shipped ACL, `crlfile`). The device leaves the factory with
a certificate of the device CA in sec_tag 44; the test plays certfleet on the plain
listener: keygen into 45, a certificate of the CSR's key from the device CA, the
identity stage (its probe presents the new certificate to the listener), the commit
(the device reconnects with it), then the old certificate is revoked and retired. The
probe tells a server that refuses the client certificate (`identity_refused`) from a
server chain the device does not trust (`unknown_ca`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import Bundle, Credential, Probe, encode_payload
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.keygen import parse_keygen_output
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.fleet import IdentityProvisioning, build_fleet, ca_issuer
from simulator.pki import IssuedCA, issue_client_cert, make_ca
from simulator.probe import tls_probe
from simulator.tls_identity import ClientIdentity
from tests.mtls import MtlsBroker, make_pki, start_mtls_broker, try_connect

pytestmark = pytest.mark.integration

TOPICS = Topics("certfleet")
SIGNER = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.now(UTC)
OLD, NEW = 44, 45


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MtlsBroker]:
    broker = start_mtls_broker(tmp_path / "broker", make_pki(tmp_path / "pki"))
    yield broker
    broker.stop()


def _identity(ca: IssuedCA, subject: str = "dev-1") -> ClientIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_client_cert(
        ca,
        subject,
        key.public_key(),
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=10),
    )
    return ClientIdentity(certificate.public_bytes(serialization.Encoding.PEM), key)


def _revoke(broker: MtlsBroker, *serials: int) -> None:
    """Write the device CA's CRL with `serials` revoked and make the broker read it.

    A SIGHUP (`broker.reload()`), safe here: the one device is connected when it comes and
    no other session is offline (Mosquitto 2.0.11 may crash on a SIGHUP while devices keep
    offline sessions, so tests with a fleet restart the broker instead).
    """
    ca = broker.pki.device_ca
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(datetime.now(UTC) - timedelta(minutes=1))
        .next_update(datetime.now(UTC) + timedelta(days=1))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime.now(UTC) - timedelta(minutes=1))
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    broker.pki.crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    broker.reload()


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


# -- the probe ------------------------------------------------------------------------------


async def _probe(
    broker: MtlsBroker, chains: Sequence[bytes], identity: ClientIdentity | None
) -> Any:
    return await tls_probe(
        "127.0.0.1", broker.device_port, ca_chains=chains, timeout=5, identity=identity
    )


def test_the_identity_probe_tells_a_refused_certificate_from_an_untrusted_server(
    broker: MtlsBroker,
) -> None:
    """ok with a device CA certificate; identity_refused for another CA's or a revoked one;
    unknown_ca when the device does not trust the broker; handshake_error with none."""
    # given
    server_ca = broker.pki.server_ca.pem
    good, revoked = _identity(broker.pki.device_ca), _identity(broker.pki.device_ca)
    stranger = make_ca(
        "stranger", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=9)
    )
    foreign = _identity(stranger)
    _revoke(broker, _serial(revoked.certificate_pem))
    # when
    results = {
        name: asyncio.run(_probe(broker, chains, identity))
        for name, chains, identity in [
            ("good", [server_ca], good),
            ("foreign", [server_ca], foreign),
            ("revoked", [server_ca], revoked),
            ("untrusted server", [stranger.pem], good),
            ("no certificate", [server_ca], None),
        ]
    }
    # then
    reasons = {name: result.reason for name, result in results.items()}
    assert reasons == {
        "good": None,
        "foreign": "identity_refused",
        "revoked": "identity_refused",
        "untrusted server": "unknown_ca",
        "no certificate": "handshake_error",
    }, {name: result.detail for name, result in results.items()}
    assert "certificate_revoked" in results["revoked"].detail


# -- a device's broker connection -----------------------------------------------------------


class Certfleet:
    """The test's side: signs bundles and publishes them on the plain listener."""

    def __init__(self, client: aiomqtt.Client, agent: DeviceAgent) -> None:
        self.client = client
        self.agent = agent
        self.seq = 0

    async def send(self, op: str, **fields: Any) -> Bundle:
        self.seq += 1
        now = int(time.time())
        bundle = Bundle(
            device_id=self.agent.device_id,
            rollout_id="r1",
            seq=self.seq,
            op=op,  # type: ignore[arg-type]  # an Operation
            issued_at=now,
            expires_at=now + 3600,
            **fields,
        )
        data = sign1(encode_payload(bundle), private_key=SIGNER, kid=key_id(SIGNER.public_key()))
        await self.client.publish(TOPICS.bundle(self.agent.device_id), data, qos=1)
        return bundle

    async def answer(
        self, bundle: Bundle, phases: set[Phase], timeout: float = 20
    ) -> ReportMessage:
        """The device's first report about `bundle` in one of `phases`."""

        def find() -> ReportMessage | None:
            return next(
                (r for r in self.agent.reports if r.seq == bundle.seq and r.phase in phases), None
            )

        await _until(lambda: find() is not None, timeout, f"{bundle.op} -> {sorted(phases)}")
        found = find()
        assert found is not None
        return found


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.asynccontextmanager
async def _device(
    broker: MtlsBroker, faults: frozenset[str] = frozenset()
) -> AsyncIterator[Certfleet]:
    """One device with a factory identity in 44, connected to the mutual-TLS listener."""
    (agent,) = build_fleet(
        count=1,
        ca_chain=broker.pki.server_ca.pem,
        sec_tag=42,
        id_prefix="mtls-",
        broker=BrokerAddress(host="127.0.0.1", port=broker.device_port, tls=True),
        topics=TOPICS,
        signers={key_id(SIGNER.public_key()): SIGNER.public_key()},
        probe_timeout=5,
        faults=faults,
        identity=IdentityProvisioning(
            ca_issuer(broker.pki.device_ca, not_after=NOW + timedelta(days=10)), tag=OLD
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop, reconnect_interval=0.2))
    try:
        await _until(lambda: agent.connects >= 1, 15, "the device connected")
        await asyncio.sleep(0.3)  # its bundle subscription is in place
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-certfleet") as client:
            yield Certfleet(client, agent)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def _stage(certfleet: Certfleet, broker: MtlsBroker) -> tuple[bytes, ReportMessage]:
    """keygen into NEW, the device CA's certificate of its key staged and probed: its PEM,
    and how the probe went."""
    keygen = await certfleet.send(
        "keygen", tag=NEW, subject=certfleet.agent.device_id, commit_by=int(time.time()) + 120
    )
    csr_report = await certfleet.answer(keygen, {Phase.CSR, Phase.REJECTED})
    assert csr_report.csr is not None, csr_report
    csr = x509.load_der_x509_csr(parse_keygen_output(csr_report.csr).csr_der)
    public_key = csr.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    pem = issue_client_cert(
        broker.pki.device_ca,
        certfleet.agent.device_id,
        public_key,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=365),
    ).public_bytes(serialization.Encoding.PEM)
    stage = await certfleet.send(
        "stage",
        tag=NEW,
        credentials=(Credential(CredentialType.CLIENT_CERT, pem.decode()),),
        probe=Probe(host="127.0.0.1", port=broker.device_port, tags=(42,)),
        active=(42,),
        commit_by=int(time.time()) + 120,
    )
    probed = await certfleet.answer(stage, {Phase.HEALTH_OK, Phase.HEALTH_FAILED, Phase.REJECTED})
    return pem, probed


async def _staged_identity(certfleet: Certfleet, broker: MtlsBroker) -> bytes:
    """As `_stage`, and the probe passed."""
    pem, probed = await _stage(certfleet, broker)
    assert probed.phase is Phase.HEALTH_OK, probed
    return pem


def test_a_device_rotates_its_broker_identity(broker: MtlsBroker) -> None:
    """keygen, stage, commit (reconnect with 45), the old certificate revoked, retire of 44:
    the broker keeps taking the device, and refuses the old certificate."""

    async def scenario() -> tuple[ReportMessage, ReportMessage, DeviceAgent, ClientIdentity]:
        async with _device(broker) as certfleet:
            agent = certfleet.agent
            old = agent.modem.client_identity(OLD)  # the test's look inside the modem
            await _staged_identity(certfleet, broker)
            connects = agent.connects
            commit = await certfleet.send("commit", tag=NEW)
            committed = await certfleet.answer(commit, {Phase.COMMITTED, Phase.FALLBACK})
            assert agent.connects > connects
            _revoke(broker, _serial(old.certificate_pem))
            retire = await certfleet.send("retire", tags=(OLD,), active=(42,))
            retired = await certfleet.answer(
                retire, {Phase.RETIRED, Phase.FALLBACK, Phase.REJECTED}
            )
            return committed, retired, agent, old

    # when
    committed, retired, agent, old = asyncio.run(scenario())
    # then
    assert (committed.phase, retired.phase) == (Phase.COMMITTED, Phase.RETIRED)
    firmware = agent.firmware
    assert firmware.identity_tag == NEW
    assert not firmware.modem.exists(OLD, CredentialType.CLIENT_KEY)
    # the retire's reconnect came after the CRL named the old certificate: the new one
    # is what the broker took; the old one it now refuses
    key_pem = old.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert try_connect(broker, old.certificate_pem, key_pem) == "certificate_revoked"
    assert (agent.device_id, agent.device_id) in broker.usernames()


def test_a_new_identity_the_broker_refuses_at_the_commit_falls_back(broker: MtlsBroker) -> None:
    """The staged certificate is revoked before the commit: the reconnect with it fails,
    the device returns to 44 by itself and says fallback/broker_unreachable."""

    async def scenario() -> tuple[ReportMessage, DeviceAgent]:
        async with _device(broker) as certfleet:
            pem = await _staged_identity(certfleet, broker)
            _revoke(broker, _serial(pem))
            commit = await certfleet.send("commit", tag=NEW)
            return await certfleet.answer(
                commit, {Phase.COMMITTED, Phase.FALLBACK}
            ), certfleet.agent

    # when
    answer, agent = asyncio.run(scenario())
    # then
    assert (answer.phase, answer.reason.value) == (Phase.FALLBACK, "broker_unreachable")
    assert agent.firmware.identity_tag == OLD
    assert not agent.modem.exists(NEW, CredentialType.CLIENT_KEY)
    assert agent.connect_failures >= 1


def test_a_device_whose_new_identity_the_broker_refuses_fails_its_probe(
    broker: MtlsBroker,
) -> None:
    """The `identity-refused` fault: the real broker refuses what the probe presents:
    health_failed/identity_refused, the key deleted, the factory identity still works."""

    async def scenario() -> tuple[ReportMessage, DeviceAgent]:
        async with _device(broker, frozenset({"identity-refused"})) as certfleet:
            _, probed = await _stage(certfleet, broker)
            agent = certfleet.agent
            await _until(
                lambda: (
                    not agent.modem.exists(NEW, CredentialType.CLIENT_KEY) and agent.modem.online
                ),
                15,
                "the staged identity deleted, the device back online",
            )
            return probed, agent

    # when
    probed, agent = asyncio.run(scenario())
    # then
    assert (probed.phase, probed.reason.value) == (Phase.HEALTH_FAILED, "identity_refused")
    assert agent.firmware.identity_tag == OLD
    assert not agent.modem.exists(NEW, CredentialType.CLIENT_KEY)


@contextlib.asynccontextmanager
async def _resetting_server(broker: MtlsBroker) -> AsyncIterator[int]:
    """A TLS 1.2 server asking for a device CA certificate that, refusing one, resets the
    connection instead of sending an alert (as a server that closes before reading on)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(broker.pki.server_cert_file, broker.pki.server_key_file)
    context.load_verify_locations(broker.pki.device_ca_file)
    context.verify_mode = ssl.CERT_REQUIRED

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    await writer.drain()
                    data = await reader.read(65536)
                    if not data:
                        return
                    incoming.write(data)
            writer.write(outgoing.read())
            await writer.drain()
        except ssl.SSLError:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_a_reset_after_the_certificate_flight_is_identity_refused(broker: MtlsBroker) -> None:
    """No alert, a reset right after the client's certificate: identity_refused; the same
    server with a certificate it takes: ok; a client with none to send: handshake_error."""
    stranger = make_ca(
        "stranger", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=9)
    )

    async def scenario() -> dict[str, Any]:
        async with _resetting_server(broker) as port:
            results = {}
            for name, identity in [
                ("foreign", _identity(stranger)),
                ("good", _identity(broker.pki.device_ca)),
                ("none", None),
            ]:
                results[name] = await tls_probe(
                    "127.0.0.1",
                    port,
                    ca_chains=[broker.pki.server_ca.pem],
                    timeout=5,
                    identity=identity,
                )
        return results

    # when
    results = asyncio.run(scenario())
    # then
    assert {name: result.reason for name, result in results.items()} == {
        "foreign": "identity_refused",
        "good": None,
        "none": "handshake_error",
    }, {name: result.detail for name, result in results.items()}
