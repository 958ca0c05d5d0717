"""The Celery app: `celery -A workers.app worker|beat|flower`.

Importing this module reads settings and builds the app object only; the Redis
clients of the tasks are built per worker process in `worker_process_init`.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from orchestrator.adapters.celery_queue import celery_config
from orchestrator.adapters.issuers import (
    attestation_keys_from_settings,
    crl_publisher_from_settings,
    crl_signer_from_settings,
    issuer_from_settings,
)
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.errors import CertfleetError
from orchestrator.logs import get_logger

__all__ = [
    "app",
    "check_identity_settings",
    "check_worker_settings",
    "container",
    "prepare_delegation",
]

log = get_logger(__name__)

app = Celery("certfleet", include=["workers.tasks"])
app.conf.update(celery_config(Settings()))

_container: Container | None = None


def check_identity_settings(settings: Settings) -> None:
    """Read the identity rotation's files now (issuer CA, CRL signer and file, attestation
    keys): a bad one stops the worker at start with the error that names it, instead of
    failing every issuance while the devices time out.

    Raises:
        CertfleetError: a setting is half set or a file is unreadable or of the wrong kind.
    """
    issuer_from_settings(settings)
    crl_signer_from_settings(settings)
    crl_publisher_from_settings(settings)
    attestation_keys_from_settings(settings)


@worker_init.connect
def check_worker_settings(**_: Any) -> None:
    """At worker start: a bad identity setting stops the worker (Celery logs and swallows
    an `Exception` from a signal handler, so it leaves as `SystemExit`)."""
    try:
        check_identity_settings(Settings())
    except (CertfleetError, OSError, ValueError) as exc:
        raise SystemExit(f"certfleet worker: {exc}") from None


@worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    global _container  # noqa: PLW0603 -- one container per worker process
    _container = bootstrap()
    prepare_delegation(_container)


def prepare_delegation(c: Container) -> None:
    """Make this process's key and get its delegation now, before the first push needs it
    (the signer logs `delegation_issued`). A root key that does not answer does not stop
    the process: it is logged, and each push asks again (a push without a delegation
    stops and is retried; see `push_stopped`)."""
    try:
        c.signer.delegation_for(int(time.time()))
    except (CertfleetError, OSError, ValueError) as exc:
        log.warning(
            "delegation_unavailable_at_start",
            error=type(exc).__name__,
            detail=str(exc)[:300],
        )


@worker_process_shutdown.connect
def _close_worker_process(**_: Any) -> None:
    global _container  # noqa: PLW0603 -- one container per worker process
    if _container is not None:
        _container.close()
        _container = None


def container() -> Container:
    """This worker process's adapters.

    Prefork children build them in `worker_process_init`; the solo and thread
    pools send no such signal, so there the first task builds them.
    """
    global _container  # noqa: PLW0603 -- one container per worker process
    if _container is None:
        _container = bootstrap()
    return _container
