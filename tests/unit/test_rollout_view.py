"""The CLI's rollout tables: columns in the field's words, counts where they belong."""

from __future__ import annotations

import pytest
from rich.console import Console

from orchestrator.cli.rollout_view import rollouts_table, status_table
from orchestrator.domain.rollout_states import DeviceRolloutState

pytestmark = pytest.mark.unit


def _counts(**given: int) -> dict[str, int]:
    return {s.value: given.get(s.value, 0) for s in DeviceRolloutState}


STATUS = {
    "id": "ro-1",
    "kind": "trust.add",
    "state": "running",
    "created_at": "2026-12-01T12:00:00+00:00",
    "waves": [
        {"index": 0, "size": 5, "state": "passed", "counts": _counts(committed=4, fallback=1)},
        {
            "index": 1,
            "size": 10,
            "state": "running",
            "counts": _counts(pending=3, sent=2, committed=5),
        },
    ],
    "totals": _counts(pending=3, sent=2, committed=9, fallback=1),
}


def _text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_status_table_shows_done_counts_and_what_is_in_flight() -> None:
    """Wave 1: 5 committed, 3 pending, so 2 in flight; the done states are the columns."""
    text = _text(status_table(STATUS))
    header = next(line for line in text.splitlines() if "wave" in line and "size" in line)
    for column in (
        "committed",
        "rejected",
        "health_failed",
        "timed_out",
        "fallback",
        "rolled_back",
    ):
        assert column in header
    row = next(line for line in text.splitlines() if line.strip().startswith("│ 1"))
    assert row.split("│")[-2].strip() == "2"


def test_rollouts_table_counts_failures_and_timeouts_as_failed() -> None:
    """One line per rollout: 15 devices, 9 committed, 1 failed (the fallback)."""
    text = _text(rollouts_table([STATUS]))
    row = next(line for line in text.splitlines() if "ro-1" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == ["ro-1", "trust.add", "running", "2026-12-01T12:00:00", "15", "9", "1"]
