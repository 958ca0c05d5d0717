"""The MQTT listener: device state and reports in, inventory records out.

Run by `certfleet listener`. Several listeners share the work through the
`$share/certfleet/...` subscription; each reconnects on its own and hands
batches to Redis in a thread, so the MQTT loop never blocks.

Delivery is at least once from the broker to Redis: a message is acknowledged
(PUBACK) only once the batch holding it is recorded, so a listener killed with
messages in hand, or one waiting for Redis, gets them again from its session
(`CERTFLEET_LISTENER_CLIENT_ID`). Recording is idempotent (a state no newer than the
stored one changes nothing, a report is recorded once per device, rollout, seq and
phase), so what comes again is counted once. While Redis is unavailable the listener
keeps its batch and retries with backoff; the broker sends no more than the
client's Receive Maximum of unacknowledged messages meanwhile and queues the rest.

Cost per message: a batch costs a thread hand-off and a few Redis round trips whatever
its size, so during a rollout, when reports trickle in, a batch that is not full waits
up to `LINGER_SECONDS` for more (at most that much added to any message's latency), and
the evaluation a batch asks for is asked once per debounce period by each listener
(`_Kept`), not once per batch.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import aiomqtt

from orchestrator.bootstrap import Container
from orchestrator.clock import utcnow
from orchestrator.domain.errors import TransientError
from orchestrator.logs import get_logger
from orchestrator.protocol.mqtt import acknowledge, mqtt5_client
from orchestrator.services.inventory import IngestResult, ingest_batch
from orchestrator.services.rollout import apply_reports
from orchestrator.services.rollout.reports import RolloutSpecs

__all__ = ["LINGER_SECONDS", "STORE_ERROR", "run_listener"]

log = get_logger(__name__)
T = TypeVar("T")

SESSION_EXPIRY_SECONDS = 24 * 3600
"""How long the broker keeps a listener's session with a fixed client id."""
GC_THRESHOLDS = (50_000, 20, 100)
"""The listener's garbage collector thresholds (Python's defaults: 700, 10, 10)."""
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
"""Backoff while Redis is unavailable: doubling from the first to the most, with jitter."""
LINGER_SECONDS = 0.02
"""How long a batch that is not full waits for more messages after its first one.

Each batch pays a thread hand-off and its Redis round trips however few messages it
holds: a rollout's reports arrive a few at a time, and batches of one or two cost
several times more per message than full ones. Waiting this long lets them fill
(the debounced evaluation a report asks for waits far longer: the abort latency
grows by at most this); a full batch never waits, and neither does a backlog."""
STORE_ERROR = "store_error"
"""The rejection reason of a message Redis fails to record on its own (a Lua error, a
key of the wrong type): retried, it would fail again, so it is counted and acknowledged.

A message the broker delivers again (after a crash before its acknowledgement) may be
counted twice under its rejection reason: rejection counters count deliveries, and
the recorded states and reports are what is exact."""


class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's queue of incoming messages, which the listener drains a batch at a time.

    Iterating `client.messages` costs a task and an `asyncio.wait` per message; the
    listener waits that way for a batch's first message only and takes the rest of
    what has arrived from here.
    """

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Queue a message without its MQTT 5 properties, which the listener never reads.

        paho builds a `Properties` of about 6 KB for every message; a backlog of
        messages waiting for Redis held them all.
        """
        item.properties = None
        super().put_nowait(item)

    def take(self, most: int) -> list[aiomqtt.Message]:
        """Up to `most` messages already queued, without waiting."""
        taken: list[aiomqtt.Message] = []
        while len(taken) < most and not self.empty():
            taken.append(self.get_nowait())
        return taken


def _client(container: Container, inbox: _Inbox) -> aiomqtt.Client:
    """A client that acknowledges by hand, with room for two batches unacknowledged.

    One batch is being recorded while the next arrives; a batch waits for more only
    while it is short (`LINGER_SECONDS`), so unacknowledged messages never hold it up.
    """
    settings = container.settings
    persistent = settings.listener_client_id is not None
    identifier = (
        settings.listener_client_id or f"certfleet-listener-{socket.gethostname()}-{os.getpid()}"
    )
    return mqtt5_client(
        settings.mqtt_host,
        settings.mqtt_port,
        client_id=identifier,
        session_expiry=SESSION_EXPIRY_SECONDS if persistent else None,
        keepalive=30,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        inbox=inbox,
        manual_ack=True,
        receive_maximum=min(2 * settings.listener_batch_size, 65_535),
    )


def _received(message: aiomqtt.Message) -> tuple[str, bytes]:
    """(topic, payload bytes) of a message."""
    payload = message.payload
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes | bytearray):
        payload = b""
    return message.topic.value, bytes(payload)


class _Kept:
    """What the listener keeps across batches: rollout specs, and the debounced
    evaluations it asked for (one per rollout and period).

    A batch whose reports moved devices asks for an evaluation `debounce` seconds on,
    unless another listener did within that period (`RolloutStore.debounce`). An
    evaluation this listener enqueued at `t` starts no earlier than `t + debounce`, so
    it sees every move recorded before then: until then a batch need not ask again,
    nor ask Redis whether someone did.
    """

    def __init__(self, debounce: float) -> None:
        self.debounce = debounce
        self.specs = RolloutSpecs()
        self._due: dict[str, float] = {}

    def covered(self, rollout_id: str, now: float) -> bool:
        """True if an evaluation this listener enqueued will start after `now`."""
        return self._due.get(rollout_id, 0.0) > now

    def enqueued(self, rollout_id: str, at: float) -> None:
        """Note an evaluation enqueued at `at` (monotonic seconds), due `debounce` later."""
        if len(self._due) > 1000:  # rollouts that ended; stale entries cover nothing
            self._due = {r: t for r, t in self._due.items() if t > at}
        self._due[rollout_id] = at + self.debounce


