"""The simulated device with delegations: a worker's online key signs under a delegation
from a trusted root key; the root-only `revoke` op sets the revoked delegations, which
flash keeps through reboots and power cuts (docs/protocol.md §3, §4 checks 4 to 5d and
7a, §5 revoke, §13)."""

from __future__ import annotations

from datetime import timedelta

import cbor2
import pytest

from orchestrator.protocol import CredentialType
from orchestrator.protocol.bundle import (
    Bundle,
    Credential,
    Probe,
    Reason,
    SignerKey,
    encode_payload,
)
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.delegation import Revocation, Scope
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.firmware import Firmware
from simulator.flash import Flash
from tests.unit.firmware_world import CAS, KEYS, ONLINE, START, World

pytestmark = pytest.mark.unit

WORKER, OTHER = ONLINE[0], ONLINE[1]
UNTRUSTED = KEYS[5]
"""A root key the device does not trust."""


def _kid(index: int) -> bytes:
    return key_id(ONLINE[index].public_key())


def _outcome(reports: list[ReportMessage]) -> list[tuple[Phase, Reason, int, str]]:
    return [(r.phase, r.reason, r.seq, r.rollout_id) for r in reports]


def _revoke(world: World, kids: tuple[bytes, ...], before: int) -> Bundle:
    return world.bundle("revoke", revoke_kids=kids, revoke_before=before)


def _untouched(world: World) -> tuple[object, ...]:
    """What a refused bundle must leave as it was: seq, key store, active list, revocation."""
    firmware = world.firmware
    record = firmware.record
    return (record.last_seq, firmware.modem.items(), record.active, record.revocation)


def test_a_whole_change_signed_under_a_delegation_is_carried_out() -> None:
    """Stage, commit and rollback, each signed by the worker's online key under a delegation
    from the trusted root, go as root-signed ones do."""
    # given
    world = World(tls_broker=False)
    stage = world.stage(43, CAS["B"].pem.decode(), active=(42, 43), rid="r1")

    # when
    staged = world.deliver(world.sign_delegated(stage, WORKER))
    committed = world.deliver(
        world.sign_delegated(world.bundle("commit", "r1", tag=43, undo_by=None), WORKER)
    )
    active = world.firmware.active_tags
    rolled_back = world.deliver(world.sign_delegated(world.bundle("rollback", "r1"), WORKER))

    # then
    assert [r.phase for r in staged] == [Phase.RECEIVED, Phase.STAGED, Phase.HEALTH_OK]
    assert [r.phase for r in committed] == [Phase.RECEIVED, Phase.COMMITTED]
    assert active == [42, 43]
    assert [r.phase for r in rolled_back] == [Phase.RECEIVED, Phase.ROLLED_BACK]
    assert world.firmware.active_tags == [42]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no delegation", Reason.UNKNOWN_KEY),
        ("unknown root", Reason.UNKNOWN_KEY),
        ("another key's delegation", Reason.BAD_DELEGATION),
        ("expired", Reason.DELEGATION_EXPIRED),
        ("not yet valid", Reason.DELEGATION_EXPIRED),
        ("revoked", Reason.DELEGATION_REVOKED),
    ],
)
def test_a_delegation_the_device_does_not_accept_is_refused_naming_no_bundle(
    case: str, reason: Reason
) -> None:
    """Checks 4 to 5d: refused with the reason, seq 0 and no rollout, nothing written."""
    # given
    world = World(tls_broker=False)
    world.deliver(world.sign(_revoke(world, (_kid(2),), 0)))
    before = _untouched(world)
    bundle = world.stage(43, CAS["B"].pem.decode(), active=(42, 43), rid="r1")
    now = int(world.clock.timestamp())
    if case == "no delegation":
        data = sign1(encode_payload(bundle), private_key=WORKER, kid=key_id(WORKER.public_key()))
    elif case == "unknown root":
        data = world.sign_delegated(bundle, WORKER, world.delegation(WORKER, root=UNTRUSTED))
    elif case == "another key's delegation":
        data = world.sign_delegated(bundle, WORKER, world.delegation(OTHER))
    elif case == "expired":
        delegation = world.delegation(WORKER, not_before=now - 7200, expires_at=now)
        data = world.sign_delegated(bundle, WORKER, delegation)
    elif case == "not yet valid":
        delegation = world.delegation(WORKER, not_before=now + 301, expires_at=now + 900)
        data = world.sign_delegated(bundle, WORKER, delegation)
    else:
        data = world.sign_delegated(bundle, ONLINE[2])

    # when
    reports = world.deliver(data)

    # then
    assert _outcome(reports) == [(Phase.REJECTED, reason, 0, "")]
    assert reports[0].op is None
    assert _untouched(world) == before


