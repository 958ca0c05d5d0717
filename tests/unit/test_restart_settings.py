"""The settings that let certfleet's processes ride out a Redis or broker restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.adapters.celery_queue import (
    TASK_TIME_LIMIT_SECONDS,
    VISIBILITY_TIMEOUT_SECONDS,
    celery_config,
)
from orchestrator.adapters.redbeat_scheduler import ReconnectingRedBeatScheduler
from orchestrator.config import Settings
from workers.tasks import CertfleetTask

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _config() -> dict[str, object]:
    return celery_config(Settings(redis_url="redis://127.0.0.1:1/0"))


def test_a_live_task_outlasts_neither_its_time_limit_nor_the_visibility_timeout() -> None:
    """Redis never hands a task that may still be running to a second worker."""
    # given the tasks' time limit and the broker's visibility timeout
    transport = _config()["broker_transport_options"]
    assert isinstance(transport, dict)

    # then the timeout is the one documented, past the longest run
    assert CertfleetTask.time_limit == TASK_TIME_LIMIT_SECONDS
    assert transport["visibility_timeout"] == VISIBILITY_TIMEOUT_SECONDS
    assert VISIBILITY_TIMEOUT_SECONDS > TASK_TIME_LIMIT_SECONDS
    doc = (REPO / "docs/operations.md").read_text()
    assert f"**The visibility timeout** ({VISIBILITY_TIMEOUT_SECONDS} s)" in doc


def test_sending_a_task_waits_out_a_restart_of_about_a_minute() -> None:
    """A task (or a task's retry) sent while the broker restarts is not dropped."""
    # given the publish retry policy
    policy = _config()["task_publish_retry_policy"]
    assert isinstance(policy, dict)

    # when every retry waits its interval
    waits = [
        min(policy["interval_start"] + n * policy["interval_step"], policy["interval_max"])
        for n in range(policy["max_retries"])
    ]

    # then the sends span a Redis restart, and the worker never stops reconnecting
    assert sum(waits) >= 45
    assert _config()["broker_connection_max_retries"] is None


def test_beat_runs_the_scheduler_that_rides_out_redis() -> None:
    """Beat is configured with the reconnecting redbeat scheduler."""
    module, name = str(_config()["beat_scheduler"]).split(":")

    assert (module, name) == (
        ReconnectingRedBeatScheduler.__module__,
        ReconnectingRedBeatScheduler.__name__,
    )


def test_the_shipped_broker_saves_its_queue_within_the_documented_window() -> None:
    """mosquitto.conf persists and autosaves as often as operations.md says."""
    # given the shipped broker config
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    settings = dict(
        line.split(maxsplit=1) for line in conf.splitlines() if line and not line.startswith("#")
    )

    # then it persists, autosaves by time every few seconds, and the docs say so
    assert settings["persistence"] == "true"
    assert "autosave_on_changes" not in settings
    interval = int(settings["autosave_interval"])
    assert interval <= 10
    doc = (REPO / "docs/operations.md").read_text()
    window = f"`autosave_interval {interval}`: the database is written every {interval} s"
    assert window in doc
