"""Rollback answers that undo nothing, against the in-memory stores (tests/undo_refusals.py)."""

from __future__ import annotations

import pytest

from orchestrator.domain.rollout_states import DeviceRolloutState, may_transition
from tests.fake_rollouts import FakeRollouts, trust_add_spec
from tests.fakes import FakeInventory
from tests.undo_refusals import SCENARIOS, UndoBench, UndoScenario

pytestmark = pytest.mark.unit

D = DeviceRolloutState


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_an_undo_refusal_is_no_confirmed_undo(scenario: UndoScenario) -> None:
    """Each scenario of tests/undo_refusals.py holds (its docstring says what)."""
    scenario(UndoBench.given_with(FakeRollouts(), FakeInventory()))


def test_undo_refused_comes_only_from_rollback_sent_and_leads_only_to_rolled_back() -> None:
    """The state machine: rollback_sent -> undo_refused -> rolled_back, nothing else."""
    assert {s for s in D if may_transition(s, D.UNDO_REFUSED)} == {D.ROLLBACK_SENT}
    assert {s for s in D if may_transition(D.UNDO_REFUSED, s)} == {D.ROLLED_BACK}


def test_what_the_inventory_must_show_for_each_kind() -> None:
    """add/replace: no active tag holds the new CA; retire: the retired tag is still active."""
    add = trust_add_spec()
    new = add.new_ca_digest
    assert new is not None
    assert add.undone_on({42: "0" * 64})
    assert not add.undone_on({42: "0" * 64, 43: new})
    retire = trust_add_spec(kind="trust.retire", ca_pems=(), probe_host="", probe_port=0)
    assert retire.new_ca_digest is None
    assert retire.undone_on({42: "0" * 64, 43: "1" * 64})
    assert not retire.undone_on({43: "1" * 64})
