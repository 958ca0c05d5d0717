"""The Celery app: `celery -A workers.app worker|beat|flower`.

Importing this module reads settings and builds the app object only; the Redis
clients of the tasks are built per worker process in `worker_process_init`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from orchestrator.adapters.celery_queue import celery_config
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings

__all__ = ["app", "container"]

app = Celery("certfleet", include=["workers.tasks"])
app.conf.update(celery_config(Settings()))

_container: Container | None = None


@worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    global _container  # noqa: PLW0603 -- one container per worker process
    _container = bootstrap()


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
