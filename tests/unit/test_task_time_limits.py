"""Every certfleet task runs under the one time limit, `TASK_TIME_LIMIT_SECONDS`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.adapters.celery_queue import QUEUE_OF, TASK_TIME_LIMIT_SECONDS
from workers.tasks import SOFT_TIME_LIMIT_SECONDS, app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_every_task_is_told_to_stop_before_it_is_killed() -> None:
    """Each task's hard limit is the constant; its soft limit comes a tenth of it earlier."""
    # given every task certfleet routes
    tasks = [app.tasks[name] for name in QUEUE_OF]

    # then each is killed at the one limit and told to stop before
    assert {(t.time_limit, t.soft_time_limit) for t in tasks} == {
        (TASK_TIME_LIMIT_SECONDS, SOFT_TIME_LIMIT_SECONDS)
    }
    assert TASK_TIME_LIMIT_SECONDS - SOFT_TIME_LIMIT_SECONDS == TASK_TIME_LIMIT_SECONDS // 10


def test_the_limits_follow_the_constant() -> None:
    """Changing TASK_TIME_LIMIT_SECONDS changes every task's limits: no second copy of it."""
    # given the constant changed before the tasks are defined
    code = (
        "import orchestrator.adapters.celery_queue as q\n"
        "q.TASK_TIME_LIMIT_SECONDS = 120\n"
        "from workers.tasks import app\n"
        "print(*{(app.tasks[n].time_limit, app.tasks[n].soft_time_limit) for n in q.QUEUE_OF})\n"
    )

    # when the tasks are defined
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    # then every task's limits are derived from it
    assert done.stdout.strip() == "(120, 108)"


def test_operations_says_what_the_limits_are() -> None:
    """docs/operations.md gives the limits the tasks run with."""
    doc = (REPO / "docs/operations.md").read_text()

    row = (
        f"| `time_limit`, `soft_time_limit` (`CertfleetTask`) | "
        f"{TASK_TIME_LIMIT_SECONDS} s, {SOFT_TIME_LIMIT_SECONDS} s |"
    )
    assert row in doc
