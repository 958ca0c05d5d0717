"""Rollback answers that undo nothing, against Redis: the transition script binds the
refusal to the rollback bundle and the inventory decides, as with the in-memory stores."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from orchestrator.bootstrap import Container
from orchestrator.domain.reports import DeviceReport
from orchestrator.services.report import rollout_report
from tests.procs import certfleet
from tests.undo_refusals import (
    NOW,
    RID,
    SCENARIOS,
    UndoBench,
    UndoScenario,
    a_superseded_device_still_trusting_the_new_ca_stays_undo_refused,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_an_undo_refusal_is_no_confirmed_undo_in_redis(
    container: Container, scenario: UndoScenario
) -> None:
    """Each scenario of tests/undo_refusals.py holds in Redis (its docstring says what)."""
    scenario(UndoBench.given_with(container.rollouts, container.inventory))


def test_the_html_report_lists_devices_that_refused_their_undo(container: Container) -> None:
    """The report says how many devices refused the rollback and lists each with its reason."""
    bench = UndoBench.given_with(container.rollouts, container.inventory)
    a_superseded_device_still_trusting_the_new_ca_stays_undo_refused(bench)
    container.inventory.record_reports(
        [
            DeviceReport(
                device_id="b",
                rollout_id=RID,
                seq=bench.last_sent("b", "rollback").seq,
                op="rollback",
                phase="rejected",
                reason="superseded",
                detail="the latest change belongs to ro-other",
                time=NOW,
            )
        ]
    )

    page = rollout_report(bench.deps, container.inventory, RID)

    assert '<p class="failed" id="undo-refused">1 device(s) refused the rollback' in page
    row = page[page.index('<span class="mono">b</span>') :].split("</tr>")[0]
    assert "undo_refused" in row
    assert "rejected: superseded" in row
    assert "the latest change belongs to ro-other" in row


def test_rollout_status_prints_the_devices_that_refused_their_undo(container: Container) -> None:
    """`certfleet rollout status` says how many refused the rollback and names them; its
    JSON lists them under undo_refused."""
    bench = UndoBench.given_with(container.rollouts, container.inventory)
    a_superseded_device_still_trusting_the_new_ca_stays_undo_refused(bench)

    def status(*flags: str) -> str:
        result = subprocess.run(
            certfleet("rollout", "status", RID, *flags),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "300"},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "1 devices refused the rollback (nothing to undo, or superseded)" in status()
    assert json.loads(status("--json"))["undo_refused"] == {"count": 1, "devices": ["b"]}
