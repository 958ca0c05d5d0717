"""The listener's inbox: a batch takes what is queued, never more; a short one lingers once."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from workers.listener import _fill, _Inbox, _Kept

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


def test_a_short_batch_lingers_once_for_what_arrives_meanwhile() -> None:
    """One queued, two more arriving within the linger: the batch holds all three."""

    async def scenario() -> tuple[list[int], float]:
        inbox = _Inbox()
        loop = asyncio.get_running_loop()
        for n in (1, 2):
            loop.call_later(0.01, inbox.put_nowait, _message(n))
        started = loop.time()
        batch = await _fill([_message(0)], inbox, 10, linger=0.2)
        return [m.mid for m in batch], loop.time() - started

    mids, waited = asyncio.run(scenario())
    assert mids == [0, 1, 2]
    assert 0.15 <= waited < 1.0, "one linger, not a wait per message"


def test_a_full_batch_and_a_zero_linger_never_wait() -> None:
    """Enough queued for a batch: taken at once; linger 0: what is there, no wait."""

    async def scenario() -> tuple[list[int], list[int], float]:
        inbox = _Inbox()
        for n in range(1, 6):
            inbox.put_nowait(_message(n))
        loop = asyncio.get_running_loop()
        started = loop.time()
        full = await _fill([_message(0)], inbox, 3, linger=5.0)
        rest = await _fill([_message(9)], inbox, 10, linger=0)
        return [m.mid for m in full], [m.mid for m in rest], loop.time() - started

    full, rest, waited = asyncio.run(scenario())
    assert (full, rest) == ([0, 1, 2], [9, 3, 4, 5])
    assert waited < 1.0


def test_an_evaluation_asked_for_covers_the_moves_until_it_starts() -> None:
    """Enqueued at t with a debounce d: batches before t + d need not ask again; after, they do."""
    kept = _Kept(0.5)
    assert not kept.covered("ro-1", 100.0)
    kept.enqueued("ro-1", 100.0)
    assert kept.covered("ro-1", 100.49)
    assert not kept.covered("ro-1", 100.5)
    assert not kept.covered("ro-2", 100.1), "another rollout asks for its own"
    no_debounce = _Kept(0.0)
    no_debounce.enqueued("ro-1", 100.0)
    assert not no_debounce.covered("ro-1", 100.0)
