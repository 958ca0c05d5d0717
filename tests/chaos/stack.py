"""A whole certfleet stack that can lose any of its parts: the chaos suite's stage.

As `tests.e2e.stack.running_stack`, with what a fault needs on top: Redis keeps its
data in an append-only file (`appendonly yes`, `appendfsync everysec`, as the shipped
compose file runs it) and Mosquitto persists its sessions and queued messages
(`autosave_interval 5`, as the shipped configuration), so each comes back on its
port with its state; the listener has a fixed client id (its session survives it);
worker, beat and listener run without a supervisor, so one that exits stays gone and
is reported. The devices are `tests.chaos.devices`, whose modems can be read back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from orchestrator.adapters.redis_inventory import RedisInventory
from simulator.services import LocalService, free_port, start_mosquitto, wait_for_port
from tests.e2e.stack import Stack, prepare_stack
from tests.procs import BIN, Proc, celery_worker, certfleet, start, wait_until
from tests.tlsserver import tls_server

__all__ = ["ChaosStack", "chaos_stack"]

LISTENER_ID = "chaos-listener-1"
BROKER_CONFIG = "autosave_interval 5\n"
"""The shipped broker's save interval: a crash loses at most the last 5 s."""


def start_durable_redis(workdir: Path, *, port: int | None = None) -> LocalService:
    """A `redis-server` that keeps its data in an append-only file in `workdir`."""
    host = "127.0.0.1"
    port = port or free_port(host)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "redis.conf"
    config.write_text(
        f'bind {host}\nport {port}\nprotected-mode yes\nsave ""\n'
        f"appendonly yes\nappendfsync everysec\ndir {workdir.resolve()}\n"
        'daemonize no\nlogfile ""\n'
    )
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    log_file = workdir / "redis.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [binary, str(config)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(host, port, timeout=30, process=process)
    return LocalService("redis-server", host, port, process, workdir, log_file)


@dataclass
class ChaosStack:
    """The running stack; `stack` is the e2e `Stack` of it (run, status, wait_final)."""

    stack: Stack
    redis_service: LocalService
    count: int
    modems_file: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    """The live process of each role: listener, worker, beat, fleet."""
    killed: list[Proc] = field(default_factory=list)
    """Processes the suite killed on purpose (their exit is not a finding)."""

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    @property
    def logs(self) -> Path:
        return self.stack.logs

    def exited(self) -> list[str]:
        """The roles whose live process exited by itself."""
        return [
            f"{role} (exit {proc.process.returncode})"
            for role, proc in self.procs.items()
            if proc.process.poll() is not None
        ]

    def modems(self) -> dict[str, Any]:
        """What the devices' own modems hold (the fleet rewrites it every second)."""
        document: dict[str, Any] = json.loads(self.modems_file.read_text())
        return document

    # -- the parts, started and restarted -------------------------------------------------

    def start_listener(self, name: str = "listener") -> None:
        env = {**self.env, "CERTFLEET_LISTENER_CLIENT_ID": LISTENER_ID}
        proc = start(name, certfleet("listener"), env=env, log_dir=self.logs)
        wait_until(
            lambda: "listener_subscribed" in proc.log() or proc.process.poll() is not None,
            timeout=60,
            what=f"{name} subscribed",
        )
        self.procs["listener"] = proc

    def start_worker(self, name: str = "worker") -> None:
        self.procs["worker"] = celery_worker(self.logs, self.env, name=name)

    def start_beat(self) -> None:
        argv = [str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO"]
        self.procs["beat"] = start("beat", argv, env=self.env, log_dir=self.logs)

    def start_fleet(self) -> None:
        argv = [str(BIN / "python"), "-m", "tests.chaos.devices", "--count", str(self.count)]
        argv += ["--ca", str(self.stack.dir / "ca1.pem"), "--out", str(self.modems_file)]
        self.procs["fleet"] = start("fleet", argv, env=self.env, log_dir=self.logs)

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Signal a role's whole process group (a worker's pool children too)."""
        proc = self.procs.pop(role)
        proc.stop(sig)
        self.killed.append(proc)

    def restart_redis(self, sig: int, *, down: float = 0.0) -> None:
        """Stop Redis with `sig`, wait `down` seconds, start it on its port from its file."""
        old = self.redis_service
        old.process.send_signal(sig)
        old.process.wait(timeout=30)
        time.sleep(down)
        self.redis_service = start_durable_redis(old.workdir, port=old.port)

    def restart_broker(self, sig: int, *, down: float) -> None:
        """Stop Mosquitto with `sig`, wait `down` seconds, start it with its persistence."""
        old = self.stack.mqtt
        old.process.send_signal(sig)
        old.process.wait(timeout=30)
        time.sleep(down)
        self.stack.mqtt = start_mosquitto(
            old.workdir, port=old.port, persistent=True, extra_config=BROKER_CONFIG
        )


@contextlib.contextmanager
def chaos_stack(base: Path, count: int) -> Iterator[ChaosStack]:
    """Everything running, `count` devices on CA1 in sec_tag 42 reported; a probe under CA2."""
    redis_service = start_durable_redis(base / "redis")
    mqtt_service = start_mosquitto(base / "mosquitto", persistent=True, extra_config=BROKER_CONFIG)
    setup = prepare_stack(base, redis_service, mqtt_service)
    env, ca1, ca2, server, logs = setup.env, setup.ca1, setup.ca2, setup.server, setup.logs
    client = redis.Redis(host=redis_service.host, port=redis_service.port, decode_responses=True)
    chaos: ChaosStack | None = None
    try:
        with tls_server(server.pem, server.key_pem) as (_, port):
            stack = Stack(env, client, mqtt_service, base, ca1, ca2, port, {}, logs, [])
            chaos = ChaosStack(stack, redis_service, count, base / "modems.json")
            chaos.start_listener()
            chaos.start_worker()
            chaos.start_beat()
            chaos.start_fleet()
            wait_until(
                lambda: RedisInventory(client).device_count() == count,
                timeout=120,
                what="the fleet reported",
            )
            yield chaos
    finally:
        if chaos is not None:
            running = [p for p in chaos.procs.values() if p.process.poll() is None]
            for proc in running:  # all at once: each takes its seconds to shut down
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, signal.SIGTERM)
            for proc in running:
                proc.stop()
            redis_service = chaos.redis_service
            mqtt_service = chaos.stack.mqtt
        client.close()
        mqtt_service.stop()
        redis_service.stop()
