"""`make demo`: a simulated fleet's certificate state, computed by a Celery worker.

Starts what is missing (Redis and Mosquitto on free local ports unless
`CERTFLEET_REDIS_URL` / `CERTFLEET_MQTT_PORT` name running ones), a worker and a
listener, three simulated fleets whose CA chains are made for the demo (healthy,
expiring within days, expired), imports those CAs, runs a scan through Celery,
prints the status table, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simulator.pki import make_ca
from simulator.services import start_mosquitto, start_redis

__all__ = ["main"]

console = Console(stderr=True)
BIN = Path(sys.executable).parent
WORKDIR = Path(".demo")
FLEETS = (
    # id prefix, devices, CA common name, notAfter from now
    ("field-", 240, "certfleet demo CA 2027", timedelta(days=365)),
    ("legacy-", 45, "certfleet demo CA 2026", timedelta(days=6)),
    ("stale-", 15, "certfleet demo CA 2025", timedelta(days=-9)),
)
SEC_TAG = 42


class _Processes:
    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self._env = {**os.environ, **env}
        self._log_dir = log_dir
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self._log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 -- our own commands
                argv, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._running.append((name, process))
        return process

    def log(self, name: str) -> str:
        return (self._log_dir / f"{name}.log").read_text(errors="replace")

    def run(self, argv: list[str]) -> int:
        return subprocess.run(argv, env=self._env, check=False).returncode  # noqa: S603

    def stop_all(self) -> None:
        for _, process in reversed(self._running):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in reversed(self._running):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def _services(workdir: Path) -> Iterator[dict[str, str]]:
    env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if "CERTFLEET_REDIS_URL" not in os.environ:
            service = start_redis(workdir / "redis")
            stack.callback(service.stop)
            env["CERTFLEET_REDIS_URL"] = f"redis://{service.host}:{service.port}/0"
            console.print(f"started redis-server on {service.host}:{service.port}")
        if "CERTFLEET_MQTT_PORT" not in os.environ and "CERTFLEET_MQTT_HOST" not in os.environ:
            service = start_mosquitto(workdir / "mosquitto")
            stack.callback(service.stop)
            env["CERTFLEET_MQTT_HOST"] = service.host
            env["CERTFLEET_MQTT_PORT"] = str(service.port)
            console.print(f"started mosquitto on {service.host}:{service.port}")
        yield env


def _wait_for_devices(client: redis.Redis, device_ids: list[str], timeout: float) -> int:
    """Show a bar while devices connect and their state lands in Redis; return how many did."""
    recorded = 0
    columns = (
        TextColumn("devices reporting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("report", total=len(device_ids))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            scores = client.zmscore("certfleet:inv:devices", device_ids)
            recorded = sum(score is not None for score in scores)
            progress.update(task, completed=recorded)
            if recorded == len(device_ids):
                break
            time.sleep(0.2)
    return recorded


def main() -> None:
    """Run the demo end to end."""
    WORKDIR.mkdir(exist_ok=True)
    log_dir = WORKDIR / "logs"
    log_dir.mkdir(exist_ok=True)
    now = datetime.now(UTC)
    pems = []
    for prefix, _, name, lifetime in FLEETS:
        ca = make_ca(name, not_before=now - timedelta(days=700), not_after=now + lifetime)
        path = WORKDIR / f"{prefix.rstrip('-')}-ca.pem"
        path.write_bytes(ca.pem)
        pems.append(path)

    with _services(WORKDIR / "services") as env:
        procs = _Processes({**env, "CERTFLEET_LOG_FORMAT": "json"}, log_dir)
        certfleet = str(BIN / "certfleet")
        try:
            if procs.run([certfleet, "creds", "import", *map(str, pems)]) != 0:
                sys.exit("certfleet creds import failed")
            procs.start(
                "worker",
                [
                    str(BIN / "celery"),
                    "-A",
                    "workers.app",
                    "worker",
                    "-Q",
                    "control,push,scan",
                    "--concurrency",
                    "1",
                    "--hostname",
                    f"demo-{os.getpid()}@%h",
                    "--loglevel",
                    "INFO",
                ],
            )
            procs.start("listener", [certfleet, "listener"])
            device_ids: list[str] = []
            for (prefix, count, _, _), pem in zip(FLEETS, pems, strict=True):
                procs.start(
                    f"simulate-{prefix.rstrip('-')}",
                    [
                        certfleet,
                        "simulate",
                        "--devices",
                        str(count),
                        "--ca",
                        str(pem),
                        "--tag",
                        str(SEC_TAG),
                        "--id-prefix",
                        prefix,
                    ],
                )
                device_ids += [f"{prefix}{n:05d}" for n in range(count)]
            console.print(
                f"{len(device_ids)} simulated nRF9160 devices connect over MQTT and report "
                f"their sec_tag {SEC_TAG} CA chains"
            )
            client = redis.Redis.from_url(
                env.get("CERTFLEET_REDIS_URL") or os.environ["CERTFLEET_REDIS_URL"]
            )
            recorded = _wait_for_devices(client, device_ids, timeout=120)
            client.close()
            if recorded < len(device_ids):
                console.print(
                    f"[red]only {recorded} of {len(device_ids)} devices reported; see {log_dir}[/]"
                )
                sys.exit(1)
            console.print("\n[bold]certfleet fleet scan[/] (runs scan_fleet on the Celery worker)")
            if procs.run([certfleet, "fleet", "scan"]) != 0:
                console.print(procs.log("worker")[-3000:])
                sys.exit("the scan failed")
            console.print(
                "\nThe same table any time later: [bold]certfleet fleet status[/] "
                "(add --json for machines). Logs of this run: .demo/logs/"
            )
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