@pytest.mark.parametrize(
    ("scope", "op"),
    [
        (Scope(ops=("stage", "commit"), kinds=(0,)), "rollback"),
        (Scope(ops=("stage",), kinds=(1,)), "stage"),
        (Scope(ops=("rollback",), kinds=(0,), rollouts=("r2",)), "rollback"),
        (Scope(ops=("stage", "commit", "rollback", "retire", "keygen"), kinds=(0,)), "revoke"),
        (
            Scope(ops=("stage", "commit", "rollback", "retire", "keygen"), kinds=(0,)),
            "trust-signer",
        ),
    ],
)
def test_a_bundle_outside_its_delegations_scope_is_out_of_scope_naming_it(
    scope: Scope, op: str
) -> None:
    """Check 7a: the signature verified, so the refusal names the bundle; nothing written."""
    # given
    world = World(tls_broker=False)
    before = _untouched(world)
    if op == "stage":
        bundle = world.stage(43, CAS["B"].pem.decode(), active=(42, 43), rid="r1")
    elif op == "revoke":
        bundle = _revoke(world, (), 0)
    elif op == "trust-signer":
        point = KEYS[1].public_key().public_numbers()
        raw = b"\x04" + point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
        signer = SignerKey(kid=key_id(KEYS[1].public_key()), public_point=raw)
        bundle = world.bundle("trust-signer", signer=signer)
    else:
        bundle = world.bundle(op, "r1")

    # when
    reports = world.deliver(
        world.sign_delegated(bundle, WORKER, world.delegation(WORKER, scope=scope))
    )

    # then
    assert _outcome(reports) == [
        (Phase.REJECTED, Reason.OUT_OF_SCOPE, bundle.seq, bundle.rollout_id)
    ]
    assert _untouched(world) == before
    assert len(world.firmware.signers) == 1


def test_a_revoke_replaces_the_list_raises_the_time_and_is_committed() -> None:
    """The list is replaced whole; `before` never goes down; the undo record stays."""
    # given
    world = World(tls_broker=False)
    world.deliver(world.sign(world.stage(43, CAS["B"].pem.decode(), active=(42, 43), rid="r1")))
    undo = world.firmware.record.undo
    now = int(world.clock.timestamp())

    # when
    first = world.deliver(world.sign(_revoke(world, (_kid(0), _kid(1)), now - 100)))
    second = world.deliver(world.sign(_revoke(world, (_kid(2),), 0)))

    # then
    assert [(r.phase, r.op) for r in first] == [
        (Phase.RECEIVED, "revoke"),
        (Phase.COMMITTED, "revoke"),
    ]
    assert [r.phase for r in second] == [Phase.RECEIVED, Phase.COMMITTED]
    assert world.firmware.record.revocation == Revocation(frozenset({_kid(2)}), now - 100)
    assert world.firmware.record.undo == undo


def test_delegations_issued_before_the_revocation_time_are_refused() -> None:
    """iat < before is revoked; iat == before is not."""
    # given
    world = World(tls_broker=False)
    cut = int(world.clock.timestamp()) - 10
    world.deliver(world.sign(_revoke(world, (), cut)))

    # when
    older = world.deliver(
        world.sign_delegated(
            world.bundle("rollback"), WORKER, world.delegation(WORKER, issued_at=cut - 1)
        )
    )
    at = world.deliver(
        world.sign_delegated(
            world.bundle("rollback"), WORKER, world.delegation(WORKER, issued_at=cut)
        )
    )

    # then
    assert [(r.phase, r.reason) for r in older] == [(Phase.REJECTED, Reason.DELEGATION_REVOKED)]
    assert [(r.phase, r.reason) for r in at] == [(Phase.REJECTED, Reason.NOTHING_TO_UNDO)]


