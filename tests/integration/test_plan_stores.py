"""`RedisPlans` and `FakePlanStore` keep the same `PlanStore` contract, against a real Redis."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta

import pytest

from orchestrator.adapters.redis_plans import PLANS, RedisPlans
from orchestrator.bootstrap import Container
from orchestrator.domain.renewal import PlanState
from orchestrator.ports import PlanStore
from tests.fakes import FakePlanStore
from tests.unit.plans import ADDING_DOCUMENT, plan

pytestmark = pytest.mark.integration

MakeStore = Callable[[], PlanStore]
SOAK = timedelta(hours=1)


@pytest.fixture(params=["redis", "fake"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Each store, the Redis one over a flushed redis-server."""
    if request.param == "fake":
        return FakePlanStore
    container: Container = request.getfixturevalue("container")
    return lambda: RedisPlans(container.redis)


def test_the_fake_has_the_port_signatures() -> None:
    """FakePlanStore has every method of PlanStore with the same parameters."""
    # given
    members = [name for name in vars(PlanStore) if not name.startswith("_")]
    # when
    mismatched = [
        name
        for name in members
        if inspect.signature(getattr(PlanStore, name)).parameters.keys()
        != inspect.signature(getattr(FakePlanStore, name, lambda: None)).parameters.keys()
    ]
    # then
    assert members
    assert mismatched == []


def test_a_saved_plan_loads_back_equal(make_store: MakeStore) -> None:
    """What is saved loads back as an equal plan; an unknown id is None."""
    # given
    store = make_store()
    adding = plan("plan-a")
    saved = adding.switched(now=adding.created_at, cause="certificate.activated", soak=SOAK)
    # when
    store.save(saved)
    # then
    assert store.load("plan-a") == saved
    assert store.load("plan-nope") is None


def test_recent_is_newest_first_and_capped(make_store: MakeStore) -> None:
    """recent lists plans by created_at, newest first, at most `limit`; a re-save moves none."""
    # given
    store = make_store()
    for minutes, plan_id in [(2, "plan-b"), (0, "plan-a"), (5, "plan-c")]:
        store.save(plan(plan_id, minutes=minutes))
    # when
    store.save(plan("plan-a", state=PlanState.FAILED, reason="trust.add rolled back"))
    # then
    assert [p.id for p in store.recent()] == ["plan-c", "plan-b", "plan-a"]
    assert [p.id for p in store.recent(limit=2)] == ["plan-c", "plan-b"]
    assert store.recent()[2].state is PlanState.FAILED


def test_open_plans_leave_out_the_final_ones(make_store: MakeStore) -> None:
    """open_plans are those the watch moves on: adding, awaiting_switch, soaking, retiring."""
    # given
    store = make_store()
    for minutes, state in enumerate(PlanState):
        store.save(plan(f"plan-{state}", minutes=minutes, state=state))
    # when
    open_ids = [p.id for p in store.open_plans()]
    # then
    assert open_ids == ["plan-retiring", "plan-soaking", "plan-awaiting_switch", "plan-adding"]


def test_summaries_are_the_recent_plans_without_their_device_lists(make_store: MakeStore) -> None:
    """summaries lists what recent lists, newest first and capped, as each plan's summary,
    and a re-saved plan's summary follows it."""
    # given
    store = make_store()
    for minutes, plan_id in [(2, "plan-b"), (0, "plan-a"), (5, "plan-c")]:
        store.save(plan(plan_id, minutes=minutes))
    # when
    store.save(plan("plan-a", state=PlanState.FAILED, reason="trust.add rolled back"))
    # then
    assert store.summaries() == [p.summary() for p in store.recent()]
    assert [s.id for s in store.summaries(limit=2)] == ["plan-c", "plan-b"]
    failed = store.summaries()[2]
    assert (failed.state, failed.reason) == (PlanState.FAILED, "trust.add rolled back")
    assert (failed.counts, failed.add_rollout) == (
        {"safe": 1, "at_risk": 2, "unknown": 0},
        "r-20250601-1",
    )


def test_a_plan_saved_before_summaries_is_summarised_from_its_document(
    container: Container,
) -> None:
    """A plan stored with its index entry but no summary (as before summaries existed) is
    listed by summaries, summarised from its document."""
    # given
    store = RedisPlans(container.redis)
    store.save(plan("plan-new", minutes=5))
    old = plan("plan-old")
    container.redis.set(
        "certfleet:plan:plan-old", ADDING_DOCUMENT.replace("plan-20250601-120000-ab12", "plan-old")
    )
    container.redis.zadd(PLANS, {"plan-old": old.created_at.timestamp()})
    # when
    listed = store.summaries()
    # then
    assert listed == [plan("plan-new", minutes=5).summary(), old.summary()]
