"""C devices in the whole certfleet stack, next to simulated ones: `make -C firmware e2e`.

Real Redis, Mosquitto, Celery worker and beat, the listener and a TLS probe endpoint
(tests/e2e/stack.py), with the devices of one `certfleet-device --devices N` process and
`certfleet simulate` devices as one fleet, all on CA1 in sec_tag 42. What must hold:

1. a trust.replace to CA2 completes; every device, C or simulated, ends active on [43]
   holding CA1 in 42 and CA2 in 43 as its state message says, with the very same reports
   (op, phase, reason, active list) from a C device as from a simulated one;
2. a trust.add of a CA that fails the probe aborts in the canary and rolls it back:
   every device is back on [43], nothing left in sec_tag 44, C or simulated alike.

Usage: e2e_c_fleet.py BINARY WORKDIR [C_DEVICES] [SIMULATED_DEVICES] (default 50 and 10).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.protocol.cose import key_id
from simulator.pki import make_ca
from tests.e2e.stack import NOW, Stack, running_stack
from tests.procs import wait_until


def signer_option(stack: Stack) -> str:
    """`--signer` for the stack's signing key: what `certfleet keys export-public` gives."""
    key = serialization.load_pem_private_key((stack.dir / "signing-key.pem").read_bytes(), None)
    public = key.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SystemExit("the stack's signing key is not an EC key")
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return f"{key_id(public).hex()}:{point.hex()}"


def start_c_fleet(binary: str, stack: Stack, count: int) -> subprocess.Popen[bytes]:
    """One `certfleet-device` process running `count` devices cdev-00000 and on."""
    argv = [binary, "--dir", str(stack.dir / "c-fleet"), "--devices", str(count)]
    argv += ["--id-prefix", "cdev-", "--port", str(stack.mqtt.port), "--active", "42"]
    argv += ["--signer", signer_option(stack), "--ca", f"42={stack.dir / 'ca1.pem'}"]
    argv += ["--probe-timeout-ms", "5000"]
    log = (stack.logs / "c-fleet.log").open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def rollout(stack: Stack, *args: str) -> dict[str, Any]:
    done = stack.run(
        "rollout",
        "create",
        *args,
        "--probe",
        f"127.0.0.1:{stack.probe_port}",
        "--waves",
        "10%,50%,100%",
        "--bake",
        "0",
        "--advance",
        "auto",
        "--max-failure",
        "10%",
        "--min-sample",
        "1",
        "--device-timeout",
        "60",
        "--json",
    )
    if done.returncode != 0:
        raise SystemExit(f"rollout create failed: {done.stderr.decode()}")
    status = stack.wait_final(str(json.loads(done.stdout)["id"]))
    time.sleep(2)  # late reports reach the inventory
    return status


def end_state(stack: Stack, device: str, labels: dict[str, str]) -> dict[str, Any]:
    """Active list, stored CAs by name, and the reports as the inventory holds them."""
    state = RedisInventory(stack.redis).device_credentials(device)
    reports: list[tuple[str, dict[str, str]]] = stack.redis.xrange(
        RedisInventory.report_stream_key(device)
    )  # type: ignore[assignment]
    return {
        "active": list(state.active_tags or ()) if state else [],
        "credentials": {
            f"{c.sec_tag}:{int(c.type)}": labels.get(c.sha256, "unknown")
            for c in sorted(state.credentials, key=lambda c: (c.sec_tag, int(c.type)))
        }
        if state
        else {},
        "reports": [
            (f["op"], f["phase"], f["reason"], f["active_tags"])
            for _, f in reports
            if f["reason"] != "replay"
        ],
    }


def check(condition: bool, what: str, evidence: object) -> None:
    if not condition:
        raise SystemExit(f"e2e_c_fleet: {what}: {evidence}")


def main(binary: str, workdir: Path, c_devices: int, simulated: int) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    wrong = make_ca(
        "Not the server's CA",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=99),
    )
    c_ids = [f"cdev-{i:05d}" for i in range(c_devices)]
    sim_ids = [f"sim-{i:05d}" for i in range(simulated)]
    with running_stack(workdir, [("sim-", simulated, ())] if simulated else []) as stack:
        c_fleet = start_c_fleet(binary, stack, c_devices)
        try:
            wait_until(
                lambda: RedisInventory(stack.redis).device_count() == c_devices + simulated,
                timeout=90,
                what="every device in the inventory",
            )
            labels = {
                hashlib.sha256(pem).hexdigest(): name
                for name, pem in (
                    ("ca1", stack.ca1.pem),
                    ("ca2", stack.ca2.pem),
                    ("wrong", wrong.pem),
                )
            }
            replace = rollout(
                stack,
                "--kind",
                "trust.replace",
                "--tag",
                "42",
                "--spare-tag",
                "43",
                "--ca",
                str(stack.dir / "ca2.pem"),
            )
            check(replace["state"] == "completed", "trust.replace did not complete", replace)
            after = {d: end_state(stack, d, labels) for d in c_ids + sim_ids}
            expected = {"active": [43], "credentials": {"42:0": "ca1", "43:0": "ca2"}}
            for device, state in after.items():
                got = {"active": state["active"], "credentials": state["credentials"]}
                check(got == expected, f"{device} after trust.replace", got)
            c_reports = {json.dumps(after[d]["reports"]) for d in c_ids}
            sim_reports = {json.dumps(after[d]["reports"]) for d in sim_ids}
            check(len(c_reports) == 1, "C devices reported differently", c_reports)
            check(
                not sim_ids or c_reports == sim_reports,
                "C and simulated reports differ",
                (c_reports, sim_reports),
            )

            (stack.dir / "wrong.pem").write_bytes(wrong.pem)
            bad = rollout(
                stack,
                "--kind",
                "trust.add",
                "--tag",
                "43",
                "--spare-tag",
                "44",
                "--ca",
                str(stack.dir / "wrong.pem"),
            )
            check(bad["state"] == "rolled_back", "the wrong CA was not rolled back", bad)
            failed = {d["device_id"] for d in bad.get("failed_devices", [])}
            for device in c_ids + sim_ids:
                state = end_state(stack, device, labels)
                got = {"active": state["active"], "credentials": state["credentials"]}
                check(got == expected, f"{device} after the aborted trust.add", got)
            in_canary = len(failed & set(c_ids))
            print(f"e2e_c_fleet: {c_devices} C and {simulated} simulated devices:")
            print("  trust.replace completed, every device on [43], the same reports from all")
            print(
                f"  the wrong CA rolled back in the canary ({len(failed)} devices, {in_canary} C)"
            )
        finally:
            c_fleet.terminate()
            c_fleet.wait(timeout=30)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        args[0],
        Path(args[1]),
        int(args[2]) if len(args) > 2 else 50,
        int(args[3]) if len(args) > 3 else 10,
    )
