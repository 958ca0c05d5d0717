"""A Celery app with certfleet's configuration and one task that holds its worker, for
the RabbitMQ redelivery test (`celery -A tests.rabbitmq_app worker`).

`certfleet_test.hold(run_dir)` appends a line to `run_dir/runs` when it starts (its
delivery's `redelivered` flag), then waits for `run_dir/release` and appends `done`.
"""

from __future__ import annotations

import time
from pathlib import Path

from celery import Celery, Task

from orchestrator.adapters.celery_queue import celery_config
from orchestrator.config import Settings

__all__ = ["HOLD", "app"]

HOLD = "certfleet_test.hold"

app = Celery("certfleet-test")
app.conf.update(celery_config(Settings()))
app.conf.task_routes = {**app.conf.task_routes, HOLD: {"queue": "push"}}


@app.task(name=HOLD, bind=True)
def hold(self: Task, run_dir: str) -> str:  # type: ignore[type-arg]
    """Record this run, wait to be released (at most a minute), record its end."""
    runs = Path(run_dir) / "runs"
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    with runs.open("a") as out:
        out.write(f"start redelivered={redelivered}\n")
    deadline = time.monotonic() + 60
    while not (Path(run_dir) / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with runs.open("a") as out:
        out.write("done\n")
    return "done"
