"""Benchmark: a whole `trust.replace` rollout to a simulated fleet, end to end.

    .venv/bin/python -m tests.bench.bench_e2e [--devices 100000] [--json-out FILE]

Everything real, on this machine: a throwaway redis-server and mosquitto, a Celery
worker (`--concurrency 2`), beat, the listener, a TLS endpoint serving a chain under
the new CA, and `certfleet simulate --scale --processes 2`: the devices hold CA1 in
sec_tag 42, multiplexed over a few MQTT connections per process, their probes cached
per distinct trust set and endpoint (each distinct handshake is real).

1. Rollout: `certfleet rollout create --kind trust.replace --ca CA2 --tag 42
   --spare-tag 43 --waves 1%,10%,50%,100% --bake 0 --advance auto ...`; the time from
   the command until the rollout is `completed`, every device committed. Goal <= 120 s.
   For scale, the same run also times a raw paho loop publishing that many
   bundles twice (stage and commit) to the same broker: the floor of the push alone.
2. Abort: a second `trust.replace` to the same fleet with a CA the endpoint does not
   chain to. From the rollout's log (Redis stream ids are the server's clock), the
   time from the device report that takes the failures over the threshold (the gate
   rule, replayed over the log in order) to the abort decision. Goal < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import redis

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.domain.rollout import FAILURES, DeviceRolloutState
from orchestrator.domain.rollout_states import PushStep, RolloutState
from orchestrator.logs import configure_logging
from simulator.pki import issue_server_cert, make_ca
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.bench.bench_push import INFLIGHT, raw_publish
from tests.bench.figures import Figure, exit_on_sigterm, report
from tests.e2e.stack import NOW
from tests.procs import BIN, Proc, certfleet, start, wait_until
from tests.tlsserver import tls_server

MAX_FAILURE = Fraction(1, 10)
MIN_SAMPLE = 10
ENDED = (
    RolloutState.COMPLETED.value,
    RolloutState.COMPLETED_WITH_TIMEOUTS.value,
    RolloutState.ROLLED_BACK.value,
)
"""The states a rollout ends in."""
FINAL = (*ENDED, RolloutState.ABORTED.value)
"""The states a wait for a rollout's outcome stops at: an end, or the turn to undo itself."""


@dataclass
class Bench:
    env: dict[str, str]
    redis: redis.Redis
    mqtt: LocalService
    dir: Path
    probe_port: int
    procs: list[Proc]

    def certfleet(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            certfleet(*args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"certfleet {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    def alive(self) -> None:
        for proc in self.procs:
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-3000:]}")


