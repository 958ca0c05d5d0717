"""`MqttSession.publish_bundles` against a real mosquitto: it says which devices the
broker acknowledged, in publish order, and reports those before an error goes up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.adapters.mqtt import ACK_RUN, MqttSession
from orchestrator.config import Settings

pytestmark = pytest.mark.integration


class SigningFailedError(Exception):
    """What a bundle source raises midway (a signer or a store failing)."""


@pytest.fixture
def session(service_env: dict[str, str]) -> Iterator[MqttSession]:
    s = MqttSession(Settings(), timeout=60)
    yield s
    s.close()


def test_every_acknowledged_device_is_reported_once_in_publish_order(
    session: MqttSession,
) -> None:
    """All devices acknowledged are reported, in order, in runs no longer than ACK_RUN."""
    # given more bundles than one run of acknowledgements
    devices = [f"ack-{i:03d}" for i in range(ACK_RUN * 2 + 7)]
    runs: list[list[str]] = []
    # when they are published
    total = session.publish_bundles(
        ((d, b"bundle " + d.encode()) for d in devices), expiry_seconds=60, on_acked=runs.append
    )
    # then every device is reported once, in publish order
    assert total == len(devices)
    assert [d for run in runs for d in run] == devices
    assert all(0 < len(run) <= ACK_RUN for run in runs)


def test_devices_acknowledged_before_a_failing_source_are_reported(session: MqttSession) -> None:
    """A bundle source that fails midway leaves the devices handed over before it reported."""
    # given a source that fails after handing over some bundles
    handed: list[str] = []

    def bundles() -> Iterator[tuple[str, bytes]]:
        for i in range(5):
            handed.append(f"fail-{i}")
            yield f"fail-{i}", b"bundle"
        raise SigningFailedError("the signer went away")

    runs: list[list[str]] = []
    # when it is published
    with pytest.raises(SigningFailedError):
        session.publish_bundles(bundles(), expiry_seconds=60, on_acked=runs.append)
    # then whatever was reported was handed over, in order, and nothing twice
    reported = [d for run in runs for d in run]
    assert reported == handed[: len(reported)]
