"""The end-to-end benchmark knows every state a rollout ends in and says how one fell short."""

from __future__ import annotations

import pytest

from orchestrator.domain.rollout_aggregate import ENDED as DOMAIN_ENDED
from tests.bench.bench_e2e import ENDED, FINAL, shortfall

pytestmark = pytest.mark.unit


def test_the_benchmark_waits_for_every_end_state_of_the_domain() -> None:
    """A rollout ending completed_with_timeouts ends the wait instead of timing it out."""
    assert set(ENDED) == {state.value for state in DOMAIN_ENDED}
    assert set(ENDED) <= set(FINAL)
    assert "completed_with_timeouts" in FINAL


def test_a_rollout_with_unconfirmed_devices_is_no_result() -> None:
    """completed_with_timeouts fails the run, naming how many devices did not confirm."""
    # given a rollout whose waves passed with 3 of 100 devices timed out
    status = {
        "state": "completed_with_timeouts",
        "totals": {"committed": 97, "timed_out": 3},
        "unconfirmed": ["e2e-00001", "e2e-00002", "e2e-00003"],
    }

    # when the benchmark judges it
    failed = shortfall(status, 100)

    # then it is a failure that says so
    assert failed is not None
    assert failed.startswith("rollout ended completed_with_timeouts with 97 of 100 committed")
    assert "3 unconfirmed" in failed


def test_a_rollout_that_committed_every_device_is_the_result() -> None:
    """completed with every device committed is what the figure measures."""
    status = {"state": "completed", "totals": {"committed": 100, "timed_out": 0}}

    assert shortfall(status, 100) is None
    assert shortfall({**status, "totals": {"committed": 99}}, 100) is not None
