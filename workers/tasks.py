"""Thin Celery tasks: take ids, call one service, return JSON.

Each task goes to the queue `QUEUE_OF` names for it (the app's `task_routes`).
"""

from __future__ import annotations

import time
from typing import Any, Final

from celery import Task

from orchestrator.adapters.celery_queue import (
    TASK_DISPATCH_WAVE,
    TASK_EVALUATE_ROLLOUT,
    TASK_ISSUE_IDENTITIES,
    TASK_PLAN_IDENTITY_ROTATIONS,
    TASK_PUSH_BATCH,
    TASK_REFRESH_CRL,
    TASK_REVOKE_IDENTITIES,
    TASK_ROLLBACK_ROLLOUT,
    TASK_SCAN_FLEET,
    TASK_START_ROLLOUT,
    TASK_TICK_ROLLOUTS,
    TASK_TIME_LIMIT_SECONDS,
    TASK_WATCH_RENEWALS,
)
from orchestrator.clock import utcnow
from orchestrator.domain.errors import TransientError
from orchestrator.domain.rollout_states import PushStep
from orchestrator.services import renewals, rollout, scan
from orchestrator.services.identity.crl import refresh_crl as refresh_crl_now
from orchestrator.services.identity.issue import issue_identities as issue_identities_now
from orchestrator.services.identity.plan import plan_identity_rotations as plan_rotations_now
from orchestrator.services.identity.revoke import revoke_identities as revoke_identities_now
from workers.app import app, container

__all__ = [
    "SOFT_TIME_LIMIT_SECONDS",
    "CertfleetTask",
    "dispatch_wave",
    "evaluate_rollout",
    "issue_identities",
    "plan_identity_rotations",
    "push_batch",
    "refresh_crl",
    "revoke_identities",
    "rollback_rollout",
    "scan_fleet",
    "start_rollout",
    "tick_rollouts",
    "watch_renewals",
]


SOFT_TIME_LIMIT_SECONDS: Final = TASK_TIME_LIMIT_SECONDS * 9 // 10
"""When a task is told to stop (`SoftTimeLimitExceeded`, raised inside it), a tenth of
the hard limit before the worker process running it is killed: the task fails
cleanly, logged and acknowledged, where the kill would also cost the process. It is
not retried (only a `TransientError` is): every task is idempotent, and what it left
undone is picked up by the rollout's own clock (`tick_rollouts`)."""


class CertfleetTask(Task):  # type: ignore[type-arg]  # celery-types: Task is generic over its signature
    """The base of every certfleet task: late ack, bounded time, retries only when transient.

    Transient: Redis unreachable (`StoreUnavailableError`), the issuer away
    (`IssuerUnavailableError`), both `TransientError`s.

    The time limits hold under the prefork pool (the deployed one); the solo and
    thread pools cannot interrupt a task and ignore them.
    """

    acks_late = True
    reject_on_worker_lost = True
    time_limit = TASK_TIME_LIMIT_SECONDS
    soft_time_limit = SOFT_TIME_LIMIT_SECONDS
    autoretry_for = (TransientError,)
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5


@app.task(base=CertfleetTask, name=TASK_SCAN_FLEET)
def scan_fleet() -> dict[str, Any]:
    """Classify every (device, sec_tag) and store the summary; returns it."""
    c = container()
    started = time.perf_counter()
    scan.scan_fleet(
        c.inventory,
        c.library,
        now=utcnow(),
        warning_days=c.settings.expiry_warning_days,
        list_limit=c.settings.status_list_limit,
        identity_days=c.settings.identity_renew_days,
    )
    c.metrics.set("certfleet_scan_duration_seconds", time.perf_counter() - started)
    return scan.fleet_status(c.inventory)


def _deps() -> rollout.RolloutDeps:
    return container().rollout_deps()


