"""Fixtures: real redis-server and mosquitto on free loopback ports, per test session.

`CERTFLEET_TEST_REDIS=cluster` makes the session's state store a three-master Redis
Cluster instead of one redis-server (`make test` runs the Redis adapters' suite both
ways): `redis_service` is then a `LocalCluster`, and `service_env` sets
`CERTFLEET_REDIS_CLUSTER=true` and points Celery's broker and result backend at a
plain redis-server of their own (`broker_service`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.adapters.redis_connection import connect
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from simulator.services import (
    LocalCluster,
    LocalService,
    start_mosquitto,
    start_redis,
    start_redis_cluster,
)
from tests.properties import load_profile

load_profile()

CLUSTER: bool = os.environ.get("CERTFLEET_TEST_REDIS", "single") == "cluster"
"""This session's state store is a Redis Cluster (`CERTFLEET_TEST_REDIS=cluster`)."""


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A throwaway redis-server for the whole session (a three-master cluster when
    `CERTFLEET_TEST_REDIS=cluster`: same host and port attributes, its first master's)."""
    workdir = tmp_path_factory.mktemp("redis")
    service: LocalService | LocalCluster = (
        start_redis_cluster(workdir) if CLUSTER else start_redis(workdir)
    )
    yield service  # type: ignore[misc]  # a LocalCluster answers host, port and stop()
    service.stop()


@pytest.fixture(scope="session")
def broker_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService | None]:
    """With a cluster store, a plain redis-server as Celery's broker and result backend
    (kombu's Redis transport and Celery's Redis backend cannot use a cluster, so a
    deployment on a cluster has one, or RabbitMQ); None otherwise."""
    if not CLUSTER:
        yield None
        return
    service = start_redis(tmp_path_factory.mktemp("broker"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def mqtt_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A throwaway mosquitto for the whole session."""
    service = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield service
    service.stop()


@pytest.fixture
def service_env(
    redis_service: LocalService,
    broker_service: LocalService | None,
    mqtt_service: LocalService,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """CERTFLEET_* pointing at the test services, set for this test and its subprocesses.

    Redis is flushed first, so each test starts from an empty inventory.
    """
    env = {
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": mqtt_service.host,
        "CERTFLEET_MQTT_PORT": str(mqtt_service.port),
        "CERTFLEET_TOPIC_PREFIX": "certfleet",
        "CERTFLEET_LOG_FORMAT": "json",
        "CERTFLEET_REDIS_CLUSTER": "true" if CLUSTER else "false",
    }
    if broker_service is not None:
        broker = f"redis://{broker_service.host}:{broker_service.port}/0"
        env["CERTFLEET_BROKER_URL"] = env["CERTFLEET_RESULT_BACKEND"] = broker
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    flush_store(env["CERTFLEET_REDIS_URL"])
    if broker_service is not None:
        broker_client = redis.Redis(host=broker_service.host, port=broker_service.port)
        broker_client.flushall()
        broker_client.close()
    return env


def flush_store(url: str) -> None:
    """Empty the session's state store, every master of a cluster."""
    client = connect(url, cluster=CLUSTER)
    if isinstance(client, redis.RedisCluster):
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        client.flushall()
    client.close()


@pytest.fixture
def container(service_env: dict[str, str]) -> Iterator[Container]:
    """Real adapters wired by bootstrap, as a process would have them."""
    c = bootstrap(Settings(), logging=False)
    yield c
    c.close()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where a test's subprocesses write their output."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
