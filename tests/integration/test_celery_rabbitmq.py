"""Real Celery workers on a real RabbitMQ (Debian's rabbitmq-server) as the broker.

The state store stays the session's Redis (or Redis Cluster); `CERTFLEET_BROKER_URL`
names a throwaway RabbitMQ node started for this module (`tests.rabbitmq`).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from celery import Celery
from fastapi.testclient import TestClient

from orchestrator.adapters.celery_queue import (
    CONSUMER_TIMEOUT_FLOOR_SECONDS,
    QUEUES,
    CeleryTaskQueue,
    broker_kind,
    celery_config,
)
from orchestrator.adapters.redis_connection import connect
from orchestrator.api.app import create_app
from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings
from simulator.services import free_port
from tests.conftest import CLUSTER
from tests.procs import BIN, Proc, celery_worker, start, wait_until
from tests.rabbitmq import CONSUMER_TIMEOUT_MS, LocalRabbit, rabbitmq_available, start_rabbitmq

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

HOLD = "certfleet_test.hold"
"""`tests.rabbitmq_app`'s task (not imported here: that app reads its settings at import)."""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not rabbitmq_available(), reason="rabbitmq-server is not installed"),
]


@pytest.fixture(scope="session")
def rabbitmq_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRabbit]:
    """A throwaway RabbitMQ node for the session."""
    rabbit = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    yield rabbit
    rabbit.stop()


