"""The Redis adapters through a Redis Cluster failover: a master SIGKILLed, its replica
promoted (`cluster-node-timeout 2000`), against a real cluster with replicas."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from orchestrator.adapters.redis_connection import RedisClient, connect
from orchestrator.adapters.redis_metrics import METRICS_KEY, RedisMetrics
from orchestrator.domain.errors import StoreUnavailableError
from simulator.services import LocalCluster, LocalService, start_redis_cluster
from tests.procs import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three masters with a replica each, every replica's link to its master up."""
    started = start_redis_cluster(tmp_path / "cluster", masters=3, replicas=1)
    try:
        wait_until(
            lambda: all(_linked(node) for node in started.nodes),
            timeout=30,
            what="replication links up",
        )
        yield started
    finally:
        started.stop()


def _info(node: LocalService, section: str) -> dict[str, Any]:
    """INFO `section` of one node, as redis-py parses it."""
    client = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def _linked(node: LocalService) -> bool:
    """A master, or a replica whose link to its master is up."""
    replication = _info(node, "replication")
    return replication["role"] == "master" or replication.get("master_link_status") == "up"


def _master_of(client: RedisClient, cluster: LocalCluster, key: str) -> LocalService:
    assert isinstance(client, RedisCluster)
    port = client.get_node_from_key(key).port  # type: ignore[no-untyped-call]
    return next(node for node in cluster.nodes if node.port == port)


def _replicated(master: LocalService) -> bool:
    """Every replica of `master` acknowledged all it was sent."""
    replication = _info(master, "replication")
    offset = replication["master_repl_offset"]
    replicas = [v for k, v in replication.items() if k.startswith("slave")]
    return bool(replicas) and all(
        v["state"] == "online" and v["offset"] == offset for v in replicas
    )


def test_a_killed_master_is_unavailable_until_its_replica_serves_what_it_had(
    cluster: LocalCluster,
) -> None:
    """While the slot's master is dead every call fails as StoreUnavailableError (retried by
    tasks and the listener), nothing else; within seconds the replica serves the slot, with
    what was replicated before the kill."""
    # given
    client = connect(cluster.url, cluster=True)
    metrics = RedisMetrics(client)
    metrics.incr("certfleet_test_total", amount=5)
    master = _master_of(client, cluster, METRICS_KEY)
    wait_until(lambda: _replicated(master), timeout=10, what="the write replicated")
    # when
    master.process.send_signal(signal.SIGKILL)
    master.process.wait(timeout=10)
    killed = time.monotonic()
    failures: list[Exception] = []
    recovered: float | None = None
    while time.monotonic() - killed < 30:
        try:
            metrics.incr("certfleet_test_total")
        except Exception as exc:  # every kind is kept and checked below
            failures.append(exc)
            time.sleep(0.1)
        else:
            recovered = time.monotonic() - killed
            break
    # then
    assert recovered is not None, failures[-1:]
    assert recovered < 15, "cluster-node-timeout is 2 s: a replica should serve within seconds"
    assert failures, "the first call after the kill should have failed"
    assert [type(exc) for exc in failures if not isinstance(exc, StoreUnavailableError)] == []
    assert metrics.snapshot()[("certfleet_test_total", ())] == 6
    assert _master_of(client, cluster, METRICS_KEY).port != master.port
    client.close()
