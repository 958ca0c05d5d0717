"""`/rollouts/{id}/events`: a rollout page's live part over Server-Sent Events.

One `LiveHub` per app. For each (rollout, failed devices page) that someone watches,
one reader task reads the page's live context once per interval in a worker thread,
however many pages are open, and stops when the last of them closes. A reading gets a
new version only when its content changed (a digest of its JSON). Each open page
renders `rollout_live.html` with its own session (a viewer's fragment has no action
forms, an operator's carries that operator's CSRF token) and gets it as an `update`
event whose id is the version; once the rollout has ended, the final update and then
`end`. A comment every 15 s keeps proxies from closing an idle stream. While the store
is unavailable the stream stays open, says `stale` once and the reader tries again at
the next interval. A session that ends (signed out, expired, its token removed) gets
`signin` at its next check and the stream closes.
"""

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Final

from anyio import to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from orchestrator.api.console.rollouts import rollout_live_context
from orchestrator.api.console.session import SignInRequiredError
from orchestrator.api.console.templates import render_fragment
from orchestrator.domain.errors import StoreUnavailableError
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.logs import get_logger
from orchestrator.services.rollout import RolloutError

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext
    from orchestrator.bootstrap import Container

__all__ = [
    "MAX_STREAMS_PER_SESSION",
    "NOTHING_YET",
    "LiveHub",
    "LiveStream",
    "ReadContext",
    "Reading",
    "StreamLimit",
    "StreamPlace",
    "router",
    "sse_event",
]

log = get_logger(__name__)

INTERVAL_SECONDS: Final = 1.0
KEEPALIVE_SECONDS: Final = 15.0
SESSION_CHECK_SECONDS: Final = 60.0
RETRY_MILLISECONDS: Final = 3000
"""How long a browser waits before it reconnects a stream that broke."""
MAX_FAILED_PAGE: Final = 100_000
STREAM_HEADERS: Final = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
MAX_STREAMS_PER_SESSION: Final = 8
"""Live streams one session may hold open in one process: a page per browser tab, and a
bound on what one signed-in user can make the process read each second."""

ReadContext = Callable[[str, int], Mapping[str, Any]]
"""(rollout id, failed devices page) -> the live context; raises `RolloutError` for an
unknown rollout and `StoreUnavailableError` when the store cannot answer. Sync."""
Key = tuple[str, int]
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Reading:
    """What a feed read last: the context and its version (0 before the first read).

    `stale`: the last read found the store unavailable (the context is the one before);
    `missing`: the rollout does not exist.
    """

    version: int
    context: Mapping[str, Any] | None = None
    digest: bytes = b""
    stale: bool = False
    missing: bool = False

    @property
    def ended(self) -> bool:
        """No update will come after this one."""
        return self.context is not None and bool(self.context.get("ended"))


NOTHING_YET: Final = Reading(version=0)


@dataclass(eq=False)
class Feed:
    """One (rollout, page) being watched: its latest reading and who waits for the next."""

    key: Key
    reading: Reading = NOTHING_YET
    subscribers: int = 0
    task: "asyncio.Task[None] | None" = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, reading: Reading) -> None:
        """Make `reading` the latest and wake everyone waiting."""
        self.reading = reading
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def next(self, seen: Reading, timeout: float | None) -> Reading:
        """The latest reading once it is another than `seen`, or `seen` after `timeout`."""
        if self.reading is seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.reading


