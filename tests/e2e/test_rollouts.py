"""Wave rollouts end to end: real Redis, Mosquitto, Celery worker and beat, the listener,
500 simulated devices and real TLS endpoints for their health probes."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message
from simulator.pki import make_ca
from tests.e2e.stack import NOW, BundleWatch, Stack, running_stack, sizes_add_up
from tests.procs import celery_worker, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES = 500


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """500 healthy devices on CA1 in sec_tag 42; a probe endpoint under CA2."""
    with running_stack(tmp_path_factory.mktemp("rollouts"), [("dev-", DEVICES, ())]) as s:
        yield s


def create(stack: Stack, *args: str, spare: int = 43) -> str:
    """`rollout create` of a trust.add into `spare`, with the policy these tests share."""
    done = stack.run(
        "rollout",
        "create",
        "--kind",
        "trust.add",
        "--tag",
        "42",
        "--spare-tag",
        str(spare),
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
    return str(json.loads(done.stdout)["id"])


def test_a_bad_ca_aborts_in_the_canary_and_rolls_the_canary_back(stack: Stack) -> None:
    """The probe fails; the canary aborts and rolls back; no other device got any bundle."""
    wrong = make_ca(
        "Not the server's CA",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=99),
    )
    (stack.dir / "wrong.pem").write_bytes(wrong.pem)
    watch = BundleWatch(stack.mqtt)
    try:
        rollout_id = create(stack, "--ca", str(stack.dir / "wrong.pem"), "--name", "bad-ca")
        status = stack.wait_final(rollout_id)
        time.sleep(1)
    finally:
        watch.close()

    assert status["state"] == "rolled_back"
    assert status["abort_reason"].startswith("gate:")
    canary = status["waves"][0]
    assert canary["size"] == 5
    assert canary["state"] == "failed"
    assert canary["counts"]["rolled_back"] + canary["counts"]["health_failed"] == canary["size"]
    assert all(w["state"] == "pending" for w in status["waves"][1:])
    plan = json.loads(
        stack.run(
            "rollout",
            "plan",
            "--kind",
            "trust.add",
            "--ca",
            str(stack.dir / "wrong.pem"),
            "--tag",
            "42",
            "--spare-tag",
            "43",
            "--probe",
            f"127.0.0.1:{stack.probe_port}",
            "--name",
            "bad-ca",
            "--json",
        ).stdout
    )
    canary_ids = set(json.loads(json.dumps(plan))["waves"][0]["sample"])
    assert watch.devices, "the canary was sent bundles"
    assert watch.devices <= canary_ids, watch.devices - canary_ids
    assert all(stack.active_tags(d) == [42] for d in canary_ids)
    sizes_add_up(status)


def test_a_good_ca_goes_wave_by_wave_to_completion(stack: Stack) -> None:
    """Waves 1%,10%,50%,100% with auto advance: completed, every device committed with [42, 43]."""
    rollout_id = create(stack, "--ca", str(stack.dir / "ca2.pem"), "--name", "good-ca")
    status = stack.wait_final(rollout_id, timeout=300)

    assert status["state"] == "completed", status
    assert [w["size"] for w in status["waves"]] == [5, 45, 200, 250]
    assert all(w["state"] == "passed" for w in status["waves"])
    assert status["totals"]["committed"] == DEVICES
    sizes_add_up(status)
    wait_until(
        lambda: all(stack.active_tags(f"dev-{n:05d}") == [42, 43] for n in range(DEVICES)),
        timeout=30,
        what="every device reporting [42, 43]",
    )
    log = json.loads(stack.run("rollout", "log", rollout_id, "--json").stdout)
    committed = {e["subject"] for e in log if e["kind"] == "device" and e["to"] == "committed"}
    assert len(committed) == DEVICES


def _wait_status(
    stack: Stack, rollout_id: str, check: Any, what: str, timeout: float = 120
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = stack.status(rollout_id)
        return status if check(status) else None

    return wait_until(probe, timeout=timeout, interval=0.5, what=what)


def _not_pending(status: dict[str, Any]) -> int:
    return sum(w["size"] - w["counts"]["pending"] for w in status["waves"])


def test_manual_advance_waits_for_approve_and_pause_resume_work_mid_wave(stack: Stack) -> None:
    """Each wave waits for approve; a pause mid-wave sends nothing more until resume."""
    rollout_id = create(
        stack,
        "--ca",
        str(stack.dir / "ca2.pem"),
        "--name",
        "manual",
        "--advance",
        "manual",
        "--waves",
        "5,10%,100%",
        "--push-rate",
        "40",
        spare=44,
    )
    first = _wait_status(stack, rollout_id, lambda s: s["awaiting_approval"], "wave 0 to pass")
    time.sleep(2)
    still = stack.status(rollout_id)
    assert [w["state"] for w in still["waves"]] == ["passed", "pending", "pending"]
    assert _not_pending(still) == _not_pending(first) == 5

    assert stack.run("rollout", "approve", rollout_id).returncode == 0
    _wait_status(
        stack, rollout_id, lambda s: s["awaiting_approval"] and s["current_wave"] == 2, "wave 1"
    )
    assert stack.run("rollout", "approve", rollout_id).returncode == 0
    _wait_status(stack, rollout_id, lambda s: _not_pending(s) >= 120, "wave 2 under way")
    assert stack.run("rollout", "pause", rollout_id).returncode == 0
    time.sleep(3)  # batches already running finish; no new ones go out
    paused = stack.status(rollout_id)
    time.sleep(4)
    later = stack.status(rollout_id)
    assert paused["state"] == later["state"] == "paused"
    assert _not_pending(later) == _not_pending(paused) < DEVICES

    assert stack.run("rollout", "resume", rollout_id).returncode == 0
    final = stack.wait_final(rollout_id)
    assert final["state"] == "completed"
    assert final["totals"]["committed"] == DEVICES
    causes = [
        e["cause"] for e in json.loads(stack.run("rollout", "log", rollout_id, "--json").stdout)
    ]
    assert causes.count("approve") == 2
    assert {"pause", "resume"} <= set(causes)


def test_a_worker_killed_mid_wave_is_replaced_and_the_rollout_completes(stack: Stack) -> None:
    """SIGKILL the worker mid-wave; a new one finishes; one bundle per device and step."""
    watch = BundleWatch(stack.mqtt, keep_payloads=True)
    try:
        rollout_id = create(
            stack,
            "--ca",
            str(stack.dir / "ca2.pem"),
            "--name",
            "sigkill",
            "--push-rate",
            "60",
            spare=45,
        )
        _wait_status(
            stack, rollout_id, lambda s: s["current_wave"] >= 2 and _not_pending(s) > 80, "wave 2"
        )
        stack.worker.stop(signal.SIGKILL)
        stack.procs.append(celery_worker(stack.logs, stack.env, name="worker-2"))
        final = stack.wait_final(rollout_id, timeout=300)
    finally:
        watch.close()

    assert final["state"] == "completed", final.get("abort_reason")
    assert final["totals"]["committed"] == DEVICES
    sizes_add_up(final)
    distinct: dict[tuple[str, str], set[bytes]] = {}
    for device, payload in watch.payloads:
        op = Sign1Message.decode(payload)
        step = decode_payload(op.payload).op
        distinct.setdefault((device, step), set()).add(payload)
    assert all(len(payloads) == 1 for payloads in distinct.values()), [
        key for key, payloads in distinct.items() if len(payloads) > 1
    ]
    # the log replays to the same counts as status
    log = json.loads(stack.run("rollout", "log", rollout_id, "--json").stdout)
    last: dict[str, str] = {}
    for entry in log:
        if entry["kind"] == "device":
            last[entry["subject"]] = entry["to"]
    replayed = {state: list(last.values()).count(state) for state in final["totals"]}
    replayed["pending"] = DEVICES - len(last)
    assert replayed == final["totals"]
