"""The simulated firmware rotates its identity as docs/protocol.md says, power cuts included.

A device holds CA A in sec_tag 42 (active [42]) and its identity (a device CA
certificate and key) in sec_tag 44; the broker requires a client certificate of the
device CA. A rotation is keygen into 45 -> `csr`, the identity stage of a certificate
of that key -> `staged`, `health_ok`, the commit -> reconnect with 45 -> `committed`,
and, later, the retire of 44.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, StateMessage
from orchestrator.protocol.bundle import Reason
from orchestrator.protocol.keygen import parse_keygen_output, verify_attestation
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.attestation import attestation_key
from tests.unit.firmware_world import CAS, IDENTITY_TAG, World, certificate_for

pytestmark = pytest.mark.unit

SPARE = 45
CERT, KEY = CredentialType.CLIENT_CERT, CredentialType.CLIENT_KEY


def _outcomes(reports: list[ReportMessage]) -> list[tuple[Phase, Reason]]:
    return [(r.phase, r.reason) for r in reports]


def _holds_identity(world: World, tag: int) -> bool:
    modem = world.firmware.modem
    return modem.exists(tag, CERT) and modem.exists(tag, KEY)


def _csr(world: World, rid: str = "r1") -> tuple[str, list[ReportMessage]]:
    """Deliver a keygen into SPARE; the CSR field it reported and every report."""
    reports = world.deliver(world.sign(world.keygen(SPARE, rid)))
    csr = [r.csr for r in reports if r.phase is Phase.CSR]
    assert len(csr) == 1, _outcomes(reports)
    assert csr[0] is not None
    return csr[0], reports


def _staged(world: World, rid: str = "r1") -> list[ReportMessage]:
    """Keygen, then the stage of a device CA certificate of its key."""
    csr, _ = _csr(world, rid)
    return world.deliver(world.sign(world.identity_stage(SPARE, world.issue(csr), rid)))


def _committed(world: World, rid: str = "r1") -> list[ReportMessage]:
    _staged(world, rid)
    return world.deliver(world.sign(world.bundle("commit", rid, tag=SPARE)))


# -- keygen ---------------------------------------------------------------------------------


def test_keygen_reports_a_csr_of_a_key_kept_in_the_spare_tag() -> None:
    """received, then csr: a CSR for CN=subject of the key stored in 45, attested by the modem."""
    # given
    world = World(identity=True)
    # when
    csr_field, reports = _csr(world)
    # then
    assert _outcomes(reports) == [(Phase.RECEIVED, Reason.OK), (Phase.CSR, Reason.OK)]
    assert reports[1].op == "keygen"
    output = parse_keygen_output(csr_field)
    csr = x509.load_der_x509_csr(output.csr_der)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=dev-1"
    spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    modem = world.firmware.modem
    assert modem.digest(SPARE, KEY) == hashlib.sha256(spki).hexdigest()
    assert not modem.exists(SPARE, CERT)
    claims = verify_attestation(output.attestation, attestation_key("dev-1").public_key())
    claims.check(device_id="dev-1", seq=reports[1].seq, tag=SPARE, csr_der=output.csr_der)
    assert world.firmware.identity_tag == IDENTITY_TAG


@pytest.mark.parametrize("tag", [42, IDENTITY_TAG])
def test_keygen_into_an_active_tag_or_the_identity_in_use_is_refused(tag: int) -> None:
    """tag_in_use before received: nothing is written, the seq is not consumed."""
    # given
    world = World(identity=True)
    before = world.firmware.modem.items()
    # when
    reports = world.deliver(world.sign(world.keygen(tag, "r1")))
    # then
    assert _outcomes(reports) == [(Phase.REJECTED, Reason.TAG_IN_USE)]
    assert world.firmware.modem.items() == before
    assert world.firmware.last_seq == 0


def test_keygen_clears_what_the_spare_tag_held() -> None:
    """A leftover key in the spare tag goes before %KEYGEN (which needs an empty slot)."""
    # given
    world = World(identity=True)
    _csr(world, "r0")
    first = world.firmware.modem.digest(SPARE, KEY)
    # when
    _csr(world, "r1")
    # then
    assert world.firmware.modem.digest(SPARE, KEY) != first


def test_no_stage_before_commit_by_discards_the_key() -> None:
    """The keygen's deadline passes: fallback commit_timeout (op keygen), the tag emptied."""
    # given
    world = World(identity=True)
    _csr(world)
    deadline = world.firmware.commit_deadline
    assert deadline is not None
    # when
    world.clock += timedelta(seconds=601)
    start = len(world.firmware.reports)
    world.firmware.check_commit_deadline()
    world.settle()
    # then
    fallback = world.firmware.reports[start:]
    assert [(r.op, r.phase, r.reason) for r in fallback] == [
        ("keygen", Phase.FALLBACK, Reason.COMMIT_TIMEOUT)
    ]
    assert not world.firmware.modem.exists(SPARE, KEY)
    assert world.firmware.identity_tag == IDENTITY_TAG
    assert world.firmware.record.undo is None