@contextmanager
def stack(base: Path, devices: int) -> Iterator[Bench]:
    redis_service = start_redis(base / "redis")
    mqtt_service = start_mosquitto(base / "mosquitto", extra_config="max_queued_bytes 0\n")
    key = base / "signing-key.pem"
    generate_key_file(key)
    env = {
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": mqtt_service.host,
        "CERTFLEET_MQTT_PORT": str(mqtt_service.port),
        "CERTFLEET_MQTT_MAX_INFLIGHT": str(INFLIGHT),
        "CERTFLEET_SIGNING_KEY_FILE": str(key),
        "CERTFLEET_TICK_INTERVAL_SECONDS": "1",
        "CERTFLEET_LOG_LEVEL": "WARNING",
        "CERTFLEET_LOG_FORMAT": "json",
    }
    ca1 = make_ca(
        "Fleet CA 2025", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=30)
    )
    ca2 = make_ca(
        "Fleet CA 2026", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    wrong = make_ca(
        "Not the server's CA",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=99),
    )
    for name, ca in (("ca1", ca1), ("ca2", ca2), ("wrong", wrong)):
        (base / f"{name}.pem").write_bytes(ca.pem)
    server = issue_server_cert(
        ca2, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=90)
    )
    logs = base / "logs"
    logs.mkdir()
    procs: list[Proc] = []
    client = redis.Redis(host=redis_service.host, port=redis_service.port, decode_responses=True)
    try:
        procs.append(
            start(
                "listener",
                certfleet("listener"),
                env={**env, "CERTFLEET_LOG_LEVEL": "INFO"},  # to see it subscribed
                log_dir=logs,
            )
        )
        wait_until(lambda: "listener_subscribed" in procs[-1].log(), timeout=30, what="listener")
        procs.append(
            start(
                "worker",
                [
                    str(BIN / "celery"),
                    "-A",
                    "workers.app",
                    "worker",
                    "-Q",
                    "control,push,scan",
                    "--concurrency",
                    "2",
                    "--pool",
                    "prefork",
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel",
                    "WARNING",
                ],
                env=env,
                log_dir=logs,
            )
        )
        procs.append(
            start(
                "beat",
                [str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel", "WARNING"],
                env=env,
                log_dir=logs,
            )
        )
        fleet = start(
            "fleet",
            certfleet(
                "simulate",
                "--devices",
                str(devices),
                "--ca",
                str(base / "ca1.pem"),
                "--tag",
                "42",
                "--id-prefix",
                "e2e-",
                "--scale",
                "--processes",
                "2",
            ),
            env=env,
            log_dir=logs,
        )
        procs.append(fleet)
        wait_until(
            lambda: (
                client.zcard("certfleet:inv:devices") >= devices or fleet.process.poll() is not None
            ),
            timeout=max(120, devices / 500),
            interval=0.5,
            what=f"{devices} devices reported",
        )
        with tls_server(server.pem, server.key_pem) as (_, port):
            bench = Bench(env, client, mqtt_service, base, port, procs)
            bench.alive()
            yield bench
    finally:
        for proc in reversed(procs):
            proc.stop()
        client.close()
        mqtt_service.stop()
        redis_service.stop()


def create(bench: Bench, ca: str, *, tag: int = 42, spare: int = 43) -> tuple[str, float]:
    started = time.perf_counter()
    out = bench.certfleet(
        "rollout",
        "create",
        "--kind",
        "trust.replace",
        "--ca",
        str(bench.dir / ca),
        "--tag",
        str(tag),
        "--spare-tag",
        str(spare),
        "--probe",
        f"127.0.0.1:{bench.probe_port}",
        "--waves",
        "1%,10%,50%,100%",
        "--bake",
        "0",
        "--advance",
        "auto",
        "--max-failure",
        "10%",
        "--min-sample",
        str(MIN_SAMPLE),
        "--device-timeout",
        "300",
        "--json",
    )
    return str(json.loads(out)["id"]), started


def wait_state(bench: Bench, rollout_id: str, states: tuple[str, ...], timeout: float) -> str:
    rollouts = RedisRollouts(bench.redis)

    def probe() -> str | None:
        bench.alive()
        rollout = rollouts.get(rollout_id)
        state = rollout.state.value if rollout is not None else None
        return state if state in states else None

    return wait_until(probe, timeout=timeout, interval=0.05, what=f"{rollout_id} in {states}")


def abort_latency(bench: Bench, rollout_id: str) -> tuple[float, int]:
    """Seconds from the report that crossed the threshold to the abort; failures at crossing."""
    rollouts = RedisRollouts(bench.redis)
    failures_at = {s.value for s in FAILURES}
    started = len(rollouts.wave_members(rollout_id, 0))  # only the canary ran
    failures = decided = crossed_failures = 0
    crossed: str | None = None
    for fields in rollouts.log(rollout_id):
        entry_id = fields["id"]
        if fields.get("kind") == "device" and fields.get("from") not in failures_at:
            if fields.get("to") in failures_at:
                failures += 1
                decided += 1
            elif fields.get("to") == DeviceRolloutState.COMMITTED.value:
                decided += 1
            if (
                crossed is None
                and failures > MAX_FAILURE * max(started, MIN_SAMPLE)
                and decided >= min(MIN_SAMPLE, started)
            ):
                crossed = entry_id
                crossed_failures = failures
        if fields.get("kind") == "rollout" and fields.get("to") == "aborted":
            if crossed is None:
                raise RuntimeError("aborted before the log shows the threshold crossed")
            return (_ms(entry_id) - _ms(crossed)) / 1000, crossed_failures
    raise RuntimeError("no abort in the rollout's log")


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def shortfall(status: dict[str, Any], devices: int) -> str | None:
    """Why a rollout that should have committed every device did not, from its status; or None.

    A rollout can end every wave with devices that never confirmed the new trust
    (`completed_with_timeouts`, listing them as `unconfirmed`): that is no result.
    """
    committed = status["totals"].get("committed", 0)
    if status["state"] == RolloutState.COMPLETED.value and committed == devices:
        return None
    unconfirmed = len(status.get("unconfirmed") or ())
    return (
        f"rollout ended {status['state']} with {committed} of {devices} committed, "
        f"{unconfirmed} unconfirmed: {status['totals']}"
    )


def run(devices: int) -> list[Figure]:
    with (
        tempfile.TemporaryDirectory(prefix="certfleet-bench-e2e-") as tmp,
        stack(Path(tmp), devices) as bench,
    ):
        rollout_id, started = create(bench, "ca2.pem")
        wait_state(bench, rollout_id, FINAL, timeout=1800)
        wall = time.perf_counter() - started
        status = json.loads(bench.certfleet("rollout", "status", rollout_id, "--json"))
        failed = shortfall(status, devices)
        if failed is not None:
            raise RuntimeError(f"{failed}; logs in {bench.dir / 'logs'}")
        # trust.replace made sec_tag 43 the live one; the next replace goes back into 42.
        bad_id, _ = create(bench, "wrong.pem", tag=43, spare=42)
        ended = wait_state(bench, bad_id, ENDED, timeout=600)
        if ended != RolloutState.ROLLED_BACK.value:
            raise RuntimeError(f"the rollout of a CA the endpoint does not chain to ended {ended}")
        latency, at_failures = abort_latency(bench, bad_id)
        # The floor: the rollout's own stage and commit bundles, raw paho to the same topics.
        ids = [f"e2e-{n:05d}" for n in range(devices)]
        stored = RedisRollouts(bench.redis)
        bundles = [
            (f"certfleet/{d}/bundle", data)
            for step in (PushStep.STAGE, PushStep.COMMIT)
            for d, data in stored.bundles(rollout_id, ids, step).items()
        ]
        raw_s = raw_publish(bench.mqtt, bundles)
    return [
        Figure(
            "End to end",
            f"trust.replace to {devices:,} devices, waves 1%,10%,50%,100%, bake 0",
            wall,
            "s",
            goal="<= 120 s",
            met=wall <= 120,
            baseline=f"raw paho QoS 1 publish of its {len(bundles):,} bundles: {raw_s:.1f} s",
            detail=f"{devices / wall:,.0f} devices/s committed",
        ),
        Figure(
            "End to end",
            "report crossing the abort threshold -> abort decision",
            latency * 1000,
            "ms",
            goal="< 1000 ms",
            met=latency < 1,
            baseline=f"canary of {devices // 100:,}, threshold crossed at failure {at_failures}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    exit_on_sigterm()
    configure_logging(level="WARNING")
    figures = run(args.devices)
    report(figures, args.json_out)


if __name__ == "__main__":
    main()
