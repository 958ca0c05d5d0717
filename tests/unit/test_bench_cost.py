"""The cost benchmark counts a process tree's CPU, reaped children too, and divides it right."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.bench.bench_e2e import DOWN_MINIMUM, UP_MINIMUM, Cost, cost_figures
from tests.bench.cost import CpuMeter, descendants, subtract

pytestmark = pytest.mark.unit

BURN = """
import os, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
child = os.fork()
if child == 0:
    burn(0.3)
    os._exit(0)
burn(0.2)
os.waitpid(child, 0)
print("done", flush=True)
sys.stdin.readline()
"""
"""A parent burning 0.2 s of CPU and a child burning 0.3 s, reaped before the parent stops."""


def test_a_trees_cpu_counts_its_reaped_children() -> None:
    # given a process that forks a child, both burning CPU, the child reaped
    process = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        meter = CpuMeter({"tree": process.pid})
        meter.start()

        # when the work is done (the parent waits on its stdin, still alive)
        assert process.stdout is not None
        assert process.stdout.readline() == "done\n"
        seconds = meter.stop()

        # then the child's 0.3 s are in the tree's time with the parent's 0.2 s
        assert 0.45 <= seconds["tree"] <= 2.0
        assert descendants(process.pid) == [process.pid]
    finally:
        process.communicate("\n", timeout=10)


def test_a_tree_includes_live_children() -> None:
    # given a shell with a sleeping child
    process = subprocess.Popen(["sh", "-c", "sleep 5 & wait"])
    try:
        # then the tree lists both
        deadline = time.monotonic() + 5
        while len(descendants(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(descendants(process.pid)) == 2
    finally:
        for pid in reversed(descendants(process.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        process.wait(timeout=10)


def test_counter_deltas_leave_out_what_did_not_change() -> None:
    assert subtract({"get": 5, "set": 9, "del": 1}, {"get": 5, "set": 2}) == {"set": 7, "del": 1}


def test_the_cost_figures_divide_by_devices_and_split_the_directions() -> None:
    # given a rollout of 1,000 devices: 2 bundles each down, the broker got 9,000 in all
    cost = Cost(
        cpu={"worker": 0.5, "listener": 0.25, "redis-server": 0.25},
        fleet_cpu=3.0,
        commands={"evalsha": 4_000, "hget": 1_000},
        received=9_000,
        sent=9_000,
        pushed=2_000,
    )

    # when the figures are made
    cpu, down, up, redis_calls = cost_figures(cost, 1_000)

    # then CPU is 1 ms per device, over the goal by nothing; down 2, up 7, 5 commands
    assert cpu.value == pytest.approx(1_000.0)
    assert cpu.met is True
    assert "worker 500" in cpu.detail
    assert "listener 250" in cpu.detail
    assert "3,000" in cpu.baseline  # the fleet's, shown apart
    assert (down.value, up.value) == (2.0, 7.0)
    assert str(DOWN_MINIMUM) in down.baseline
    assert str(UP_MINIMUM) in up.baseline
    assert redis_calls.value == 5.0
    assert "evalsha 4.00" in redis_calls.detail
