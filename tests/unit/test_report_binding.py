"""Reports bound to bundles, against the in-memory rollout store (tests/report_binding.py)."""

from __future__ import annotations

import pytest

from tests.fake_rollouts import FakeRollouts
from tests.report_binding import SCENARIOS, Bench, Scenario

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_a_report_moves_a_device_only_if_it_answers_an_issued_bundle(scenario: Scenario) -> None:
    """Each scenario of tests/report_binding.py holds in memory (its docstring says what)."""
    scenario(Bench.given(FakeRollouts()))