@pytest.mark.parametrize(
    ("kids", "words"),
    [
        ([bytes([n]) * 8 for n in range(9)], "at most 8"),
        ([b"\x01" * 7], "8-byte"),
        ([b"\x01" * 8, b"\x01" * 8], "distinct"),
    ],
)
def test_a_revoke_breaking_its_rules_is_bad_payload(kids: list[bytes], words: str) -> None:
    """Nine key ids, a short one, a repeated one: bad_payload (check 6), naming the bundle."""
    # given
    world = World(tls_broker=False)
    bundle = _revoke(world, (), 0)
    document = cbor2.loads(encode_payload(bundle))
    document["kids"] = kids
    before = _untouched(world)

    # when
    reports = world.deliver(world.sign(cbor2.dumps(document, canonical=True)))

    # then
    assert _outcome(reports) == [(Phase.REJECTED, Reason.BAD_PAYLOAD, bundle.seq, "")]
    assert words in reports[0].detail
    assert _untouched(world) == before


def test_the_revocation_survives_a_reboot_and_a_new_firmware_on_the_same_flash() -> None:
    """What the device refuses after a power cycle is what flash says."""
    # given
    world = World(tls_broker=False)
    world.deliver(world.sign(_revoke(world, (_kid(0),), 0)))
    flash: Flash = world.firmware.flash

    # when
    world.firmware.reboot()
    again = Firmware(
        "dev-1",
        world.firmware.modem,
        topics=world.firmware.topics,
        flash=flash,
        clock=lambda: START,
    )
    world.firmware = again
    reports = world.deliver(world.sign_delegated(world.bundle("rollback"), WORKER))

    # then
    assert again.record.revocation == Revocation(frozenset({_kid(0)}))
    assert [(r.phase, r.reason) for r in reports] == [(Phase.REJECTED, Reason.DELEGATION_REVOKED)]


@pytest.mark.parametrize("cut", range(8))
def test_a_revoke_cut_short_at_any_step_ends_applied_once_and_reported(cut: int) -> None:
    """Power lost before each step of a revoke in turn (received, the flash write, committed,
    the outbox cleared, none): after the reboot and the broker's redelivery the revocation
    holds, the device reported committed, and its seq is taken."""
    # given
    world = World(tls_broker=False)
    bundle = _revoke(world, (_kid(1),), 5)

    # when
    world.deliver(world.sign(bundle), cut=cut)

    # then
    record = world.firmware.record
    assert record.revocation == Revocation(frozenset({_kid(1)}), 5)
    assert record.last_seq == bundle.seq
    reports = [(r.phase, r.reason) for r in world.firmware.reports if r.seq == bundle.seq]
    done = len(reports) - 1 - reports[::-1].index((Phase.COMMITTED, Reason.OK))
    # a redelivery after the seq was taken (the cut came after the flash write) is a replay
    assert set(reports[done + 1 :]) <= {(Phase.REJECTED, Reason.REPLAY)}, reports
    assert not record.outbox


def test_a_stage_of_a_kind_and_rollout_the_delegation_names_is_carried_out() -> None:
    """kinds (0,) covers a CA chain item; the rid list covers its rollout."""
    # given
    world = World(tls_broker=False)
    scope = Scope(ops=("stage",), kinds=(0,), rollouts=("r1", "r2"))
    bundle = world.bundle(
        "stage",
        "r2",
        tag=43,
        credentials=(Credential(CredentialType.CA_CHAIN, CAS["B"].pem.decode()),),
        probe=Probe(host="broker.example.net", port=8883, tags=(43,)),
        active=(42,),
        commit_by=int((world.clock + timedelta(minutes=10)).timestamp()),
    )

    # when
    delegation = world.delegation(WORKER, scope=scope)
    reports = world.deliver(world.sign_delegated(bundle, WORKER, delegation))

    # then
    assert [r.phase for r in reports] == [Phase.RECEIVED, Phase.STAGED, Phase.HEALTH_OK]
