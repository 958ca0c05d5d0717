"""The firmware model under random bundles, probe outcomes, power cuts and reconnects.

A hypothesis state machine sends the device the bundles certfleet's rollouts send
(trust.add, trust.replace, trust.retire: stage or retire, commit, rollback, built by
`orchestrator.services.rollout.push.bundle_body`) and manual ones (`device send`: any
op, empty rollout id, two CA items, an item over 4 KB), rotates signer keys, lets time
pass, cuts the power between any two steps and reconnects. After every step the
device's trust must work (docs/protocol.md §5, invariants): the active list is not
empty, names at most 7 distinct tags, each holding a CA chain item, and validates the
broker. Each rollback is checked against the undo record rules, and a rejection after
`received` may only be `modem_error` (or `replay`, a duplicate delivery).

`IdentityFirmwareMachine` runs the same device with an identity (a client certificate
and key in sec_tag 44, a broker that requires one of the device CA) and adds
identity.rotate's bundles: keygen, the certificate's stage (from the device CA, a CA the
broker does not know, or for another key), the commit, the retire of the old identity,
the broker revoking a staged certificate. After every step the device must also keep a
working identity: its identity tag holds a certificate and key the broker takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_states import PushStep
from orchestrator.protocol import SIGNERS_MAX, TAG_LIST_MAX, CredentialType
from orchestrator.protocol.bundle import Bundle, Credential, Probe, Reason, SignerKey
from orchestrator.protocol.bundle import encode_payload as encode
from orchestrator.protocol.cose import key_id
from orchestrator.protocol.delegation import ROOT_OPS, Revocation
from orchestrator.protocol.report import Phase, ReportMessage
from orchestrator.services.bundles import BundleBody, identity_stage_body
from orchestrator.services.rollout.push import bundle_body
from simulator.flash import PowerCut
from tests.fake_rollouts import trust_add_spec
from tests.properties import examples
from tests.unit.firmware_world import (
    CAS,
    DEVICE_CA,
    KEYS,
    ONLINE,
    World,
    broker_accepts,
    certificate_for,
    run,
)

pytestmark = pytest.mark.unit

TAGS = (42, 43, 44)
UNDO_WINDOW = 3600
DEVICE_TIMEOUT = 600
OUTCOMES = st.sampled_from(["truth", "truth", "ok", "unknown_ca", "timeout"])
CUTS = st.none() | st.integers(min_value=0, max_value=14)
RIDS = st.sampled_from(["r1", "r2"])


def _spec(kind: str, ca: str, tag: int, spare: int, probe_with: str) -> RolloutSpec:
    """An operator's rollout of CA `ca` (none for a retire), as certfleet stores it."""
    return trust_add_spec(
        kind=kind,
        ca_pems=() if kind == "trust.retire" else (CAS[ca].pem.decode(),),
        tag=tag,
        spare_tag=spare,
        probe_with=probe_with,
        device_timeout_seconds=DEVICE_TIMEOUT,
    )


@dataclass(frozen=True)
class Undo:
    """The undo record the device should hold, as the test follows it from the reports."""

    rid: str
    kind: str
    undo_by: int | None = None


