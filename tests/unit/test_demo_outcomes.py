"""`make demo` knows a rollout that completed with timeouts and shows its unconfirmed devices."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.domain.rollout_states import RolloutState
from simulator.demo import COMPLETED, _outcome, _summary_row

pytestmark = pytest.mark.unit

WITH_TIMEOUTS: dict[str, Any] = {
    "id": "r-good",
    "kind": "trust.add",
    "state": "completed_with_timeouts",
    "totals": {
        "pending": 0,
        "committed": 43,
        "timed_out": 2,
        "rejected": 0,
        "health_failed": 0,
        "fallback": 0,
        "rolled_back": 0,
    },
    "unconfirmed": ["legacy-00003", "legacy-00017"],
}


def test_completed_with_timeouts_is_a_completed_rotation_that_says_how_many() -> None:
    """The renewal rotation accepts both completions and names the unconfirmed count."""
    assert set(COMPLETED) == {
        RolloutState.COMPLETED.value,
        RolloutState.COMPLETED_WITH_TIMEOUTS.value,
    }
    assert _outcome(WITH_TIMEOUTS) == "completed_with_timeouts (2 unconfirmed)"
    assert _outcome({"state": "completed", "totals": {}}) == "completed"


def test_the_summary_shows_the_unconfirmed_devices() -> None:
    """The summary line counts the devices that never confirmed beside the failed ones."""
    row = _summary_row(WITH_TIMEOUTS)

    # rollout, kind, state, devices, committed, failed, unconfirmed, rolled back, reason
    assert row == ("r-good", "trust.add", "completed_with_timeouts", "45", "43", "2", "2", "0", "-")


def test_a_status_without_unconfirmed_devices_shows_none() -> None:
    """A rolled-back rollout's line has no unconfirmed devices and its abort reason."""
    status = {
        **WITH_TIMEOUTS,
        "state": "rolled_back",
        "totals": {"committed": 0, "health_failed": 3, "rolled_back": 3},
        "abort_reason": "gate: 3 of 3 failed",
    }
    del status["unconfirmed"]

    row = _summary_row(status)

    assert row[2:] == ("rolled_back", "6", "0", "3", "0", "3", "gate: 3 of 3 failed")
