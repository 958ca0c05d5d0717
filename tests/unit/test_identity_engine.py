"""The identity.rotate engine against in-memory ports: keygen, CSR, issuance, stage, commit,
retire after the soak, revocation; refusals, the issuer away, abort and rollback."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.errors import IssuerUnavailableError
from orchestrator.domain.identity_keys import spki_sha256
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import parse_selector, parse_waves
from orchestrator.domain.rollout_states import DeviceRolloutState, PushStep, RolloutState
from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.rollout import (
    RolloutError,
    apply_reports,
    command,
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    rollback_rollout,
    rollout_status,
    start_rollout,
    tick_rollouts,
)
from tests.csr_fields import common_name, csr_der, keygen_field
from tests.fake_rollouts import DEVICE_TIMEOUT, trust_add_spec
from tests.identity_rig import (
    CA_TAG,
    IDENTITY_TAG,
    SPARE_TAG,
    IdentityEngine,
    identity_spec,
    make_identity_engine,
)
from tests.rollout_rig import DEVICES, make_engine
from tests.unit.builders import NOW, credential

pytestmark = pytest.mark.unit

D = DeviceRolloutState
R = RolloutState
LATER = NOW + timedelta(seconds=1)


@pytest.fixture
def ie() -> IdentityEngine:
    return make_identity_engine()


def _keygens_sent(ie: IdentityEngine, **spec: object) -> str:
    """An identity rollout created, started, its wave dispatched and its keygens sent."""
    engine = ie.engine
    rid = create_rollout(engine.deps, identity_spec(**spec), now=NOW, actor="test", start=True)
    assert start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    assert engine.run_pushes() > 0
    return rid


def _issued(ie: IdentityEngine, devices: list[str] | None = None, **spec: object) -> str:
    """Keygens answered with honest CSRs, issuance run: the devices stand `issued`."""
    rid = _keygens_sent(ie, **spec)
    devices = devices if devices is not None else ie.engine.store.wave_members(rid, 0)
    ie.keygen(rid, *devices)
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    ie.run_issues()
    return rid


def _committed(ie: IdentityEngine, rid: str, devices: list[str]) -> None:
    engine = ie.engine
    engine.report(rid, "received", *devices)
    engine.report(rid, "staged", *devices)
    engine.report(rid, "health_ok", *devices)
    evaluate_rollout(engine.deps, rid, now=NOW)
    engine.run_pushes()
    engine.report(rid, "committed", *devices)


def _states(ie: IdentityEngine, rid: str) -> set[D]:
    return set(ie.engine.store.device_states(rid).values())


# -- targets ---------------------------------------------------------------------------------


def test_an_identity_rollout_targets_the_devices_presenting_its_tag(ie: IdentityEngine) -> None:
    """Targets: identity tag == spec.tag; their active list (CA tags) is kept unchanged."""
    ie.engine.inventory.record_states(
        [
            DeviceState(
                device_id="dev-other",
                reported_at=NOW,
                credentials=(credential(CA_TAG),),
                active_tags=(CA_TAG,),
                identity_tag=SPARE_TAG,
            )
        ],
        received_at=NOW,
    )
    rid = create_rollout(ie.engine.deps, identity_spec(), now=NOW, actor="t", start=False)
    assert sorted(ie.engine.store.device_states(rid)) == DEVICES
    assert ie.engine.store.active_tags(rid, ["dev-00"]) == {"dev-00": [CA_TAG]}
    with pytest.raises(RolloutError, match="as its identity tag"):
        create_rollout(
            ie.engine.deps, identity_spec(tag=43, spare_tag=46), now=NOW, actor="t", start=False
        )


def test_expiring_days_selects_by_the_client_certificates_expiry(ie: IdentityEngine) -> None:
    """expiring:5 finds none (they expire in 10 days); expiring:30 finds all ten."""
    with pytest.raises(RolloutError, match="no device matches"):
        create_rollout(
            ie.engine.deps,
            identity_spec(selector=parse_selector("expiring:5")),
            now=NOW,
            actor="t",
            start=False,
        )
    rid = create_rollout(
        ie.engine.deps,
        identity_spec(selector=parse_selector("expiring:30")),
        now=NOW,
        actor="t",
        start=False,
    )
    assert len(ie.engine.store.device_states(rid)) == len(DEVICES)


# -- the happy path ----------------------------------------------------------------------------


def test_the_keygen_is_the_stage_step(ie: IdentityEngine) -> None:
    """Each device gets a keygen into the spare tag, its own id as subject; pending -> sent."""
    rid = _keygens_sent(ie)
    assert _states(ie, rid) == {D.SENT}
    seq, body = ie.last_bundle("dev-03", "keygen")
    assert (body["tag"], body["subject"]) == (SPARE_TAG, "dev-03")
    assert ie.engine.store.issued_seqs(rid, "dev-03", PushStep.STAGE) == [seq]


def test_a_csr_report_keeps_the_csr_and_moves_the_device_to_csr(ie: IdentityEngine) -> None:
    """received -> csr; the CSR field is kept for the rollout; the evaluation claims issuance."""
    rid = _keygens_sent(ie)
    assert ie.keygen(rid, "dev-01", "dev-02") == {rid}
    states = ie.engine.store.device_states(rid, ["dev-01", "dev-02", "dev-03"])
    assert states == {"dev-01": D.CSR, "dev-02": D.CSR, "dev-03": D.SENT}
    assert set(ie.identity.csrs(rid, DEVICES)) == {"dev-01", "dev-02"}
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    assert ie.engine.tasks.named("issue_identities") == [(rid, 0, ["dev-01", "dev-02"])]
    evaluate_rollout(ie.engine.deps, rid, now=LATER)  # claimed: not again so soon
    assert len(ie.engine.tasks.named("issue_identities")) == 1


def test_a_csr_answering_no_keygen_issued_moves_nothing(ie: IdentityEngine) -> None:
    """A csr report whose seq was never issued is unmatched, and its CSR is not kept."""
    rid = _keygens_sent(ie)
    report = DeviceReport(
        device_id="dev-01",
        rollout_id=rid,
        seq=999,
        op="keygen",
        phase="csr",
        reason="ok",
        detail="",
        time=NOW,
        csr=keygen_field("dev-01", seq=999).field,
    )
    assert apply_reports(ie.engine.deps, [report], now=NOW) == set()
    assert ie.engine.store.device_states(rid, ["dev-01"]) == {"dev-01": D.SENT}


def test_issuance_stages_the_certificate_with_a_fresh_seq(ie: IdentityEngine) -> None:
    """csr -> issued: a stage of one client certificate for the device's own key, probed
    with its CA tags, stored under the stage step with a new seq; old and new kept."""
    rid = _issued(ie)
    assert _states(ie, rid) == {D.ISSUED}
    seq, body = ie.last_bundle("dev-04", "stage")
    bundle = body["bundle"]
    keygen_seq, _ = ie.last_bundle("dev-04", "keygen")
    assert seq > keygen_seq
    assert ie.engine.store.issued_seqs(rid, "dev-04", PushStep.STAGE) == [keygen_seq, seq]
    assert bundle.tag == SPARE_TAG  # type: ignore[attr-defined]
    assert bundle.probe.tags == (CA_TAG,)  # type: ignore[attr-defined]
    assert bundle.active == (CA_TAG,)  # type: ignore[attr-defined]
    [item] = bundle.credentials  # type: ignore[attr-defined]
    assert item.type is CredentialType.CLIENT_CERT
    cert = x509.load_pem_x509_certificate(item.pem.encode())
    assert cert.public_key() == ie.keys["dev-04"].public_key()  # type: ignore[attr-defined]
    old, new = ie.identity.certificates(rid, ["dev-04"])["dev-04"]
    assert old == ie.old_pems["dev-04"]
    assert new == item.pem


def test_a_rerun_of_issuance_resends_the_stored_stage(ie: IdentityEngine) -> None:
    """Devices already issued get the same bytes again; the issuer is not asked twice."""
    rid = _issued(ie)
    sent = [data for d, data in ie.engine.publisher.sent if d == "dev-02"]
    ie.engine.tasks.issue_identities(rid, 0, ["dev-02"])
    assert ie.run_issues() == 1
    assert [data for d, data in ie.engine.publisher.sent if d == "dev-02"][-1] == sent[-1]
    assert ie.issuer.issued.count("dev-02") == 1


def test_an_unanswered_stage_goes_again_after_the_resend_period(ie: IdentityEngine) -> None:
    """An `issued` device that has not answered gets its stored stage again, byte for byte,
    once the claim's period is over; the issuer is not asked again."""
    rid = _issued(ie)
    first = {d: data for d, data in ie.engine.publisher.sent if decode_op(data) == "stage"}
    evaluate_rollout(ie.engine.deps, rid, now=LATER)
    assert ie.engine.tasks.named("issue_identities") == []
    evaluate_rollout(ie.engine.deps, rid, now=NOW + timedelta(seconds=31))
    assert ie.engine.tasks.named("issue_identities") == [(rid, 0, DEVICES)]
    assert ie.run_issues() == len(DEVICES)
    again = [(d, data) for d, data in ie.engine.publisher.sent[-len(DEVICES) :]]
    assert all(first[d] == data for d, data in again)
    assert len(ie.issuer.issued) == len(DEVICES)


