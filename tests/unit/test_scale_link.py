"""A shared connection's publishes when the connection goes: sent again on the next one
at once, not after the PUBACK timeout (the broker-crash finding in RELIABILITY.md)."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from simulator.scale.link import SharedLink

pytestmark = pytest.mark.unit

PUBACK_TIMEOUT = 60.0


class Connection:
    """Stands in for one MQTT connection: a PUBACK comes only if `answers`."""

    def __init__(self, *, answers: bool) -> None:
        self.answers = answers
        self.sent: list[bytes] = []

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, timeout: float | None = None
    ) -> None:
        self.sent.append(payload)
        if not self.answers:
            await asyncio.sleep(PUBACK_TIMEOUT)
            raise aiomqtt.MqttError("Operation timed out")


def test_a_publish_cut_by_a_lost_connection_goes_again_on_the_next_at_once() -> None:
    """The broker dies before the PUBACK: the publish waits for the next connection only."""

    async def scenario() -> tuple[list[bytes], list[bytes], int, float]:
        link = SharedLink("c-1", window=4, puback_timeout=PUBACK_TIMEOUT)
        dead, fresh = Connection(answers=False), Connection(answers=True)
        # given a publish waiting for a PUBACK that will never come
        link.attach(dead)  # type: ignore[arg-type]  # a fake connection
        publishing = asyncio.create_task(link.publish("certfleet/d/report", b"received"))
        await asyncio.sleep(0.01)
        # when the connection drops and the next one is up
        started = asyncio.get_running_loop().time()
        link.attach(None)
        await asyncio.sleep(0.01)
        link.attach(fresh)  # type: ignore[arg-type]  # a fake connection
        await asyncio.wait_for(publishing, timeout=5)
        took = asyncio.get_running_loop().time() - started
        return dead.sent, fresh.sent, link.retries, took

    dead, fresh, retries, took = asyncio.run(scenario())

    # then it went again on the new connection, once, well before the PUBACK timeout
    assert (dead, fresh, retries) == ([b"received"], [b"received"], 1)
    assert took < 1.0


def test_a_publish_waits_for_a_connection_and_is_sent_once_when_acknowledged() -> None:
    """A publish made while no connection is up goes out once the link attaches, once."""

    async def scenario() -> tuple[list[bytes], int]:
        link = SharedLink("c-2", window=4, puback_timeout=PUBACK_TIMEOUT)
        fresh = Connection(answers=True)
        publishing = asyncio.create_task(link.publish("certfleet/d/state", b"state"))
        await asyncio.sleep(0.01)
        link.attach(fresh)  # type: ignore[arg-type]  # a fake connection
        await asyncio.wait_for(publishing, timeout=5)
        link.attach(None)  # a drop after the PUBACK sends nothing again
        await asyncio.sleep(0.01)
        return fresh.sent, link.retries

    assert asyncio.run(scenario()) == ([b"state"], 0)
