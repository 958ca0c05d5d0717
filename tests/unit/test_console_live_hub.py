"""The console's live hub: one read per interval per watched page, versions, stale, end."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from orchestrator.api.console.live import (
    NOTHING_YET,
    LiveHub,
    LiveStream,
    Reading,
    StreamLimit,
    sse_event,
)
from orchestrator.api.console.session import SignInRequiredError
from orchestrator.domain.errors import StoreUnavailableError
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.services.rollout import RolloutError

pytestmark = pytest.mark.unit

T = TypeVar("T")
WAIT = 5.0
"""Seconds any step may take before the test fails instead of hanging."""


def ctx(n: int, *, ended: bool = False) -> dict[str, Any]:
    """A live context numbered `n`."""
    return {"n": n, "ended": ended, "failed_page": 0}


class Contexts:
    """The context function: answers from a script (its last entry repeats), counts reads."""

    def __init__(self, *script: Mapping[str, Any] | Exception) -> None:
        self.script = list(script)
        self.keys: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, rollout_id: str, failed_page: int) -> Mapping[str, Any]:
        with self._lock:
            self.keys.append((rollout_id, failed_page))
            item = self.script[min(len(self.keys), len(self.script)) - 1]
        if isinstance(item, Exception):
            raise item
        return item


class Ticks:
    """The hub's sleep, moved on by the test: each `advance` lets one interval pass."""

    def __init__(self) -> None:
        self.gates: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        gate = asyncio.Event()
        self.gates.put_nowait(gate)
        await gate.wait()

    async def advance(self) -> None:
        """Wake the reader sleeping between two reads."""
        gate = await asyncio.wait_for(self.gates.get(), WAIT)
        gate.set()

    async def asleep(self) -> None:
        """Wait until the reader has read and sleeps again."""
        await within(until(lambda: not self.gates.empty()))


async def within(awaitable: Awaitable[T]) -> T:
    """`awaitable`, or a test failure after WAIT seconds."""
    return await asyncio.wait_for(awaitable, WAIT)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def hub_of(contexts: Contexts, ticks: Ticks) -> LiveHub:
    return LiveHub(contexts, interval=1.0, sleep=ticks.sleep)


def test_many_pages_of_one_rollout_cost_one_read_per_interval() -> None:
    """Five pages watching one rollout page: one read at the start, then one per interval."""
    contexts = Contexts(ctx(1), ctx(2), ctx(3), ctx(3, ended=True))

    async def scenario() -> tuple[list[list[int]], LiveHub]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        await within(hub.first("ro-1", 0))
        seen_by: list[list[int]] = [[] for _ in range(5)]

        async def watch(seen: list[int]) -> None:
            with hub.subscribe("ro-1", 0) as feed:
                reading = NOTHING_YET
                while not reading.ended:
                    reading = await feed.next(reading, None)
                    assert reading.context is not None
                    seen.append(reading.context["n"])

        watchers = [asyncio.create_task(watch(seen)) for seen in seen_by]
        await within(until(lambda: hub.feeds[("ro-1", 0)].subscribers == 5))
        for _ in range(3):
            await ticks.advance()
        await within(asyncio.gather(*watchers))
        return seen_by, hub

    seen_by, hub = asyncio.run(scenario())

    assert contexts.keys == [("ro-1", 0)] * 4
    assert all(seen[-1] == 3 for seen in seen_by)
    assert hub.feeds == {}


def test_each_page_of_failed_devices_is_a_feed_of_its_own() -> None:
    """Two failed-device pages of one rollout are read apart, each once per interval."""
    contexts = Contexts(ctx(1))

    async def scenario() -> set[tuple[str, int]]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        with hub.subscribe("ro-1", 0), hub.subscribe("ro-1", 3):
            await within(until(lambda: len(contexts.keys) == 2))
            return set(hub.feeds)

    feeds = asyncio.run(scenario())

    assert feeds == {("ro-1", 0), ("ro-1", 3)}
    assert sorted(contexts.keys) == [("ro-1", 0), ("ro-1", 3)]