@pytest.fixture
def rabbit_env(
    service_env: dict[str, str], rabbitmq_service: LocalRabbit, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The test services' settings with RabbitMQ as Celery's broker and no result backend
    set (so the default one for RabbitMQ applies), its queues purged."""
    env = {**service_env, "CERTFLEET_BROKER_URL": rabbitmq_service.url}
    env.pop("CERTFLEET_RESULT_BACKEND", None)
    monkeypatch.setenv("CERTFLEET_BROKER_URL", rabbitmq_service.url)
    monkeypatch.delenv("CERTFLEET_RESULT_BACKEND", raising=False)
    for name in rabbitmq_service.queue_types():
        if name in QUEUES:
            rabbitmq_service.ctl("purge_queue", name)
    return env


def _hold_worker(log_dir: Path, env: dict[str, str], name: str) -> Proc:
    """A worker of `tests.rabbitmq_app` (certfleet's configuration plus `hold`)."""
    return celery_worker(
        log_dir, env, name=name, app="tests.rabbitmq_app", queues="push", hostname=f"{name}@%h"
    )


def _client() -> Celery:
    """A client app configured like certfleet's processes, from this test's environment."""
    app = Celery("certfleet-test-client")
    app.conf.update(celery_config(Settings()))
    return app


def test_a_worker_runs_a_scan_over_quorum_queues_with_publisher_confirms(
    rabbit_env: dict[str, str], rabbitmq_service: LocalRabbit, log_dir: Path
) -> None:
    """scan_fleet runs on a worker over RabbitMQ; its reply comes back over `rpc://`; the
    control, push and scan queues are quorum queues; the client publishes with confirms."""
    # given a worker on RabbitMQ and a client configured like it
    worker = celery_worker(log_dir, rabbit_env)
    tasks = CeleryTaskQueue.from_settings(Settings())
    try:
        # when the client runs a scan
        summary = tasks.run_scan(timeout=60)

        # then the worker ran it, and its result came back over the broker
        assert summary["devices"] == 0
        assert "certfleet.scan_fleet" in worker.log()
        assert celery_config(Settings())["result_backend"] == "rpc://"

        # and RabbitMQ holds the three queues as quorum queues
        types = rabbitmq_service.queue_types()
        assert {name: types.get(name) for name in QUEUES} == dict.fromkeys(QUEUES, "quorum")

        # and a sub-second countdown (the listener's debounce) is sent, as a whole second
        sent = time.monotonic()
        tasks.evaluate_rollout("ro-absent", countdown=0.5)
        wait_until(
            lambda: "certfleet.evaluate_rollout[" in worker.log(),
            timeout=30,
            what="the debounced evaluation received",
        )
        assert time.monotonic() - sent >= 1

        # and the worker asked for a per-consumer prefetch, as quorum queues require,
        # and bound its queues for delayed delivery (no direct exchange refused)
        assert "global qos is disabled" in worker.log().lower()
        assert "direct exchange" not in worker.log().lower()

        # and, the worker gone, the client's channel that published is in confirm mode
        worker.stop()
        channels = rabbitmq_service.ctl("list_channels", "-q", "--no-table-headers", "confirm")
        assert "true" in channels.split(), channels
    finally:
        tasks._app.close()
        worker.stop()


def test_a_countdown_waits_in_the_broker_not_in_the_worker(
    rabbit_env: dict[str, str], rabbitmq_service: LocalRabbit, log_dir: Path, tmp_path: Path
) -> None:
    """A task sent with a countdown runs after it, through the native delayed delivery's
    quorum queues, and no worker holds it meanwhile."""
    # given a worker of the hold app and a task that may finish at once
    worker = _hold_worker(log_dir, rabbit_env, "delay-worker")
    (tmp_path / "release").touch()
    app = _client()
    try:
        # when it is sent with a countdown of 3 s
        sent = time.monotonic()
        app.send_task(HOLD, args=[str(tmp_path)], queue="push", countdown=3)

        # then no worker holds it while it waits (a worker logs a task as received
        # when the broker delivers it, at once for a countdown it would hold itself)
        time.sleep(1.5)
        assert f"{HOLD}[" not in worker.log()
        assert not (tmp_path / "runs").exists()

        # and it runs once its countdown is over
        wait_until((tmp_path / "runs").exists, timeout=30, what="the delayed run")
        assert time.monotonic() - sent >= 3
        assert f"Task {HOLD}[" in worker.log()
        types = rabbitmq_service.queue_types()
        assert types.get("celery_delayed_0") == "quorum"
    finally:
        app.close()
        worker.stop()


def test_a_task_held_by_a_killed_worker_runs_again_on_another(
    rabbit_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    """acks_late: a worker SIGKILLed while it runs a task never acknowledged it; RabbitMQ
    hands the task to the next worker as soon as the connection is gone, flagged
    redelivered, and it runs to its end there."""
    app = _client()
    first = _hold_worker(log_dir, rabbit_env, "doomed-worker")
    second: Proc | None = None
    try:
        # given a worker running the task (which waits to be released)
        app.send_task(HOLD, args=[str(tmp_path)], queue="push")
        runs = tmp_path / "runs"
        wait_until(runs.exists, timeout=30, what="the first run")

        # when the worker and its pool are SIGKILLed mid-task
        first.stop(signal.SIGKILL)

        # then another worker runs the task again, as a redelivery, to its end
        second = _hold_worker(log_dir, rabbit_env, "second-worker")
        wait_until(
            lambda: runs.read_text().count("start") == 2, timeout=60, what="the task redelivered"
        )
        (tmp_path / "release").touch()
        wait_until(lambda: "done" in runs.read_text(), timeout=30, what="the second run's end")
        assert runs.read_text().splitlines() == [
            "start redelivered=False",
            "start redelivered=True",
            "done",
        ]
    finally:
        (tmp_path / "release").touch()
        app.close()
        if second is not None:
            second.stop()
        first.stop()


def test_healthz_checks_a_rabbitmq_broker(
    rabbit_env: dict[str, str], rabbitmq_service: LocalRabbit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/healthz opens an AMQP connection to a RabbitMQ broker: ok when it logs in, 503
    naming the broker when the user is refused or nothing listens."""
    refused = rabbitmq_service.url.replace(rabbitmq_service.password, "wrong")
    away = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    expected = {
        rabbitmq_service.url: (200, {"status": "ok", "redis": "ok", "broker": "ok"}),
        refused: (503, {"status": "unavailable", "redis": "ok", "broker": "unreachable"}),
        away: (503, {"status": "unavailable", "redis": "ok", "broker": "unreachable"}),
    }
    for url, (status, body) in expected.items():
        # given the API of a container whose broker is this URL
        monkeypatch.setenv("CERTFLEET_BROKER_URL", url)
        container = bootstrap(Settings(), logging=False)
        try:
            with TestClient(create_app(container)) as client:
                # when /healthz is asked, it answers within the check's timeout
                began = time.monotonic()
                response = client.get("/healthz")

            # then it says what the broker did
            assert (response.status_code, response.json()) == (status, body), url
            assert time.monotonic() - began < 10
        finally:
            container.close()


def test_beat_keeps_its_schedule_and_lock_in_the_store_and_sends_over_rabbitmq(
    rabbit_env: dict[str, str], log_dir: Path
) -> None:
    """redbeat on the session's store (the cluster client on a Redis Cluster) holds beat's
    lock and schedule there; the scans it schedules reach a worker over RabbitMQ."""
    # given a worker and beat, beat scanning every 2 seconds
    env = {**rabbit_env, "CERTFLEET_SCAN_INTERVAL_SECONDS": "2"}
    worker = celery_worker(log_dir, env)
    beat = start(
        "beat", [str(BIN / "celery"), "-A", "workers.app", "beat"], env=env, log_dir=log_dir
    )
    store = connect(env["CERTFLEET_REDIS_URL"], cluster=CLUSTER)
    try:
        # when beat has run a while, then the worker ran scheduled scans
        wait_until(
            lambda: worker.log().count("certfleet.scan_fleet[") >= 4,
            timeout=60,
            what="two scheduled scans received and run",
        )

        # and the lock and the scan's entry are in the store
        assert store.get("certfleet:redbeat:lock") is not None
        assert store.zscore("certfleet:redbeat::schedule", "certfleet:redbeat:scan-fleet")
        assert beat.process.poll() is None, beat.log()
        assert "Traceback" not in beat.log()
    finally:
        store.close()
        beat.stop()
        worker.stop()


def test_the_compose_rabbitmq_override_runs_every_role_on_a_healthy_rabbitmq(
    tmp_path: Path,
) -> None:
    """`docker-compose config` accepts compose.yaml with compose.rabbitmq.yaml and the
    example env files; every certfleet role waits for a healthy RabbitMQ, and the broker
    URL env.example suggests is one certfleet takes as RabbitMQ."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (it validates the compose files)")
    # given the example env files where compose reads them
    project = tmp_path / "deploy"
    project.mkdir()
    shutil.copy(DEPLOY / "env.example", project / "certfleet.env")
    shutil.copy(DEPLOY / "rabbitmq.env.example", project / "rabbitmq.env")

    # when compose merges the two files
    files = ("-f", str(DEPLOY / "compose.yaml"), "-f", str(DEPLOY / "compose.rabbitmq.yaml"))
    done = subprocess.run(
        [binary, *files, "--project-directory", str(project), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then every certfleet service also waits for RabbitMQ's health check
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    roles = {n for n, s in services.items() if s.get("image") == "certfleet:latest"}
    assert roles >= {"worker", "beat", "api", "flower", "listener-1", "listener-2"}
    for name in roles:
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["rabbitmq"]["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert services["rabbitmq"].get("ports") is None, "AMQP stays inside the compose network"
    erl_args = services["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    timeout_ms = int(erl_args.split("consumer_timeout")[1])
    assert timeout_ms == CONSUMER_TIMEOUT_MS >= CONSUMER_TIMEOUT_FLOOR_SECONDS * 1000
    suggested = re.search(
        r"^#\s+CERTFLEET_BROKER_URL=(\S+)$", (DEPLOY / "env.example").read_text(), re.M
    )
    assert suggested is not None
    assert broker_kind(suggested[1]) == "amqp"
    user = services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"]
    assert suggested[1].startswith(f"amqp://{user}:")


def test_beat_waits_for_an_unreachable_cluster_instead_of_exiting(
    rabbit_env: dict[str, str], log_dir: Path
) -> None:
    """A Redis Cluster store none of whose nodes answers (the cluster client's own
    error, not a connection error) keeps beat waiting at start-up, not exiting."""
    # given a cluster URL nothing listens on
    env = {
        **rabbit_env,
        "CERTFLEET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CERTFLEET_REDIS_CLUSTER": "true",
    }

    # when beat starts on it
    beat = start(
        "beat", [str(BIN / "celery"), "-A", "workers.app", "beat"], env=env, log_dir=log_dir
    )
    try:
        # then it says so and tries again, still running
        wait_until(
            lambda: (
                beat.log().count("Redis unreachable at start-up") >= 2
                or beat.process.poll() is not None
            ),
            timeout=60,
            what="beat retrying",
        )
        assert beat.process.poll() is None, beat.log()
        assert "Redis Cluster cannot be connected" in beat.log()
    finally:
        beat.stop()


def test_a_confirmed_task_survives_a_broker_restart(
    rabbit_env: dict[str, str], rabbitmq_service: LocalRabbit, log_dir: Path, tmp_path: Path
) -> None:
    """A task whose publish the broker confirmed is on disk in its quorum queue: RabbitMQ
    stopped and started again before any worker took it, a worker then runs it."""
    # given a task sent (and confirmed) while no worker runs
    (tmp_path / "release").touch()
    app = _client()
    try:
        app.send_task(HOLD, args=[str(tmp_path)], queue="push")
    finally:
        app.close()

    # when the broker restarts
    rabbitmq_service.restart()

    # then a worker started afterwards runs it
    worker = _hold_worker(log_dir, rabbit_env, "after-restart-worker")
    try:
        runs = tmp_path / "runs"
        wait_until(lambda: runs.exists() and "done" in runs.read_text(), timeout=60, what="run")
        assert runs.read_text().splitlines() == ["start redelivered=False", "done"]
    finally:
        worker.stop()
