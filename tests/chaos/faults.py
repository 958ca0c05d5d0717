"""One fault in the middle of the 50 % wave of a `trust.replace`, and what it left behind.

Each run starts a fresh `chaos_stack`, creates the rollout (waves 1 %, 10 %, 50 %,
100 %, auto advance, no bake), waits until half of the 50 % wave was sent, injects
the fault, and waits for the rollout to end. Then it reads the devices' own modems
and holds certfleet to what issue 11 says must hold:

- `completed` only with every device on the new CA; `completed_with_timeouts` (or a
  rollback) naming every device that is not, and those keeping the old CA active;
  no device certfleet calls `committed` without the new CA active;
- no device ever without an active CA chain (sampled every second);
- wave counts add up to their sizes; the audit log replays to the status totals;
- no worker, beat or listener exited by itself;
- no report the devices published was lost on its way to Redis (a broker crash may
  lose what it had not saved yet: reported, and a known limit, not a finding).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings
from orchestrator.domain.errors import TransientError
from orchestrator.services.rollout.commands import rollout_status
from tests.chaos.stack import ChaosStack, chaos_stack
from tests.chaos.witness import Witness, recorded_reports
from tests.e2e.stack import sizes_add_up
from tests.procs import wait_until

__all__ = ["FAULTS", "FaultResult", "run_fault"]

ENDED = ("completed", "completed_with_timeouts", "rolled_back")
MID_WAVE = 2
"""The index of the 50 % wave."""
DEVICE_TIMEOUT = 30
AFTER_EXIT_SECONDS = 60
"""How long a rollout may still end after a process it needs exited."""


def _broker_kill(chaos: ChaosStack) -> None:
    chaos.restart_broker(signal.SIGKILL, down=5.0)


def _workers_kill(chaos: ChaosStack) -> None:
    chaos.kill("worker")
    chaos.start_worker("worker-2")


def _redis_kill(chaos: ChaosStack) -> None:
    chaos.restart_redis(signal.SIGKILL, down=1.0)


def _redis_term(chaos: ChaosStack) -> None:
    chaos.restart_redis(signal.SIGTERM, down=1.0)


def _listener_kill(chaos: ChaosStack) -> None:
    chaos.kill("listener")
    chaos.start_listener("listener-2")


FAULTS: dict[str, tuple[str, Callable[[ChaosStack], None]]] = {
    "broker_kill": ("Mosquitto SIGKILL, restarted 5 s later with its persistence", _broker_kill),
    "workers_kill": ("every worker process SIGKILL, a new worker started", _workers_kill),
    "redis_kill": ("Redis SIGKILL, restarted 1 s later from its append-only file", _redis_kill),
    "redis_term": ("Redis SIGTERM, restarted 1 s later from its append-only file", _redis_term),
    "listener_kill": ("listener SIGKILL, restarted with the same session", _listener_kill),
}


@dataclass
class FaultResult:
    """One fault's figures and findings."""

    fault: str
    devices: int
    end_state: str = "not started"
    on_new_ca: int = 0
    untrusted: int = 0
    """Devices ever found without an active CA chain."""
    unconfirmed: int = 0
    witnessed: int = 0
    recorded: int = 0
    lost: int = 0
    """Reports the witness saw that Redis never recorded."""
    injected_at: str = ""
    """Where the rollout stood when the fault was injected."""
    converge_seconds: float | None = None
    """From the fault to the rollout's end."""
    rollout_seconds: float | None = None
    problems: list[str] = field(default_factory=list)


class _Reader:
    """Reads status and audit log in-process, as `rollout status/log --json` make them.

    The CLI starts a Python each call (seconds on a busy machine); these reads are
    milliseconds, so the wave's middle is found and the end is seen without delay.
    """

    def __init__(self, env: dict[str, str]) -> None:
        settings = Settings(
            redis_url=env["CERTFLEET_REDIS_URL"],
            mqtt_host=env["CERTFLEET_MQTT_HOST"],
            mqtt_port=int(env["CERTFLEET_MQTT_PORT"]),
            signing_key_file=Path(env["CERTFLEET_SIGNING_KEY_FILE"]),
        )
        self.container = bootstrap(settings, logging=False)

    def status(self, rollout_id: str) -> dict[str, Any] | None:
        """The status, or None while certfleet cannot say (Redis away)."""
        try:
            return rollout_status(self.container.rollout_deps(), rollout_id)
        except (TransientError, redis.RedisError):
            return None

    def log(self, rollout_id: str) -> list[dict[str, str]]:
        return self.container.rollouts.log(rollout_id)

    def close(self) -> None:
        self.container.close()


