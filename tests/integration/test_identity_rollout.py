"""An identity.rotate rollout end to end in one process: the engine over real Redis, the
listener and simulated devices on a Mosquitto whose device listener requires client
certificates (the shipped settings), the local CA issuer and the CRL file.

The engine's tasks run inline (`InlineTasks`) instead of on Celery workers, so the test
drives each step; what it checks is that the parts fit: the keygen's CSR passes certfleet's
checks, the staged certificate passes the device's key check and the broker's mutual-TLS
probe, the commit reconnects with it, the retire deletes the old one, and the old
certificates end up in the CRL. The broker is not signalled to reload it: Mosquitto 2.0.11
may crash on a SIGHUP while devices with persistent sessions are offline (the shipped
broker restarts on a new CRL instead; tests/integration/test_broker_mtls.py covers it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.issuer_local import LocalCaIssuer
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.clock import utcnow
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.errors import TransientError
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_states import DeviceRolloutState, PushStep, RolloutState
from orchestrator.protocol import Topics
from orchestrator.protocol.cose import key_id
from orchestrator.services.identity.crl import refresh_crl
from orchestrator.services.identity.issue import issue_identities
from orchestrator.services.identity.revoke import revoke_identities
from orchestrator.services.rollout import (
    RolloutDeps,
    command,
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    push_batch,
    rollback_rollout,
    start_rollout,
    tick_rollouts,
)
from simulator.agent import BrokerAddress, DeviceAgent
from simulator.attestation import attestation_keys_json
from simulator.fleet import (
    IdentityProvisioning,
    build_fleet,
    ca_issuer,
    device_id,
    run_fleet,
)
from simulator.pki import make_ca
from simulator.services import LocalService, free_port
from tests.mtls import MtlsBroker, make_pki, start_mtls_broker
from workers.listener import run_listener

pytestmark = pytest.mark.integration

D = DeviceRolloutState
DEVICES = 4
OLD_TAG, NEW_TAG, CA_TAG = 44, 45, 42


@dataclass
class InlineTasks:
    """`RolloutTasks` that queues each call for the test to run (`pump`), in order."""

    queue: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    later: list[tuple[float, str, tuple[object, ...]]] = field(default_factory=list)
    """Tasks sent with a countdown that matters (the coalesced CRL refresh): (due, name, args)."""

    def due(self) -> None:
        """Move the tasks whose countdown is over to the queue."""
        now = time.monotonic()
        self.queue += [(name, args) for at, name, args in self.later if at <= now]
        self.later = [entry for entry in self.later if entry[0] > now]

    def start_rollout(self, rollout_id: str) -> None:
        self.queue.append(("start_rollout", (rollout_id,)))

    def dispatch_wave(self, rollout_id: str, wave: int) -> None:
        self.queue.append(("dispatch_wave", (rollout_id, wave)))

    def push_batch(
        self, rollout_id: str, wave: int, device_ids: object, step: PushStep, *, countdown: float
    ) -> None:
        self.queue.append(("push_batch", (rollout_id, list(device_ids), step)))  # type: ignore[call-overload]

    def evaluate_rollout(self, rollout_id: str, *, countdown: float = 0) -> None:
        if ("evaluate_rollout", (rollout_id,)) not in self.queue:
            self.queue.append(("evaluate_rollout", (rollout_id,)))

    def rollback_rollout(self, rollout_id: str) -> None:
        self.queue.append(("rollback_rollout", (rollout_id,)))

    def issue_identities(self, rollout_id: str, wave: int, device_ids: object) -> None:
        self.queue.append(("issue_identities", (rollout_id, wave, list(device_ids))))  # type: ignore[call-overload]

    def revoke_identities(self, rollout_id: str, device_ids: object) -> None:
        self.queue.append(("revoke_identities", (rollout_id, list(device_ids))))  # type: ignore[call-overload]

    def refresh_crl(self, *, countdown: float = 0) -> None:
        self.later.append((time.monotonic() + countdown, "refresh_crl", ()))


@dataclass
class Engine:
    """The container's adapters with the inline task queue, as a worker would run them."""

    container: Container
    tasks: InlineTasks = field(default_factory=InlineTasks)
    ran: list[str] = field(default_factory=list)
    transient: int = 0
    """Issuance tasks that ended on a transient error (the issuer away)."""

    @property
    def deps(self) -> RolloutDeps:
        c = self.container
        return RolloutDeps(
            store=c.rollouts,
            inventory=c.inventory,
            tasks=self.tasks,
            metrics=c.metrics,
            identity=c.identity,
        )

    def pump(self, *, limit: int = 500) -> None:
        """Run the queued tasks (and what they queue) now."""
        c, deps = self.container, self.deps
        self.tasks.due()
        for _ in range(limit):
            if not self.tasks.queue:
                return
            name, args = self.tasks.queue.pop(0)
            self.ran.append(name)
            now = utcnow()
            if name == "start_rollout":
                start_rollout(deps, str(args[0]), now=now, actor="test")
            elif name == "dispatch_wave":
                dispatch_wave(deps, str(args[0]), int(str(args[1])), now=now)
            elif name == "push_batch":
                push_batch(c.push_deps(), str(args[0]), list(args[1]), args[2], now=now)  # type: ignore[call-overload, arg-type]
            elif name == "evaluate_rollout":
                evaluate_rollout(deps, str(args[0]), now=now)
            elif name == "rollback_rollout":
                rollback_rollout(deps, str(args[0]), now=now)
            elif name == "issue_identities":
                rid, wave, ids = args
                try:
                    issue_identities(
                        c.identity_deps(),
                        str(rid),
                        int(str(wave)),
                        list(ids),  # type: ignore[call-overload]
                        now=now,
                    )
                except TransientError:  # as on a worker whose retries ran out
                    self.transient += 1
            elif name == "revoke_identities":
                rid, ids = args
                revoke_identities(c.identity_deps(), self.tasks, str(rid), list(ids), now=now)  # type: ignore[call-overload]
            elif name == "refresh_crl":
                refresh_crl(c.crl_deps(), now=now)
        raise AssertionError(f"the engine did not settle in {limit} tasks: {self.ran[-20:]}")

    def tick(self) -> None:
        tick_rollouts(self.deps, now=utcnow())
        self.pump()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MtlsBroker]:
    started = start_mtls_broker(tmp_path / "broker", make_pki(tmp_path / "pki"))
    yield started
    started.stop()


