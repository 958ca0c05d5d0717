"""Fixtures: real redis-server and mosquitto on free loopback ports, per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.properties import load_profile

load_profile()


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A throwaway redis-server for the whole session."""
    service = start_redis(tmp_path_factory.mktemp("redis"))
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
    redis_service: LocalService, mqtt_service: LocalService, monkeypatch: pytest.MonkeyPatch
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
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = redis.Redis(host=redis_service.host, port=redis_service.port)
    client.flushall()
    client.close()
    return env


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