def test_the_happy_path_ends_with_the_old_identity_retired_and_revoked(
    ie: IdentityEngine,
) -> None:
    """keygen, csr, issued, staged, health_ok, committed; after the bake the retire of tag
    44; retired; the old certificates revoked (superseded) and a CRL refresh; completed."""
    engine = ie.engine
    rid = _issued(ie)
    _committed(ie, rid, DEVICES)
    commit = ie.last_bundle("dev-00", "commit")[1]["bundle"]
    assert commit.tag == SPARE_TAG  # type: ignore[attr-defined]
    assert commit.active == ()  # type: ignore[attr-defined]
    evaluate_rollout(engine.deps, rid, now=NOW)  # the gate passes the wave: baking
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.RUNNING
    assert engine.tasks.pushes(PushStep.RETIRE) == [DEVICES]
    engine.run_pushes()
    retire = ie.last_bundle("dev-00", "retire")[1]["bundle"]
    assert (retire.tags, retire.active) == ((IDENTITY_TAG,), (CA_TAG,))  # type: ignore[attr-defined]
    assert evaluate_rollout(engine.deps, rid, now=LATER) == R.RUNNING, "waits for retirements"
    engine.report(rid, "retired", *DEVICES)
    assert _states(ie, rid) == {D.RETIRED}
    assert ie.run_revokes() == len(DEVICES)
    revoked = {r.serial: r.reason for r in ie.identity.revoked(now=NOW)}
    olds = {x509.load_pem_x509_certificate(p.encode()).serial_number for p in ie.old_pems.values()}
    assert set(revoked) == olds
    assert set(revoked.values()) == {"superseded"}
    assert engine.tasks.named("refresh_crl") == [()]
    assert evaluate_rollout(engine.deps, rid, now=LATER) == R.COMPLETED
    status = rollout_status(engine.deps, rid)
    assert status["totals"]["retired"] == len(DEVICES)
    assert status["totals"]["csr"] == 0