def test_the_version_changes_only_when_the_content_does() -> None:
    """Readings A, A, B, B, A get versions v1, v1, v2, v2, v3: three different ones."""
    contexts = Contexts(ctx(1), ctx(1), ctx(2), ctx(2), ctx(1))

    async def scenario() -> list[Reading]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        with hub.subscribe("ro-1", 0) as feed:
            readings = [await within(feed.next(NOTHING_YET, None))]
            for _ in range(4):
                await ticks.advance()
                await ticks.asleep()
                readings.append(feed.reading)
        return readings

    readings = asyncio.run(scenario())

    versions = [r.version for r in readings]
    assert versions[0] == versions[1] < versions[2] == versions[3] < versions[4]
    assert readings[0] is readings[1]  # nothing published, nobody woken
    assert [r.context["n"] for r in readings if r.context] == [1, 1, 2, 2, 1]


def test_the_reader_stops_when_the_last_page_leaves() -> None:
    """One of two pages leaves: reading goes on; the other leaves: the reader is cancelled."""
    contexts = Contexts(ctx(1))

    async def scenario() -> tuple[bool, bool, bool]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        with hub.subscribe("ro-1", 0) as feed:
            with hub.subscribe("ro-1", 0):
                await ticks.asleep()
            assert feed.task is not None
            still_reading = not feed.task.done() and ("ro-1", 0) in hub.feeds
        await asyncio.wait([feed.task], timeout=WAIT)
        return still_reading, feed.task.cancelled(), ("ro-1", 0) in hub.feeds

    still_reading, cancelled, kept = asyncio.run(scenario())

    assert still_reading
    assert cancelled
    assert not kept
    assert len(contexts.keys) == 1


def test_a_first_reading_nobody_subscribes_to_stops_at_the_next_interval() -> None:
    """`first` without a subscriber (the stream never started) reads once, then stops."""
    contexts = Contexts(ctx(1))

    async def scenario() -> tuple[Reading, bool]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        reading = await within(hub.first("ro-1", 0))
        task = hub.feeds[("ro-1", 0)].task
        assert task is not None
        await ticks.advance()
        await within(task)
        return reading, ("ro-1", 0) in hub.feeds

    reading, kept = asyncio.run(scenario())

    assert reading.context == ctx(1)
    assert not kept
    assert len(contexts.keys) == 1


def test_an_unknown_rollout_reads_as_missing_and_is_not_kept() -> None:
    """A context function raising RolloutError: the reading is `missing`; no feed remains."""
    contexts = Contexts(RolloutError("no rollout 'ro-x'"))

    async def scenario() -> tuple[Reading, dict[Any, Any]]:
        hub = hub_of(contexts, Ticks())
        reading = await within(hub.first("ro-x", 0))
        await within(until(lambda: not hub.feeds))
        return reading, dict(hub.feeds)

    reading, feeds = asyncio.run(scenario())

    assert reading.missing
    assert reading.context is None
    assert feeds == {}


def test_a_store_outage_marks_the_reading_stale_once_and_keeps_the_context() -> None:
    """Unavailable twice, then back with the same content: stale (same object twice), then
    fresh again with the version it had."""
    down = StoreUnavailableError("redis: connection refused")
    contexts = Contexts(ctx(1), down, down, ctx(1))

    async def scenario() -> list[Reading]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        with hub.subscribe("ro-1", 0) as feed:
            readings = [await within(feed.next(NOTHING_YET, None))]
            for _ in range(3):
                await ticks.advance()
                await ticks.asleep()
                readings.append(feed.reading)
        return readings

    fresh, stale, still_stale, back = asyncio.run(scenario())

    assert not fresh.stale
    assert stale.stale
    assert still_stale is stale
    assert stale.context == fresh.context
    assert not back.stale
    assert back.version == stale.version == fresh.version


def test_a_reader_whose_context_function_crashes_keeps_reading() -> None:
    """An unexpected error in the context function is logged and read as stale; the
    next interval reads again."""
    contexts = Contexts(ctx(1), ValueError("bug"), ctx(2))

    async def scenario() -> list[Reading]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        with hub.subscribe("ro-1", 0) as feed:
            readings = [await within(feed.next(NOTHING_YET, None))]
            for _ in range(2):
                await ticks.advance()
                await ticks.asleep()
                readings.append(feed.reading)
        return readings

    readings = asyncio.run(scenario())

    assert [r.stale for r in readings] == [False, True, False]
    assert readings[2].context == ctx(2)


# -- one page's stream ---------------------------------------------------------------------------


