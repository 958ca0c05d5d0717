"""The five ways issue 12 could leave a device without working trust, as regression tests.

Each ends with the device trusting a working CA: its active list is not empty, every
active tag holds a CA chain item, and the list validates the broker. Then: a power cut
at every step of every operation, the version rules, and the broken device the
conformance suite must catch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

import cbor2
import pytest

from orchestrator.domain.credentials import ca_chain_item
from orchestrator.protocol import CredentialType
from orchestrator.protocol.bundle import Reason, encode_payload
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.firmware import REPLAY_FAULT
from simulator.modem import Modem
from tests.unit.firmware_world import CAS, World

pytestmark = pytest.mark.unit

A, B, C = (CAS[name].pem.decode() for name in "ABC")


def _phases(reports: list[ReportMessage]) -> list[tuple[Phase, Reason]]:
    return [(r.phase, r.reason) for r in reports]


def _replaced(world: World, rid: str = "", undo_by: int | None = None) -> None:
    """CA B staged into 43 and committed as the only active tag (CA A stays in 42)."""
    world.deliver(world.sign(world.stage(43, B, [43], rid)))
    commit = world.bundle("commit", rid, tag=43, undo_by=undo_by)
    assert (Phase.COMMITTED, Reason.OK) in _phases(world.deliver(world.sign(commit)))
    assert world.firmware.active_tags == [43]


def test_case1_a_rollback_after_a_failed_stage_into_the_old_tag_keeps_the_key_store() -> None:
    """Stage into 42 (the spare now) fails and wipes CA A; a manual rollback has nothing to undo."""
    # given CA B committed in 43, CA A left in 42
    world = World()
    _replaced(world)
    # when an unrelated CA is staged into 42 and fails its probe, then a manual rollback
    failed = world.deliver(world.sign(world.stage(42, C, [43])))
    rollback = world.deliver(world.sign(world.bundle("rollback")))
    # then the stage ended the commit's undo record: nothing is undone
    assert (Phase.HEALTH_FAILED, Reason.UNKNOWN_CA) in _phases(failed)
    assert _phases(rollback) == [(Phase.REJECTED, Reason.NOTHING_TO_UNDO)]
    assert world.firmware.active_tags == [43]
    assert world.trusts_a_working_ca()


def test_case2_a_manual_rollback_never_reverts_a_rollout_and_undo_by_ends_the_record() -> None:
    """A manual rollback after rollout r1's commit is superseded; after undo_by, nothing to undo."""
    # given rollout r1 committed CA B, undoable for an hour
    world = World()
    _replaced(world, "r1", undo_by=int(world.clock.timestamp()) + 3600)
    # when a manual rollback comes, and a rollback of r1 after its undo window
    manual = world.deliver(world.sign(world.bundle("rollback")))
    world.clock += timedelta(hours=2)
    late = world.deliver(world.sign(world.bundle("rollback", "r1")))
    # then neither undoes r1's commit
    assert _phases(manual) == [(Phase.REJECTED, Reason.SUPERSEDED)]
    assert _phases(late) == [(Phase.REJECTED, Reason.NOTHING_TO_UNDO)]
    assert world.firmware.active_tags == [43]
    assert world.trusts_a_working_ca()


def test_case2_within_its_window_a_rollouts_rollback_undoes_its_commit() -> None:
    """The control: r1's own rollback before undo_by restores [42] and deletes 43."""
    # given
    world = World()
    _replaced(world, "r1", undo_by=int(world.clock.timestamp()) + 3600)
    # when
    rollback = world.deliver(world.sign(world.bundle("rollback", "r1")))
    # then
    assert (Phase.ROLLED_BACK, Reason.OK) in _phases(rollback)
    assert world.firmware.active_tags == [42]
    assert not world.firmware.modem.exists(43, CredentialType.CA_CHAIN)
    assert world.trusts_a_working_ca()


def test_case3_aborting_a_rollout_whose_change_another_rollout_replaced_is_superseded() -> None:
    """A commits 43, then B commits 44: A's rollback is `superseded`, and changes nothing."""
    # given two rollouts, A then B, both committed
    world = World()
    world.deliver(world.sign(world.stage(43, B, [42, 43], "A")))
    world.deliver(world.sign(world.bundle("commit", "A", tag=43)))
    world.deliver(world.sign(world.stage(44, A, [42, 43, 44], "B")))
    world.deliver(world.sign(world.bundle("commit", "B", tag=44)))
    items = world.firmware.modem.items()
    # when A is aborted, and then B
    abort_a = world.deliver(world.sign(world.bundle("rollback", "A")))
    after_a = (world.firmware.active_tags, world.firmware.modem.items())
    abort_b = world.deliver(world.sign(world.bundle("rollback", "B")))
    # then A's abort is refused as superseded and changes nothing; B's undoes B
    assert _phases(abort_a) == [(Phase.REJECTED, Reason.SUPERSEDED)]
    assert after_a == ([42, 43, 44], items)
    assert (Phase.ROLLED_BACK, Reason.OK) in _phases(abort_b)
    assert world.firmware.active_tags == [42, 43]
    assert world.trusts_a_working_ca()


