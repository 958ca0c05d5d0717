"""The MQTT listener: device state and reports in, inventory records out.

Run by `certfleet listener`. Several listeners share the work through the
`$share/certfleet/...` subscription; each reconnects on its own and hands
batches to Redis in a thread, so the MQTT loop never blocks.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from datetime import UTC, datetime, timedelta

import aiomqtt

from orchestrator.bootstrap import Container
from orchestrator.domain.errors import TransientError
from orchestrator.logs import get_logger
from orchestrator.protocol.mqtt import mqtt5_client
from orchestrator.services.inventory import IngestResult, ingest_batch
from orchestrator.services.rollout import apply_reports

__all__ = ["run_listener"]

log = get_logger(__name__)

SESSION_EXPIRY_SECONDS = 24 * 3600
"""How long the broker keeps a listener's session with a fixed client id."""
GC_THRESHOLDS = (50_000, 20, 100)
"""The listener's garbage collector thresholds (Python's defaults: 700, 10, 10)."""


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
    )


def _received(message: aiomqtt.Message) -> tuple[str, bytes]:
    """(topic, payload bytes) of a message."""
    payload = message.payload
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes | bytearray):
        payload = b""
    return message.topic.value, bytes(payload)


def _ingest(container: Container, batch: list[tuple[str, bytes]]) -> IngestResult:
    """Record the batch; move rollout devices by their reports; ask for a debounced evaluation."""
    now = datetime.now(UTC)
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
        for rollout_id in apply_reports(deps, result.reports, now=now):
            if container.rollouts.debounce(rollout_id, int(debounce * 1000) or 1):
                deps.tasks.evaluate_rollout(rollout_id, countdown=debounce)
    return result


async def _flush(container: Container, batch: list[tuple[str, bytes]]) -> None:
    while True:
        try:
            result = await asyncio.to_thread(_ingest, container, batch)
        except TransientError as exc:
            log.error("listener_dependency_unavailable", error=str(exc), pending=len(batch))
            await asyncio.sleep(1.0)
            continue
        log.debug(
            "listener_batch",
            applied=result.applied,
            stale=result.stale,
            rejected=result.rejected,
            reports=len(result.reports),
        )
        return


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

    async def consume() -> None:
        while True:
            try:
                inbox = _Inbox()
                async with _client(container, inbox) as client:
                    for topic in subscriptions:
                        await client.subscribe(topic, qos=1)
                    log.info("listener_subscribed", topics=subscriptions)
                    # A batch: the next message (or a disconnect), then what has arrived
                    # or the socket already holds, up to the batch size; never a wait.
                    async for message in client.messages:
                        batch = [message, *inbox.take(batch_size - 1)]
                        while len(batch) < batch_size:
                            await asyncio.sleep(0)  # let the loop read what the socket holds
                            more = inbox.take(batch_size - len(batch))
                            if not more:
                                break
                            batch += more
                        await _flush(container, [_received(m) for m in batch])
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
