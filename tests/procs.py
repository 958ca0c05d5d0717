"""Helpers to run certfleet's own processes (worker, listener, simulator) in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Proc:
    """A started process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start(name: str, argv: list[str], *, env: Mapping[str, str], log_dir: Path) -> Proc:
    """Start `argv` in its own process group, output to `log_dir/name.log`."""
    log_file = log_dir / f"{name}.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, process, log_file)


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def certfleet(*args: str) -> list[str]:
    """argv of the installed `certfleet` command."""
    return [str(BIN / "certfleet"), *args]


def celery_worker(
    log_dir: Path,
    env: Mapping[str, str],
    *,
    name: str = "worker",
    app: str = "workers.app",
    queues: str = "control,push,scan",
    hostname: str | None = None,
) -> Proc:
    """A real Celery worker of `app` on `queues` (every certfleet queue unless told),
    ready to take tasks."""
    proc = start(
        name,
        [
            str(BIN / "celery"),
            "-A",
            app,
            "worker",
            "-Q",
            queues,
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--hostname",
            hostname or f"{name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        env=env,
        log_dir=log_dir,
    )
    wait_until(
        lambda: " ready." in proc.log() or proc.process.poll() is not None,
        timeout=60,
        what=f"{name} ready",
    )
    if proc.process.poll() is not None:
        raise AssertionError(f"{name} exited:\n{proc.log()}")
    return proc


def start_certfleet(env: Mapping[str, str], log_dir: Path) -> dict[str, Proc]:
    """certfleet's own processes of an e2e stack: a listener (subscribed), a worker on
    every queue (ready) and beat."""
    procs = {"listener": start("listener", certfleet("listener"), env=env, log_dir=log_dir)}
    wait_until(
        lambda: "listener_subscribed" in procs["listener"].log(), timeout=60, what="listener"
    )
    procs["worker"] = celery_worker(log_dir, env)
    beat = [str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO"]
    procs["beat"] = start("beat", beat, env=env, log_dir=log_dir)
    return procs