@pytest.fixture
def engine(
    redis_service: LocalService,
    broker: MtlsBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Engine]:
    """certfleet's settings: the test Redis, the broker's service listener, a signing key,
    the device CA as the local issuer and CRL signer, the broker's CRL file and pid.

    Parametrized `foreign` (indirect): the issuer is a CA the broker does not accept.
    """
    key = tmp_path / "signing-key.pem"
    generate_key_file(key)
    pki = broker.pki
    issuer_ca, issuer_key = pki.device_ca_file, pki.device_ca_key_file
    param = getattr(request, "param", None)
    if param == "foreign":
        issuer_ca, issuer_key = _foreign_ca(tmp_path / "foreign")
    env = {
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": "127.0.0.1",
        "CERTFLEET_MQTT_PORT": str(broker.port),
        "CERTFLEET_TOPIC_PREFIX": "certfleet",
        "CERTFLEET_SIGNING_KEY_FILE": str(key),
        "CERTFLEET_ISSUER": "local",
        "CERTFLEET_ISSUER_CA_CERT_FILE": str(issuer_ca),
        "CERTFLEET_ISSUER_CA_KEY_FILE": str(issuer_key),
        "CERTFLEET_CRL_CA_CERT_FILE": str(pki.device_ca_file),
        "CERTFLEET_CRL_CA_KEY_FILE": str(pki.device_ca_key_file),
        "CERTFLEET_CRL_FILE": str(pki.crl_file),
        "CERTFLEET_ATTESTATION_KEYS_FILE": str(_attestation_keys(tmp_path / "attestation.json")),
        "CERTFLEET_LOG_FORMAT": "json",
    }
    if param == "down":  # a CFSSL that is not there: every issuance is transient
        env |= {
            "CERTFLEET_ISSUER": "cfssl",
            "CERTFLEET_ISSUER_URL": f"http://127.0.0.1:{free_port()}",
        }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = redis.Redis(host=redis_service.host, port=redis_service.port)
    client.flushall()
    client.close()
    container = bootstrap(Settings(), logging=False)
    yield Engine(container)
    container.close()