# -- refusals, the issuer away -------------------------------------------------------------


def test_a_csr_with_the_wrong_subject_is_refused_with_its_reason(ie: IdentityEngine) -> None:
    """csr -> csr_refused, the reason in the audit log and the metric; no certificate."""
    rid = _keygens_sent(ie)
    key = keygen_field("x").key

    def wrong(device: str, seq: int) -> str:
        der = csr_der(key, common_name("someone-else"))
        return keygen_field(device, seq=seq, tag=SPARE_TAG, key=key, der=der).field

    ie.keygen(rid, "dev-05", field_for=wrong)
    ie.keygen(rid, "dev-06")
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    ie.run_issues()
    states = ie.engine.store.device_states(rid, ["dev-05", "dev-06"])
    assert states == {"dev-05": D.CSR_REFUSED, "dev-06": D.ISSUED}
    assert ie.issuer.issued == ["dev-06"]
    causes = [e["cause"] for e in ie.engine.store.log(rid) if e.get("to") == "csr_refused"]
    assert len(causes) == 1
    assert causes[0].startswith("csr refused: csr_wrong_subject")
    key_ = ("certfleet_csr_refused_total", (("reason", "csr_wrong_subject"),))
    assert ie.engine.metrics.counters[key_] == 1


def test_a_reused_key_and_an_issuer_refusal_are_refused(ie: IdentityEngine) -> None:
    """The same key from a second device: csr_key_reused; the issuer's no: issuer_refused."""
    rid = _keygens_sent(ie)
    shared = keygen_field("x").key

    def reused(device: str, seq: int) -> str:
        return keygen_field(device, seq=seq, tag=SPARE_TAG, key=shared).field

    ie.keygen(rid, "dev-01", "dev-02", field_for=reused)
    ie.keygen(rid, "dev-03")
    ie.issuer.refuse.add("dev-03")
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    ie.run_issues()
    states = ie.engine.store.device_states(rid, ["dev-01", "dev-02", "dev-03"])
    assert states == {"dev-01": D.ISSUED, "dev-02": D.CSR_REFUSED, "dev-03": D.CSR_REFUSED}
    counters = ie.engine.metrics.counters
    assert counters[("certfleet_csr_refused_total", (("reason", "csr_key_reused"),))] == 1
    assert counters[("certfleet_csr_refused_total", (("reason", "issuer_refused"),))] == 1