def render(context: Mapping[str, Any]) -> str:
    return f"<p>{context['n']}</p>\n<p>ended={context['ended']}</p>"


def stream_of(
    hub: LiveHub,
    first: Reading,
    counted: list[str],
    *,
    check_session: Callable[[], object] = lambda: None,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
    keepalive: float = 60.0,
    session_check: float = 60.0,
) -> LiveStream:
    return LiveStream(
        hub=hub,
        rollout_id="ro-1",
        failed_page=0,
        first=first,
        render=render,
        check_session=check_session,
        count=counted.append,
        disconnected=disconnected,
        keepalive=keepalive,
        session_check=session_check,
    )


async def step(events: AsyncIterator[str]) -> str:
    return await within(anext(events))


def update(reading: Reading) -> str:
    assert reading.context is not None
    return sse_event("update", render(reading.context), event_id=reading.version)


def test_a_stream_sends_updates_then_end_after_the_rollout_ended() -> None:
    """retry, the current fragment, each change, the final fragment and `end`; then the
    stream closes and its reader is gone."""
    contexts = Contexts(ctx(1), ctx(2, ended=True))
    counted: list[str] = []

    async def scenario() -> tuple[list[str], list[str], LiveHub]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        first = await within(hub.first("ro-1", 0))
        events = stream_of(hub, first, counted).events()
        sent = [await step(events), await step(events)]
        await ticks.advance()
        sent += [await step(events), await step(events)]
        rest = [event async for event in events]
        return sent, rest, hub

    sent, rest, hub = asyncio.run(scenario())

    assert sent[0] == "retry: 3000\n\n"
    assert sent[1].startswith("id: ")
    assert "event: update\ndata: <p>1</p>\ndata: <p>ended=False</p>\n\n" in sent[1]
    assert "data: <p>2</p>\ndata: <p>ended=True</p>\n\n" in sent[2]
    assert sent[3] == "event: end\ndata: the rollout has ended\n\n"
    assert rest == []
    assert hub.feeds == {}
    assert counted == [
        "certfleet_console_streams_opened_total",
        "certfleet_console_streams_closed_total",
    ]


def test_a_stream_of_an_ended_rollout_sends_the_final_update_and_end_without_a_reader() -> None:
    """Opening a finished rollout's stream: its fragment, `end`, and no reader started."""
    contexts = Contexts(ctx(7, ended=True))

    async def scenario() -> tuple[Reading, list[str], LiveHub]:
        hub = hub_of(contexts, Ticks())
        first = await within(hub.first("ro-1", 0))
        await within(until(lambda: not hub.feeds))
        events = [e async for e in stream_of(hub, first, []).events()]
        return first, events, hub

    first, events, hub = asyncio.run(scenario())

    assert events == [
        "retry: 3000\n\n",
        update(first),
        "event: end\ndata: the rollout has ended\n\n",
    ]
    assert len(contexts.keys) == 1
    assert hub.feeds == {}


def test_a_store_outage_is_told_once_and_the_fragment_is_sent_again_after() -> None:
    """Two failed reads: one `stale`; back with the same content: the same update again."""
    down = StoreUnavailableError("redis: connection refused")
    contexts = Contexts(ctx(1), down, down, ctx(1), ctx(1, ended=True))

    async def scenario() -> tuple[Reading, list[str]]:
        ticks = Ticks()
        hub = hub_of(contexts, ticks)
        first = await within(hub.first("ro-1", 0))
        events = stream_of(hub, first, []).events()
        sent = [await step(events), await step(events)]
        await ticks.advance()
        sent.append(await step(events))
        await ticks.advance()  # unavailable again: nothing to say
        await ticks.asleep()
        await ticks.advance()  # back
        sent.append(await step(events))
        await ticks.advance()  # ended
        sent += [e async for e in events]
        return first, sent

    first, sent = asyncio.run(scenario())

    assert sent[1] == update(first)
    assert sent[2] == "event: stale\ndata: the store is unavailable; retrying\n\n"
    assert sent[3] == update(first)
    assert "event: update" in sent[4]
    assert sent[5:] == ["event: end\ndata: the rollout has ended\n\n"]