def _attestation_keys(path: Path) -> Path:
    """The fleet's modems' attestation public keys, as provisioning would export them."""
    ids = [device_id("idr-", n) for n in range(DEVICES)]
    path.write_text(json.dumps(attestation_keys_json(ids)))
    return path


def _foreign_ca(directory: Path) -> tuple[Path, Path]:
    """A CA (certificate file, key file) the broker's device listener does not accept."""
    directory.mkdir()
    now = datetime.now(UTC)
    ca = make_ca(
        "not the device CA", not_before=now - timedelta(days=1), not_after=now + timedelta(days=900)
    )
    cert, key = directory / "ca.pem", directory / "ca-key.pem"
    cert.write_bytes(ca.pem)
    key.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return cert, key


def _fleet(
    engine: Engine, broker: MtlsBroker, faults: dict[int, frozenset[str]] | None = None
) -> list[DeviceAgent]:
    """Devices trusting the broker's CA in 42, presenting a factory identity in 44 that
    expires in 10 days, issued by the device CA the broker accepts; `faults` by device."""
    public = engine.container.root_signer.public_key
    return build_fleet(
        count=DEVICES,
        ca_chain=broker.pki.server_ca.pem,
        sec_tag=CA_TAG,
        id_prefix="idr-",
        broker=BrokerAddress(host="127.0.0.1", port=broker.device_port, tls=True),
        topics=Topics("certfleet"),
        signers={key_id(public): public},
        probe_timeout=5,
        identity=IdentityProvisioning(
            issue=ca_issuer(broker.pki.device_ca, not_after=datetime.now(UTC) + timedelta(days=10)),
            tag=OLD_TAG,
        ),
        device_faults=faults,
    )


def _spec(broker: MtlsBroker, **overrides: object) -> RolloutSpec:
    values: dict[str, object] = {
        "max_failure": 0.0,
        "device_timeout_seconds": 30,
        "bake_seconds": 1,
        **overrides,
    }
    return RolloutSpec(
        kind="identity.rotate",
        ca_pems=(),
        tag=OLD_TAG,
        spare_tag=NEW_TAG,
        probe_host="127.0.0.1",
        probe_port=broker.device_port,
        waves=parse_waves("1,100%"),
        min_sample=1,
        **values,  # type: ignore[arg-type]
    )


def _old_serials(engine: Engine, devices: list[str]) -> set[int]:
    """The serials of the certificates the devices present now, as the inventory knows them."""
    c = engine.container
    serials = set()
    for device in devices:
        state = c.inventory.device_credentials(device)
        assert state is not None
        [item] = [
            i
            for i in state.credentials
            if i.sec_tag == OLD_TAG and i.type is CredentialType.CLIENT_CERT
        ]
        pem = c.library.get(item.sha256)
        assert pem is not None, "the device's state message carried its certificate"
        serials.add(x509.load_pem_x509_certificate(pem.encode()).serial_number)
    return serials


async def _until(check: object, *, timeout: float, what: str, engine: Engine) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.to_thread(engine.tick)
        if await asyncio.to_thread(check):  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Outcome:
    """What a rotation left: the rollout, its devices' states, the agents, the old serials."""

    rollout_id: str
    state: RolloutState
    states: dict[str, DeviceRolloutState]
    agents: list[DeviceAgent]
    old: set[int]


