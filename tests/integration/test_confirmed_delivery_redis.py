"""Delivery confirmed, not assumed, against Redis: the scenarios of tests/delivery_fleet.py
with the real rollout store, its Lua scripts and deadlines."""

from __future__ import annotations

import pytest

from orchestrator.bootstrap import Container
from tests.delivery_fleet import SCENARIOS, Fleet, Scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_delivery_is_confirmed_and_re_sent_within_its_budget_in_redis(
    container: Container, scenario: Scenario
) -> None:
    """Each scenario of tests/delivery_fleet.py holds in Redis (its docstring says what)."""
    scenario(Fleet(store=container.rollouts))
