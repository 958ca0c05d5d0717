"""Thin Celery tasks: take ids, call one service, return JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Task

from orchestrator.adapters.celery_queue import TASK_SCAN_FLEET
from orchestrator.domain.errors import StoreUnavailableError
from orchestrator.services import scan
from workers.app import app, container

__all__ = ["CertfleetTask", "scan_fleet"]


class CertfleetTask(Task):  # type: ignore[type-arg]  # celery-types: Task is generic over its signature
    """The base of every certfleet task: late ack, bounded time, one retried error."""

    acks_late = True
    reject_on_worker_lost = True
    time_limit = 600
    soft_time_limit = 540
    autoretry_for = (StoreUnavailableError,)
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5


@app.task(base=CertfleetTask, name=TASK_SCAN_FLEET, queue="scan")
def scan_fleet() -> dict[str, Any]:
    """Classify every (device, sec_tag) and store the summary; returns it."""
    c = container()
    scan.scan_fleet(
        c.inventory,
        c.library,
        now=datetime.now(UTC),
        warning_days=c.settings.expiry_warning_days,
        list_limit=c.settings.status_list_limit,
    )
    return scan.fleet_status(c.inventory)