async def _rotate(
    engine: Engine,
    broker: MtlsBroker,
    *,
    faults: dict[int, frozenset[str]] | None = None,
    agents: list[DeviceAgent] | None = None,
    abort_when: Callable[[dict[str, DeviceRolloutState]], bool] | None = None,
    **spec: object,
) -> Outcome:
    """Run the fleet (`agents`, or new ones) and the listener, create the rotation, drive the
    engine until it ends; `abort_when` the devices' states say so, the operator aborts it."""
    c = engine.container
    agents = agents if agents is not None else _fleet(engine, broker, faults)
    ids = sorted(a.firmware.device_id for a in agents)
    stop = asyncio.Event()
    listener = asyncio.create_task(run_listener(c, stop=stop, reconnect_interval=0.2))
    fleet = asyncio.create_task(run_fleet(agents, stop=stop, handle_signals=False))
    try:
        await _until(
            lambda: set(c.inventory.identity_tags_of(ids).values()) == {OLD_TAG},
            timeout=60,  # a loaded machine connects 4 TLS devices slowly
            what="every device's state with its identity",
            engine=engine,
        )
        old = _old_serials(engine, ids)
        rid = create_rollout(
            engine.deps, _spec(broker, **spec), now=utcnow(), actor="test", start=True
        )

        def ended() -> bool:
            rollout = c.rollouts.get(rid)
            if (
                abort_when is not None
                and rollout is not None
                and rollout.state is RolloutState.RUNNING
                and abort_when(c.rollouts.device_states(rid))
            ):
                command(engine.deps, rid, "abort", now=utcnow(), actor="operator")
                engine.pump()
            return rollout is not None and rollout.ended

        await _until(ended, timeout=90, what="the rollout to end", engine=engine)
        await _until(
            lambda: not engine.tasks.later and not engine.tasks.queue,
            timeout=30,
            what="the coalesced CRL refresh",
            engine=engine,
        )
        # every device connected again and told its identity (the one it ended with)
        await _until(
            lambda: (
                c.inventory.identity_tags_of(ids)
                == {a.firmware.device_id: a.firmware.identity_tag for a in agents}
            ),
            timeout=60,
            what="every device's last state in the inventory",
            engine=engine,
        )
    finally:
        stop.set()
        await asyncio.gather(listener, fleet, return_exceptions=True)
    rollout = c.rollouts.get(rid)
    assert rollout is not None
    return Outcome(rid, rollout.state, c.rollouts.device_states(rid), agents, old)


def test_an_identity_rotation_over_a_mutual_tls_broker(engine: Engine, broker: MtlsBroker) -> None:
    """Every device ends on a certificate the issuer signed for a key its modem made, in 45,
    the old identity deleted; the old certificates are in the CRL certfleet wrote."""
    c = engine.container
    outcome = asyncio.run(_rotate(engine, broker))
    rid, old, agents = outcome.rollout_id, outcome.old, outcome.agents
    ids = sorted(outcome.states)
    assert (outcome.state, set(outcome.states.values())) == (
        RolloutState.COMPLETED,
        {D.RETIRED},
    ), c.rollouts.log(rid)[-15:]
    for agent in agents:
        firmware = agent.firmware
        assert firmware.identity_tag == NEW_TAG
        held = {(i.sec_tag, i.type) for i in firmware.modem.items()}
        assert (OLD_TAG, CredentialType.CLIENT_CERT) not in held
        assert (OLD_TAG, CredentialType.CLIENT_KEY) not in held
        assert (NEW_TAG, CredentialType.CLIENT_KEY) in held
    crl = x509.load_pem_x509_crl(broker.pki.crl_file.read_bytes())
    assert {r.serial_number for r in crl} == old
    kept = c.identity.certificates(rid, ids)
    new = {x509.load_pem_x509_certificate(n.encode()).serial_number for _, n in kept.values()}
    assert len(new) == DEVICES
    assert not new & old


def test_refused_csrs_get_no_certificate_and_keep_their_identity(
    engine: Engine, broker: MtlsBroker
) -> None:
    """Modems whose CSR names another subject, whose CSR signature is bad, and whose
    attestation is not signed by their attestation key end csr_refused with their reasons
    counted; they keep (and connect with) identity 44."""
    faults = {
        1: frozenset({"csr-wrong-subject"}),
        2: frozenset({"csr-bad-signature"}),
        3: frozenset({"attestation-forged"}),
    }
    outcome = asyncio.run(_rotate(engine, broker, faults=faults, max_failure=1.0))
    refused = sorted(d for d, s in outcome.states.items() if s is D.CSR_REFUSED)
    assert refused == ["idr-00001", "idr-00002", "idr-00003"], engine.container.rollouts.log(
        outcome.rollout_id
    )
    assert outcome.state is RolloutState.COMPLETED_WITH_TIMEOUTS
    for agent in outcome.agents:
        expected = OLD_TAG if agent.firmware.device_id in refused else NEW_TAG
        assert agent.firmware.identity_tag == expected
    counters = engine.container.metrics.snapshot()
    reasons = {
        dict(labels).get("reason")
        for (name, labels) in counters
        if name == "certfleet_csr_refused_total"
    }
    assert reasons == {"csr_wrong_subject", "csr_bad_signature", "csr_bad_attestation"}
    causes = [
        e["cause"]
        for e in engine.container.rollouts.log(outcome.rollout_id)
        if e.get("to") == "csr_refused"
    ]
    assert len(causes) == 3


