"""A simulated device: its firmware (the bundle state machine) and its MQTT connection.

`Firmware` follows docs/protocol.md as a device would: it verifies a bundle before
anything else, writes the key store only while offline, stages into a spare sec_tag,
proves the staged trust with a real TLS handshake, and commits only on a signed
`commit`; with no commit by the deadline it falls back by itself. It publishes
through whatever link carries it: `DeviceAgent` gives each device its own MQTT
connection, `simulator.scale` multiplexes many devices on a few.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiomqtt
import cbor2
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.protocol import CredentialType, StateMessage, Topics
from orchestrator.protocol.bundle import (
    UINT64_MAX,
    Bundle,
    BundleRejectedError,
    Reason,
    open_bundle,
)
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.modem import FunctionalMode, Modem, ModemError
from simulator.probe import Prober, uncached_probe

__all__ = ["BrokerAddress", "DeviceAgent", "Firmware", "Link"]

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600
"""How long the broker keeps a sleeping device's session and QoS 1 messages."""

OfflineJob = Callable[[], None]


class Link(Protocol):
    """What the firmware publishes through: an MQTT connection (QoS 1, PUBACK awaited)."""

    async def publish(self, topic: str, payload: bytes, qos: int = ...) -> None:
        """Publish and return once the broker acknowledged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAddress:
    """Where the devices connect; with `tls`, the server chain is validated by the active tags."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


@dataclass(slots=True)
class _Staged:
    bundle: Bundle
    written: bool = False
    health_ok: bool = False


class _Reconnect(Exception):
    """Leave the connected block: go offline (for key store work) or reconnect."""