def test_a_modem_out_of_room_refuses_the_keygen_with_modem_error() -> None:
    """%KEYGEN fails (store full): rejected/modem_error after received, no record, old identity."""
    # given
    world = World(identity=True)
    modem = world.firmware.modem
    modem._capacity = modem.used_bytes  # a full store
    # when
    reports = world.deliver(world.sign(world.keygen(SPARE, "r1")))
    # then
    assert _outcomes(reports)[-1] == (Phase.REJECTED, Reason.MODEM_ERROR)
    assert world.firmware.record.undo is None
    assert world.has_a_working_identity()


# -- the identity stage ---------------------------------------------------------------------


def test_the_identity_stage_writes_the_certificate_and_probes_with_it() -> None:
    """staged, health_ok; the spare tag holds the certificate next to its key."""
    # when
    world = World(identity=True)
    reports = _staged(world)
    # then
    assert _outcomes(reports) == [
        (Phase.RECEIVED, Reason.OK),
        (Phase.STAGED, Reason.OK),
        (Phase.HEALTH_OK, Reason.OK),
    ]
    assert _holds_identity(world, SPARE)
    assert world.firmware.identity_tag == IDENTITY_TAG


def test_a_certificate_of_another_key_is_a_key_mismatch() -> None:
    """key_mismatch before received: the key made stays, nothing else is written."""
    # given
    world = World(identity=True)
    _csr(world)
    other = certificate_for(ec.generate_private_key(ec.SECP256R1()).public_key(), "dev-1")
    # when
    reports = world.deliver(world.sign(world.identity_stage(SPARE, other, "r1")))
    # then
    assert _outcomes(reports) == [(Phase.REJECTED, Reason.KEY_MISMATCH)]
    assert world.firmware.modem.exists(SPARE, KEY)
    assert not world.firmware.modem.exists(SPARE, CERT)


@pytest.mark.parametrize("case", ["no keygen", "another rollout", "another tag"])
def test_an_identity_stage_without_its_keygen_has_nothing_staged(case: str) -> None:
    """The undo record must be this rollout's keygen of this tag."""
    # given
    world = World(identity=True)
    pem = certificate_for(ec.generate_private_key(ec.SECP256R1()).public_key(), "dev-1")
    if case != "no keygen":
        csr, _ = _csr(world, "r1")
        pem = world.issue(csr)
    rid, tag = ("r2", SPARE) if case == "another rollout" else ("r1", SPARE)
    if case == "another tag":
        tag = 46
    # when
    reports = world.deliver(world.sign(world.identity_stage(tag, pem, rid)))
    # then
    assert _outcomes(reports) == [(Phase.REJECTED, Reason.NOTHING_STAGED)]


def test_a_broker_that_refuses_the_new_certificate_fails_the_probe() -> None:
    """identity_refused: the staged tag is emptied, the old identity stays."""
    # given
    world = World(identity=True)
    csr, _ = _csr(world)
    foreign = world.issue(csr, ca=CAS["C"])  # the broker does not know this issuer
    # when
    reports = world.deliver(world.sign(world.identity_stage(SPARE, foreign, "r1")))
    # then
    assert _outcomes(reports)[-1] == (Phase.HEALTH_FAILED, Reason.IDENTITY_REFUSED)
    assert not world.firmware.modem.exists(SPARE, KEY)
    assert world.firmware.record.undo is None
    assert world.has_a_working_identity()


# -- commit, rollback, retire ---------------------------------------------------------------


