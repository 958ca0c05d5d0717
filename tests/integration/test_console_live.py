"""The rollout page's live updates over a real uvicorn server and a real redis-server:
an open stream sees device moves and the operator's pause as `update` events, then `end`
when the rollout finishes; each page gets its own fragment; no session gets a 401."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
import uvicorn

from orchestrator.api import create_app
from orchestrator.api.console.live import MAX_STREAMS_PER_SESSION
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    RolloutState,
    WaveState,
)
from orchestrator.services.rollout import command
from simulator.services import free_port
from tests.console import sign_in

pytestmark = pytest.mark.integration

OPERATOR = "op-7f3a9c21d4"
VIEWER = "view-2b8e61f0"
TOKENS = f"ops:{OPERATOR}:operator,watch:{VIEWER}:viewer"
NOW = datetime(2026, 12, 2, 9, tzinfo=UTC)
ROLLOUT = "ro-20261202-090000-live"
WAIT = 20.0
"""Seconds any one wait may take before the test fails instead of hanging."""


@dataclass
class Console:
    """A console served by uvicorn on a loopback port, over the test's Redis."""

    url: str
    container: Container
    server: uvicorn.Server
    thread: threading.Thread

    @contextlib.contextmanager
    def client(self, token: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client of the console, signed in with `token` if given."""
        with httpx.Client(base_url=self.url, timeout=WAIT, follow_redirects=False) as client:
            if token is not None:
                sign_in(client, token)
            yield client

    def stop(self) -> bool:
        """Ask the server to stop; whether it did within WAIT seconds."""
        self.server.should_exit = True
        self.thread.join(WAIT)
        return not self.thread.is_alive()


@pytest.fixture
def console(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    """`create_app` served by a real uvicorn server in a thread."""
    monkeypatch.setenv("CERTFLEET_API_TOKENS", TOKENS)
    container = bootstrap(Settings(), logging=False)
    port = free_port()
    config = uvicorn.Config(
        create_app(container),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(int(WAIT * 20)):
        if server.started:
            started.set()
            break
        if not thread.is_alive():
            break
        started.wait(0.05)
    assert server.started, "uvicorn did not start"
    running = Console(f"http://127.0.0.1:{port}", container, server, thread)
    yield running
    running.stop()
    container.close()


def create_rollout(container: Container) -> str:
    """A running trust.retire rollout of two devices in one wave, both pending."""
    spec = RolloutSpec.from_json(
        {"kind": "trust.retire", "tag": 42, "spare_tag": 43, "waves": "100%"}
    )
    container.rollouts.create(
        Rollout.planned(ROLLOUT, spec, seed="test", sizes=[2], now=NOW),
        waves=[["dev-a", "dev-b"]],
        active={"dev-a": [42], "dev-b": [42]},
        actor="test",
    )
    assert container.rollouts.change(
        ROLLOUT,
        Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)}),
    )
    return ROLLOUT


def commit(container: Container, device_id: str) -> None:
    """Move a pending device straight to committed, as its report would in the end."""
    D = DeviceRolloutState
    [result] = container.rollouts.transition(
        ROLLOUT,
        [
            DeviceTransition(
                device_id=device_id, new=D.COMMITTED, allowed=frozenset({D.PENDING}), cause="test"
            )
        ],
        now=NOW,
        actor="test",
    )
    assert result.applied, result


def finish(container: Container) -> None:
    """The rollout's last wave passed: the rollout completed."""
    assert container.rollouts.change(
        ROLLOUT,
        Change(state=RolloutState.COMPLETED, waves={0: WaveChange(state=WaveState.PASSED)}),
    )


def counter(container: Container, name: str) -> float:
    """A counter's value in the shared metrics (0 if never counted)."""
    return container.metrics.snapshot().get((name, ()), 0.0)


def wait_for_counter(container: Container, name: str, value: float) -> bool:
    """Whether the counter reaches `value` within WAIT seconds (it is counted in the
    background)."""
    deadline = time.monotonic() + WAIT
    while counter(container, name) < value and time.monotonic() < deadline:
        time.sleep(0.05)
    return counter(container, name) == value


# -- reading the stream -------------------------------------------------------------------------


@dataclass
class Event:
    """One Server-Sent Event as a browser sees it."""

    name: str
    data: str
    id: str | None


class Events:
    """The events of one open stream, read line by line (each read bounded by WAIT)."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()
        self.comments: list[str] = []
        self.retry: str | None = None

    def next(self) -> Event:
        """The next event; fails after WAIT seconds of keepalives alone."""
        name, event_id = "message", None
        data: list[str] = []
        deadline = time.monotonic() + WAIT
        for line in self._lines:
            assert time.monotonic() < deadline, "no event in time"
            if line == "":
                if data:
                    return Event(name, "\n".join(data), event_id)
                name, event_id = "message", None
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
            elif field == "retry":
                self.retry = value
        raise AssertionError("the stream closed")

    def next_update(self, changed: str | None = None) -> Event:
        """The next `update` (after any other events), optionally the first whose fragment
        differs from `changed`."""
        for _ in range(50):
            event = self.next()
            if event.name == "update" and event.data != changed:
                return event
            assert event.name in ("update", "stale"), event
        raise AssertionError("no changed update in 50 events")

    def closed(self) -> bool:
        """Whether the server ended the stream (nothing more to read)."""
        return next(iter(self._lines), None) is None


class _Fragment(HTMLParser):
    """Every element's attributes, text and ancestors' ids."""

    VOID = frozenset({"input", "br", "img", "meta", "link", "hr", "col", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {
            "tag": tag,
            "attrs": dict(attrs),
            "text": "",
            "within": [e["attrs"].get("id") for e in self._open],
        }
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data

    def text(self, element_id: str) -> str:
        [element] = [e for e in self.elements if e["attrs"].get("id") == element_id]
        return str(element["text"]).strip()

    def count(self, wave: int, state: str) -> int:
        [cell] = [
            e
            for e in self.elements
            if e["attrs"].get("data-count") == state and f"wave-{wave}" in e["within"]
        ]
        return int(str(cell["text"]).strip().replace("\u2009", ""))

    def forms(self) -> list[dict[str, str | None]]:
        return [e["attrs"] for e in self.elements if e["tag"] == "form"]

    def csrf_values(self) -> set[str | None]:
        return {e["attrs"].get("value") for e in self.elements if e["attrs"].get("name") == "csrf"}


def stream(client: httpx.Client, rollout_id: str = ROLLOUT, **params: Any) -> Any:
    return client.stream("GET", f"/rollouts/{rollout_id}/events", params=params)


# -- tests ---------------------------------------------------------------------------------------


def test_a_stream_without_a_session_gets_a_plain_401(console: Console) -> None:
    """No session cookie: 401 (an EventSource cannot follow a redirect to the sign-in form)."""
    create_rollout(console.container)
    with console.client() as client:
        response = client.get(f"/rollouts/{ROLLOUT}/events")

    assert response.status_code == 401
    assert "location" not in response.headers
    assert response.headers["cache-control"] == "no-store"


def test_a_stream_of_an_unknown_rollout_gets_404(console: Console) -> None:
    """Signed in, a rollout that does not exist: 404, no stream."""
    with console.client(VIEWER) as client:
        response = client.get("/rollouts/ro-nothing-here/events")

    assert response.status_code == 404
    assert "ro-nothing-here" in response.text


def test_an_open_stream_follows_the_rollout_until_it_ends(console: Console) -> None:
    """A device committed and the operator's pause arrive as updates; the rollout's end
    sends its final update, then `end`, and the server closes the stream."""
    container = console.container
    create_rollout(container)
    with console.client(OPERATOR) as client, stream(client) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        events = Events(response)
        first = events.next_update()
        page = _Fragment(first.data)
        assert (page.text("rollout-state"), page.count(0, "committed")) == ("running", 0)

        commit(container, "dev-a")
        moved = events.next_update(changed=first.data)
        command(container.rollout_deps(), ROLLOUT, "pause", now=NOW, actor="test")
        paused = events.next_update(changed=moved.data)
        finish(container)
        final = events.next_update(changed=paused.data)
        end = events.next()
        closed = events.closed()

    assert _Fragment(moved.data).count(0, "committed") == 1
    assert _Fragment(paused.data).text("rollout-state") == "paused"
    assert _Fragment(final.data).text("rollout-state") == "completed"
    assert events.retry is not None
    assert first.id is not None
    assert final.id is not None
    assert int(final.id) > int(first.id)
    assert end.name == "end"
    assert closed
    assert wait_for_counter(container, "certfleet_console_streams_closed_total", 1)
    assert counter(container, "certfleet_console_streams_opened_total") == 1


def test_each_page_gets_its_own_fragment(console: Console) -> None:
    """The operator's fragment carries the pause form with that session's CSRF token; a
    viewer's, of the same rollout at the same time, has no form at all."""
    create_rollout(console.container)
    with console.client() as operator, console.client() as viewer:
        csrf = sign_in(operator, OPERATOR)
        sign_in(viewer, VIEWER)
        with stream(operator) as as_operator, stream(viewer) as as_viewer:
            operator_page = _Fragment(Events(as_operator).next_update().data)
            viewer_page = _Fragment(Events(as_viewer).next_update().data)

    assert any(f.get("id") == "action-pause" for f in operator_page.forms())
    assert operator_page.csrf_values() == {csrf}
    assert viewer_page.forms() == []
    assert viewer_page.csrf_values() == set()


def test_a_finished_rollout_sends_its_state_and_end_at_once(console: Console) -> None:
    """Opening the stream of a rollout that already ended: one update, `end`, closed."""
    create_rollout(console.container)
    finish(console.container)
    with console.client(VIEWER) as client, stream(client, failed_page=0) as response:
        events = Events(response)
        update = events.next()
        end = events.next()
        closed = events.closed()

    assert update.name == "update"
    assert _Fragment(update.data).text("rollout-state") == "completed"
    assert end.name == "end"
    assert closed


def test_stopping_the_server_does_not_wait_for_open_streams(console: Console) -> None:
    """With a page still watching a running rollout, the server stops within its graceful
    shutdown time (the stream is cancelled, its reader with it) and the stream ends."""
    create_rollout(console.container)
    with console.client(VIEWER) as client, stream(client) as response:
        events = Events(response)
        events.next_update()
        assert console.stop(), "the server still waits for the open stream"
        with pytest.raises((AssertionError, httpx.TransportError)):
            events.next()  # the stream ends, cut or closed


def test_a_session_follows_a_bounded_number_of_live_pages(console: Console) -> None:
    """One session holds at most MAX_STREAMS_PER_SESSION streams: the next gets 429 (the
    page retries by itself), another session is not affected, and a closed page frees
    its place."""
    create_rollout(console.container)
    with contextlib.ExitStack() as pages, console.client(VIEWER) as client:
        opened = []  # each page's reader is kept: dropping it would close its stream
        for page in range(MAX_STREAMS_PER_SESSION):
            response = pages.enter_context(stream(client, failed_page=page % 2))
            assert response.status_code == 200
            events = Events(response)
            events.next_update()
            opened.append((response, events))
        with stream(client) as refused:
            refused.read()
            assert refused.status_code == 429
            assert "close one" in refused.text
        with console.client(OPERATOR) as other, stream(other) as response:
            assert response.status_code == 200
        opened[0][0].close()
        deadline = time.monotonic() + WAIT
        while True:
            with stream(client) as again:
                if again.status_code == 200:
                    break
                again.read()
            assert time.monotonic() < deadline, "the closed page's place was never freed"
            time.sleep(0.2)
