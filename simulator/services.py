"""Throwaway `redis-server` and `mosquitto` on free loopback ports.

Used by the test fixtures, `make services` and `make demo`. Each service runs in
a work directory of its own with a config file written here, and is stopped by
`stop()` (or when the context exits).

`python -m simulator.services` starts both and prints the settings to use.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LocalCluster",
    "LocalService",
    "ServiceError",
    "free_port",
    "local_services",
    "start_mosquitto",
    "start_redis",
    "start_redis_cluster",
    "wait_for_port",
]


class ServiceError(RuntimeError):
    """A local service would not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    host: str, port: int, *, timeout: float, process: subprocess.Popen[bytes]
) -> None:
    """Wait until something accepts on (host, port), or fail with the reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


@dataclass
class LocalService:
    """One running throwaway service."""

    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log_file: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the service's log, for error messages."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(f"{name} is not installed (apt-get install -y {name})")


def _start(
    name: str, argv: list[str], *, host: str, port: int, workdir: Path, log_file: Path
) -> LocalService:
    with log_file.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 -- argv built here from fixed binaries
            argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = LocalService(name, host, port, process, workdir, log_file)
    try:
        wait_for_port(host, port, timeout=15, process=process)
    except ServiceError as exc:
        service.stop()
        raise ServiceError(f"{name}: {exc}\n{service.log_tail()}") from None
    return service


def start_redis(workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> LocalService:
    """A `redis-server` that keeps nothing on disk."""
    port = port or free_port(host)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "redis.conf"
    config.write_text(
        f'bind {host}\nport {port}\nprotected-mode yes\nsave ""\nappendonly no\n'
        f'dir {workdir}\ndaemonize no\nlogfile ""\n'
    )
    return _start(
        "redis-server",
        [_binary("redis-server"), str(config)],
        host=host,
        port=port,
        workdir=workdir,
        log_file=workdir / "redis.log",
    )


def _cluster_port(host: str) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port(host)
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port + 10000))
            except OSError:
                continue
        return port
    raise ServiceError("no free port pair (port, port + 10000) for a cluster node")


@dataclass
class LocalCluster:
    """A running throwaway Redis Cluster: its masters first, then their replicas."""

    nodes: list[LocalService]
    masters: int

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        """The first master's port: a URL naming it reaches the whole cluster."""
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop(timeout)


def start_redis_cluster(
    workdir: Path, *, masters: int = 3, replicas: int = 0, host: str = "127.0.0.1"
) -> LocalCluster:
    """A Redis Cluster of `masters` masters, each with `replicas` replicas, keeping
    nothing on disk, its slots assigned (`redis-cli --cluster create`) and every node
    agreeing before this returns."""
    workdir = workdir.resolve()
    nodes: list[LocalService] = []
    try:
        for index in range(masters * (1 + replicas)):
            port = _cluster_port(host)
            nodedir = workdir / f"node-{index}"
            nodedir.mkdir(parents=True, exist_ok=True)
            config = nodedir / "redis.conf"
            config.write_text(
                f'bind {host}\nport {port}\nprotected-mode yes\nsave ""\nappendonly no\n'
                f'dir {nodedir}\ndaemonize no\nlogfile ""\ncluster-enabled yes\n'
                f"cluster-config-file nodes.conf\ncluster-node-timeout 2000\n"
                "repl-diskless-sync-delay 0\n"
            )
            nodes.append(
                _start(
                    "redis-server",
                    [_binary("redis-server"), str(config)],
                    host=host,
                    port=port,
                    workdir=nodedir,
                    log_file=nodedir / "redis.log",
                )
            )
        create = subprocess.run(  # noqa: S603 -- fixed binary, our own arguments
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"{host}:{node.port}" for node in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create: {create.stdout[-2000:]!r}")
        _wait_cluster_ok(nodes, masters=masters, replicas=replicas)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return LocalCluster(nodes, masters)


def _wait_cluster_ok(
    nodes: list[LocalService], *, masters: int, replicas: int, timeout: float = 30
) -> None:
    """Until every node says `cluster_state:ok` and knows every node, and (with replicas)
    every replica's link to its master is up."""
    deadline = time.monotonic() + timeout
    want = f"cluster_known_nodes:{masters * (1 + replicas)}"
    pending = list(nodes)
    while pending:
        node = pending[0]
        info = _redis_cli(node, "cluster", "info")
        if (
            "cluster_state:ok" in info
            and want in info
            and (replicas == 0 or _replica_link_up(node))
        ):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise ServiceError(f"cluster not ok on port {node.port} after {timeout:.0f}s:\n{info}")
        time.sleep(0.1)


def _redis_cli(node: LocalService, *args: str) -> str:
    """What `redis-cli` prints for one command to a node ('' if it did not answer)."""
    return subprocess.run(  # noqa: S603 -- fixed binary, our own arguments
        [_binary("redis-cli"), "-h", node.host, "-p", str(node.port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout


def _replica_link_up(node: LocalService) -> bool:
    """A master, or a replica whose link to its master is up (its first sync done): a
    replica still syncing when its master dies refuses to fail over."""
    info = _redis_cli(node, "info", "replication")
    return "role:master" in info or "master_link_status:up" in info


def start_mosquitto(
    workdir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    extra_config: str = "",
    persistent: bool = False,
) -> LocalService:
    """A `mosquitto` with one anonymous plain listener (plus `extra_config`).

    `persistent` keeps sessions and queued QoS 1 messages in `workdir` across a
    restart, as a production broker does.
    """
    port = port or free_port(host)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mosquitto.conf"
    # Started as root, mosquitto would drop to its own user and lose access to
    # the test's files; naming the current user keeps it (no effect otherwise).
    config.write_text(
        f"user {getpass.getuser()}\n"
        f"per_listener_settings false\nallow_anonymous true\n"
        f"persistence {'true' if persistent else 'false'}\npersistence_location {workdir}/\n"
        f"max_queued_messages 100000\nmax_inflight_messages 100\n"
        f"log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n"
        f"listener {port} {host}\n{extra_config}"
    )
    return _start(
        "mosquitto",
        [_binary("mosquitto"), "-c", str(config)],
        host=host,
        port=port,
        workdir=workdir,
        log_file=workdir / "mosquitto.log",
    )


@contextlib.contextmanager
def local_services(workdir: Path | None = None) -> Iterator[tuple[LocalService, LocalService]]:
    """Redis and Mosquitto for the duration of the block."""
    with contextlib.ExitStack() as stack:
        base = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="certfleet-"))
        )
        redis_service = start_redis(base / "redis")
        stack.callback(redis_service.stop)
        mqtt_service = start_mosquitto(base / "mosquitto")
        stack.callback(mqtt_service.stop)
        yield redis_service, mqtt_service


def main() -> None:
    """`make services`: run both until interrupted, printing the settings to export."""
    with local_services() as (redis_service, mqtt_service):
        print(
            f"export CERTFLEET_REDIS_URL=redis://{redis_service.host}:{redis_service.port}/0\n"
            f"export CERTFLEET_MQTT_HOST={mqtt_service.host}\n"
            f"export CERTFLEET_MQTT_PORT={mqtt_service.port}\n"
            "# Ctrl-C stops both",
            flush=True,
        )
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        signal.sigwait(signals)
    sys.exit(0)


if __name__ == "__main__":
    main()
