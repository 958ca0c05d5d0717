"""The chaos suite's small subset, run in `make test` (the full sizes: `make chaos`).

1,000 mutated bundles at a device's firmware, 1,000 hostile device messages at a real
listener and Redis, and one fault (the listener SIGKILLed in the middle of the 50 %
wave) on 50 devices of a real stack; each with the checks of the full suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.bundles import CLASSES, run_bundles
from tests.chaos.faults import run_fault
from tests.chaos.listener_run import run_messages

pytestmark = [pytest.mark.e2e]


def test_a_thousand_mutated_bundles_are_each_refused_and_change_nothing() -> None:
    """Every class refused with one of its reasons; key store, active list and seq kept."""
    outcome = run_bundles(1000, seed=11)

    assert outcome.problems == []
    assert outcome.total == 1000
    assert set(outcome.sent) == set(CLASSES)
    assert sum(outcome.reasons.values()) == 1000


def test_a_thousand_hostile_messages_are_each_counted_and_change_nothing(tmp_path: Path) -> None:
    """Each refusal counted under its reason, each forged report as unmatched; the
    inventory, library and rollout unchanged; the listener still running."""
    outcome = run_messages(tmp_path, 1000, seed=11)

    assert outcome.problems == []
    assert outcome.total == 1000
    refused = {k for k in outcome.expected if k.startswith("rejected:")}
    assert len(refused) >= 8, refused
    assert outcome.expected["unmatched:no_bundle"] > 0  # forged reports for pending devices
    assert outcome.expected["stale"] > 0
    assert outcome.expected["duplicate"] > 0


def test_a_listener_killed_mid_wave_loses_no_report_and_the_rollout_tells_the_truth(
    tmp_path: Path,
) -> None:
    """50 devices, the listener SIGKILLed in the middle of the 50 % wave and restarted with
    its session: the rollout ends completed with every modem on the new CA, no device without
    an active CA, no report lost, counts and audit log consistent, no process exited."""
    result = run_fault(tmp_path, "listener_kill", 50, push_rate=4)

    assert result.problems == []
    assert result.end_state == "completed"
    assert result.on_new_ca == 50
    assert result.untrusted == 0
    assert result.lost == 0
    assert result.witnessed > 0
