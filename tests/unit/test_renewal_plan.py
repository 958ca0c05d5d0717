"""A renewal plan: stored JSON read back unchanged, and only the moves the rotation makes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.domain.renewal import OPEN_STATES, PlanState, PlanTransitionError, RenewalPlan
from tests.unit.builders import NOW
from tests.unit.plans import ADDING_DOCUMENT, plan

pytestmark = pytest.mark.unit

SOAK = timedelta(hours=24)


def _stored(*, drop: tuple[str, ...] = (), **changes: object) -> str:
    """ADDING_DOCUMENT without `drop`, `changes` set in place or appended (as the service did)."""
    document = json.loads(ADDING_DOCUMENT)
    for name in drop:
        del document[name]
    document.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    "stored",
    [
        ADDING_DOCUMENT,
        _stored(
            drop=("old_tag", "new_tag"),
            add_rollout=None,
            state="refused",
            reason="preflight against 127.0.0.1:9443: certificate verify failed",
        ),
        _stored(
            state="soaking",
            activated_at="2025-06-02T08:30:00.250000+00:00",
            activated_by="certificate.activated",
            retire_after="2025-06-03T08:30:00.250000+00:00",
        ),
        _stored(
            state="retiring",
            retire_rollout="r-20250603-2",
            activated_at="2025-06-02T08:30:00+00:00",
            activated_by="mqtt.example.com:8883 serves the new chain",
            retire_after="2025-06-03T08:30:00+00:00",
        ),
    ],
    ids=["adding", "refused", "soaking", "retiring"],
)
def test_a_stored_plan_reads_back_byte_for_byte(stored: str) -> None:
    """A plan stored by the untyped service is written again as the very same bytes."""
    # given
    document = json.loads(stored)
    # when
    read = RenewalPlan.from_json(document)
    # then
    assert json.dumps(read.to_json()) == stored


def test_a_reason_added_later_keeps_every_key_and_value() -> None:
    """A reason the service appended after the switch reads back to the same JSON."""
    # given: the old service appended `reason` last
    stored = _stored(
        state="soaking",
        activated_at="2025-06-02T08:30:00+00:00",
        activated_by="certificate.activated",
        retire_after="2025-06-03T08:30:00+00:00",
        reason="retire not planned yet: devices are claimed by r-7",
    )
    # when
    again = RenewalPlan.from_json(json.loads(stored)).to_json()
    # then
    assert again == json.loads(stored)


def test_only_the_states_the_rotation_sets_exist() -> None:
    """Seven states, four of them open; no `scheduled`."""
    # given / when
    states = {state.value for state in PlanState}
    # then
    assert states == {
        "refused",
        "adding",
        "awaiting_switch",
        "soaking",
        "retiring",
        "done",
        "failed",
    }
    assert {s.value for s in OPEN_STATES} == {"adding", "awaiting_switch", "soaking", "retiring"}


@pytest.mark.parametrize(
    ("switched_first", "then"), [(False, PlanState.AWAITING_SWITCH), (True, PlanState.SOAKING)]
)
def test_a_completed_add_waits_for_the_switch_unless_it_came(
    switched_first: bool, then: PlanState
) -> None:
    """After the trust.add the plan soaks if the servers switched already, else waits."""
    # given
    adding = plan()
    if switched_first:
        adding = adding.switched(now=NOW, cause="certificate.activated", soak=SOAK)
    # when
    done = adding.add_completed()
    # then
    assert done.state is then
    assert adding.state is PlanState.ADDING, "transitions return new plans"


def test_a_switch_while_adding_keeps_adding_and_sets_the_soak() -> None:
    """The switch is recorded with its cause; the retire is due one soak later."""
    # given
    adding = plan()
    # when
    switched = adding.switched(now=NOW, cause="certificate.activated", soak=SOAK)
    # then
    assert switched.state is PlanState.ADDING
    assert (switched.activated_at, switched.activated_by) == (NOW, "certificate.activated")
    assert not switched.may_switch
    assert not switched.retire_due(NOW + SOAK - timedelta(seconds=1))
    assert switched.retire_due(NOW + SOAK)


def test_a_switch_while_awaiting_it_starts_the_soak() -> None:
    """awaiting_switch -> soaking on the switch."""
    # given
    waiting = plan(state=PlanState.AWAITING_SWITCH)
    # when
    switched = waiting.switched(
        now=NOW, cause="mqtt.example.com:8883 serves the new chain", soak=SOAK
    )
    # then
    assert switched.state is PlanState.SOAKING
    assert switched.retire_after == NOW + SOAK


def test_retiring_records_the_rollout_and_keeps_the_reason() -> None:
    """soaking -> retiring with the trust.retire rollout; a reason stays until replaced."""
    # given
    soaking = plan(state=PlanState.SOAKING).waiting("retire not planned yet: claimed")
    # when
    retiring = soaking.retiring("r-9")
    # then
    assert (retiring.state, retiring.retire_rollout) == (PlanState.RETIRING, "r-9")
    assert retiring.reason == "retire not planned yet: claimed"
    assert retiring.moved_to(PlanState.DONE, reason="all retired").reason == "all retired"


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (PlanState.REFUSED, PlanState.ADDING),
        (PlanState.DONE, PlanState.RETIRING),
        (PlanState.FAILED, PlanState.DONE),
        (PlanState.AWAITING_SWITCH, PlanState.FAILED),
        (PlanState.RETIRING, PlanState.SOAKING),
        (PlanState.SOAKING, PlanState.ADDING),
    ],
)
def test_a_plan_never_moves_back_or_out_of_a_final_state(
    start: PlanState, target: PlanState
) -> None:
    """Moves the rotation does not make are refused with both states named."""
    # given
    current = plan(state=start)
    # when
    with pytest.raises(PlanTransitionError) as refused:
        current.moved_to(target)
    # then
    assert str(start) in str(refused.value)
    assert str(target) in str(refused.value)


def test_a_chain_not_yet_valid_holds_the_add_until_it_is() -> None:
    """chain_valid_at is False before `not_yet_valid_until`, True from it on."""
    # given
    base = plan()
    later = NOW + timedelta(days=2)
    held = plan(chain=replace(base.chain, not_yet_valid_until=later))
    # when / then
    assert base.chain_valid_at(NOW)
    assert not held.chain_valid_at(NOW)
    assert held.chain_valid_at(later)


def test_serves_matches_any_shared_endpoint() -> None:
    """A plan serves a list of endpoints when it shares one of them."""
    # given
    current = plan()
    # when / then
    assert current.serves(["other:1", "mqtt.example.com:8883"])
    assert not current.serves(["other:1"])