def test_case4_several_cas_for_one_tag_travel_as_one_item() -> None:
    """Two type-0 items are bad_payload; the CAs concatenated as one item stage and commit."""
    # given a stage carrying CA B and CA A as two items (what `--ca b --ca a` used to send)
    world = World()
    document = cbor2.loads(encode_payload(world.stage(43, B, [42, 43])))
    document["creds"].append({"type": 0, "pem": A})
    # when it is sent, then the same CAs as one chain item
    two_items = world.deliver(world.sign(cbor2.dumps(document, canonical=True)))
    item = ca_chain_item([B, A], what="the CAs for sec_tag 43")
    one_item = world.deliver(world.sign(world.stage(43, item, [42, 43])))
    world.deliver(world.sign(world.bundle("commit", tag=43)))
    # then
    assert _phases(two_items) == [(Phase.REJECTED, Reason.BAD_PAYLOAD)]
    assert (Phase.HEALTH_OK, Reason.OK) in _phases(one_item)
    stored = world.firmware.modem.digest(43, CredentialType.CA_CHAIN)
    assert stored == hashlib.sha256(item.encode()).hexdigest()
    assert world.firmware.active_tags == [42, 43]
    assert world.trusts_a_working_ca()


def test_case4_an_item_over_4096_bytes_is_refused_before_received() -> None:
    """A 6.6 KB CA item is too_large: refused before `received`, nothing written."""
    # given
    world = World()
    items = world.firmware.modem.items()
    big = B + "\n" * (6600 - len(B))
    # when
    reports = world.deliver(world.sign(world.stage(43, big, [42, 43])))
    # then
    assert _phases(reports) == [(Phase.REJECTED, Reason.TOO_LARGE)]
    assert world.firmware.modem.items() == items
    assert world.trusts_a_working_ca()


def test_case5_a_modem_error_after_received_is_the_only_late_rejection() -> None:
    """The modem refuses the write (store full) after the seq was consumed: rejected/modem_error."""
    # given a modem with room for one CA only
    world = World()
    full = Modem(capacity_bytes=len(CAS["A"].pem) + 10)
    for item in world.firmware.modem.items():
        full.write(item.sec_tag, item.type, item.content)
    world.firmware.modem = full
    # when
    reports = world.deliver(world.sign(world.stage(43, B, [42, 43])))
    # then
    assert _phases(reports)[0] == (Phase.RECEIVED, Reason.OK)
    assert _phases(reports)[1:] == [(Phase.REJECTED, Reason.MODEM_ERROR)]
    assert world.firmware.record.undo is None
    assert world.trusts_a_working_ca()


# -- a power cut at every step ---------------------------------------------------------------

Scenario = Callable[[World], bytes]
"""Brings a device to where the operation under test starts; returns that bundle."""


def _stage_ok(world: World) -> bytes:
    return world.sign(world.stage(43, B, [43], "r1"))


def _stage_failing(world: World) -> bytes:
    return world.sign(world.stage(43, C, [43], "r1"))


def _commit(world: World) -> bytes:
    world.deliver(_stage_ok(world))
    return world.sign(world.bundle("commit", "r1", tag=43))


def _commit_refused_by_the_broker(world: World) -> bytes:
    world.outcome = "ok"  # the probe passes CA C, the broker will not
    world.deliver(_stage_failing(world))
    return world.sign(world.bundle("commit", "r1", tag=43))


def _rollback_of_a_commit(world: World) -> bytes:
    world.deliver(_commit(world))
    return world.sign(world.bundle("rollback", "r1"))


def _rollback_of_a_stage(world: World) -> bytes:
    world.deliver(_stage_ok(world))
    return world.sign(world.bundle("rollback", "r1"))


def _retire(world: World) -> bytes:
    world.deliver(_commit(world))
    world.deliver(world.sign(world.stage(44, A, [43, 44], "r2")))
    world.deliver(world.sign(world.bundle("commit", "r2", tag=44)))
    return world.sign(world.bundle("retire", "r3", tags=(42, 43), active=(44,)))


def _stage_over_a_stage(world: World) -> bytes:
    world.deliver(_stage_ok(world))
    return world.sign(world.stage(44, A, [42, 44], "r2"))


