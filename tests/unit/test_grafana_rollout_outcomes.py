"""The Grafana dashboard shows every rollout outcome, completed_with_timeouts included."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.rollout_states import RolloutState

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "certfleet.json"


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return panels


def _titled(title: str) -> dict[str, Any]:
    (panel,) = [p for p in _panels() if p["title"] == title]
    return panel


def test_rollouts_by_state_colours_every_state() -> None:
    """Each rollout state has its own colour; an unconfirmed ending is not shown as a success."""
    overrides = _titled("Rollouts by state")["fieldConfig"]["overrides"]
    colour = {o["matcher"]["options"]: o["properties"][0]["value"]["fixedColor"] for o in overrides}

    assert set(colour) == {state.value for state in RolloutState}
    assert colour["completed"] == "green"
    assert colour["completed_with_timeouts"] not in ("green", "blue")


def test_rollouts_that_left_devices_unconfirmed_and_timed_out_devices_are_shown() -> None:
    """Stat panels count the completed_with_timeouts rollouts, the devices they left
    unconfirmed and the devices that timed out."""
    ended = _titled("Completed with timeouts")["targets"][0]["expr"]
    unconfirmed = _titled("Unconfirmed devices")["targets"][0]["expr"]
    timed_out = _titled("Devices timed out (range)")["targets"][0]["expr"]

    assert ended == 'max(certfleet_rollouts{state="completed_with_timeouts"})'
    assert unconfirmed == "max(certfleet_rollout_unconfirmed_devices)"
    assert 'certfleet_device_transitions_total{to="timed_out"}' in timed_out
    assert "[$__range]" in timed_out


def test_no_two_panels_overlap() -> None:
    """Every panel has a place of its own on the 24-column grid."""

    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        return {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }

    for a, b in itertools.combinations(_panels(), 2):
        assert not cells(a) & cells(b), (a["title"], b["title"])
