"""The workers' MQTT publisher after a broker outage, against a real mosquitto on a port of
its own: a push during the outage fails as a transient error (the task retries it), and
one soon after the broker is back goes through."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.adapters.mqtt import MqttSession, MqttUnavailableError
from orchestrator.config import Settings
from orchestrator.domain.errors import TransientError
from simulator.services import LocalService, start_mosquitto
from workers.tasks import CertfleetTask

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 33.0
"""A broker away this long (a pod rescheduled, a slow restore): past paho's attempts at
1, 3, 7, 15 and 31 s after the loss, whose next one, with its default cap, is at 63 s."""
BACK_WITHIN_SECONDS = 15.0
"""How soon after the broker is back a push must go through."""
GIVE_UP_SECONDS = 25.0
"""How long the test keeps pushing after the restart before it fails."""


def _push(session: MqttSession) -> None:
    session.publish_bundle("dev-reconnect", b"bundle", expiry_seconds=60)


def test_a_push_goes_through_soon_after_a_long_broker_outage(tmp_path: Path) -> None:
    """After a 33 s outage the publisher reconnects and a push succeeds within 15 s."""
    workdir = tmp_path / "mosquitto"
    broker: LocalService = start_mosquitto(workdir)
    settings = Settings(
        mqtt_host=broker.host, mqtt_port=broker.port, redis_url="redis://127.0.0.1:1/0"
    )
    session = MqttSession(settings, timeout=2)
    try:
        # given a connected publisher
        _push(session)

        # when the broker goes away, a push fails as a transient error the task retries
        broker.stop()
        stopped = time.monotonic()
        with pytest.raises(MqttUnavailableError) as failed:
            _push(session)
        assert isinstance(failed.value, TransientError)
        assert issubclass(MqttUnavailableError, CertfleetTask.autoretry_for)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))

        # and comes back on the same port
        broker = start_mosquitto(workdir, port=broker.port)
        restarted = time.monotonic()
        took: float | None = None
        while time.monotonic() - restarted < GIVE_UP_SECONDS:
            try:
                _push(session)
            except MqttUnavailableError:
                time.sleep(0.5)
                continue
            took = time.monotonic() - restarted
            break

        # then a push went through soon after the restart
        assert took is not None, f"no push went through within {GIVE_UP_SECONDS} s"
        assert took <= BACK_WITHIN_SECONDS, f"the first push went through {took:.1f} s after"
    finally:
        session.close()
        broker.stop()