class Firmware:
    """One device's protocol state machine, whatever carries its messages.

    A transport calls `_handle` for each bundle in order, `check_commit_deadline` after
    it and when `commit_deadline` passes, and `go_offline` then `come_online` while
    `needs_offline` holds (the key store changes only in between).
    """

    def __init__(
        self,
        device_id: str,
        modem: Modem,
        *,
        topics: Topics,
        signers: Mapping[bytes, ec.EllipticCurvePublicKey] | None = None,
        active_tags: Sequence[int] = (),
        probe_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
        faults: frozenset[str] = frozenset(),
        prober: Prober = uncached_probe,
    ) -> None:
        topics.state(device_id)  # validates the id as a topic level
        self.device_id = device_id
        self.modem = modem
        self.signers: dict[bytes, ec.EllipticCurvePublicKey] = dict(signers or {})
        self.active_tags: list[int] = list(active_tags) or sorted(
            {item.sec_tag for item in modem.items() if item.type is CredentialType.CA_CHAIN}
        )
        self.last_seq = 0
        self.reports: list[ReportMessage] = []
        self.faults = faults
        self._topics = topics
        self._probe_timeout = probe_timeout
        self._prober = prober
        self._clock = clock or (lambda: datetime.now(UTC))
        self._staged: _Staged | None = None
        self._committed: tuple[Bundle, list[int]] | None = None  # bundle, previous active tags
        self._outbox: list[ReportMessage] = []
        self._offline_jobs: list[OfflineJob] = []
        self._probe_pending = False

    # -- what the device tells -------------------------------------------------------------

    def state_message(self, *, now: datetime | None = None) -> StateMessage:
        """What `AT%CMNG=1` and `AT%CERTEXPIRY` give, with the active tag list."""
        return StateMessage(
            device_id=self.device_id,
            time=now or self._clock(),
            credentials=[item.to_entry() for item in self.modem.items()],
            active_tags=list(self.active_tags),
        )

    def _report(
        self,
        bundle: Bundle | None,
        phase: Phase,
        reason: Reason = Reason.OK,
        detail: str = "",
        *,
        seq: int = 0,
        rollout_id: str = "",
        op: str | None = None,
    ) -> ReportMessage:
        report = ReportMessage(
            device_id=self.device_id,
            rollout_id=bundle.rollout_id if bundle else rollout_id,
            seq=bundle.seq if bundle else seq,
            op=bundle.op if bundle else op,
            phase=phase,
            reason=reason,
            detail=detail[:1024],
            time=self._clock(),
            active_tags=list(self.active_tags),
        )
        self.reports.append(report)
        return report

    async def _publish(self, link: Link, payload: bytes, channel: str) -> None:
        topic = (
            self._topics.report(self.device_id)
            if channel == "report"
            else self._topics.state(self.device_id)
        )
        await link.publish(topic, payload, qos=1)

    async def _send(self, link: Link | None, report: ReportMessage) -> None:
        if link is None:
            self._outbox.append(report)
        else:
            await self._publish(link, report.to_json(), "report")

    # -- online and offline ----------------------------------------------------------------

    @property
    def needs_offline(self) -> bool:
        """Key store work is waiting: the device must go offline (`CFUN=4`) for it."""
        return bool(self._offline_jobs)

    @property
    def commit_deadline(self) -> float | None:
        """When a healthy stage falls back without a commit (a POSIX timestamp), if one is open."""
        staged = self._staged
        if staged is None or not staged.health_ok:
            return None
        return float(staged.bundle.commit_by or 0)

    def go_offline(self) -> None:
        """`CFUN=4`, then the key store writes and deletes that were waiting for it."""
        self.modem.cfun(FunctionalMode.OFFLINE)
        jobs, self._offline_jobs = self._offline_jobs, []
        for job in jobs:
            job()

    async def come_online(self, link: Link) -> None:
        """Back online (connected): the state, the queued reports, then a pending probe."""
        self.modem.cfun(FunctionalMode.ONLINE)
        await self._publish(link, self.state_message().to_json(), "state")
        while self._outbox:
            await self._publish(link, self._outbox.pop(0).to_json(), "report")
        if self._probe_pending:
            self._probe_pending = False
            await self._probe(link)

    def check_commit_deadline(self) -> None:
        """Fall back by itself when a healthy stage saw no commit before `commit_by`."""
        self._check_commit_deadline()

    # -- bundles ---------------------------------------------------------------------------

    async def handle(self, link: Link, payload: bytes) -> None:
        """Act on one received bundle (still unverified), publishing through `link`."""
        await self._handle(link, payload)

    async def _handle(self, link: Link, payload: bytes) -> None:
        try:
            bundle = open_bundle(
                payload,
                signers=self.signers,
                device_id=self.device_id,
                last_seq=self.last_seq,
                now=self._clock(),
            )
            self._check_operation(bundle)
        except BundleRejectedError as exc:
            seq, rollout_id, op = _peek(payload)
            await self._send(
                link,
                self._report(
                    None,
                    Phase.REJECTED,
                    exc.reason,
                    exc.detail,
                    seq=seq,
                    rollout_id=rollout_id,
                    op=op,
                ),
            )
            return
        self.last_seq = bundle.seq
        await self._send(link, self._report(bundle, Phase.RECEIVED))
        await getattr(self, "_op_" + bundle.op.replace("-", "_"))(link, bundle)

    def _check_operation(self, bundle: Bundle) -> None:
        """What a verified bundle must also make sense of, against this device's state."""
        if bundle.op == "stage" and bundle.tag in self.active_tags:
            raise BundleRejectedError(
                Reason.TAG_IN_USE, f"sec_tag {bundle.tag} is active; a stage never overwrites it"
            )
        if bundle.op == "commit":
            staged = self._staged
            if staged is None or staged.bundle.tag != bundle.tag or not staged.health_ok:
                raise BundleRejectedError(
                    Reason.NOTHING_STAGED, f"no healthy stage of sec_tag {bundle.tag} to commit"
                )
        if bundle.op == "retire":
            missing = [
                t for t in bundle.active if not self.modem.exists(t, CredentialType.CA_CHAIN)
            ]
            if missing or set(bundle.tags) & set(bundle.active):
                raise BundleRejectedError(
                    Reason.INVALID_OPERATION,
                    f"active list {list(bundle.active)} must hold CA chains and exclude "
                    f"the retired tags {list(bundle.tags)}",
                )
        if bundle.op == "trust-signer":
            signer = bundle.signer
            assert signer is not None  # noqa: S101 -- required by the payload rules
            try:
                signer.public_key()
            except ValueError:
                raise BundleRejectedError(
                    Reason.BAD_PAYLOAD, "signer is not a P-256 point"
                ) from None
            remaining = set(self.signers) | {signer.kid}
            if bundle.retire_kid is not None:
                remaining.discard(bundle.retire_kid)
            if not remaining:
                raise BundleRejectedError(Reason.INVALID_OPERATION, "would trust no signer")

    async def _op_stage(self, link: Link, bundle: Bundle) -> None:
        previous = self._staged
        self._staged = _Staged(bundle)

        def write() -> None:
            tag = bundle.tag
            assert tag is not None  # noqa: S101 -- required by the payload rules
            if previous is not None and previous.written:
                self._delete_tag(previous.bundle.tag)
            self._delete_tag(tag)  # leftovers in a spare tag are never live
            try:
                for credential in bundle.credentials:
                    self.modem.write(tag, credential.type, credential.pem.encode())
            except ModemError as exc:
                self._delete_tag(tag)
                self._staged = None
                self._outbox.append(
                    self._report(
                        bundle, Phase.REJECTED, Reason.MODEM_ERROR, f"{exc} (errno {exc.errno})"
                    )
                )
                return
            assert self._staged is not None  # noqa: S101 -- set above
            self._staged.written = True
            self._outbox.append(self._report(bundle, Phase.STAGED))
            self._probe_pending = True

        self._offline_jobs.append(write)

    async def _probe(self, link: Link) -> None:
        staged = self._staged
        if staged is None or staged.bundle.probe is None:
            return
        probe = staged.bundle.probe
        chains = [
            self.modem.read(tag, CredentialType.CA_CHAIN)
            for tag in probe.tags
            if self.modem.exists(tag, CredentialType.CA_CHAIN)
        ]
        host, port = probe.host, probe.port
        if "probe-refused" in self.faults:
            host, port = "127.0.0.1", 1  # fault injection: the device's network refuses the probe
        result = await self._prober(host, port, chains, self._probe_timeout)
        if result.ok:
            staged.health_ok = True
            await self._send(
                link, self._report(staged.bundle, Phase.HEALTH_OK, detail=result.detail)
            )
            return
        reason = Reason(result.reason or "handshake_error")
        await self._send(
            link, self._report(staged.bundle, Phase.HEALTH_FAILED, reason, result.detail)
        )
        self._discard_staged()

    def _discard_staged(self) -> None:
        staged, self._staged = self._staged, None
        if staged is not None and staged.written:
            self._offline_jobs.append(lambda: self._delete_tag(staged.bundle.tag))

    def _check_commit_deadline(self) -> None:
        staged = self._staged
        if staged is None or not staged.health_ok:
            return
        if self._clock().timestamp() >= (staged.bundle.commit_by or 0):
            self._discard_staged()
            self._outbox.append(
                self._report(
                    staged.bundle,
                    Phase.FALLBACK,
                    Reason.COMMIT_TIMEOUT,
                    "no commit before the deadline; the staged item was discarded",
                )
            )

    async def _op_commit(self, link: Link, bundle: Bundle) -> None:
        staged = self._staged
        assert staged is not None  # noqa: S101 -- checked in _check_operation
        previous = list(self.active_tags)
        self.active_tags = list(bundle.active or staged.bundle.active)
        self._committed = (staged.bundle, previous)
        self._staged = None
        await self._announce_commit(link, bundle)

    async def _announce_commit(self, link: Link, bundle: Bundle) -> None:
        """The new list first, so whoever reads the report finds the inventory current."""
        await self._publish(link, self.state_message().to_json(), "state")
        await self._send(link, self._report(bundle, Phase.COMMITTED))

    def _ours(self, other: Bundle, rollback: Bundle) -> bool:
        """A rollout's rollback undoes only that rollout's work (a manual one undoes any)."""
        return not rollback.rollout_id or other.rollout_id == rollback.rollout_id

    async def _op_rollback(self, link: Link, bundle: Bundle) -> None:
        if self._staged is not None and self._ours(self._staged.bundle, bundle):
            self._discard_staged()
            self._outbox.append(
                self._report(bundle, Phase.ROLLED_BACK, detail="staged item discarded")
            )
            return
        if self._committed is not None and self._ours(self._committed[0], bundle):
            staged_bundle, previous = self._committed
            self._committed = None
            self.active_tags = previous

            def undo() -> None:
                if staged_bundle.tag not in previous:
                    self._delete_tag(staged_bundle.tag)
                self._outbox.append(
                    self._report(bundle, Phase.ROLLED_BACK, detail=f"active tags {previous}")
                )

            self._offline_jobs.append(undo)
            return
        await self._send(link, self._report(bundle, Phase.ROLLED_BACK, detail="nothing to undo"))

    async def _op_retire(self, link: Link, bundle: Bundle) -> None:
        self.active_tags = list(bundle.active)
        self._committed = None

        def delete() -> None:
            for tag in bundle.tags:
                self._delete_tag(tag)
            self._outbox.append(
                self._report(bundle, Phase.RETIRED, detail=f"deleted {list(bundle.tags)}")
            )

        self._offline_jobs.append(delete)

    async def _op_trust_signer(self, link: Link, bundle: Bundle) -> None:
        signer = bundle.signer
        assert signer is not None  # noqa: S101 -- checked in _check_operation
        self.signers[signer.kid] = signer.public_key()
        if bundle.retire_kid is not None:
            self.signers.pop(bundle.retire_kid, None)
        await self._send(
            link,
            self._report(bundle, Phase.COMMITTED, detail=f"trusts signer {signer.kid.hex()}"),
        )

    def _delete_tag(self, tag: int | None) -> None:
        if tag is None:
            return
        for cred_type in CredentialType:
            if self.modem.exists(tag, cred_type):
                self.modem.delete(tag, cred_type)