def test_a_csr_over_another_devices_certified_key_is_refused(ie: IdentityEngine) -> None:
    """A key a device reported a client certificate for (the inventory's key index) is no new
    key: a CSR over it ends csr_key_reused, nothing claimed, no certificate."""
    rid = _keygens_sent(ie)
    stolen = keygen_field("dev-09").key
    state = ie.engine.inventory.device_credentials("dev-09")
    assert state is not None
    ie.engine.inventory.record_states(
        [replace(state, reported_at=NOW + timedelta(seconds=1))],
        received_at=NOW + timedelta(seconds=1),
        keys=[[spki_sha256(stolen.public_key())]],
    )

    def over_stolen_key(device: str, seq: int) -> str:
        return keygen_field(device, seq=seq, tag=SPARE_TAG, key=stolen).field

    ie.keygen(rid, "dev-05", field_for=over_stolen_key)
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    ie.run_issues()
    assert ie.engine.store.device_states(rid, ["dev-05"]) == {"dev-05": D.CSR_REFUSED}
    assert ie.issuer.issued == []
    key = ("certfleet_csr_refused_total", (("reason", "csr_key_reused"),))
    assert ie.engine.metrics.counters[key] == 1


def test_the_issuer_away_retries_then_times_out_with_no_identity_change(
    ie: IdentityEngine,
) -> None:
    """IssuerUnavailableError goes up (the task retries); devices stay `csr`, no stage goes
    out; at their deadline they time out; a fallback answering the keygen is a timeout too."""
    rid = _keygens_sent(ie)
    ie.keygen(rid, *DEVICES)
    ie.issuer.down = True
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    with pytest.raises(IssuerUnavailableError):
        ie.run_issues()
    # a retry of the task: every device is still checked as the same claim
    ie.engine.tasks.issue_identities(rid, 0, DEVICES)
    with pytest.raises(IssuerUnavailableError):
        ie.run_issues()
    assert _states(ie, rid) == {D.CSR}
    assert {decode_op(data) for _, data in ie.engine.publisher.sent} == {"keygen"}, "no stage"
    fallback = DeviceReport(
        device_id="dev-00",
        rollout_id=rid,
        seq=ie.last_bundle("dev-00", "keygen")[0],
        op="keygen",
        phase="fallback",
        reason="commit_timeout",
        detail="",
        time=NOW,
    )
    apply_reports(ie.engine.deps, [fallback], now=NOW)
    assert ie.engine.store.device_states(rid, ["dev-00"]) == {"dev-00": D.TIMED_OUT}
    tick_rollouts(ie.engine.deps, now=NOW + timedelta(seconds=DEVICE_TIMEOUT + 1))
    assert _states(ie, rid) == {D.TIMED_OUT}
    assert ie.identity.certificates(rid, DEVICES) == {}


def test_devices_issued_before_the_issuer_went_away_stay_issued(ie: IdentityEngine) -> None:
    """The issuer fails after three: those three are staged and sent, the rest wait."""
    rid = _keygens_sent(ie)
    ie.keygen(rid, *DEVICES)
    ie.issuer.down_after = 3
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    with pytest.raises(IssuerUnavailableError):
        ie.run_issues()
    states = ie.engine.store.device_states(rid)
    assert sorted(d for d, s in states.items() if s is D.ISSUED) == DEVICES[:3]
    assert sorted(d for d, s in states.items() if s is D.CSR) == DEVICES[3:]
    assert {d for d, data in ie.engine.publisher.sent if decode_op(data) == "stage"} == set(
        DEVICES[:3]
    )