def test_the_commit_reconnects_with_the_new_identity() -> None:
    """committed once the broker took the new identity; the state names it, with its PEM."""
    # when
    world = World(identity=True)
    reports = _committed(world)
    # then
    assert _outcomes(reports)[-1] == (Phase.COMMITTED, Reason.OK)
    firmware = world.firmware
    assert firmware.identity_tag == SPARE
    assert world.has_a_working_identity()
    state = StateMessage.model_validate_json(firmware.state_message().to_json())
    assert state.identity_tag == SPARE
    pems = {(c.sec_tag, c.type): c.pem for c in state.credentials}
    assert pems[(SPARE, CERT)] == firmware.modem.read(SPARE, CERT).decode()
    assert pems[(SPARE, KEY)] is None
    assert _holds_identity(world, IDENTITY_TAG)  # kept until the retire


def test_a_new_identity_the_broker_refuses_falls_back_to_the_old_one() -> None:
    """The reconnect fails: fallback/broker_unreachable, identity 44 again, 45 emptied."""
    # given
    world = World(identity=True)
    _staged(world)
    new = x509.load_pem_x509_certificate(world.firmware.modem.read(SPARE, CERT))
    world.refused.add(new.serial_number)  # revoked between the probe and the commit
    # when
    reports = world.deliver(world.sign(world.bundle("commit", "r1", tag=SPARE)))
    # then
    assert _outcomes(reports)[-1] == (Phase.FALLBACK, Reason.BROKER_UNREACHABLE)
    assert reports[-1].op == "commit"
    assert world.firmware.identity_tag == IDENTITY_TAG
    assert not world.firmware.modem.exists(SPARE, KEY)
    assert world.has_a_working_identity()


@pytest.mark.parametrize("how_far", ["keygen", "stage", "commit"])
def test_a_rollback_returns_to_the_old_identity(how_far: str) -> None:
    """rolled_back at every step: identity 44, the spare tag emptied."""
    # given
    world = World(identity=True)
    {"keygen": _csr, "stage": _staged, "commit": _committed}[how_far](world)
    # when
    reports = world.deliver(world.sign(world.bundle("rollback", "r1", tag=SPARE)))
    # then
    assert _outcomes(reports)[-1] == (Phase.ROLLED_BACK, Reason.OK)
    assert world.firmware.identity_tag == IDENTITY_TAG
    assert not world.firmware.modem.exists(SPARE, KEY)
    assert world.has_a_working_identity()


def test_retiring_the_identity_in_use_is_refused() -> None:
    """tag_in_use: the identity in use is never deleted."""
    # given
    world = World(identity=True)
    # when
    reports = world.deliver(world.sign(world.bundle("retire", tags=(IDENTITY_TAG,), active=(42,))))
    # then
    assert _outcomes(reports) == [(Phase.REJECTED, Reason.TAG_IN_USE)]
    assert _holds_identity(world, IDENTITY_TAG)


def test_the_old_identity_is_retired_after_the_commit() -> None:
    """retired: 44 deleted, 45 in use; a rollback afterwards has nothing to undo."""
    # given
    world = World(identity=True)
    _committed(world)
    # when
    reports = world.deliver(
        world.sign(world.bundle("retire", "r1", tags=(IDENTITY_TAG,), active=(42,)))
    )
    # then
    assert _outcomes(reports)[-1] == (Phase.RETIRED, Reason.OK)
    assert not world.firmware.modem.exists(IDENTITY_TAG, KEY)
    assert world.firmware.identity_tag == SPARE
    assert world.has_a_working_identity()
    again = world.deliver(world.sign(world.bundle("rollback", "r1", tag=SPARE)))
    assert _outcomes(again) == [(Phase.REJECTED, Reason.NOTHING_TO_UNDO)]


def test_a_trust_stage_never_overwrites_the_identity_in_use() -> None:
    """A CA stage into the identity tag is tag_in_use."""
    # given
    world = World(identity=True)
    # when
    reports = world.deliver(world.sign(world.stage(IDENTITY_TAG, CAS["B"].pem.decode(), [42])))
    # then
    assert _outcomes(reports) == [(Phase.REJECTED, Reason.TAG_IN_USE)]


# -- power cuts -----------------------------------------------------------------------------


def _rotate_with_cut(step: str, cut: int) -> World:
    """A whole rotation, the power cut `cut` steps into `step`'s bundle."""
    world = World(identity=True)

    def deliver(payload: bytes, name: str) -> list[ReportMessage]:
        reports = world.deliver(payload, cut=cut if name == step else None)
        assert world.has_a_working_identity(), (step, cut, name)
        return reports

    deliver(world.sign(world.keygen(SPARE, "r1")), "keygen")
    csrs = [r.csr for r in world.firmware.reports if r.phase is Phase.CSR]
    if not csrs or world.firmware.record.undo is None:
        return world
    stage = world.identity_stage(SPARE, world.issue(csrs[-1] or ""), "r1")
    deliver(world.sign(stage), "stage")
    deliver(world.sign(world.bundle("commit", "r1", tag=SPARE)), "commit")
    retire = world.bundle("retire", "r1", tags=(IDENTITY_TAG,), active=(42,))
    deliver(world.sign(retire), "retire")
    return world