class LiveHub:
    """One reader per watched (rollout, page), shared by every page that watches it.

    Args:
        read: the sync context function, run in a worker thread.
        interval: seconds between two reads of one feed.
        sleep: waits between reads (`asyncio.sleep`; tests pass a controlled one).
    """

    def __init__(
        self,
        read: ReadContext,
        *,
        interval: float = INTERVAL_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._read = read
        self._interval = interval
        self._sleep = sleep
        self._feeds: dict[Key, Feed] = {}
        self._versions = itertools.count(1)

    @property
    def feeds(self) -> Mapping[Key, Feed]:
        """The feeds being read now."""
        return self._feeds

    async def first(self, rollout_id: str, failed_page: int) -> Reading:
        """The feed's latest reading, after its first read if no one watched it yet.

        A feed started here that nobody subscribes to stops at its next interval.
        """
        feed = self._feed((rollout_id, failed_page))
        return await feed.next(NOTHING_YET, None)

    @contextlib.contextmanager
    def subscribe(self, rollout_id: str, failed_page: int) -> Iterator[Feed]:
        """Watch a (rollout, page) for the `with` block; the last one out stops its reader."""
        feed = self._feed((rollout_id, failed_page))
        feed.subscribers += 1
        try:
            yield feed
        finally:
            feed.subscribers -= 1
            if feed.subscribers == 0 and feed.task is not None:
                feed.task.cancel()
                self._drop(feed)

    def _feed(self, key: Key) -> Feed:
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = Feed(key)
            feed.task = asyncio.get_running_loop().create_task(
                self._run(feed), name=f"console-live-{key[0]}-{key[1]}"
            )
        return feed

    def _drop(self, feed: Feed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    async def _run(self, feed: Feed) -> None:
        try:
            while True:
                reading = await self._next_reading(feed)
                if reading is not feed.reading:
                    feed.publish(reading)
                if reading.ended or reading.missing:
                    return  # nothing more will change
                await self._sleep(self._interval)
                if feed.subscribers == 0:
                    return  # started by `first`, never watched
        finally:
            self._drop(feed)
            if feed.reading is NOTHING_YET:  # stopped before its first read: wake `first`
                feed.publish(Reading(version=0, stale=True))

    async def _next_reading(self, feed: Feed) -> Reading:
        rollout_id, failed_page = feed.key
        before = feed.reading
        try:
            context, digest = await to_thread.run_sync(
                _read_with_digest, self._read, rollout_id, failed_page
            )
        except RolloutError:
            return Reading(version=next(self._versions), missing=True)
        except StoreUnavailableError as exc:
            log.warning("console_stream_read_failed", rollout_id=rollout_id, error=str(exc))
            return self._stale(before)
        except Exception:  # a reader that died would leave its pages frozen: log, go on
            log.exception("console_stream_read_crashed", rollout_id=rollout_id)
            return self._stale(before)
        if digest == before.digest and before.context is not None:
            if before.stale:
                return Reading(before.version, context, digest)
            return before
        return Reading(next(self._versions), context, digest)

    @staticmethod
    def _stale(before: Reading) -> Reading:
        """The reading before, marked stale (once)."""
        if before.stale:
            return before
        return Reading(before.version, before.context, before.digest, stale=True)


def _read_with_digest(read: ReadContext, rollout_id: str, failed_page: int) -> tuple[Any, bytes]:
    context = read(rollout_id, failed_page)
    dump = json.dumps(context, sort_keys=True, default=str, separators=(",", ":"))
    return context, hashlib.sha256(dump.encode()).digest()


def sse_event(event: str, data: str, *, event_id: int | None = None) -> str:
    """One Server-Sent Event: `id:` (if given), `event:` and each line of `data`."""
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return "\n".join(lines) + "\n\n"


KEEPALIVE: Final = ": keepalive\n\n"


@dataclass
class LiveStream:
    """One open page's stream of events: what it sent last, when to check its session.

    `render` turns a context into the page's fragment (with the page's own session);
    `check_session` raises `SignInRequiredError` once the session has ended; `count`
    adds to a counter and must not block (it runs when a cancelled stream closes too).
    A server that cancels a stream when its client goes (uvicorn) ends it at once;
    `disconnected` (the request's) also ends it at its next wake-up (a change, a
    keepalive) on servers that do not.
    """

    hub: LiveHub
    rollout_id: str
    failed_page: int
    first: Reading
    render: Callable[[Mapping[str, Any]], str]
    check_session: Callable[[], object]
    count: Callable[[str], None]
    disconnected: Callable[[], Awaitable[bool]] | None = None
    who: str = ""
    keepalive: float = KEEPALIVE_SECONDS
    session_check: float = SESSION_CHECK_SECONDS
    sent_version: int = 0
    told_stale: bool = False
    done: bool = False
    ending: str = "cancelled"

    async def events(self) -> AsyncGenerator[str, None]:
        """Events until the rollout ends, the session does, or the client goes."""
        log.info("console_stream_opened", rollout_id=self.rollout_id, who=self.who)
        self.count("certfleet_console_streams_opened_total")
        self.ending = "cancelled"  # the client went, or the server is stopping
        try:
            yield f"retry: {RETRY_MILLISECONDS}\n\n"
            if self.first.ended:  # nothing to watch: no reader needed
                async for event in self._send(self.first):
                    yield event
                return
            with self.hub.subscribe(self.rollout_id, self.failed_page) as feed:
                async for event in self._follow(feed):
                    yield event
        finally:
            log.info("console_stream_closed", rollout_id=self.rollout_id, reason=self.ending)
            self.count("certfleet_console_streams_closed_total")

    async def _follow(self, feed: Feed) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        seen = NOTHING_YET
        check_at = loop.time() + self.session_check
        while not self.done:
            timeout = max(0.0, min(self.keepalive, check_at - loop.time()))
            reading = await feed.next(seen, timeout)
            if self.disconnected is not None and await self.disconnected():
                return
            if loop.time() >= check_at:
                if not await self._still_signed_in():
                    self.ending, self.done = "session", True
                    yield sse_event("signin", "the session ended; sign in again")
                    return
                check_at = loop.time() + self.session_check
            if reading is seen:
                yield KEEPALIVE
                continue
            seen = reading
            async for event in self._send(reading):
                yield event

    async def _send(self, reading: Reading) -> AsyncIterator[str]:
        """What a new reading means for this page: nothing, `stale`, `update`, `end`."""
        if reading.missing:
            self.ending, self.done = "missing", True
            yield sse_event("end", "the rollout no longer exists")
            return
        if reading.stale:
            if not self.told_stale:
                self.told_stale = True
                yield sse_event("stale", "the store is unavailable; retrying")
            return
        if reading.version != self.sent_version or self.told_stale:
            html = await self._render(reading)
            yield sse_event("update", html, event_id=reading.version)
            self.sent_version, self.told_stale = reading.version, False
        if reading.ended:
            self.ending, self.done = "ended", True
            yield sse_event("end", "the rollout has ended")

    async def _render(self, reading: Reading) -> str:
        assert reading.context is not None  # noqa: S101 -- a fresh reading has its context
        return await to_thread.run_sync(self.render, reading.context)

    async def _still_signed_in(self) -> bool:
        try:
            await to_thread.run_sync(self.check_session)
        except SignInRequiredError:
            return False
        except StoreUnavailableError:
            return True  # checked again at the next round
        return True


class StreamPlace:
    """A stream's place in its session's count: held by the stream's body while it
    lives, weakly by `StreamLimit`."""

    __slots__ = ("__weakref__",)


class StreamLimit:
    """The live streams each session holds open, at most `limit` each.

    A stream is released when it ends; one whose client went before its first byte is
    never started, and drops out with its generator (the sets hold weak references).
    """

    def __init__(self, limit: int = MAX_STREAMS_PER_SESSION) -> None:
        self.limit = limit
        self._open: dict[str, weakref.WeakSet[StreamPlace]] = {}

    @staticmethod
    def _key(session: ConsoleSession) -> str:
        return hashlib.sha256(session.csrf.encode()).hexdigest()

    def admit(self, session: ConsoleSession) -> StreamPlace | None:
        """A place counted against the session; None past the limit."""
        streams = self._open.setdefault(self._key(session), weakref.WeakSet())
        if len(streams) >= self.limit:
            return None
        place = StreamPlace()
        streams.add(place)
        return place

    def release(self, session: ConsoleSession, place: StreamPlace) -> None:
        """The stream ended."""
        key = self._key(session)
        streams = self._open.get(key)
        if streams is None:
            return
        streams.discard(place)
        if not streams:
            del self._open[key]

    def open(self, session: ConsoleSession) -> int:
        """The session's streams open now."""
        return len(self._open.get(self._key(session), ()))


def _background_counter(container: "Container") -> Callable[[str], None]:
    """Counters added in a worker thread, so that closing a stream never waits on Redis."""
    metrics = container.metrics

    def incr(name: str) -> None:
        try:
            metrics.incr(name)
        except StoreUnavailableError as exc:
            log.warning("console_stream_metric_lost", metric=name, error=str(exc))

    def count(name: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a stream finalized after its loop closed
            return
        loop.run_in_executor(None, incr, name)

    return count


def router(
    ctx: "ConsoleContext",
    *,
    interval: float = INTERVAL_SECONDS,
    keepalive: float = KEEPALIVE_SECONDS,
    session_check: float = SESSION_CHECK_SECONDS,
    max_streams: int = MAX_STREAMS_PER_SESSION,
) -> APIRouter:
    """`GET /rollouts/{rollout_id}/events`, over a hub of this app's own; a session holds
    at most `max_streams` open (429 past it: the page retries by itself)."""
    r = APIRouter(include_in_schema=False)
    container = ctx.container

    def read(rollout_id: str, failed_page: int) -> Mapping[str, Any]:
        return rollout_live_context(container, rollout_id, failed_page=failed_page)

    hub = LiveHub(read, interval=interval)
    count = _background_counter(container)
    limit = StreamLimit(max_streams)

    def signed_in(request: Request) -> ConsoleSession:
        """The session; a plain 401 without one (an EventSource cannot follow a redirect
        to the sign-in form)."""
        try:
            return ctx.viewer(request)
        except SignInRequiredError:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "sign in to the console first", STREAM_HEADERS
            ) from None

    @r.get("/rollouts/{rollout_id}/events")
    async def rollout_events(
        request: Request,
        rollout_id: str,
        session: Annotated[ConsoleSession, Depends(signed_in)],
        failed_page: Annotated[int, Query(ge=0, le=MAX_FAILED_PAGE)] = 0,
    ) -> StreamingResponse:
        first = await hub.first(rollout_id, failed_page)
        if first.missing:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rollout {rollout_id!r}")
        if first.context is None:
            raise StoreUnavailableError("the store is unavailable; the page retries by itself")
        stream = LiveStream(
            hub=hub,
            rollout_id=rollout_id,
            failed_page=failed_page,
            first=first,
            render=functools.partial(_fragment, session, rollout_id),
            check_session=functools.partial(ctx.viewer, request),
            count=count,
            disconnected=request.is_disconnected,
            who=session.name,
            keepalive=keepalive,
            session_check=session_check,
        )
        place = limit.admit(session)
        if place is None:
            log.warning("console_stream_refused", rollout_id=rollout_id, who=session.name)
            count("certfleet_console_streams_refused_total")
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"this session already follows {limit.limit} live pages; close one",
                STREAM_HEADERS,
            )

        async def body() -> AsyncGenerator[str, None]:
            try:
                async for event in stream.events():
                    yield event
            finally:
                limit.release(session, place)

        return StreamingResponse(body(), media_type="text/event-stream", headers=STREAM_HEADERS)

    return r


def _fragment(session: ConsoleSession, rollout_id: str, context: Mapping[str, Any]) -> str:
    return render_fragment("rollout_live.html", session, **{"rollout_id": rollout_id, **context})