# -- abort and rollback ----------------------------------------------------------------------


def test_abort_rolls_back_csr_issued_and_committed_devices_and_revokes_unused(
    ie: IdentityEngine,
) -> None:
    """Rollback goes to csr, issued and committed devices; the new certificates of those that
    rolled back are revoked when the rollout ends; no old certificate is."""
    engine = ie.engine
    rid = _keygens_sent(ie)
    ie.keygen(rid, *DEVICES[:6])
    evaluate_rollout(engine.deps, rid, now=NOW)
    engine.tasks.calls = [c for c in engine.tasks.calls if c[0] != "issue_identities"]
    engine.tasks.issue_identities(rid, 0, DEVICES[:4])
    ie.run_issues()
    _committed(ie, rid, DEVICES[:2])
    states = engine.store.device_states(rid)
    assert [states[d] for d in DEVICES[:6]] == [D.COMMITTED] * 2 + [D.ISSUED] * 2 + [D.CSR] * 2
    assert command(engine.deps, rid, "abort", now=NOW, actor="op") == R.ROLLING_BACK
    rollback_rollout(engine.deps, rid, now=NOW)
    assert sorted(d for batch in engine.tasks.pushes(PushStep.ROLLBACK) for d in batch) == DEVICES
    engine.run_pushes()
    assert all(ie.last_bundle(d, "rollback")[1]["tag"] == SPARE_TAG for d in DEVICES)
    engine.report(rid, "rolled_back", *DEVICES)
    assert evaluate_rollout(engine.deps, rid, now=NOW) == R.ROLLED_BACK
    assert ie.run_revokes() == 4
    revoked = ie.identity.revoked(now=NOW)
    assert {r.device_id for r in revoked} == set(DEVICES[:4])
    assert {r.reason for r in revoked} == {"cessation_of_operation"}
    news = {ie.identity.certificates(rid, [d])[d][1] for d in DEVICES[:4]}
    assert {r.serial for r in revoked} == {
        x509.load_pem_x509_certificate(p.encode()).serial_number for p in news
    }


def test_issuance_after_an_abort_issues_nothing(ie: IdentityEngine) -> None:
    """A queued issuance finds the rollout rolling back and leaves its devices alone."""
    rid = _keygens_sent(ie)
    ie.keygen(rid, "dev-00")
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    command(ie.engine.deps, rid, "abort", now=NOW, actor="op")
    assert ie.run_issues() == 0
    assert ie.issuer.issued == []


# -- retire at each wave's soak, completion waits for it -----------------------------------


def test_the_retire_goes_at_the_end_of_each_waves_bake(ie: IdentityEngine) -> None:
    """Two waves with a bake: wave 0's committed devices get their retire when its bake is
    over, not before; the rollout then moves to wave 1 without waiting for them."""
    engine = ie.engine
    rid = _keygens_sent(ie, waves=parse_waves("2,100%"), bake_seconds=600)
    first = engine.store.wave_members(rid, 0)
    ie.keygen(rid, *first)
    evaluate_rollout(engine.deps, rid, now=NOW)
    ie.run_issues()
    _committed(ie, rid, first)
    evaluate_rollout(engine.deps, rid, now=NOW)  # gate: baking
    evaluate_rollout(engine.deps, rid, now=NOW + timedelta(seconds=10))
    assert engine.tasks.pushes(PushStep.RETIRE) == []
    after_bake = NOW + timedelta(seconds=601)
    evaluate_rollout(engine.deps, rid, now=after_bake)
    assert engine.tasks.pushes(PushStep.RETIRE) == [first]
    assert engine.rollout(rid).current == 1


def test_completion_waits_for_retirements_until_their_deadline(ie: IdentityEngine) -> None:
    """Devices that never confirm their retire hold the last wave a device timeout after its
    bake; then the rollout is completed_with_timeouts and lists them."""
    engine = ie.engine
    rid = _issued(ie)
    _committed(ie, rid, DEVICES)
    evaluate_rollout(engine.deps, rid, now=NOW)
    evaluate_rollout(engine.deps, rid, now=NOW)
    engine.run_pushes()
    engine.report(rid, "retired", *DEVICES[:7])
    assert evaluate_rollout(engine.deps, rid, now=LATER) == R.RUNNING
    resend_at = NOW + timedelta(seconds=31)
    assert evaluate_rollout(engine.deps, rid, now=resend_at) == R.RUNNING
    assert engine.tasks.pushes(PushStep.RETIRE)[-1] == DEVICES[7:], "re-sent while unanswered"
    late = NOW + timedelta(seconds=DEVICE_TIMEOUT + 1)
    assert evaluate_rollout(engine.deps, rid, now=late) == R.COMPLETED_WITH_TIMEOUTS
    assert list(engine.rollout(rid).unconfirmed or ()) == DEVICES[7:]