SCENARIOS: dict[str, tuple[Scenario, Callable[[World], bool]]] = {
    "stage": (_stage_ok, lambda w: w.firmware.commit_deadline is not None),
    "stage, probe fails": (
        _stage_failing,
        lambda w: not w.firmware.modem.exists(43, CredentialType.CA_CHAIN),
    ),
    "commit": (_commit, lambda w: w.firmware.active_tags == [43]),
    "commit the broker refuses": (
        _commit_refused_by_the_broker,
        lambda w: w.firmware.active_tags == [42],
    ),
    "rollback of a commit": (_rollback_of_a_commit, lambda w: w.firmware.active_tags == [42]),
    "rollback of a stage": (
        _rollback_of_a_stage,
        lambda w: not w.firmware.modem.exists(43, CredentialType.CA_CHAIN),
    ),
    "retire": (_retire, lambda w: w.firmware.active_tags == [44]),
    "stage over an open stage": (
        _stage_over_a_stage,
        lambda w: not w.firmware.modem.exists(43, CredentialType.CA_CHAIN),
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_power_cut_at_any_step_ends_in_a_working_trust_set(name: str) -> None:
    """Cut the power before each step of the operation in turn: after reboot it is finished."""
    scenario, finished = SCENARIOS[name]
    cuts = 0
    for cut in range(60):
        # given a device where the operation starts
        world = World()
        payload = scenario(world)
        steps = world.firmware.flash.fuse.steps
        # when the power fails `cut` steps into it (the device reboots, the broker redelivers)
        world.deliver(payload, cut=cut)
        # then the trust works and the operation got done
        assert world.trusts_a_working_ca(), (name, cut)
        assert finished(world), (name, cut)
        if world.firmware.flash.fuse.steps - steps <= cut:
            break  # the whole operation ran before the cut was due: every step was covered
        cuts += 1
    else:
        pytest.fail(f"{name}: more than 60 steps")
    assert cuts >= 3, "the operation should take several steps"


# -- versions and the broken device ----------------------------------------------------------


def test_a_v2_device_takes_v1_bundles_and_refuses_later_versions() -> None:
    """v1 and v2 bundles are received; v3 is unsupported_version; a v1 bundle has no undo_by."""
    # given
    world = World()
    v1 = world.stage(43, B, [42, 43])
    v1_payload = cbor2.loads(encode_payload(v1))
    v1_payload["v"] = 1
    v3 = {**cbor2.loads(encode_payload(world.stage(44, B, [42, 44]))), "v": 3}
    v1_commit = {**cbor2.loads(encode_payload(world.bundle("commit", tag=43))), "v": 1}
    v1_commit["undo_by"] = 1
    # when
    first = world.deliver(world.sign(cbor2.dumps(v1_payload, canonical=True)))
    third = world.deliver(world.sign(cbor2.dumps(v3, canonical=True)))
    undo_by = world.deliver(world.sign(cbor2.dumps(v1_commit, canonical=True)))
    # then
    assert _phases(first)[0] == (Phase.RECEIVED, Reason.OK)
    assert _phases(third) == [(Phase.REJECTED, Reason.UNSUPPORTED_VERSION)]
    assert _phases(undo_by) == [(Phase.REJECTED, Reason.BAD_PAYLOAD)]
    assert world.firmware.state_message().v == 2
    assert all(r.v == 2 for r in world.firmware.reports)


def test_a_v1_device_refuses_v2_bundles_and_says_v1() -> None:
    """A v1 device answers a v2 bundle with unsupported_version; its messages carry v 1."""
    # given
    world = World(protocol_version=1)
    # when
    reports = world.deliver(world.sign(world.stage(43, B, [42, 43])))
    # then
    assert _phases(reports) == [(Phase.REJECTED, Reason.UNSUPPORTED_VERSION)]
    assert reports[0].v == 1
    assert world.firmware.state_message().v == 1


@pytest.mark.parametrize(
    ("faults", "second"),
    [(frozenset(), Phase.REJECTED), (frozenset({REPLAY_FAULT}), Phase.RECEIVED)],
)
def test_the_accept_replay_fault_takes_a_bundle_twice(
    faults: frozenset[str], second: Phase
) -> None:
    """A healthy device refuses a replay; the deliberately broken one receives it again."""
    # given
    world = World(faults=faults)
    stage = world.sign(world.stage(43, B, [42, 43]))
    world.deliver(stage)
    # when the same bundle comes again
    again = world.deliver(stage)
    # then
    assert again[0].phase is second
    assert world.trusts_a_working_ca()


def test_an_unsafe_stage_is_refused_before_received() -> None:
    """A stage whose active list names a tag without a CA is unsafe_active, nothing written."""
    # given
    world = World()
    items = world.firmware.modem.items()
    # when
    reports = world.deliver(world.sign(world.stage(43, B, [43, 44])))
    # then
    assert _phases(reports) == [(Phase.REJECTED, Reason.UNSAFE_ACTIVE)]
    assert world.firmware.modem.items() == items
    assert world.firmware.last_seq == 0


def test_a_stage_ends_a_commit_record() -> None:
    """A stage replaces the undo record: the earlier commit cannot be rolled back any more."""
    # given
    world = World()
    _replaced(world, "r1")
    # when
    world.deliver(world.sign(world.stage(44, A, [43, 44], "r2")))
    reports = world.deliver(world.sign(world.bundle("rollback", "r1")))
    # then
    assert _phases(reports) == [(Phase.REJECTED, Reason.SUPERSEDED)]
    assert world.firmware.active_tags == [43]
    assert world.trusts_a_working_ca()