def test_an_idle_stream_sends_keepalives_and_a_closed_one_releases_its_feed() -> None:
    """Nothing changes: comments keep the stream alive; closing it (the client went) ends
    the subscription and the reader."""
    contexts = Contexts(ctx(1))
    counted: list[str] = []

    async def scenario() -> tuple[list[str], LiveHub]:
        hub = hub_of(contexts, Ticks())
        first = await within(hub.first("ro-1", 0))
        events = stream_of(hub, first, counted, keepalive=0.01).events()
        sent = [await step(events) for _ in range(4)]
        assert hub.feeds[("ro-1", 0)].subscribers == 1
        await events.aclose()
        return sent, hub

    sent, hub = asyncio.run(scenario())

    assert sent[2:] == [": keepalive\n\n", ": keepalive\n\n"]
    assert hub.feeds == {}
    assert counted == [
        "certfleet_console_streams_opened_total",
        "certfleet_console_streams_closed_total",
    ]


def test_a_stream_whose_client_went_ends_at_its_next_wake_up() -> None:
    """A server that does not cancel the stream: the request says it is disconnected at
    the next keepalive, and the stream ends without sending it, releasing its feed."""
    contexts = Contexts(ctx(1))
    answers = iter([False, True])

    async def disconnected() -> bool:
        return next(answers)

    async def scenario() -> tuple[list[str], LiveHub]:
        hub = hub_of(contexts, Ticks())
        first = await within(hub.first("ro-1", 0))
        stream = stream_of(hub, first, [], disconnected=disconnected, keepalive=0.01)
        sent = await within(collect(stream.events()))
        return sent, hub

    sent, hub = asyncio.run(scenario())

    assert len(sent) == 2  # no keepalive after the client went
    assert "event: update" in sent[1]
    assert hub.feeds == {}


async def collect(events: AsyncIterator[str]) -> list[str]:
    return [event async for event in events]


def test_a_stream_whose_session_ended_says_signin_and_closes() -> None:
    """At its session check a signed-out session gets `signin` and the stream ends."""
    contexts = Contexts(ctx(1))

    def signed_out() -> object:
        raise SignInRequiredError("/rollouts/ro-1/events")

    async def scenario() -> tuple[list[str], LiveHub]:
        hub = hub_of(contexts, Ticks())
        first = await within(hub.first("ro-1", 0))
        stream = stream_of(hub, first, [], check_session=signed_out, session_check=0.0)
        sent = [e async for e in stream.events()]
        return sent, hub

    sent, hub = asyncio.run(scenario())

    assert sent[-1] == "event: signin\ndata: the session ended; sign in again\n\n"
    assert not any("event: update" in e for e in sent)
    assert hub.feeds == {}


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_an_event_carries_each_line_of_its_data_on_a_data_line(newline: str) -> None:
    """Every line break of the data (LF, CRLF, CR) starts a new `data:` line."""
    event = sse_event("update", f"<p>a</p>{newline}<p>b</p>", event_id=12)

    assert event == "id: 12\nevent: update\ndata: <p>a</p>\ndata: <p>b</p>\n\n"


NOW_SESSION = datetime(2026, 12, 2, 18, tzinfo=UTC)


def test_a_session_holds_a_bounded_number_of_streams() -> None:
    """Past the limit a stream is refused; an ended one frees its place; sessions apart."""
    one = ConsoleSession("ops", "operator", "a" * 32, NOW_SESSION)
    other = ConsoleSession("ops", "operator", "b" * 32, NOW_SESSION)
    limit = StreamLimit(2)

    first = limit.admit(one)
    second = limit.admit(one)
    assert first is not None
    assert second is not None
    assert limit.admit(one) is None
    assert limit.admit(other) is not None, "another session has its own places"
    limit.release(one, first)
    assert limit.open(one) == 1
    third = limit.admit(one)
    assert third is not None
    assert limit.open(one) == 2


def test_a_stream_that_never_started_frees_its_place() -> None:
    """A client gone before the first byte: the stream's body is dropped without running
    its `finally`; the weak set forgets its place with it."""
    session = ConsoleSession("ops", "operator", "c" * 32, NOW_SESSION)
    limit = StreamLimit(1)

    place = limit.admit(session)
    assert place is not None
    assert limit.admit(session) is None
    del place
    gc.collect()

    assert limit.open(session) == 0
    assert limit.admit(session) is not None