def _create(chaos: ChaosStack, name: str, push_rate: float) -> str:
    done = chaos.stack.run(
        *("rollout", "create", "--kind", "trust.replace", "--ca", str(chaos.stack.dir / "ca2.pem")),
        *("--tag", "42", "--spare-tag", "43", "--probe", f"127.0.0.1:{chaos.stack.probe_port}"),
        *("--waves", "1%,10%,50%,100%", "--bake", "0", "--advance", "auto"),
        *("--max-failure", "10%", "--min-sample", "10"),
        *("--device-timeout", str(DEVICE_TIMEOUT), "--push-rate", f"{push_rate:g}"),
        *("--name", name, "--json"),
    )
    assert done.returncode == 0, done.stderr.decode()
    return str(json.loads(done.stdout)["id"])


def _mid_wave(reader: _Reader, rollout_id: str) -> dict[str, Any]:
    """Wait until half of the 50 % wave was sent (its bundles go out in one push, and
    its devices answer within seconds: polled every 0.1 s)."""

    def probe() -> dict[str, Any] | None:
        status = reader.status(rollout_id)
        if status is None:
            return None
        if status["state"] in ENDED or status["current_wave"] > MID_WAVE:
            return status
        wave = status["waves"][MID_WAVE]
        sent = wave["size"] - wave["counts"]["pending"]
        return status if status["current_wave"] == MID_WAVE and 2 * sent >= wave["size"] else None

    return wait_until(probe, timeout=300, interval=0.1, what="the middle of the 50% wave")


def _until_ended(
    chaos: ChaosStack, reader: _Reader, rollout_id: str, timeout: float
) -> dict[str, Any] | None:
    """The status once the rollout ended; the last one seen after `timeout`, or a minute
    after a worker, beat or listener exited (nothing restarts it, so nothing moves on)."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = reader.status(rollout_id) or status
        if status is not None and status["state"] in ENDED:
            return status
        if chaos.exited():
            deadline = min(deadline, time.monotonic() + AFTER_EXIT_SECONDS)
        time.sleep(0.2)
    return status


def _replayed(
    reader: _Reader, rollout_id: str, status: dict[str, Any]
) -> tuple[dict[str, str], str]:
    """Each device's last state in the audit log, and a finding if it disagrees with status."""
    last: dict[str, str] = {}
    for entry in reader.log(rollout_id):
        if entry["kind"] == "device":
            last[entry["subject"]] = entry["to"]
    replayed = {state: list(last.values()).count(state) for state in status["totals"]}
    replayed["pending"] = sum(w["size"] for w in status["waves"]) - len(last)
    if replayed != status["totals"]:
        return last, f"the audit log replays to {replayed}, status says {status['totals']}"
    return last, ""


def _judge(
    chaos: ChaosStack, reader: _Reader, result: FaultResult, rollout_id: str, status: dict[str, Any]
) -> None:
    """Hold the ended rollout to what the devices' modems say."""
    new_ca = hashlib.sha256(chaos.stack.ca2.pem).hexdigest()
    old_ca = hashlib.sha256(chaos.stack.ca1.pem).hexdigest()
    modems = chaos.modems()
    devices: dict[str, Any] = modems["devices"]

    def active_cas(view: dict[str, Any]) -> set[str]:
        return {view["items"].get(f"{tag}:0", "") for tag in view["active"]}

    on_new = {d for d, v in devices.items() if new_ca in active_cas(v)}
    not_on_new = set(devices) - on_new
    result.on_new_ca = len(on_new)
    result.untrusted = len(modems["ever_untrusted"])
    unconfirmed = set(status.get("unconfirmed") or ())
    result.unconfirmed = len(unconfirmed)
    problems = result.problems
    if status["state"] == "completed" and not_on_new:
        problems.append(
            f"completed while {len(not_on_new)} devices are not on the new CA: "
            f"{sorted(not_on_new)[:10]}"
        )
    if status["state"] == "completed_with_timeouts" and not_on_new - unconfirmed:
        missing = sorted(not_on_new - unconfirmed)
        problems.append(f"{len(missing)} devices not on the new CA and not named: {missing[:10]}")
    if status["state"] == "rolled_back":
        left = on_new - set(status.get("unconfirmed_rollback") or ())
        if left:
            problems.append(
                f"rolled back, yet {len(left)} devices on the new CA: {sorted(left)[:10]}"
            )
    dark = sorted(d for d in not_on_new if old_ca not in active_cas(devices[d]))
    if dark:
        problems.append(f"{len(dark)} devices on neither CA: {dark[:10]}")
    if result.untrusted:
        problems.append(f"{result.untrusted} devices were without an active CA chain")
    try:
        sizes_add_up(status)
    except AssertionError as exc:
        problems.append(f"wave counts do not add up: {exc}")
    last, replay_problem = _replayed(reader, rollout_id, status)
    if replay_problem:
        problems.append(replay_problem)
    said = sorted(d for d, state in last.items() if state == "committed" and d not in on_new)
    if said:
        problems.append(f"{len(said)} devices committed in the log, not on the new CA: {said[:10]}")


