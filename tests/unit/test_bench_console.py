"""The console benchmark's arithmetic and parsing: its scenario's shares, the assets a page
loads, Server-Sent Events counted, per-page figures."""

from __future__ import annotations

from collections import Counter

import pytest

from orchestrator.domain.rollout_states import DeviceRolloutState as D
from orchestrator.domain.waves import parse_waves, wave_sizes
from tests.bench.bench_console import (
    FAILURES,
    IN_FLIGHT,
    WAVES,
    EventCounter,
    View,
    asset_urls,
    per_page_per_minute,
    planned_state,
    table_rows,
    weight_figures,
)

pytestmark = pytest.mark.unit


def _scenario(devices: int) -> Counter[D]:
    """Every device's planned state, wave by wave as the bench makes them."""
    sizes = wave_sizes(parse_waves(WAVES), devices)
    found: Counter[D] = Counter()
    seen = 0
    for wave, size in enumerate(sizes):
        running = wave == len(sizes) - 1
        found.update(planned_state(seen + i, i, size, running=running) for i in range(size))
        seen += size
    return found


@pytest.mark.parametrize("devices", [100, 100_000])
def test_the_scenario_is_a_rollout_mid_way(devices: int) -> None:
    # when the bench plans a rollout's devices
    states = _scenario(devices)

    # then every device has a state, 5% failed, about 60% committed, some in flight
    assert sum(states.values()) == devices
    failed = sum(states[s] for s in FAILURES)
    assert failed == pytest.approx(devices * 0.05, abs=2)
    assert {s for s in FAILURES if states[s]} == set(FAILURES)
    assert 0.58 <= states[D.COMMITTED] / devices <= 0.62
    assert sum(states[s] for s in IN_FLIGHT) >= devices * 0.04
    assert states[D.PENDING] >= devices * 0.3
    assert states[D.TIMED_OUT] <= devices * 0.01
    assert states[D.TIMED_OUT] > 0 or devices < 1_000  # in the passed waves' 10%


def test_a_canary_of_one_device_does_not_fail() -> None:
    """The first device of every wave commits, so a gate over a canary of one passes."""
    assert planned_state(0, 0, 1, running=False) is D.COMMITTED
    assert planned_state(0, 0, 100, running=True) is D.COMMITTED


def test_a_page_loads_its_stylesheets_scripts_and_images_once_but_no_data_urls() -> None:
    html = """<!doctype html><html><head>
    <link rel="stylesheet" href="/static/console.css?v=1">
    <link rel="icon" href="data:,">
    <link rel="preconnect" href="https://elsewhere.example">
    <script src="/static/console.js?v=2" defer></script>
    </head><body><img src="logo.png"><script src="/static/console.js?v=2"></script>
    <a href="/devices/x">not loaded</a></body></html>"""

    assert asset_urls(html, "http://127.0.0.1:8080/rollouts/r1") == [
        "http://127.0.0.1:8080/static/console.css?v=1",
        "http://127.0.0.1:8080/static/console.js?v=2",
        "http://127.0.0.1:8080/rollouts/logo.png",
    ]


def test_events_are_counted_at_their_blank_line() -> None:
    # given a stream: a keepalive comment, two updates (one of two data lines), an end
    lines = [
        ": keepalive",
        "",
        "event: update",
        "id: 1",
        "data: <p>one</p>",
        "",
        "event: update",
        "id: 2",
        "data: <p>two",
        "data: lines</p>",
        "",
        "event: end",
        "data: ",
        "",
        "event: update",  # no blank line yet: not dispatched
    ]
    counter = EventCounter()

    # when
    for line in lines:
        counter.feed(line + "\r\n")

    # then
    assert counter.of("update") == 2
    assert counter.of("end") == 1
    assert counter.of("comment") == 1
    assert counter.last_update == "<p>two\nlines</p>"


def test_per_page_cost_is_what_the_pages_add_per_minute() -> None:
    # 50 pages added 3 s of CPU over 20 s: 3 / 50 per 20 s is 0.18 s per minute each
    assert per_page_per_minute(3.5, 0.5, 50, 20.0) == pytest.approx(0.18)
    with pytest.raises(ValueError, match="positive"):
        per_page_per_minute(1.0, 0.0, 0, 20.0)


def test_the_weight_figures_compare_the_large_page_with_a_full_one() -> None:
    # given a small rollout's page (few failed devices), a full one's and a large one's
    small = {"html": 1_000, "http://h/static/console.css?v=1": 3_000, "gzip": 1_200}
    full = {"html": 2_000, "http://h/static/console.css?v=1": 3_000, "gzip": 1_500}
    big = {"html": 2_600, "http://h/static/console.css?v=1": 3_000, "gzip": 1_700}

    # when
    absolute, ratio = weight_figures(small, full, big, (100, 2_000, 100_000))

    # then the large page is weighed, and held against the full one, not the small one
    assert absolute.value == pytest.approx(5_600 / 1024)
    assert "console.css 3,000 B" in absolute.detail
    assert "gzip'd 1,700 B" in absolute.detail
    assert "ratio 1.40" in absolute.baseline  # over the small page's 4,000 B
    assert ratio.value == pytest.approx(5_600 / 5_000)
    assert ratio.met is False  # 12% heavier than the full page: over the 10% allowed
    assert weight_figures(small, full, full, (100, 2_000, 100_000))[1].met is True


def test_a_tables_body_rows_are_counted_and_a_missing_table_is_none() -> None:
    html = """<p id="gate-now">now</p>
    <table class="list" id="gate">
      <thead><tr><th>time</th></tr></thead>
      <tbody><tr data-verdict="pass"><td>1</td></tr>
      <tr data-verdict="pass"><td>2</td></tr></tbody>
    </table>
    <table id="audit"><tr><td>only</td></tr></table>
    <div id="failed"><tr></tr></div>"""

    assert table_rows(html, "gate") == 2
    assert table_rows(html, "audit") == 1
    assert table_rows(html, "failed") is None  # not a table
    assert table_rows(html, "gate-now") is None
    assert table_rows(html, "waves") is None


def test_a_view_is_rendered_when_loaded_and_painted() -> None:
    loaded_first = View(wall_ms=120.0, timing={"load": 100.0, "paint": 180.0})
    painted_first = View(wall_ms=150.0, timing={"load": 140.0, "paint": 90.0})

    assert loaded_first.rendered_ms == 180.0
    assert painted_first.rendered_ms == 150.0