def decode_op(data: bytes) -> str:
    """The op of a published bundle."""
    return decode_payload(Sign1Message.decode(data).payload).op


def _with_active(ie: IdentityEngine, *tags: int) -> None:
    ie.engine.inventory.record_states(
        [
            DeviceState(
                device_id="dev-00",
                reported_at=NOW + timedelta(seconds=len(tags)),
                credentials=tuple(credential(t) for t in tags),
                active_tags=tags,
                identity_tag=IDENTITY_TAG,
            )
        ],
        received_at=NOW + timedelta(seconds=len(tags)),
    )


def test_a_socket_over_seven_tags_is_refused_at_create(ie: IdentityEngine) -> None:
    """A device presenting an identity keeps at most 6 active tags: a trust.add taking one
    from 6 to 7 active is refused, and so is an identity rotation of one with 7 (its probe
    would take 8); 6 active tags and the identity are fine."""
    _with_active(ie, CA_TAG, 1, 2, 3, 4, 5)
    with pytest.raises(RolloutError, match=r"1 devices present an identity .*dev-00"):
        create_rollout(
            ie.engine.deps,
            trust_add_spec(tag=CA_TAG, spare_tag=43),
            now=NOW,
            actor="t",
            start=False,
        )
    rid = create_rollout(ie.engine.deps, identity_spec(), now=NOW, actor="t", start=False)
    command(ie.engine.deps, rid, "abort", now=NOW, actor="t")
    evaluate_rollout(ie.engine.deps, rid, now=NOW + timedelta(seconds=DEVICE_TIMEOUT + 1))
    assert ie.engine.rollout(rid).state is R.ROLLED_BACK
    _with_active(ie, CA_TAG, 1, 2, 3, 4, 5, 6)
    with pytest.raises(RolloutError, match="more than 7 sec_tags"):
        create_rollout(ie.engine.deps, identity_spec(name="b"), now=NOW, actor="t", start=False)


def test_a_csr_report_in_a_trust_rollout_is_unmatched() -> None:
    """A trust rollout sends no keygen: a `csr` naming the stage's seq moves nothing."""
    engine = make_engine()
    rid = create_rollout(engine.deps, trust_add_spec(), now=NOW, actor="t", start=True)
    start_rollout(engine.deps, rid, now=NOW, actor="t")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    engine.run_pushes()
    seq = engine.answered("dev-00", "staged")[0]
    report = DeviceReport(
        device_id="dev-00",
        rollout_id=rid,
        seq=seq,
        op="keygen",
        phase="csr",
        reason="ok",
        detail="",
        time=NOW,
        csr=keygen_field("dev-00", seq=seq).field,
    )
    assert apply_reports(engine.deps, [report], now=NOW) == set()
    assert engine.store.device_states(rid, ["dev-00"]) == {"dev-00": D.SENT}
    key = ("certfleet_reports_unmatched_total", (("reason", "op"),))
    assert engine.metrics.counters[key] == 1


def test_a_pause_stops_new_keygens_but_not_the_certificates_of_keys_made(
    ie: IdentityEngine,
) -> None:
    """Paused: devices that reported their CSR still get their certificate (their keygen's
    deadline runs), no retire is sent, and the rollout does not move on."""
    rid = _keygens_sent(ie)
    ie.keygen(rid, "dev-00")
    assert command(ie.engine.deps, rid, "pause", now=NOW, actor="op") == R.PAUSED
    evaluate_rollout(ie.engine.deps, rid, now=NOW)
    assert ie.run_issues() == 1
    assert ie.engine.store.device_states(rid, ["dev-00"]) == {"dev-00": D.ISSUED}
    assert ie.engine.tasks.pushes(PushStep.RETIRE) == []