class FirmwareMachine(RuleBasedStateMachine):
    """One device (CA A in sec_tag 42, active [42], a TLS broker connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.world = self.make_world()
        self.firmware = self.world.firmware
        self.specs: dict[str, RolloutSpec] = {}
        self.undo_by: dict[int, int | None] = {}
        self.undo: Undo | None = None
        self.received: list[bytes] = []
        self.csrs: dict[str, tuple[str, int]] = {}
        """rid -> the last CSR field a keygen of it reported, and its tag."""
        self.revocation = Revocation()
        """What the device must refuse: every revoke it was sent, applied in turn."""
        self.worker: int | None = None
        """The online key (of `ONLINE`) that signs bundles under a delegation; None: the root."""

    def make_world(self) -> World:
        """The device and its surroundings."""
        return World()

    @property
    def clock(self) -> datetime:
        """The device's clock (the world's)."""
        return self.world.clock

    def sign(self, bundle: Bundle) -> bytes:
        """As certfleet signs: a worker's online key under a fresh delegation, unless the
        op is root-only or the device would refuse the worker's delegation (revoked)."""
        worker = self.worker
        if worker is None or bundle.op in ROOT_OPS or self.revoked(worker):
            return self.world.sign(bundle)
        return self.world.sign_delegated(bundle, ONLINE[worker])

    def revoked(self, worker: int) -> bool:
        """Whether a delegation of `ONLINE[worker]` issued now is revoked on the device."""
        kid = key_id(ONLINE[worker].public_key())
        return kid in self.revocation.kids or int(self.clock.timestamp()) < self.revocation.before

    def bundle(self, body: BundleBody, rid: str, undo_by: int | None = None) -> Bundle:
        """The bundle certfleet would sign for `body` (with `undo_by` for a commit)."""
        bundle = self.world.bundle(
            body.op,
            rid,
            tag=body.tag,
            tags=body.tags,
            credentials=body.credentials,
            probe=body.probe,
            active=body.active,
            commit_by=body.commit_by,
            signer=body.signer,
            retire_kid=body.retire_kid,
            undo_by=undo_by,
            subject=body.subject,
        )
        self.undo_by[bundle.seq] = undo_by
        return bundle

    # -- delivery --------------------------------------------------------------------------

    def deliver(self, payload: bytes, seq: int, cut: int | None) -> list[ReportMessage]:
        """Deliver a bundle, cutting the power `cut` steps in; the reports about it."""
        firmware = self.firmware
        items, active = firmware.modem.items(), firmware.active_tags
        new = self.world.deliver(payload, cut=cut)
        self.learn(new)
        ours = [r for r in new if r.seq == seq]
        phases = [r.phase for r in ours]
        if Phase.RECEIVED in phases:
            self.received.append(payload)
            later = ours[phases.index(Phase.RECEIVED) :]
            assert all(
                r.reason in (Reason.MODEM_ERROR, Reason.REPLAY)
                for r in later
                if r.phase is Phase.REJECTED
            ), "after received, only modem_error (or replay) may reject"
        elif ours and not any(r.phase is Phase.FALLBACK for r in new):
            # refused, and no commit deadline passed meanwhile (its fallback deletes a tag)
            assert (firmware.modem.items(), firmware.active_tags) == (items, active)
        return ours

    def power_or_network(self, cut: int | None, action: Callable[[], None]) -> None:
        """Run `action` (no bundle), cutting the power `cut` steps in; learn its reports."""
        start = len(self.firmware.reports)
        if cut is not None:
            self.firmware.flash.fuse.arm(cut)
        try:
            action()
        except PowerCut:
            self.world.reboot(None)
        self.firmware.flash.fuse.disarm()
        self.learn(self.firmware.reports[start:])

    def learn(self, reports: Sequence[ReportMessage]) -> None:
        """Follow the undo record the contract says the device holds now."""
        for report in reports:
            phase, op = report.phase, report.op
            if phase is Phase.CSR and report.csr is not None:
                undo = self.firmware.record.undo
                if undo is not None and undo.kind == "keygen":
                    self.csrs[report.rollout_id] = (report.csr, undo.tag)
            if phase is Phase.RECEIVED and op in ("stage", "keygen"):
                self.undo = Undo(report.rollout_id, "stage")
            elif phase is Phase.RECEIVED and op == "retire":
                self.undo = None
            elif phase is Phase.COMMITTED and op == "commit":
                self.undo = Undo(report.rollout_id, "commit", self.undo_by.get(report.seq))
            elif phase in (Phase.HEALTH_FAILED, Phase.FALLBACK, Phase.ROLLED_BACK) or (
                phase is Phase.REJECTED and report.reason is Reason.MODEM_ERROR
            ):
                self.undo = None

    def expected_rollback(self, rid: str) -> Reason:
        undo, now = self.undo, self.clock.timestamp()
        if undo is None or (undo.undo_by is not None and now >= undo.undo_by):
            return Reason.NOTHING_TO_UNDO
        return Reason.SUPERSEDED if undo.rid != rid else Reason.OK

    def send_rollback(self, rid: str, cut: int | None) -> None:
        expected = self.expected_rollback(rid)
        body = BundleBody(op="rollback", tag=self.specs[rid].spare_tag if rid else None)
        bundle = self.bundle(body, rid)
        ours = self.deliver(self.sign(bundle), bundle.seq, cut)
        outcomes = {(r.phase, r.reason) for r in ours if r.phase is not Phase.RECEIVED}
        if expected is Reason.OK:
            assert (Phase.ROLLED_BACK, Reason.OK) in outcomes, outcomes
        else:
            assert outcomes == {(Phase.REJECTED, expected)}, (expected, outcomes)

    # -- rollouts, as certfleet sends them -------------------------------------------------

    @initialize(
        history=st.sampled_from(["fresh", "trust.add", "trust.replace", "trust.replace"]),
        rid=st.sampled_from(["", "r1"]),
    )
    def provisioned(self, history: str, rid: str) -> None:
        """A device new from the factory, or one whose last change was a committed rollout."""
        if history != "fresh":
            self.start_rollout(_spec(history, "B", 42, 43, "spare"), rid, "truth", None)
            self.rollout_commits(rid, None)
            if not rid:
                del self.specs[rid]  # a manual send, not a rollout
            assert self.firmware.record.undo is not None

    def start_rollout(self, spec: RolloutSpec, rid: str, outcome: str, cut: int | None) -> None:
        try:
            body = bundle_body(
                spec, PushStep.STAGE, self.firmware.active_tags, self.clock, device_id="dev-1"
            )
        except CertfleetError:
            return  # certfleet would not send it (no tag left, or more than 7)
        self.specs[rid] = spec
        self.world.outcome = outcome
        bundle = self.bundle(body, rid)
        self.deliver(self.sign(bundle), bundle.seq, cut)

    @rule(
        kind=st.sampled_from(["trust.add", "trust.replace", "trust.retire"]),
        ca=st.sampled_from("ABC"),
        probe_with=st.sampled_from(["spare", "active"]),
        rid=RIDS,
        outcome=OUTCOMES,
        cut=CUTS,
        data=st.data(),
    )
    def rollout_starts(
        self,
        *,
        kind: str,
        ca: str,
        probe_with: str,
        rid: str,
        outcome: str,
        cut: int | None,
        data: st.DataObject,
    ) -> None:
        """An operator's rollout: `tag` one of the device's active tags, `spare` another."""
        active = self.firmware.active_tags
        tag = data.draw(st.sampled_from(active), label="tag")
        spare = data.draw(st.sampled_from([t for t in TAGS if t != tag]), label="spare")
        self.start_rollout(_spec(kind, ca, tag, spare, probe_with), rid, outcome, cut)

    @precondition(lambda self: self.specs)
    @rule(cut=CUTS, data=st.data())
    def rollout_commits_drawn(self, cut: int | None, data: st.DataObject) -> None:
        self.rollout_commits(data.draw(st.sampled_from(sorted(self.specs)), label="rid"), cut)

    def rollout_commits(self, rid: str, cut: int | None) -> None:
        spec = self.specs[rid]
        if spec.kind == "trust.retire":
            return  # a retire has no commit
        body = bundle_body(spec, PushStep.COMMIT, self.firmware.active_tags, self.clock)
        bundle = self.bundle(body, rid, undo_by=int(self.clock.timestamp()) + UNDO_WINDOW)
        self.deliver(self.sign(bundle), bundle.seq, cut)

    @precondition(lambda self: self.specs)
    @rule(cut=CUTS, data=st.data())
    def rollout_rolls_back(self, cut: int | None, data: st.DataObject) -> None:
        self.send_rollback(data.draw(st.sampled_from(sorted(self.specs)), label="rid"), cut)

    # -- manual sends (`certfleet device send`) --------------------------------------------

    @rule(
        ca=st.sampled_from("ABC"),
        tag=st.sampled_from(TAGS),
        active=st.lists(st.sampled_from(TAGS), min_size=1, max_size=3, unique=True),
        outcome=OUTCOMES,
        cut=CUTS,
    )
    def manual_stage(
        self, ca: str, tag: int, active: list[int], outcome: str, cut: int | None
    ) -> None:
        self.world.outcome = outcome
        now = int(self.clock.timestamp())
        body = BundleBody(
            op="stage",
            tag=tag,
            credentials=(Credential(CredentialType.CA_CHAIN, CAS[ca].pem.decode()),),
            probe=Probe(host="broker.example.net", port=8883, tags=(tag,)),
            active=tuple(active),
            commit_by=now + DEVICE_TIMEOUT,
        )
        bundle = self.bundle(body, "")
        self.deliver(self.sign(bundle), bundle.seq, cut)

    @rule(tag=st.sampled_from(TAGS), oversize=st.booleans(), cut=CUTS)
    def manual_stage_the_modem_cannot_hold(self, tag: int, oversize: bool, cut: int | None) -> None:
        """Two CA items for one tag (as `--ca a --ca b` once sent), or one over 4096 bytes."""
        pem = CAS["B"].pem.decode()
        if oversize:
            pem += "\n" * (4097 - len(pem))  # CA_CHAIN_MAX_BYTES + 1
        body = BundleBody(
            op="stage",
            tag=tag,
            credentials=(Credential(CredentialType.CA_CHAIN, pem),),
            probe=Probe(host="broker.example.net", port=8883, tags=(tag,)),
            active=(tag,),
            commit_by=int(self.clock.timestamp()) + DEVICE_TIMEOUT,
        )
        bundle = self.bundle(body, "")
        payload = encode(bundle)
        if not oversize:
            document = cbor2.loads(payload)
            document["creds"].append({"type": 0, "pem": CAS["A"].pem.decode()})
            payload = cbor2.dumps(document, canonical=True)
        ours = self.deliver(self.world.sign(payload), bundle.seq, cut)
        expected = Reason.TOO_LARGE if oversize else Reason.BAD_PAYLOAD
        assert {(r.phase, r.reason) for r in ours} == {(Phase.REJECTED, expected)}

    @rule(tag=st.sampled_from(TAGS), cut=CUTS)
    def manual_commit(self, tag: int, cut: int | None) -> None:
        bundle = self.bundle(BundleBody(op="commit", tag=tag), "")
        self.deliver(self.sign(bundle), bundle.seq, cut)

    @rule(cut=CUTS)
    def manual_rollback(self, cut: int | None) -> None:
        self.send_rollback("", cut)

    @rule(
        tags=st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True),
        active=st.lists(st.sampled_from(TAGS), min_size=1, max_size=3, unique=True),
        cut=CUTS,
    )
    def manual_retire(self, tags: list[int], active: list[int], cut: int | None) -> None:
        bundle = self.bundle(BundleBody(op="retire", tags=tuple(tags), active=tuple(active)), "")
        self.deliver(self.sign(bundle), bundle.seq, cut)

    @rule(new=st.integers(min_value=0, max_value=len(KEYS) - 1), retire=st.booleans(), cut=CUTS)
    def signer_rotates(self, new: int, retire: bool, cut: int | None) -> None:
        trusted = set(self.firmware.signers)
        key = KEYS[new].public_key()
        point = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        old = next(key_id(k.public_key()) for k in KEYS if key_id(k.public_key()) in trusted)
        body = BundleBody(
            op="trust-signer",
            signer=SignerKey(kid=key_id(key), public_point=point),
            retire_kid=old if retire else None,
        )
        bundle = self.bundle(body, "")
        ours = self.deliver(self.sign(bundle), bundle.seq, cut)
        after = (trusted | {key_id(key)}) - ({old} if retire else set())
        if not after or len(after) > SIGNERS_MAX:
            assert {(r.phase, r.reason) for r in ours} == {
                (Phase.REJECTED, Reason.INVALID_OPERATION)
            }
            assert set(self.firmware.signers) == trusted
        else:
            assert set(self.firmware.signers) == after

    # -- delegations and their revocation ----------------------------------------------------

    @rule(worker=st.none() | st.integers(min_value=0, max_value=len(ONLINE) - 1))
    def worker_changes(self, worker: int | None) -> None:
        """Another worker (its own online key) signs from now on, or the root itself."""
        self.worker = worker

    @rule(
        kids=st.lists(st.integers(min_value=0, max_value=len(ONLINE) - 1), unique=True),
        before=st.sampled_from(["none", "past", "ahead"]),
        cut=CUTS,
    )
    def revocation_sent(self, kids: list[int], before: str, cut: int | None) -> None:
        """`certfleet keys revoke`: the whole list of revoked key ids, and maybe a time."""
        now = int(self.clock.timestamp())
        time = {"none": 0, "past": now - 1000, "ahead": now + 1}[before]
        revoked = tuple(key_id(ONLINE[n].public_key()) for n in kids)
        bundle = self.world.bundle("revoke", "", revoke_kids=revoked, revoke_before=time)
        ours = self.deliver(self.sign(bundle), bundle.seq, cut)
        assert ours, "no report about the revoke"
        self.revocation = self.revocation.applied(revoked, time)
        assert self.firmware.record.revocation == self.revocation

    @precondition(lambda self: self.revocation.kids or self.revocation.before)
    @rule(worker=st.integers(min_value=0, max_value=len(ONLINE) - 1), cut=CUTS)
    def revoked_worker_refused(self, worker: int, cut: int | None) -> None:
        """A bundle under a revoked delegation: delegation_revoked, naming no bundle."""
        if not self.revoked(worker):
            return
        body = BundleBody(op="rollback")
        bundle = self.bundle(body, "")
        ours = self.deliver(self.world.sign_delegated(bundle, ONLINE[worker]), 0, cut)
        # (a power cut before the rejection went out: the redelivery is refused again)
        assert {(r.phase, r.reason, r.rollout_id) for r in ours} == {
            (Phase.REJECTED, Reason.DELEGATION_REVOKED, "")
        }, ours

    # -- time, the network, the power -----------------------------------------------------

    @rule(seconds=st.sampled_from([60, 700, 4000]), cut=CUTS)
    def time_passes(self, seconds: int, cut: int | None) -> None:
        self.world.clock += timedelta(seconds=seconds)

        def deadline() -> None:
            self.firmware.check_commit_deadline()
            self.world.settle()

        self.power_or_network(cut, deadline)

    @rule(cut=CUTS)
    def reconnects(self, cut: int | None) -> None:
        self.power_or_network(cut, lambda: self.world.settle(connect=True))

    @precondition(lambda self: self.received)
    @rule(data=st.data())
    def an_old_bundle_comes_again(self, data: st.DataObject) -> None:
        payload = data.draw(st.sampled_from(self.received))
        start = len(self.firmware.reports)
        run(self.firmware.handle(self.world.link, payload))
        reasons = {(r.phase, r.reason) for r in self.firmware.reports[start:]}
        assert reasons <= {
            (Phase.REJECTED, Reason.REPLAY),
            (Phase.REJECTED, Reason.UNKNOWN_KEY),
            (Phase.REJECTED, Reason.DELEGATION_REVOKED),
            (Phase.REJECTED, Reason.DELEGATION_EXPIRED),
        }

    # -- what must hold after every step ---------------------------------------------------

    @invariant()
    def the_trust_set_works(self) -> None:
        firmware = self.firmware
        active = firmware.active_tags
        assert active, "the active list is empty"
        assert len(active) <= TAG_LIST_MAX, active
        assert len(set(active)) == len(active), active
        for tag in active:
            assert firmware.modem.exists(tag, CredentialType.CA_CHAIN), (tag, active)
        assert broker_accepts(firmware.broker_ca_chains()), "the device lost its broker"
        assert not firmware.needs_offline
        assert not firmware.needs_reconnect

    @invariant()
    def the_revocation_is_in_flash(self) -> None:
        assert self.firmware.record.revocation == self.revocation


