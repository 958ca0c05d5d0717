"""A simulated device's firmware: the bundle state machine of docs/protocol.md.

`Firmware` follows the contract as a device would: it verifies a bundle before
anything else, writes the key store only while offline, stages into a spare sec_tag,
proves the staged trust with a real TLS handshake, and commits only on a signed
`commit`; with no commit by the deadline it falls back by itself. It keeps one undo
record, the delegations a root-signed `revoke` revoked, and its state in flash
(`simulator.flash`), written before each key store change that must survive a power
cut; `reboot` resumes from flash and the modem.
It knows no MQTT library: it publishes through a `Link`, and says through
`needs_offline` and `needs_reconnect` when whoever carries it must take it offline
or reconnect. An identity (a client certificate and the key the modem made for it)
rotates the same way: a `keygen` makes the key in a spare tag and reports the CSR, an
identity stage writes the certificate and probes with it, a commit reconnects with it.
`simulator.agent` gives each device its own MQTT connection, `simulator.scale`
multiplexes many devices on a few.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    CredentialType,
    StateMessage,
    Topics,
)
from orchestrator.protocol.bundle import Bundle, BundleRejectedError, Reason, open_bundle
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.bundle_checks import DeviceView, check_operation, rejection_ids
from simulator.carry_out import carry_out
from simulator.flash import Flash, FlashRecord, Intent, UndoRecord
from simulator.modem import FunctionalMode, Modem
from simulator.operations import OPERATIONS
from simulator.probe import IdentityProber, Prober, uncached_identity_probe, uncached_probe
from simulator.reporting import Link, Reporter
from simulator.tls_identity import ClientIdentity, unknown_identity

__all__ = ["IDENTITY_FAULT", "REPLAY_FAULT", "Firmware", "Link"]

REPLAY_FAULT = "accept-replay"
"""A deliberately broken device: it takes a seq not above the last accepted."""
IDENTITY_FAULT = "identity-refused"
"""A device whose new identities the broker refuses: it presents a certificate no CA issued
for any identity but its factory one (its probe and its reconnect see the refusal)."""


class Firmware:
    """One device's protocol state machine, whatever carries its messages.

    A transport calls `handle` for each bundle in order, `check_commit_deadline` after
    it and when `commit_deadline` passes, and `go_offline` then `come_online` while
    `needs_offline` holds (the key store changes only in between). With `tls_broker`
    (the MQTT connection is TLS, validated with the active tags, presenting
    `client_identity` when the device has one) a commit or retire leaves
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
        identity_prober: IdentityProber = uncached_identity_probe,
        tls_broker: bool = False,
        protocol_version: int = PROTOCOL_VERSION,
        flash: Flash | None = None,
        identity_tag: int | None = None,
    ) -> None:
        topics.state(device_id)  # validates the id as a topic level
        if flash is None:
            cas = {item.sec_tag for item in modem.items() if item.type is CredentialType.CA_CHAIN}
            active = tuple(active_tags) or tuple(sorted(cas))
            flash = Flash(
                FlashRecord(
                    active=active,
                    identity=identity_tag,
                    signers=tuple((signers or {}).items()),
                )
            )
        self.device_id = device_id
        self.modem = modem
        self.flash = flash
        self.topics = topics
        self.protocol_version = protocol_version
        self.signers: dict[bytes, ec.EllipticCurvePublicKey] = dict(flash.record.signers)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._io = Reporter(
            device_id,
            topics=topics,
            clock=self._clock,
            version=protocol_version,
            step=flash.fuse.step,
        )
        self._io.outbox.extend(flash.record.outbox)
        self.faults = faults
        self._factory_identity = flash.record.identity
        self.tls_broker = tls_broker
        self._probe_timeout = probe_timeout
        self._prober = prober
        self._identity_prober = identity_prober
        self._versions = SUPPORTED_VERSIONS if protocol_version == PROTOCOL_VERSION else (1,)

    # -- what the device holds and tells ---------------------------------------------------

    @property
    def record(self) -> FlashRecord:
        """What the device's flash holds now."""
        return self.flash.record

    @property
    def last_seq(self) -> int:
        """The last accepted sequence number."""
        return self.record.last_seq

    @last_seq.setter
    def last_seq(self, value: int) -> None:
        self.flash.provision(last_seq=value)

    @property
    def active_tags(self) -> list[int]:
        """The sec_tags every TLS socket is given, the broker connection's included."""
        return list(self.record.active)

    @property
    def identity_tag(self) -> int | None:
        """The sec_tag whose client certificate and key the broker connection presents."""
        return self.record.identity

    def client_identity(self) -> ClientIdentity | None:
        """What the broker connection presents: the identity tag's certificate and key."""
        tag = self.record.identity
        if tag is None or not self._holds_identity(tag):
            return None
        return self._presented(tag)

    def _presented(self, tag: int) -> ClientIdentity:
        """The certificate and key a socket given `tag` presents (a stranger's, with the fault)."""
        identity = self.modem.client_identity(tag)
        if IDENTITY_FAULT in self.faults and tag != self._factory_identity:
            return unknown_identity(self.device_id)
        return identity

    @property
    def reports(self) -> list[ReportMessage]:
        """Every report the device made, in order."""
        return self._io.reports

    def now(self) -> datetime:
        """The device's clock."""
        return self._clock()

    def state_message(self, *, now: datetime | None = None) -> StateMessage:
        """What `AT%CMNG=1` and `AT%CERTEXPIRY` give, with the active and identity tags.

        Client certificates go in full (`pem`), so certfleet learns them (to revoke one).
        """
        credentials = [
            item.to_entry().model_copy(update={"pem": item.content.decode("ascii")})
            if item.type is CredentialType.CLIENT_CERT and item.content.isascii()
            else item.to_entry()
            for item in self.modem.items()
        ]
        return StateMessage(
            v=1 if self.protocol_version == 1 else 2,
            device_id=self.device_id,
            time=now or self._clock(),
            credentials=credentials,
            active_tags=list(self.record.active),
            identity_tag=self.record.identity if self.protocol_version != 1 else None,
        )

    def _report(
        self,
        bundle: Bundle | None,
        phase: Phase,
        reason: Reason = Reason.OK,
        detail: str = "",
        *,
        active: Sequence[int] | None = None,
        seq: int = 0,
        rollout_id: str = "",
        op: str | None = None,
        csr: str | None = None,
    ) -> ReportMessage:
        return self._io.report(
            bundle,
            phase,
            reason,
            detail,
            active=self.record.active if active is None else active,
            seq=seq,
            rollout_id=rollout_id,
            op=op,
            csr=csr,
        )

    async def _flush(self, link: Link) -> None:
        await self._io.flush(link)
        if self.record.outbox:  # sent: a reboot must not send them again
            self.flash.write("reports sent", outbox=())

    # -- online and offline ----------------------------------------------------------------

    @property
    def needs_offline(self) -> bool:
        """Key store work is waiting: the device must go offline (`CFUN=4`) for it."""
        return self.record.intent is not None

    @property
    def needs_reconnect(self) -> bool:
        """A commit or retire changed the tags that validate the broker: prove them."""
        return self.record.pending is not None

    @property
    def commit_deadline(self) -> float | None:
        """When a healthy stage (or a keygen that reported its CSR) falls back by itself."""
        undo = self.record.undo
        if undo is None or undo.stage is None:
            return None
        waiting = undo.health_ok or (undo.kind == "keygen" and undo.written)
        return float(undo.stage.commit_by or 0) if waiting else None

    def go_offline(self) -> None:
        """`CFUN=4`, then the key store work that was waiting for it."""
        self.modem.cfun(FunctionalMode.OFFLINE)
        self._carry_out()

    async def come_online(self, link: Link) -> None:
        """Back online (connected): the state, the queued reports, then a pending probe."""
        self.modem.cfun(FunctionalMode.ONLINE)
        await self._io.publish(link, self.state_message().to_json(), "state")
        await self._flush(link)
        undo = self.record.undo
        if undo is not None and undo.kind == "stage" and undo.written and not undo.health_ok:
            await self._probe(link, undo)

    def broker_ca_chains(self) -> list[bytes]:
        """The CA chains the broker connection is validated with: those of the active tags."""
        return [
            self.modem.read(tag, CredentialType.CA_CHAIN)
            for tag in self.record.active
            if self.modem.exists(tag, CredentialType.CA_CHAIN)
        ]

    def connect_succeeded(self) -> None:
        """The broker accepted the connection: a list change waiting for that proof stands."""
        pending = self.record.pending
        if pending is None:
            return
        bundle = pending.bundle
        if bundle.op == "commit" and self.record.identity != pending.previous_identity:
            done = self._report(bundle, Phase.COMMITTED, detail=f"identity sec_tag {bundle.tag}")
        elif bundle.op == "commit":
            done = self._report(bundle, Phase.COMMITTED)
        else:
            done = self._report(bundle, Phase.RETIRED, detail=f"deleted {list(bundle.tags)}")
        self._decide("list proven", Intent(wipe=pending.then_wipe, reports=(done,)), pending=None)

    def connect_failed(self) -> bool:
        """The connection failed: a list change waiting for proof returns to the previous list.

        Returns whether it did, so the transport reconnects at once over the old trust.
        """
        pending = self.record.pending
        if pending is None:
            return False
        detail = (
            "the broker refused the new identity or its chain did not validate"
            if self.record.identity != pending.previous_identity
            else "the broker's chain did not validate with the new tag list"
        )
        fallback = self._report(
            pending.bundle,
            Phase.FALLBACK,
            Reason.BROKER_UNREACHABLE,
            detail,
            active=pending.previous,
        )
        self._decide(
            "change refused by the broker",
            Intent(wipe=pending.otherwise_wipe, reports=(fallback,)),
            pending=None,
            active=pending.previous,
            identity=pending.previous_identity,
            undo=None,
        )
        return True

    def reboot(self) -> None:
        """Power is back: what RAM held is gone; flash and the key store tell the rest.

        Work decided before the cut is still in flash: `needs_offline` carries out an
        interrupted key store change, `needs_reconnect` proves an interrupted list
        change, and `come_online` probes a stage whose probe never ran.
        """
        self.modem.cfun(FunctionalMode.OFFLINE)
        self.flash.fuse.disarm()
        record = self.record
        self.signers = dict(record.signers)
        self._io.outbox[:] = record.outbox

    # -- bundles ---------------------------------------------------------------------------

    async def handle(self, link: Link, payload: bytes) -> None:
        """Act on one received bundle (still unverified), publishing through `link`."""
        await self._handle(link, payload)

    async def _handle(self, link: Link, payload: bytes) -> None:
        now = self._clock()
        undo = self.record.undo
        if undo is not None and undo.expired(now.timestamp()):
            self.flash.write("undo record expired", undo=None)
        try:
            bundle = open_bundle(
                payload,
                signers=self.signers,
                device_id=self.device_id,
                last_seq=0 if REPLAY_FAULT in self.faults else self.last_seq,
                now=now,
                versions=self._versions,
                revocation=self.record.revocation,
            )
            check_operation(bundle, self._view())
        except BundleRejectedError as exc:
            seq, rollout_id, op = rejection_ids(payload, exc.reason)
            rejected = self._report(
                None, Phase.REJECTED, exc.reason, exc.detail, seq=seq, rollout_id=rollout_id, op=op
            )
            await self._io.send(link, rejected)
            return
        # The seq becomes the last accepted only once `received` is with the broker: a
        # device that could not say so has done nothing, and takes a redelivery as new.
        await self._io.send(link, self._report(bundle, Phase.RECEIVED))
        before = (self.record.active, self.record.identity)
        decision = OPERATIONS[bundle.op](bundle, self.record, self.tls_broker, self._report)
        self._decide(decision.what, decision.work, **decision.changes)
        self.signers = dict(self.record.signers)
        if not self.needs_offline and not self.needs_reconnect:
            # A change certfleet learns from the state, published before the report of it.
            if (self.record.active, self.record.identity) != before:
                await self._io.publish(link, self.state_message().to_json(), "state")
            await self._flush(link)

    def _view(self) -> DeviceView:
        return DeviceView(
            active=self.record.active,
            identity=self.record.identity,
            undo=self.record.undo,
            holds_ca=self._holds_ca,
            holds_identity=self._holds_identity,
            key_digest=self._key_digest,
            signers=tuple(self.signers),
        )

    def _holds_identity(self, tag: int) -> bool:
        """Whether `tag` holds a client certificate and key that no decided work deletes."""
        intent = self.record.intent
        if intent is not None and tag in intent.wipe:
            return False
        return self.modem.exists(tag, CredentialType.CLIENT_CERT) and self.modem.exists(
            tag, CredentialType.CLIENT_KEY
        )

    def _key_digest(self, tag: int) -> str | None:
        """The `%CMNG=1` digest of `tag`'s key (of its public key's SPKI DER), if it holds one."""
        if not self.modem.exists(tag, CredentialType.CLIENT_KEY):
            return None
        return self.modem.digest(tag, CredentialType.CLIENT_KEY)

    def _holds_ca(self, tag: int) -> bool:
        """Whether `tag` holds a CA chain item once the work already decided is done."""
        intent = self.record.intent
        if intent is not None and tag == intent.write_tag:
            return any(item.type is CredentialType.CA_CHAIN for item in intent.items)
        if intent is not None and tag in intent.wipe:
            return False
        return self.modem.exists(tag, CredentialType.CA_CHAIN)

    def _decide(self, what: str, intent: Intent, **changes: object) -> None:
        """Persist a decision in one flash write: key store work as an intent, or reports."""
        if intent.wipe or intent.items:
            current = self.record.intent
            merged = intent if current is None else current.then(intent)
            self.flash.write(what, intent=merged, **changes)
            return
        self._io.outbox.extend(intent.reports)
        self.flash.write(what, outbox=tuple(self._io.outbox), **changes)

    def _probe_failed(self, undo: UndoRecord, report: ReportMessage | None = None) -> None:
        self._decide(
            "stage ended",
            Intent(wipe=(undo.tag,), reports=() if report is None else (report,)),
            undo=None,
        )

    async def _probe(self, link: Link, undo: UndoRecord) -> None:
        stage = undo.stage
        assert stage is not None  # noqa: S101 -- a stage record's
        assert stage.probe is not None  # noqa: S101 -- required by the payload rules
        probe = stage.probe
        chains = [
            self.modem.read(tag, CredentialType.CA_CHAIN)
            for tag in probe.tags
            if self.modem.exists(tag, CredentialType.CA_CHAIN)
        ]
        host, port = probe.host, probe.port
        if "probe-refused" in self.faults:
            host, port = "127.0.0.1", 1  # fault injection: the device's network refuses the probe
        if undo.identity:
            identity = self._presented(undo.tag)
            result = await self._identity_prober(host, port, chains, identity, self._probe_timeout)
        else:
            result = await self._prober(host, port, chains, self._probe_timeout)
        if result.ok:
            self.flash.write("probe passed", undo=dataclasses.replace(undo, health_ok=True))
            await self._io.send(link, self._report(stage, Phase.HEALTH_OK, detail=result.detail))
            return
        self._probe_failed(undo)
        reason = Reason(result.reason or "handshake_error")
        await self._io.send(link, self._report(stage, Phase.HEALTH_FAILED, reason, result.detail))

    def check_commit_deadline(self) -> None:
        """Fall back by itself when a healthy stage saw no commit before `commit_by`."""
        deadline, undo = self.commit_deadline, self.record.undo
        if deadline is None or undo is None or self._clock().timestamp() < deadline:
            return
        detail = "no commit before the deadline; the staged item was discarded"
        self._probe_failed(
            undo, self._report(undo.stage, Phase.FALLBACK, Reason.COMMIT_TIMEOUT, detail)
        )

    # -- the key store ---------------------------------------------------------------------

    def _carry_out(self) -> None:
        """Do the persisted intent (offline), then persist its outcome in one write."""
        intent = self.record.intent
        if intent is None:
            return
        done = carry_out(intent, self.record.undo, self.modem, self.flash.fuse.step, self._report)
        self._io.outbox.extend(done.reports)
        self.flash.write("intent done", intent=None, outbox=tuple(self._io.outbox), **done.changes)
