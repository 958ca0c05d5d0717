"""Rollouts meeting a faulty fleet: failing probes under the threshold, devices offline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from orchestrator.adapters.redis_inventory import RedisInventory
from tests.e2e.stack import Stack, running_stack, sizes_add_up, start_fleet
from tests.e2e.test_rollouts import create
from tests.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OK, BAD, OFF = 450, 15, 50


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """450 healthy devices, 15 whose network refuses the probe, 50 that report and go away."""
    fleets = [("ok-", OK, ()), ("bad-", BAD, ("probe-refused",)), ("off-", OFF, ())]
    with running_stack(tmp_path_factory.mktemp("faults"), fleets) as s:
        s.fleets["off-"].stop()
        yield s


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


def _select(stack: Stack, name: str, ids: list[str]) -> str:
    path = stack.dir / f"{name}.txt"
    path.write_text("\n".join(ids) + "\n")
    return f"file:{path}"


def _name_with_a_tolerable_canary(stack: Stack, select: str, bad: set[str]) -> str:
    """A plan seed whose 5-device canary holds at most one faulty device.

    The gate judges a canary against the minimum sample (a budget of one failure
    at 10% of 10); the test is about a fleet with 3% failures, not an unlucky canary.
    """
    for attempt in range(50):
        name = f"three-percent-{attempt}"
        plan = stack.run(
            "rollout",
            "plan",
            "--kind",
            "trust.add",
            "--ca",
            str(stack.dir / "ca2.pem"),
            "--tag",
            "42",
            "--spare-tag",
            "44",
            "--probe",
            f"127.0.0.1:{stack.probe_port}",
            "--select",
            select,
            "--name",
            name,
            "--json",
        )
        canary = set(json.loads(plan.stdout)["waves"][0]["sample"])
        if len(canary & bad) <= 1:
            return name
    raise AssertionError("no seed gave a tolerable canary")


def test_three_percent_failing_probes_under_a_ten_percent_threshold_complete(stack: Stack) -> None:
    """15 of 465 devices fail their probe: every wave passes, and the rollout ends
    completed_with_timeouts listing exactly them (they never confirmed the new trust)."""
    bad = set(_ids("bad-", BAD))
    select = _select(stack, "ok-and-bad", _ids("ok-", OK) + sorted(bad))
    name = _name_with_a_tolerable_canary(stack, select, bad)

    rollout_id = create(
        stack, "--ca", str(stack.dir / "ca2.pem"), "--select", select, "--name", name, spare=44
    )
    status = stack.wait_final(rollout_id, timeout=300)

    assert status["state"] == "completed_with_timeouts", status.get("abort_reason")
    assert set(status["unconfirmed"]) == bad
    assert status["totals"]["committed"] == OK
    assert status["totals"]["health_failed"] == BAD
    assert {d["device_id"] for d in status["failed_devices"]} == bad
    assert all(d["state"] == "health_failed" for d in status["failed_devices"])
    sizes_add_up(status)


def test_offline_devices_time_out_and_never_apply_their_expired_bundles(stack: Stack) -> None:
    """50 of 500 offline end timed_out (after their re-sends), the rollout ends
    completed_with_timeouts naming them; back online, nothing applies."""
    off = _ids("off-", OFF)
    select = _select(stack, "ok-and-off", _ids("ok-", OK) + off)
    rollout_id = create(
        stack,
        "--ca",
        str(stack.dir / "ca2.pem"),
        "--select",
        select,
        "--name",
        "offline",
        "--device-timeout",
        "8",
        spare=45,
    )
    status = stack.wait_final(rollout_id, timeout=300)

    assert status["state"] == "completed_with_timeouts", status.get("abort_reason")
    assert set(status["unconfirmed"]) == set(off)
    assert status["totals"]["timed_out"] == OFF
    assert status["totals"]["committed"] == OK
    assert {d["device_id"] for d in status["failed_devices"]} == set(off)
    sizes_add_up(status)

    # when they come back, their bundles have expired: nothing is received or applied
    back = start_fleet(stack.env, stack.dir, stack.logs, "off-", OFF, faults=())
    try:
        wait_until(
            lambda: (
                all(
                    reported.timestamp() > float(status_time(status))
                    for reported in RedisInventory(stack.redis).reported_at(off).values()
                )
                and len(RedisInventory(stack.redis).reported_at(off)) == len(off)
            ),
            timeout=60,
            what="the offline devices to report again",
        )
        time.sleep(1)  # a moment for any late delivery to show up
        reports = {d: stack.redis.xrange(RedisInventory.report_stream_key(d)) for d in off}
    finally:
        back.stop()
    assert all(stack.active_tags(d) == [42] for d in off)
    assert all(
        fields.get("phase") != "received" for entries in reports.values() for _, fields in entries
    )


def status_time(status: dict[str, object]) -> float:
    """The rollout's creation time, as epoch seconds."""
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(str(status["created_at"])).timestamp()
