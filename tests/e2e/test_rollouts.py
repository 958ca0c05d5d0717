"""Wave rollouts end to end: real Redis, Mosquitto, Celery worker and beat, the listener,
500 simulated devices and real TLS endpoints for their health probes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from simulator.pki import make_ca
from tests.e2e.stack import NOW, BundleWatch, Stack, running_stack, sizes_add_up
from tests.procs import wait_until

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
