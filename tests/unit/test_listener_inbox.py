"""The listener's inbox: a batch takes what is queued, never more, never waiting."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from workers.listener import _Inbox

pytestmark = pytest.mark.unit


def _message(n: int) -> aiomqtt.Message:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = 60
    return aiomqtt.Message(
        topic=f"certfleet/d{n}/report",
        payload=b"{}",
        qos=1,
        retain=False,
        mid=n,
        properties=properties,
    )


def test_take_returns_at_most_what_is_asked_in_arrival_order() -> None:
    """Five queued, take(3) gives the first three, take(10) the other two, then nothing."""

    async def scenario() -> list[list[int]]:
        inbox = _Inbox()
        for n in range(5):
            inbox.put_nowait(_message(n))
        return [[m.mid for m in inbox.take(most)] for most in (3, 10, 10)]

    assert asyncio.run(scenario()) == [[0, 1, 2], [3, 4], []]


def test_queued_messages_keep_topic_and_payload_but_not_properties() -> None:
    """The inbox drops each message's MQTT 5 properties (never read, ~6 KB each)."""

    async def scenario() -> aiomqtt.Message:
        inbox = _Inbox()
        inbox.put_nowait(_message(7))
        [message] = inbox.take(5)
        return message

    message = asyncio.run(scenario())
    assert (message.topic.value, message.payload, message.properties) == (
        "certfleet/d7/report",
        b"{}",
        None,
    )
