"""The console benchmark at a small size on real services: what it measures is there.

Not a speed test: it checks what holds whatever the machine, that the rollouts' pages
follow the DOM contract, that a page of a rollout three times larger weighs about what
the smaller one's does once its lists are full (aggregates and pages, not a row per
device), and that every open live page got updates while the rollout changed.
"""

from __future__ import annotations

import pytest

from tests.bench.bench_console import WEIGHT_GOAL, Options, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_console_bench_measures_pages_that_do_not_grow_with_the_rollout() -> None:
    # given a 100-device, a 1,000-device and a 3,000-device rollout mid-way, 3 pages open
    # on the first and the last
    options = Options(
        devices=3_000,
        small=100,
        full=1_000,
        seconds=2,
        streams=(0, 3),
        views=1,
        browser=False,
        pause=1,
    )

    # when the bench runs
    figures, raw = run(options)

    # then both pages show the contract's parts, and the rollouts are what was planned
    assert raw["problems"] == [[], [], []]
    for html in raw["html"]:
        assert ">running<" in html  # #rollout-state's text
    assert [s.devices for s in raw["scenarios"]] == [100, 1_000, 3_000]
    assert raw["scenarios"][1].failed > 50  # 5% failed: more than one page of 50
    # the large page weighs about what the full one does
    weights = [sum(v for k, v in w.items() if k != "gzip") for w in raw["weights"]]
    assert weights[2] <= weights[1] * WEIGHT_GOAL, raw["weights"]
    ratio = next(f for f in figures if f.unit == "ratio")
    assert ratio.met is True
    # every open page got an update in the window; none was open in the first
    for windows in raw["windows"]:
        idle, busy = windows
        assert idle.updates == []
        assert len(busy.updates) == 3
        assert min(busy.updates) >= 1, busy.updates
    assert {f.unit for f in figures} >= {"KiB", "ratio", "ms/min", "commands/min"}