def _count_lost(chaos: ChaosStack, witness: Witness, result: FaultResult) -> None:
    """Witness vs Redis, once the listener had time to drain."""
    devices = set(chaos.modems()["devices"])

    def drained() -> bool:
        try:
            return witness.snapshot() <= recorded_reports(chaos.stack.redis, devices)
        except redis.ConnectionError:  # a connection from before a Redis restart
            return False

    with contextlib.suppress(AssertionError):  # what is still missing is counted below
        wait_until(drained, timeout=20, interval=1.0, what="the listener to drain")
    seen = witness.snapshot()
    recorded = recorded_reports(chaos.stack.redis, devices)
    result.witnessed, result.recorded = len(seen), len(recorded)
    lost = sorted(seen - recorded)
    result.lost = len(lost)
    if lost and result.fault != "broker_kill":
        result.problems.append(f"{len(lost)} reports never reached Redis: {lost[:5]}")


def _where(status: dict[str, Any]) -> str:
    wave = status["waves"][MID_WAVE]
    sent = wave["size"] - wave["counts"]["pending"]
    return (
        f"wave {status['current_wave'] + 1} of {len(status['waves'])}; of the 50% wave's "
        f"{wave['size']} devices {sent} sent, {wave['counts']['committed']} committed"
    )


def run_fault(
    base: Path, fault: str, count: int, *, push_rate: float | None = None, end_timeout: float = 300
) -> FaultResult:
    """Run one fault on a fresh stack of `count` devices; its figures and findings.

    `push_rate` (devices per second; default a 40th of the fleet, so the 50 % wave takes
    some 16 s to send) leaves room to find the wave's middle by polling `rollout status`.
    """
    result = FaultResult(fault, count)
    inject = FAULTS[fault][1]
    with chaos_stack(base, count) as chaos:
        witness = Witness(chaos.stack.mqtt.host, chaos.stack.mqtt.port)
        reader = _Reader(chaos.env)
        try:
            started = time.monotonic()
            rate = push_rate or max(2.0, count / 40)
            rollout_id = _create(chaos, f"chaos-{fault}", rate)
            at = _mid_wave(reader, rollout_id)
            result.injected_at = _where(at)
            if at["state"] in ENDED or at["current_wave"] > MID_WAVE:
                result.problems.append(f"the fault came after the 50% wave: {result.injected_at}")
            injected = time.monotonic()
            inject(chaos)
            status = _until_ended(chaos, reader, rollout_id, end_timeout)
            ended = time.monotonic()
            if status is None:
                result.end_state = "unknown"
                result.problems.append("certfleet never answered a status after the fault")
                return result
            if status["state"] in ENDED:
                result.end_state = status["state"]
                result.converge_seconds = round(ended - injected, 1)
                result.rollout_seconds = round(ended - started, 1)
            else:
                result.end_state = f"{status['state']} (not ended)"
                result.problems.append(
                    f"not ended {ended - injected:.0f}s after the fault: {status['state']}"
                )
            _settled(chaos)
            status = reader.status(rollout_id) or status  # what the log is replayed against
            _judge(chaos, reader, result, rollout_id, status)
            _count_lost(chaos, witness, result)
        finally:
            reader.close()
            witness.close()
            exited = chaos.exited()
            if exited:
                result.problems.append(f"exited by itself: {', '.join(exited)}")
    return result


def _settled(chaos: ChaosStack) -> None:
    """A second for the devices' last key store work, then a modem dump made after it."""
    time.sleep(1.0)
    since = time.time()
    wait_until(
        lambda: chaos.modems_file.stat().st_mtime > since, timeout=30, what="a fresh modem dump"
    )