def _ingest(
    container: Container,
    batch: list[tuple[str, bytes]],
    kept: _Kept | None = None,
) -> IngestResult:
    """Record the batch; move rollout devices by their reports; ask for a debounced evaluation."""
    now = utcnow()
    result = ingest_batch(
        container.inventory,
        container.topics,
        batch,
        received_at=now,
        clock_skew=timedelta(seconds=container.settings.clock_skew_seconds),
    )
    if result.reports:
        deps = container.rollout_deps()
        debounce = container.settings.evaluate_debounce_seconds
        kept = kept or _Kept(debounce)
        moved = apply_reports(deps, result.reports, now=now, specs=kept.specs)
        for rollout_id in moved:
            asked = time.monotonic()
            if kept.covered(rollout_id, asked):
                continue
            if container.rollouts.debounce(rollout_id, int(debounce * 1000) or 1):
                deps.tasks.evaluate_rollout(rollout_id, countdown=debounce)
                kept.enqueued(rollout_id, asked)
    return result


async def _until_done(call: Callable[[], T], *, pending: int) -> T:
    """`call()` in a thread, again with backoff for as long as a dependency is unavailable."""
    delay = RETRY_FIRST_SECONDS
    while True:
        try:
            return await asyncio.to_thread(call)
        except TransientError as exc:
            log.error(
                "listener_dependency_unavailable", error=str(exc), pending=pending, retry_in=delay
            )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 -- jitter
            delay = min(2 * delay, RETRY_MAX_SECONDS)


async def _record(container: Container, batch: list[tuple[str, bytes]], kept: _Kept) -> None:
    """Record a batch, waiting out an unavailable Redis; return once all of it is settled.

    If recording fails otherwise, the batch is recorded message by message: each one
    that fails alone is logged and counted as `store_error` (it would fail again), and
    the others are recorded. Either way the batch may be acknowledged afterwards.
    """
    try:
        result = await _until_done(lambda: _ingest(container, batch, kept), pending=len(batch))
    except Exception as exc:  # isolated below, message by message
        log.warning("listener_batch_failed", error=repr(exc), messages=len(batch))
        for item in batch:
            await _record_alone(container, item, kept)
        return
    log.debug(
        "listener_batch",
        applied=result.applied,
        stale=result.stale,
        rejected=result.rejected,
        reports=len(result.reports),
    )


async def _record_alone(container: Container, item: tuple[str, bytes], kept: _Kept) -> None:
    try:
        await _until_done(lambda: _ingest(container, [item], kept), pending=1)
    except Exception as exc:  # the message's own failure, counted
        parsed = container.topics.parse(item[0])
        log.error(
            "device_message_rejected",
            device_id=parsed[0] if parsed else None,
            topic=item[0],
            reason=STORE_ERROR,
            detail=repr(exc),
            exc_info=exc,
        )
        await _until_done(lambda: container.inventory.count_rejection(STORE_ERROR), pending=1)


async def _fill(
    batch: list[aiomqtt.Message], inbox: _Inbox, most: int, *, linger: float
) -> list[aiomqtt.Message]:
    """`batch` topped up, up to `most`, with what has arrived or arrives within `linger`.

    What the socket already holds is read first (a yield to the loop each time); then,
    if the batch is still short, one wait of `linger` and whatever came meanwhile. A
    full batch returns at once.
    """
    lingered = False
    while len(batch) < most:
        more = inbox.take(most - len(batch))
        if more:
            batch += more
            continue
        await asyncio.sleep(0)  # let the loop read what the socket holds
        more = inbox.take(most - len(batch))
        if more:
            batch += more
            continue
        if lingered or linger <= 0:
            break
        lingered = True
        await asyncio.sleep(linger)
    return batch


async def run_listener(
    container: Container,
    *,
    stop: asyncio.Event | None = None,
    reconnect_interval: float = 2.0,
) -> None:
    """Subscribe to every device's state topic and record what arrives, until `stop`."""
    stop = stop or asyncio.Event()
    # A backlog of messages is thousands of young objects that all live a little while:
    # with the default thresholds the collector's passes over them (and over what the
    # process holds since start, frozen here) took a third of a busy listener's time.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    subscriptions = [container.topics.shared_subscription(c) for c in ("state", "report")]
    batch_size = container.settings.listener_batch_size
    kept = _Kept(container.settings.evaluate_debounce_seconds)

    async def consume() -> None:
        while True:
            try:
                inbox = _Inbox()
                async with _client(container, inbox) as client:
                    for topic in subscriptions:
                        await client.subscribe(topic, qos=1)
                    log.info("listener_subscribed", topics=subscriptions)
                    # A batch: the next message (or a disconnect), then what has arrived,
                    # the socket already holds or comes within the linger, up to its size.
                    async for message in client.messages:
                        batch = await _fill([message], inbox, batch_size, linger=LINGER_SECONDS)
                        await _record(container, [_received(m) for m in batch], kept)
                        for recorded in batch:
                            acknowledge(client, recorded)
            except aiomqtt.MqttError as exc:
                log.warning("listener_disconnected", error=str(exc), retry_in=reconnect_interval)
                await asyncio.sleep(reconnect_interval)

    consumer = asyncio.create_task(consume())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (consumer, stopper):
        task.cancel()
    await asyncio.gather(consumer, stopper, return_exceptions=True)
    if consumer.done() and not consumer.cancelled() and consumer.exception():
        raise consumer.exception()  # type: ignore[misc]  # re-raise the consumer's failure
    log.info("listener_stopped")
