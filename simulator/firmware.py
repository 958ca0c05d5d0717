"""A simulated device's firmware: the bundle state machine of docs/protocol.md.

`Firmware` follows the contract as a device would: it verifies a bundle before
anything else, writes the key store only while offline, stages into a spare sec_tag,
proves the staged trust with a real TLS handshake, and commits only on a signed
`commit`; with no commit by the deadline it falls back by itself. It knows no MQTT
library: it publishes through a `Link`, and says through `needs_offline` and
`needs_reconnect` when whoever carries it must take it offline or reconnect.
`simulator.agent` gives each device its own MQTT connection, `simulator.scale`
multiplexes many devices on a few.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, StateMessage, Topics
from orchestrator.protocol.bundle import Bundle, BundleRejectedError, Reason, open_bundle
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.bundle_checks import check_operation, rejection_ids
from simulator.modem import FunctionalMode, Modem, ModemError
from simulator.probe import Prober, uncached_probe

__all__ = ["Firmware", "Link"]

OfflineJob = Callable[[], None]


class Link(Protocol):
    """What the firmware publishes through: an MQTT connection (QoS 1, PUBACK awaited)."""

    async def publish(self, topic: str, payload: bytes, qos: int = ...) -> None:
        """Publish and return once the broker acknowledged."""


@dataclass(slots=True)
class _Staged:
    bundle: Bundle
    written: bool = False
    health_ok: bool = False


class Firmware:
    """One device's protocol state machine, whatever carries its messages.

    A transport calls `handle` for each bundle in order, `check_commit_deadline` after
    it and when `commit_deadline` passes, and `go_offline` then `come_online` while
    `needs_offline` holds (the key store changes only in between). With `tls_broker`
    (the MQTT connection is TLS, validated with the active tags) a commit leaves
    `needs_reconnect` set: the transport reconnects and says how it went with
    `connect_succeeded` or `connect_failed`.
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
        tls_broker: bool = False,
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
        self.tls_broker = tls_broker
        self.topics = topics
        self._probe_timeout = probe_timeout
        self._prober = prober
        self._clock = clock or (lambda: datetime.now(UTC))
        self._staged: _Staged | None = None
        self._committed: tuple[Bundle, list[int]] | None = None  # bundle, previous active tags
        self._outbox: list[ReportMessage] = []
        self._offline_jobs: list[OfflineJob] = []
        self._probe_pending = False
        self._commit_unproven = False

    def now(self) -> datetime:
        """The device's clock."""
        return self._clock()

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
            self.topics.report(self.device_id)
            if channel == "report"
            else self.topics.state(self.device_id)
        )
        await link.publish(topic, payload, qos=1)

    async def _send(self, link: Link, report: ReportMessage) -> None:
        await self._publish(link, report.to_json(), "report")

    # -- online and offline ----------------------------------------------------------------

    @property
    def needs_offline(self) -> bool:
        """Key store work is waiting: the device must go offline (`CFUN=4`) for it."""
        return bool(self._offline_jobs)

    @property
    def needs_reconnect(self) -> bool:
        """A commit changed the tags that validate the broker: prove them on a new connection."""
        return self._commit_unproven

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

    def broker_ca_chains(self) -> list[bytes]:
        """The CA chains the broker connection is validated with: those of the active tags."""
        return [
            self.modem.read(tag, CredentialType.CA_CHAIN)
            for tag in self.active_tags
            if self.modem.exists(tag, CredentialType.CA_CHAIN)
        ]

    def connect_succeeded(self) -> None:
        """The broker accepted the connection: a commit waiting for that proof stands."""
        self._commit_unproven = False

    def connect_failed(self) -> bool:
        """The connection failed: a commit waiting for proof falls back to the previous tags.

        Returns whether it did, so the transport reconnects at once over the old trust.
        """
        if not self._commit_unproven:
            return False
        self._commit_unproven = False
        if self._committed is None:
            return True
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
        return True

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
            healthy = self._staged if self._staged and self._staged.health_ok else None
            check_operation(
                bundle,
                active_tags=self.active_tags,
                healthy_stage=healthy.bundle if healthy else None,
                modem=self.modem,
                signers=self.signers,
            )
        except BundleRejectedError as exc:
            seq, rollout_id, op = rejection_ids(payload, exc.reason)
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
        # The seq becomes the last accepted only once `received` is with the broker: a
        # device that could not say so has done nothing, and takes a redelivery as new.
        await self._send(link, self._report(bundle, Phase.RECEIVED))
        self.last_seq = bundle.seq
        await getattr(self, "_op_" + bundle.op.replace("-", "_"))(link, bundle)

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

    def check_commit_deadline(self) -> None:
        """Fall back by itself when a healthy stage saw no commit before `commit_by`."""
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
        assert staged is not None  # noqa: S101 -- checked in check_operation
        previous = list(self.active_tags)
        self.active_tags = list(bundle.active or staged.bundle.active)
        self._committed = (staged.bundle, previous)
        self._staged = None
        await self._announce_commit(link, bundle)

    async def _announce_commit(self, link: Link, bundle: Bundle) -> None:
        """The new list first, so whoever reads the report finds the inventory current.

        Over a TLS broker connection the new list must first validate the broker: the
        report waits for the reconnect, which publishes the state before it.
        """
        if self.tls_broker:
            self._commit_unproven = True
            self._outbox.append(self._report(bundle, Phase.COMMITTED))
            return
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
        assert signer is not None  # noqa: S101 -- checked in check_operation
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
