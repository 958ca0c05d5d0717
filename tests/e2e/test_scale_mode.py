"""The scale-mode simulator against the per-device one: the same rollouts, run once on
each over fresh services, reach identical end states (real Redis, Mosquitto, Celery
worker and beat, the listener, and a real TLS endpoint for the probes)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.redis_inventory import RedisInventory
from simulator.pki import make_ca
from tests.e2e.stack import NOW, Stack, running_stack, sizes_add_up
from tests.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES = 60
SCALE = ("--scale", "--processes", "2", "--connections", "3")
"""Two processes with three connections each: slicing and multiplexing both at work."""

WRONG = make_ca(
    "Not the server's CA", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=99)
)
IDS = [f"dev-{n:05d}" for n in range(DEVICES)]
UNDONE = {"health_failed", "rolled_back"}
"""What an aborted device ends as; which one depends on when the abort met its report."""


def _rollout(stack: Stack, *args: str) -> dict[str, Any]:
    """Create a rollout with the policy both runs share, wait for its end and for quiet."""
    done = stack.run(
        "rollout",
        "create",
        "--probe",
        f"127.0.0.1:{stack.probe_port}",
        "--waves",
        "1%,10%,50%,100%",
        "--bake",
        "0",
        "--advance",
        "auto",
        "--max-failure",
        "10%",
        "--min-sample",
        "10",
        "--device-timeout",
        "60",
        "--json",
        *args,
    )
    assert done.returncode == 0, done.stderr
    rollout_id = str(json.loads(done.stdout)["id"])
    stack.wait_final(rollout_id)
    status = wait_until(
        lambda: (s := stack.status(rollout_id)) and not s.get("unconfirmed_rollback") and s,
        timeout=60,
        what="every rollback confirmed",
    )
    time.sleep(2)  # late reports (e.g. a rollback's "nothing to undo") reach the inventory
    log = json.loads(stack.run("rollout", "log", rollout_id, "--json").stdout)
    devices: dict[str, tuple[str, str]] = {}
    for entry in log:
        if entry["kind"] == "device":
            devices[entry["subject"]] = (entry["wave"], entry["to"])
    return {"status": status, "devices": devices}


def _summary(status: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the simulator mode (ids and times do)."""
    return {
        "kind": status["kind"],
        "state": status["state"],
        "abort_reason": (status.get("abort_reason") or "").split(":")[0],
        "waves": [(w["index"], w["size"], w["state"]) for w in status["waves"]],
    }


def _labels(stack: Stack) -> dict[str, str]:
    return {
        hashlib.sha256(pem).hexdigest(): name
        for name, pem in (("ca1", stack.ca1.pem), ("ca2", stack.ca2.pem), ("wrong", WRONG.pem))
    }


def _device_end_state(stack: Stack, device_id: str, labels: dict[str, str]) -> dict[str, Any]:
    """The device's last state message as the inventory holds it, CAs named, and its reports."""
    inventory = RedisInventory(stack.redis)
    held = inventory.device_credentials(device_id)
    assert held is not None, device_id
    credentials = {
        f"{c.sec_tag}:{int(c.type)}": labels.get(c.sha256, "unknown") for c in held.credentials
    }
    reports = [
        (f["seq"], f["op"], f["phase"], f["reason"], f["detail"], f["active_tags"])
        for _, f in stack.redis.xrange(inventory.report_stream_key(device_id))
        if f["reason"] != "replay"  # a bundle sent twice (at least once): refused, no effect
    ]
    return {
        "active": list(held.active_tags or ()),
        "credentials": credentials,
        "reports": reports,
    }


def _story(base: Path, scale: tuple[str, ...]) -> dict[str, Any]:
    """A trust.replace to CA2 that completes, then a trust.add of a CA that fails the probe."""
    with running_stack(base, [("dev-", DEVICES, ())], scale=scale) as stack:
        (stack.dir / "wrong.pem").write_bytes(WRONG.pem)
        good = _rollout(
            stack,
            "--kind",
            "trust.replace",
            "--ca",
            str(stack.dir / "ca2.pem"),
            "--tag",
            "42",
            "--spare-tag",
            "43",
            "--name",
            "scale-equivalence-good",
        )
        labels = _labels(stack)
        after_good = {d: _device_end_state(stack, d, labels) for d in IDS}
        bad = _rollout(
            stack,
            "--kind",
            "trust.add",
            "--ca",
            str(stack.dir / "wrong.pem"),
            "--tag",
            "43",
            "--spare-tag",
            "44",
            "--name",
            "scale-equivalence-bad",
        )
        after_bad = {d: _device_end_state(stack, d, labels) for d in IDS}
        for rollout in (good, bad):
            sizes_add_up(rollout["status"])
        if scale:
            assert "ready: 60 devices" in stack.fleets["dev-"].log()
    return {"good": good, "after_good": after_good, "bad": bad, "after_bad": after_bad}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same story on fresh services, once per simulator mode."""
    return {
        "per_device": _story(tmp_path_factory.mktemp("per-device"), ()),
        "scale": _story(tmp_path_factory.mktemp("scale"), SCALE),
    }


def test_a_completed_trust_replace_ends_the_same_in_both_modes(
    runs: dict[str, dict[str, Any]],
) -> None:
    """Same rollout and wave states, same per-device state and wave, same modem contents and
    the very same reports (seq, op, phase, reason, detail, active list) from every device."""
    per_device, scale = runs["per_device"], runs["scale"]

    assert _summary(per_device["good"]["status"])["state"] == "completed"
    assert _summary(scale["good"]["status"]) == _summary(per_device["good"]["status"])
    assert scale["good"]["status"]["totals"] == per_device["good"]["status"]["totals"]
    assert scale["good"]["devices"] == per_device["good"]["devices"]
    assert set(per_device["good"]["devices"]) == set(IDS)
    assert {state for _, state in per_device["good"]["devices"].values()} == {"committed"}
    assert scale["after_good"] == per_device["after_good"]
    assert per_device["after_good"]["dev-00000"]["active"] == [43]
    assert per_device["after_good"]["dev-00000"]["credentials"] == {"42:0": "ca1", "43:0": "ca2"}


def test_an_aborted_trust_add_rolls_back_the_same_in_both_modes(
    runs: dict[str, dict[str, Any]],
) -> None:
    """The wrong CA fails the probe: the same abort, the same waves touched, the same devices
    undone, and every modem back to what it held before the rollout."""
    per_device, scale = runs["per_device"], runs["scale"]

    assert _summary(per_device["bad"]["status"])["state"] == "rolled_back"
    assert _summary(scale["bad"]["status"]) == _summary(per_device["bad"]["status"])

    def undone(devices: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        return {d: (wave, "undone" if s in UNDONE else s) for d, (wave, s) in devices.items()}

    assert undone(scale["bad"]["devices"]) == undone(per_device["bad"]["devices"])
    assert {s for _, s in undone(per_device["bad"]["devices"]).values()} == {"undone"}

    def modems(after: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {d: (s["active"], s["credentials"]) for d, s in after.items()}

    assert modems(scale["after_bad"]) == modems(per_device["after_bad"])
    assert modems(scale["after_bad"]) == modems(scale["after_good"])
