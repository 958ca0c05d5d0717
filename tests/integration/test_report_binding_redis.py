"""Reports bound to bundles, against Redis: the transition script agrees with the fake."""

from __future__ import annotations

import pytest

from orchestrator.bootstrap import Container
from tests.report_binding import SCENARIOS, Bench, Scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_a_report_moves_a_device_only_if_it_answers_an_issued_bundle(
    container: Container, scenario: Scenario
) -> None:
    """Each scenario of tests/report_binding.py holds in Redis (its docstring says what)."""
    scenario(Bench.given(container.rollouts))