class DeviceAgent(Firmware):
    """One device with its own persistent MQTT 5 session (QoS 1) that reports on every connect."""

    def __init__(
        self,
        device_id: str,
        modem: Modem,
        *,
        broker: BrokerAddress,
        topics: Topics,
        signers: Mapping[bytes, ec.EllipticCurvePublicKey] | None = None,
        active_tags: Sequence[int] = (),
        keepalive: int = 60,
        probe_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
        faults: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(
            device_id,
            modem,
            topics=topics,
            signers=signers,
            active_tags=active_tags,
            probe_timeout=probe_timeout,
            clock=clock,
            faults=faults,
        )
        self.connects = 0
        self.connect_failures = 0
        self.broker = broker
        self._keepalive = keepalive
        self._verify_commit = False
        self._backlog: list[bytes] = []

    # -- the connection loop ---------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.broker.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        chains = [
            self.modem.read(tag, CredentialType.CA_CHAIN).decode()
            for tag in self.active_tags
            if self.modem.exists(tag, CredentialType.CA_CHAIN)
        ]
        if chains:
            context.load_verify_locations(cadata="".join(chains))
        return context

    def _client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        tls_context = self._tls_context()
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.device_id,
            username=self.broker.username,
            password=self.broker.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=self._keepalive,
            tls_context=tls_context,
        )

    @contextlib.asynccontextmanager
    async def _connected(self, slots: asyncio.Semaphore | None) -> AsyncIterator[aiomqtt.Client]:
        client = self._client()
        if slots is not None:
            async with slots:
                await client.__aenter__()
        else:
            await client.__aenter__()
        self.modem.cfun(FunctionalMode.ONLINE)
        try:
            yield client
        finally:
            self.modem.cfun(FunctionalMode.OFFLINE)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        connect_slots: asyncio.Semaphore | None = None,
        reconnect_interval: float = 2.0,
    ) -> None:
        """Stay connected until `stop`; go offline whenever the key store must change."""
        while not stop.is_set():
            try:
                async with self._connected(connect_slots) as client:
                    self.connects += 1
                    self._verify_commit = False
                    await self._online(client, stop)
            except _Reconnect:
                pass
            except aiomqtt.MqttError:
                self.connect_failures += 1
                if self._verify_commit:
                    self._fall_back_from_commit()
                else:
                    await self._sleep(stop, reconnect_interval)
            self.go_offline()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    async def _online(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        await client.subscribe(self._topics.bundle(self.device_id), qos=1)
        await self.come_online(client)
        while not stop.is_set():
            if self.needs_offline:
                await self._keep_received(client)
                raise _Reconnect
            payload = self._backlog.pop(0) if self._backlog else None
            if payload is None:
                payload = await self._next_bundle(client, stop)
            if payload is not None:
                await self.handle(client, payload)
            self.check_commit_deadline()

    async def _keep_received(self, client: aiomqtt.Client) -> None:
        """Keep bundles already received (and acknowledged) across the offline step."""
        while len(client.messages) > 0:
            payload = (await client.messages.__anext__()).payload
            self._backlog.append(payload if isinstance(payload, bytes) else str(payload).encode())

    async def _next_bundle(self, client: aiomqtt.Client, stop: asyncio.Event) -> bytes | None:
        deadline = self.commit_deadline
        timeout = None if deadline is None else max(0.0, deadline - self._clock().timestamp())
        receive = asyncio.ensure_future(client.messages.__anext__())
        stopped = asyncio.ensure_future(stop.wait())
        done, pending = await asyncio.wait(
            {receive, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if receive in done:
            payload = receive.result().payload
            return payload if isinstance(payload, bytes) else str(payload).encode()
        return None

    async def _announce_commit(self, link: Link, bundle: Bundle) -> None:
        if not self.broker.tls:
            await super()._announce_commit(link, bundle)
            return
        # Prove the new trust on the broker connection itself; report from there.
        self._verify_commit = True
        self._outbox.append(self._report(bundle, Phase.COMMITTED))
        if isinstance(link, aiomqtt.Client):
            await self._keep_received(link)
        raise _Reconnect

    def _fall_back_from_commit(self) -> None:
        """The broker connection failed with the new tag list: return to the old one first."""
        self._verify_commit = False
        if self._committed is None:
            return
        staged_bundle, previous = self._committed
        self._committed = None
        self.active_tags = previous
        self._outbox = [r for r in self._outbox if r.phase is not Phase.COMMITTED]
        self._outbox.append(
            self._report(
                staged_bundle,
                Phase.FALLBACK,
                Reason.BROKER_UNREACHABLE,
                "the broker's chain did not validate with the new tag list",
            )
        )
        if staged_bundle.tag not in previous:
            self._offline_jobs.append(lambda: self._delete_tag(staged_bundle.tag))


def _peek(payload: bytes) -> tuple[int, str, str | None]:
    """seq, rollout id and op of an unverified payload, only to correlate a rejection."""
    try:
        envelope = cbor2.loads(payload)
        if isinstance(envelope, cbor2.CBORTag):
            envelope = envelope.value
        document = cbor2.loads(envelope[2])
        seq, rid, op = document.get("seq", 0), document.get("rid", ""), document.get("op")
        if (
            isinstance(seq, int)
            and not isinstance(seq, bool)  # CBOR true decodes to a bool, an int subclass
            and 0 <= seq <= UINT64_MAX
            and isinstance(rid, str)
            and len(rid) <= 128
        ):
            return seq, rid, op if isinstance(op, str) and len(op) <= 32 else None
    except Exception:  # noqa: S110 -- best effort on a payload already refused
        pass
    return 0, "", None