@pytest.mark.parametrize("step", ["keygen", "stage", "commit", "retire"])
def test_a_power_cut_at_any_step_keeps_a_working_identity(step: str) -> None:
    """Cut before each step of each bundle: after every reboot the device has an identity
    tag holding a certificate and key the broker takes, and the rotation still ends."""
    for cut in range(16):
        world = _rotate_with_cut(step, cut)
        firmware = world.firmware
        assert world.has_a_working_identity(), (step, cut)
        assert not firmware.needs_offline
        assert not firmware.needs_reconnect
        phases = {(r.op, r.phase) for r in firmware.reports}
        assert ("retire", Phase.RETIRED) in phases, (step, cut, phases)
        assert firmware.identity_tag == SPARE
        assert not firmware.modem.exists(IDENTITY_TAG, KEY)


def test_with_the_identity_refused_fault_a_new_identity_never_reaches_the_broker() -> None:
    """The fault presents a stranger's certificate for any identity but the factory one."""
    # given
    world = World(identity=True, faults=frozenset({"identity-refused"}))
    # when
    reports = _staged(world)
    # then
    assert _outcomes(reports)[-1] == (Phase.HEALTH_FAILED, Reason.IDENTITY_REFUSED)
    assert world.has_a_working_identity()


def _six_more_cas(world: World) -> list[int]:
    """CA A also in 46..51: with 42, seven CA tags the device could name."""
    modem = world.firmware.modem
    for tag in range(46, 52):
        modem.write(tag, CredentialType.CA_CHAIN, CAS["A"].pem)
    return [42, *range(46, 52)]


def test_with_an_identity_the_active_list_names_at_most_six_tags() -> None:
    """A retire leaving seven active tags beside the identity tag is unsafe_active; six pass."""
    # given
    world = World(identity=True)
    seven = _six_more_cas(world)
    # when
    over = world.deliver(world.sign(world.bundle("retire", tags=(43,), active=tuple(seven))))
    six = world.deliver(world.sign(world.bundle("retire", tags=(43,), active=tuple(seven[:6]))))
    # then
    assert _outcomes(over) == [(Phase.REJECTED, Reason.UNSAFE_ACTIVE)]
    assert _outcomes(six)[-1] == (Phase.RETIRED, Reason.OK)
    assert world.firmware.active_tags == seven[:6]


def test_an_identity_commit_that_would_make_the_socket_eight_tags_is_refused() -> None:
    """A device without an identity and seven active tags: the commit of one is unsafe_active."""
    # given
    world = World()
    world.firmware.flash.provision(active=tuple(_six_more_cas(world)))
    csr, _ = _csr(world)
    stage = world.identity_stage(SPARE, world.issue(csr), "r1", probe_tags=(42,))
    assert _outcomes(world.deliver(world.sign(stage)))[-1] == (Phase.HEALTH_OK, Reason.OK)
    # when
    reports = world.deliver(world.sign(world.bundle("commit", "r1", tag=SPARE)))
    # then
    assert _outcomes(reports) == [(Phase.REJECTED, Reason.UNSAFE_ACTIVE)]
    assert world.firmware.identity_tag is None


def test_over_a_plain_broker_the_state_names_the_new_identity_before_committed() -> None:
    """No reconnect to wait for: the state with the new identity tag goes before `committed`."""

    class Recording:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes]] = []

        async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
            self.sent.append((topic, payload))

    # given
    world = World(identity=True, tls_broker=False)
    _staged(world)
    world.link = Recording()  # type: ignore[assignment]
    # when
    reports = world.deliver(world.sign(world.bundle("commit", "r1", tag=SPARE)))
    # then
    assert _outcomes(reports)[-1] == (Phase.COMMITTED, Reason.OK)
    sent = world.link.sent  # type: ignore[attr-defined]
    kinds = [topic.rsplit("/", 1)[1] for topic, _ in sent]
    assert kinds[-2:] == ["state", "report"]
    assert StateMessage.model_validate_json(sent[-2][1]).identity_tag == SPARE
