"""Worker, beat and the state store ride out a Redis restart, graceful (SIGTERM) or killed.

Redis here is the broker, the result backend, redbeat's store and the state store,
as in every shipped deployment. It is restarted on the same port without its data
(as the suite's Redis keeps nothing on disk), the harshest case: queues, results,
beat's lock and schedule are all gone when it comes back.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings
from orchestrator.domain.errors import StoreUnavailableError
from simulator.services import LocalService, start_redis
from tests.procs import BIN, Proc, start, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCAN_SUMMARY = "certfleet:inv:scan:last"
WORKER_AWAY = "Connection to broker lost"
BEAT_AWAY = "beat: Redis unreachable"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[LocalService]]:
    """A redis-server of this test's own (the session's one must never restart)."""
    services = [start_redis(tmp_path / "redis")]
    yield services
    services[-1].stop()


def _worker_as_deployed(log_dir: Path, env: dict[str, str]) -> Proc:
    """A worker started as the shipped deployments start it (gossip and mingle on)."""
    proc = start(
        "worker",
        [
            str(BIN / "celery"),
            *("-A", "workers.app", "worker", "-Q", "control,push,scan"),
            *("--concurrency", "1", "--hostname", "restarts@%h", "--loglevel", "INFO"),
        ],
        env=env,
        log_dir=log_dir,
    )
    wait_until(
        lambda: " ready." in proc.log() or proc.process.poll() is not None,
        timeout=60,
        what="worker ready",
    )
    assert proc.process.poll() is None, f"worker exited:\n{proc.log()}"
    return proc


def _restart(
    services: list[LocalService], sig: signal.Signals, *, worker: Proc, beat: Proc
) -> None:
    """Stop Redis with `sig`; once worker and beat both found it away, start it on its port."""
    seen = (worker.log().count(WORKER_AWAY), beat.log().count(BEAT_AWAY))
    old = services[-1]
    old.process.send_signal(sig)
    old.process.wait(timeout=30)
    wait_until(
        lambda: (
            _exited(worker, beat)
            or (worker.log().count(WORKER_AWAY) > seen[0] and beat.log().count(BEAT_AWAY) > seen[1])
        ),
        timeout=60,
        what="worker and beat to find Redis away",
    )
    services.append(start_redis(old.workdir, port=old.port))
    assert not _exited(worker, beat), _exited(worker, beat)


def _exited(*procs: Proc) -> str:
    """The log of the first of `procs` that has exited, or ""."""
    for proc in procs:
        if proc.process.poll() is not None:
            return f"{proc.name} exited:\n{proc.log()}"
    return ""


def test_worker_and_beat_survive_redis_restarts_and_keep_working(
    own_redis: list[LocalService],
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    log_dir: Path,
) -> None:
    """After a graceful and a killed Redis restart, neither exits; beat schedules, tasks run."""
    # given a worker and beat on a Redis of their own, beat scanning every second
    url = f"redis://{own_redis[0].host}:{own_redis[0].port}/0"
    env = {**service_env, "CERTFLEET_REDIS_URL": url, "CERTFLEET_SCAN_INTERVAL_SECONDS": "1"}
    monkeypatch.setenv("CERTFLEET_REDIS_URL", url)
    worker = _worker_as_deployed(log_dir, env)
    beat = start(
        "beat",
        [str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO"],
        env=env,
        log_dir=log_dir,
    )
    client = redis.Redis.from_url(url, decode_responses=True)
    container = bootstrap(Settings(), logging=False)
    try:
        summary = wait_until(lambda: _get(client, SCAN_SUMMARY), timeout=60, what="a scan")

        for sig in (signal.SIGTERM, signal.SIGKILL):
            # when Redis stops, is found away, and comes back (empty)
            _restart(own_redis, sig, worker=worker, beat=beat)

            # then beat schedules again and the worker runs what it schedules
            summary = wait_until(
                lambda last=summary: _changed(client, SCAN_SUMMARY, last),
                timeout=60,
                what=f"a scheduled scan after a {sig.name} restart",
            )
            assert not _exited(worker, beat), _exited(worker, beat)

        # and a task sent now is run, its result read back
        assert container.tasks.run_scan(timeout=60)["devices"] == 0
    finally:
        container.close()
        client.close()
        beat.stop()
        worker.stop()

    assert "Unrecoverable error" not in worker.log()
    assert "beat raised exception" not in beat.log()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_a_worker_holding_a_task_survives_a_redis_restart(
    own_redis: list[LocalService],
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    log_dir: Path,
    sig: signal.Signals,
) -> None:
    """A worker with an unacknowledged task when Redis goes reconnects instead of exiting.

    The task is one with a countdown: the worker takes it from the queue at once and holds
    it, unacknowledged, until it is due, as it holds a task it runs or has prefetched.
    """
    # given a worker on a Redis of its own, holding an evaluate_rollout due in 10 minutes
    url = f"redis://{own_redis[0].host}:{own_redis[0].port}/0"
    env = {**service_env, "CERTFLEET_REDIS_URL": url}
    monkeypatch.setenv("CERTFLEET_REDIS_URL", url)
    worker = _worker_as_deployed(log_dir, env)
    container = bootstrap(Settings(), logging=False)
    try:
        container.tasks.evaluate_rollout("ro-held", countdown=600)
        wait_until(
            lambda: "evaluate_rollout" in worker.log() and " received" in worker.log(),
            timeout=30,
            what="the worker to take the task",
        )

        # when Redis stops with that task unacknowledged, and comes back
        old = own_redis[-1]
        old.process.send_signal(sig)
        old.process.wait(timeout=30)
        wait_until(
            lambda: (
                "Restoring 1 unacknowledged message" in worker.log()
                or worker.process.poll() is not None
            ),
            timeout=60,
            what="the worker to find Redis away",
        )
        own_redis.append(start_redis(old.workdir, port=old.port))

        # then the worker is still there and runs the next task sent
        assert container.tasks.run_scan(timeout=60)["devices"] == 0
        assert not _exited(worker), _exited(worker)
    finally:
        container.close()
        worker.stop()
    assert "Unrecoverable error" not in worker.log()


def _changed(client: redis.Redis, key: str, last: str) -> str | None:
    """The value of `key` once it is set and differs from `last`."""
    value = _get(client, key)
    return value if value != last else None


def _get(client: redis.Redis, key: str) -> str | None:
    """GET `key`, or None while Redis is still starting."""
    try:
        value: str | None = client.get(key)
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    return value


def test_a_store_call_rides_out_a_short_redis_restart_and_reports_a_long_outage(
    own_redis: list[LocalService], service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store call waits out a one-second restart; past its retries it raises, as transient."""
    # given the state store of a process, as bootstrap builds it, on a Redis of its own
    url = f"redis://{own_redis[0].host}:{own_redis[0].port}/0"
    monkeypatch.setenv("CERTFLEET_REDIS_URL", url)
    container = bootstrap(Settings(), logging=False)
    try:
        container.metrics.set("certfleet_test_gauge", 1)

        # when Redis is killed and comes back a second later, mid-call
        old = own_redis[-1]
        old.process.send_signal(signal.SIGKILL)
        old.process.wait(timeout=30)
        comeback = threading.Timer(
            1.0, lambda: own_redis.append(start_redis(old.workdir, port=old.port))
        )
        comeback.start()
        container.metrics.set("certfleet_test_gauge", 2)
        comeback.join()

        # then the call went through once Redis was back
        assert container.metrics.snapshot()[("certfleet_test_gauge", ())] == 2

        # and with Redis gone for good, a call gives up with the transient store error
        own_redis[-1].stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            container.metrics.set("certfleet_test_gauge", 3)
        assert time.monotonic() - started < 30
    finally:
        container.close()
