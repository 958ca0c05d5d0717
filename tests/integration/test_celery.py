"""Real Celery: the worker runs scan_fleet, beat (redbeat) schedules it, Flower shows it."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest
import redis

from orchestrator.adapters.celery_queue import TASK_SCAN_FLEET
from orchestrator.bootstrap import Container
from simulator.services import free_port
from tests.procs import BIN, celery_worker, start, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get_json(url: str, *, user: str, password: str) -> object:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})  # noqa: S310 -- loopback
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 -- loopback
        return json.loads(response.read())


def test_scan_runs_on_a_worker_and_flower_shows_it_by_name(
    service_env: dict[str, str], container: Container, log_dir: Path
) -> None:
    """Flower's HTTP API lists certfleet.scan_fleet, succeeded, after a worker ran it."""
    port = free_port()
    flower = start(
        "flower",
        [
            str(BIN / "celery"),
            "-A",
            "workers.app",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
            "--basic-auth=ops:s3cret",
        ],
        env=service_env,
        log_dir=log_dir,
    )
    worker = celery_worker(log_dir, service_env)
    try:
        wait_until(
            lambda: _workers(port),
            timeout=60,
            what="flower to see the worker",
        )
        summary = container.tasks.run_scan(timeout=60)
        assert summary["devices"] == 0

        def scan_tasks() -> list[dict[str, object]]:
            tasks = _get_json(
                f"http://127.0.0.1:{port}/api/tasks?taskname={TASK_SCAN_FLEET}",
                user="ops",
                password="s3cret",
            )
            assert isinstance(tasks, dict)
            return [t for t in tasks.values() if t.get("state") == "SUCCESS"]

        found = wait_until(scan_tasks, timeout=30, what="the scan in flower")
    finally:
        worker.stop()
        flower.stop()

    assert found[0]["name"] == TASK_SCAN_FLEET
    assert found[0]["routing_key"] == "scan"


def _workers(port: int) -> object:
    try:
        return _get_json(
            f"http://127.0.0.1:{port}/api/workers?refresh=1", user="ops", password="s3cret"
        )
    except OSError:
        return None


def test_beat_schedules_scan_fleet_through_redbeat(
    service_env: dict[str, str], log_dir: Path
) -> None:
    """With a one-second interval, beat alone gets a scan summary written."""
    env = {**service_env, "CERTFLEET_SCAN_INTERVAL_SECONDS": "1"}
    worker = celery_worker(log_dir, env)
    beat = start(
        "beat",
        [str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO"],
        env=env,
        log_dir=log_dir,
    )
    client = redis.Redis.from_url(service_env["CERTFLEET_REDIS_URL"], decode_responses=True)
    try:
        wait_until(
            lambda: client.get("certfleet:inv:scan:last"), timeout=60, what="a scheduled scan"
        )
        entries = client.keys("certfleet:redbeat:scan-fleet")
    finally:
        beat.stop()
        worker.stop()
        client.close()

    assert entries, "the schedule lives in Redis (redbeat)"
    assert "Scheduler: Sending due task scan-fleet" in beat.log()