@pytest.mark.parametrize("engine", ["foreign"], indirect=True)
def test_a_canary_whose_new_identity_the_broker_refuses_aborts_the_rotation(
    engine: Engine, broker: MtlsBroker
) -> None:
    """The issuer signs with a CA the broker does not accept: the canary's mutual-TLS probe
    is refused (identity_refused), the gate aborts, the rollout rolls back, and every
    device keeps its identity in 44 and connects with it."""
    outcome = asyncio.run(_rotate(engine, broker))
    assert outcome.state is RolloutState.ROLLED_BACK
    log = engine.container.rollouts.log(outcome.rollout_id)
    assert any("identity_refused" in e["cause"] for e in log), log
    assert {a.firmware.identity_tag for a in outcome.agents} == {OLD_TAG}
    for agent in outcome.agents:
        held = {(i.sec_tag, i.type) for i in agent.firmware.modem.items()}
        assert (NEW_TAG, CredentialType.CLIENT_KEY) not in held
    assert engine.container.identity.revoked(now=utcnow()) == [] or all(
        r.reason == "cessation_of_operation"
        for r in engine.container.identity.revoked(now=utcnow())
    )


@pytest.mark.parametrize("engine", ["down"], indirect=True)
def test_the_issuer_away_times_devices_out_and_a_new_rotation_finishes_them(
    engine: Engine, broker: MtlsBroker
) -> None:
    """The issuer unreachable for the whole rotation: issuance fails as transient, every
    device times out and keeps identity 44, no certificate is kept; with the issuer back, a
    new rotation of the same devices ends with every one retired onto 45."""
    first = asyncio.run(_rotate(engine, broker, device_timeout_seconds=4))
    assert first.state is RolloutState.COMPLETED_WITH_TIMEOUTS
    assert set(first.states.values()) == {D.TIMED_OUT}
    assert engine.transient > 0
    assert {a.firmware.identity_tag for a in first.agents} == {OLD_TAG}
    ids = sorted(first.states)
    assert engine.container.identity.certificates(first.rollout_id, ids) == {}
    pki = broker.pki
    engine.container.__dict__["issuer"] = LocalCaIssuer(pki.device_ca_file, pki.device_ca_key_file)
    second = asyncio.run(_rotate(engine, broker, agents=first.agents))
    assert (second.state, set(second.states.values())) == (RolloutState.COMPLETED, {D.RETIRED})
    assert {a.firmware.identity_tag for a in second.agents} == {NEW_TAG}


def test_an_abort_after_the_canary_committed_returns_it_to_its_old_identity(
    engine: Engine, broker: MtlsBroker
) -> None:
    """The canary committed its new identity and soaks; the operator aborts: the rollback
    returns it to identity 44 (still held: the retire comes only after the soak), it
    reconnects with it, and its new certificate goes into the CRL as never used."""
    outcome = asyncio.run(
        _rotate(
            engine,
            broker,
            bake_seconds=120,
            abort_when=lambda states: D.COMMITTED in states.values(),
        )
    )
    assert outcome.state is RolloutState.ROLLED_BACK
    [canary] = [d for d, s in outcome.states.items() if s is D.ROLLED_BACK]
    assert {a.firmware.identity_tag for a in outcome.agents} == {OLD_TAG}
    kept = engine.container.identity.certificates(outcome.rollout_id, [canary])
    new_serial = x509.load_pem_x509_certificate(kept[canary][1].encode()).serial_number
    crl = x509.load_pem_x509_crl(broker.pki.crl_file.read_bytes())
    assert {r.serial_number for r in crl} == {new_serial}
    assert not outcome.old & {new_serial}