@app.task(base=CertfleetTask, name=TASK_START_ROLLOUT)
def start_rollout(rollout_id: str) -> bool:
    """created -> running; the evaluator starts the first wave."""
    return rollout.start_rollout(_deps(), rollout_id, now=utcnow(), actor="worker")


@app.task(base=CertfleetTask, name=TASK_DISPATCH_WAVE)
def dispatch_wave(rollout_id: str, wave: int) -> int:
    """Split the wave's pending devices into push_batch tasks; returns how many devices."""
    return rollout.dispatch_wave(_deps(), rollout_id, wave, now=utcnow())


@app.task(base=CertfleetTask, name=TASK_PUSH_BATCH)
def push_batch(rollout_id: str, wave: int, device_ids: list[str], step: str) -> int:
    """Sign and publish one step's bundles to hundreds of devices; returns how many went out."""
    return rollout.push_batch(
        container().push_deps(), rollout_id, device_ids, PushStep(step), now=utcnow()
    )


@app.task(base=CertfleetTask, name=TASK_EVALUATE_ROLLOUT)
def evaluate_rollout(rollout_id: str) -> str:
    """Commit healthy devices, apply the gate, move waves on; returns the rollout state."""
    return rollout.evaluate_rollout(_deps(), rollout_id, now=utcnow())


@app.task(base=CertfleetTask, name=TASK_TICK_ROLLOUTS)
def tick_rollouts() -> dict[str, str]:
    """Beat: time out overdue devices, end bakes, open windows; returns each rollout's state."""
    return rollout.tick_rollouts(_deps(), now=utcnow())


@app.task(base=CertfleetTask, name=TASK_ROLLBACK_ROLLOUT)
def rollback_rollout(rollout_id: str) -> int:
    """Send rollback bundles to every device that may hold the new credential."""
    return rollout.rollback_rollout(_deps(), rollout_id, now=utcnow())


@app.task(base=CertfleetTask, name=TASK_WATCH_RENEWALS)
def watch_renewals() -> dict[str, str]:
    """Beat: move renewal plans on (endpoint switch, soak, retire); returns each plan's state."""
    return renewals.watch_renewals(container().renewal_deps(), now=utcnow())


@app.task(base=CertfleetTask, name=TASK_ISSUE_IDENTITIES)
def issue_identities(rollout_id: str, wave: int, device_ids: list[str]) -> int:
    """Check the CSRs of devices in `csr`, issue and stage their certificates; how many sent.

    An issuer away (`IssuerUnavailableError`) retries the task with backoff; the devices
    handled before stay handled.
    """
    return issue_identities_now(
        container().identity_deps(), rollout_id, wave, device_ids, now=utcnow()
    )


@app.task(base=CertfleetTask, name=TASK_REVOKE_IDENTITIES)
def revoke_identities(rollout_id: str, device_ids: list[str]) -> int:
    """Revoke the certificates the devices no longer use; returns how many were new."""
    c = container()
    return revoke_identities_now(c.identity_deps(), c.tasks, rollout_id, device_ids, now=utcnow())


@app.task(base=CertfleetTask, name=TASK_REFRESH_CRL)
def refresh_crl() -> int:
    """Sign and publish the CRL; returns how many certificates it lists (-1: none published).

    Beat runs it twice per CRL lifetime too, so the broker never holds an expired CRL
    (which would refuse every client); without `CERTFLEET_CRL_FILE` it does nothing.
    """
    c = container()
    if c.crl_publisher is None:
        return -1
    return refresh_crl_now(c.crl_deps(), now=utcnow())


@app.task(base=CertfleetTask, name=TASK_PLAN_IDENTITY_ROTATIONS)
def plan_identity_rotations() -> dict[str, Any]:
    """Beat: an identity.rotate rollout per identity tag for its devices whose certificate
    expires within CERTFLEET_IDENTITY_RENEW_DAYS; returns what was planned and skipped."""
    return plan_rotations_now(container().identity_plan_deps(), now=utcnow()).as_json()
