"""The chaos suite's small subset, run in `make test` (the full sizes: `make chaos`).

1,000 mutated bundles at a device's firmware, 1,000 hostile device messages at a real
listener and Redis, and one fault (the listener SIGKILLed in the middle of the 50 %
wave) on 50 devices of a real stack; each with the checks of the full suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.chaos import bundles
from tests.chaos.bundles import CLASSES, run_bundles
from tests.chaos.faults import FaultResult, _judge, run_fault
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


def test_the_bundle_check_flags_a_bundle_the_device_takes() -> None:
    """The check is not vacuous: a genuine stage, taken by the device, is a finding."""
    keys = bundles._keys(11)
    maker, device = bundles._Maker(keys, random.Random(1)), bundles._device(keys)
    before, link = bundles._snapshot(device), bundles._Link()

    asyncio.run(device.handle(link, maker.sign(maker.stage())))
    outcome = bundles.BundleOutcome()
    bundles._check(outcome, "replayed", link.reports, device, before)

    assert len(outcome.problems) == 1
    assert "want one rejected" in outcome.problems[0]


def test_the_fault_judge_flags_a_completed_rollout_with_a_device_on_the_old_ca() -> None:
    """The judge is not vacuous: `completed` while one modem lacks the new CA is a finding,
    and so is a device the log calls committed; `completed_with_timeouts` naming it is not."""
    ca1, ca2 = b"old CA", b"new CA"
    digest = {pem: hashlib.sha256(pem).hexdigest() for pem in (ca1, ca2)}
    modems = {
        "devices": {
            "dev-1": {"active": [43], "items": {"42:0": digest[ca1], "43:0": digest[ca2]}},
            "dev-2": {"active": [42], "items": {"42:0": digest[ca1]}},
        },
        "ever_untrusted": [],
    }
    chaos = SimpleNamespace(
        stack=SimpleNamespace(ca1=SimpleNamespace(pem=ca1), ca2=SimpleNamespace(pem=ca2)),
        modems=lambda: modems,
    )
    log = [{"kind": "device", "subject": d, "to": "committed"} for d in ("dev-1", "dev-2")]
    reader = SimpleNamespace(log=lambda _rid: log)
    counts = {"pending": 0, "committed": 2, "timed_out": 0}
    status = {
        "state": "completed",
        "waves": [{"size": 2, "counts": counts}],
        "totals": counts,
        "unconfirmed": [],
    }

    completed = FaultResult("test", 2)
    _judge(chaos, reader, completed, "r", status)  # type: ignore[arg-type]
    log[1]["to"] = "timed_out"
    counts = {"pending": 0, "committed": 1, "timed_out": 1}
    named = FaultResult("test", 2)
    honest = {**status, "state": "completed_with_timeouts", "totals": counts}
    honest["waves"] = [{"size": 2, "counts": counts}]
    honest["unconfirmed"] = ["dev-2"]
    _judge(chaos, reader, named, "r", honest)  # type: ignore[arg-type]

    assert completed.on_new_ca == 1
    assert any("completed while 1 devices" in p for p in completed.problems)
    assert any("committed in the log, not on the new CA" in p for p in completed.problems)
    assert named.problems == []