IDENTITY_TAGS = (44, 45)
IDENTITY_OUTCOMES = st.sampled_from(["truth", "ok", "ok", "identity_refused", "timeout"])


class IdentityFirmwareMachine(FirmwareMachine):
    """The device with an identity in sec_tag 44 and a broker that requires one."""

    def make_world(self) -> World:
        """The device holds a device CA certificate and key in 44; the broker checks them."""
        return World(identity=True)

    @rule(rid=RIDS, cut=CUTS)
    def identity_rotation_starts(self, rid: str, cut: int | None) -> None:
        """certfleet's identity.rotate: keygen into the spare identity tag."""
        identity = self.firmware.identity_tag
        assert identity is not None
        spare = next(t for t in IDENTITY_TAGS if t != identity)
        spec = trust_add_spec(
            kind="identity.rotate",
            ca_pems=(),
            tag=identity,
            spare_tag=spare,
            device_timeout_seconds=DEVICE_TIMEOUT,
        )
        self.start_rollout(spec, rid, "truth", cut)

    @rule(
        rid=RIDS,
        issuer=st.sampled_from(["device CA", "device CA", "unknown CA"]),
        outcome=IDENTITY_OUTCOMES,
        revoked=st.booleans(),
        cuts=st.tuples(CUTS, CUTS, CUTS),
    )
    def identity_rotation_runs(
        self,
        rid: str,
        issuer: str,
        outcome: str,
        revoked: bool,
        cuts: tuple[int | None, int | None, int | None],
    ) -> None:
        """keygen, the certificate's stage and the commit in a row, each maybe cut short."""
        self.csrs.pop(rid, None)
        self.identity_rotation_starts(rid, cuts[0])
        if rid not in self.csrs:
            return
        self.stage_certificate(rid, issuer, outcome, cuts[1])
        if revoked:
            self.broker_revokes_the_staged_certificate()
        self.rollout_commits(rid, cuts[2])

    @rule(tag=st.sampled_from((*TAGS, 45)), cut=CUTS)
    def manual_keygen(self, tag: int, cut: int | None) -> None:
        bundle = self.world.keygen(tag, "")
        self.deliver(self.sign(bundle), bundle.seq, cut)

    @precondition(lambda self: self.csrs)
    @rule(
        issuer=st.sampled_from(["device CA", "device CA", "unknown CA", "another key"]),
        outcome=IDENTITY_OUTCOMES,
        cut=CUTS,
        data=st.data(),
    )
    def certificate_staged(
        self, issuer: str, outcome: str, cut: int | None, data: st.DataObject
    ) -> None:
        """certfleet issues a certificate for a reported CSR and stages it."""
        self.stage_certificate(
            data.draw(st.sampled_from(sorted(self.csrs)), label="rid"), issuer, outcome, cut
        )

    def stage_certificate(self, rid: str, issuer: str, outcome: str, cut: int | None) -> None:
        csr, tag = self.csrs[rid]
        if issuer == "another key":
            other = KEYS[5].public_key()
            pem = certificate_for(other, "dev-1")
        else:
            pem = self.world.issue(csr, ca=DEVICE_CA if issuer == "device CA" else CAS["C"])
        active = self.firmware.active_tags
        body = identity_stage_body(
            cert_pem=pem,
            tag=tag,
            probe_host="broker.example.net",
            probe_port=8883,
            probe_tags=active,
            active=active,
            commit_by=self.clock + timedelta(seconds=DEVICE_TIMEOUT),
        )
        self.world.identity_outcome = outcome
        bundle = self.bundle(body, rid)
        ours = self.deliver(self.sign(bundle), bundle.seq, cut)
        if issuer == "another key" and ours:
            assert (ours[0].phase, ours[0].reason) in {
                (Phase.REJECTED, Reason.KEY_MISMATCH),
                (Phase.REJECTED, Reason.NOTHING_STAGED),
            }, ours

    @precondition(lambda self: self.specs)
    @rule(cut=CUTS, data=st.data())
    def old_identity_retired(self, cut: int | None, data: st.DataObject) -> None:
        """After the soak: the retire of the identity the rollout started from."""
        rid = data.draw(st.sampled_from(sorted(self.specs)), label="rid")
        spec = self.specs[rid]
        if not spec.is_identity:
            return
        in_use = self.firmware.identity_tag
        body = bundle_body(spec, PushStep.RETIRE, self.firmware.active_tags, self.clock)
        bundle = self.bundle(body, rid)
        ours = self.deliver(self.sign(bundle), bundle.seq, cut)
        if spec.tag == in_use:
            assert {(r.phase, r.reason) for r in ours} == {(Phase.REJECTED, Reason.TAG_IN_USE)}

    @rule()
    def broker_revokes_the_staged_certificate(self) -> None:
        """The broker refuses a certificate staged but not in use (revoked, say)."""
        undo = self.firmware.record.undo
        modem = self.firmware.modem
        if undo is None or not undo.identity or undo.kind == "commit":
            return
        if undo.tag == self.firmware.identity_tag or not modem.exists(
            undo.tag, CredentialType.CLIENT_CERT
        ):
            return
        pem = modem.read(undo.tag, CredentialType.CLIENT_CERT)
        self.world.refused.add(x509.load_pem_x509_certificate(pem).serial_number)

    @invariant()
    def the_identity_works(self) -> None:
        assert self.world.has_a_working_identity(), "the device lost a working identity"
        assert self.firmware.identity_tag in IDENTITY_TAGS


_SETTINGS = settings(
    max_examples=examples(200),  # derandomized in make test (tests/properties.py)
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FirmwareMachine.TestCase.settings = _SETTINGS
IdentityFirmwareMachine.TestCase.settings = _SETTINGS
test_firmware_keeps_working_trust = FirmwareMachine.TestCase
test_firmware_keeps_working_trust_and_identity = IdentityFirmwareMachine.TestCase
