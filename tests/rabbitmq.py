"""A throwaway RabbitMQ (Debian's `rabbitmq-server`) on free loopback ports, for tests.

`start_rabbitmq(workdir)` boots a node of its own: its own node name, its own epmd
(`ERL_EPMD_PORT`) and distribution port, its database, logs and Erlang cookie (`HOME`)
under `workdir`, no plugins, and a user with a random password that may connect from
loopback only. A RabbitMQ (and epmd) of the system on the standard ports is never
touched: nothing here reads the system's config files or names its ports.
`LocalRabbit.stop()` stops the node, then its epmd.

`python -m tests.rabbitmq` starts one, prints its URL and how long it took, and stops it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from simulator.services import ServiceError, free_port, wait_for_port

__all__ = [
    "RABBITMQ_BIN",
    "LocalRabbit",
    "rabbitmq_available",
    "running_rabbitmq",
    "start_rabbitmq",
]

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""Debian's scripts themselves (the `/usr/sbin` wrappers would switch to the system's
`rabbitmq` user and its directories)."""

START_TIMEOUT_SECONDS = 90.0

CONSUMER_TIMEOUT_MS = 3_600_000
"""The broker's consumer timeout, as the shipped deployment sets it (one hour; above
`celery_queue.CONSUMER_TIMEOUT_FLOOR_SECONDS`)."""


def rabbitmq_available() -> bool:
    """Whether Debian's rabbitmq-server is installed."""
    return (RABBITMQ_BIN / "rabbitmq-server").exists() and shutil.which("erl") is not None


@dataclass
class LocalRabbit:
    """One running throwaway RabbitMQ node."""

    host: str
    port: int
    user: str
    password: str
    node: str
    env: dict[str, str]
    """The environment every RabbitMQ or Erlang command of this node runs with."""
    process: subprocess.Popen[bytes] | None
    workdir: Path
    log_file: Path
    start_seconds: float
    """How long the node took from exec to accepting AMQP connections with its user."""

    @property
    def url(self) -> str:
        """The AMQP URL of the default vhost (`CERTFLEET_BROKER_URL`)."""
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}//"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run `rabbitmqctl` against this node; its standard output."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}{done.stdout.decode(errors='replace')}"
            )
        return done.stdout.decode()

    def queue_types(self) -> dict[str, str]:
        """Each queue of the default vhost and its type (`classic`, `quorum`, ...)."""
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "type")
        types: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                types[parts[0]] = parts[1]
        return types

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's log (its startup output when the log is absent)."""
        logs = sorted((self.workdir / "log").glob("*.log"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        text += self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def restart(self) -> None:
        """Stop the node (gracefully) and boot it again on the same ports and data."""
        self.stop()
        _boot(self)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the node (SIGKILL if it lingers), then its epmd."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # The node's process group may keep helpers (erl_child_setup) a moment longer.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        _stop_epmd(self.env)


def _stop_epmd(env: dict[str, str]) -> None:
    """Stop the epmd on this node's `ERL_EPMD_PORT` (never the system's, on 4369)."""
    port = env["ERL_EPMD_PORT"]
    assert port != "4369", "refusing to stop the system's epmd"
    epmd = shutil.which("epmd") or _erts_binary("epmd")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = subprocess.run(
            [epmd, "-port", port, "-kill"], env=env, capture_output=True, timeout=10, check=False
        )
        out = done.stdout.decode(errors="replace")
        if done.returncode != 0 or "Killed" in out or "not running" in out.lower():
            return
        time.sleep(0.2)  # "living nodes in database": the node is still unregistering


def _erts_binary(name: str) -> str:
    found = sorted(Path("/usr/lib/erlang").glob(f"erts-*/bin/{name}"))
    if not found:
        raise ServiceError(f"{name} not found")
    return str(found[-1])


def _config(port: int, user: str, password: str) -> str:
    """rabbitmq.conf of a test node: one loopback listener, one user, no disk alarm in a
    small tmp dir, and the deployment's consumer timeout."""
    return "\n".join(
        [
            f"listeners.tcp.default = 127.0.0.1:{port}",
            f"default_user = {user}",
            f"default_pass = {password}",
            f"loopback_users.{user} = true",
            "loopback_users.guest = true",
            "disk_free_limit.absolute = 1MB",
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
            "log.console = false",
            "log.file.level = info",
            "",
        ]
    )


def start_rabbitmq(workdir: Path, *, host: str = "127.0.0.1") -> LocalRabbit:
    """Boot a RabbitMQ node under `workdir` (created) on free loopback ports."""
    if host != "127.0.0.1":
        raise ValueError("test RabbitMQ nodes listen on loopback only")
    if not rabbitmq_available():
        raise ServiceError("rabbitmq-server is not installed (Debian package rabbitmq-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port, dist_port, epmd_port = free_port(host), free_port(host), free_port(host)
    user, password = "certfleet", secrets.token_hex(12)
    node = f"certfleet-test-{port}@localhost"
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    config = workdir / "rabbitmq.conf"
    config.write_text(_config(port, user, password))
    env_file = workdir / "rabbitmq-env.conf"
    env_file.write_text("")  # instead of the system's /etc/rabbitmq/rabbitmq-env.conf
    plugins = workdir / "enabled_plugins"
    plugins.write_text("[].\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": host,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": host,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONF_ENV_FILE": str(env_file),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_ENABLED_PLUGINS": "",
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(workdir / "plugins-expand"),
        "RABBITMQ_SERVER_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    rabbit = LocalRabbit(
        host, port, user, password, node, env, None, workdir, workdir / "startup.log", 0.0
    )
    _boot(rabbit)
    return rabbit


def _boot(rabbit: LocalRabbit) -> None:
    """Exec the node of `rabbit` and wait until its user can log in; or fail, stopped."""
    began = time.monotonic()
    with rabbit.log_file.open("ab") as log:
        rabbit.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=rabbit.env,
            cwd=rabbit.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(
            rabbit.host, rabbit.port, timeout=START_TIMEOUT_SECONDS, process=rabbit.process
        )
        _wait_login(rabbit, deadline=began + START_TIMEOUT_SECONDS)
    except (ServiceError, OSError) as exc:
        tail = rabbit.log_tail()
        rabbit.stop()
        raise ServiceError(f"rabbitmq-server did not start: {exc}\n{tail}") from None
    rabbit.start_seconds = time.monotonic() - began


def _wait_login(rabbit: LocalRabbit, *, deadline: float) -> None:
    """Until the node's user can open a connection (the listener opens before boot ends)."""
    from kombu import Connection  # noqa: PLC0415 -- only this harness needs kombu here

    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with Connection(rabbit.url, connect_timeout=2) as conn:
                conn.connect()
                return
        except Exception as exc:  # any refusal while the node boots: try again
            last = exc
            time.sleep(0.2)
    raise ServiceError(f"the node refused its user until the deadline: {last!r}")


@contextlib.contextmanager
def running_rabbitmq(workdir: Path) -> Iterator[LocalRabbit]:
    """A RabbitMQ node for the `with` block, stopped (with its epmd) after it."""
    rabbit = start_rabbitmq(workdir)
    try:
        yield rabbit
    finally:
        rabbit.stop()


def main() -> None:
    """Start a node, say where and how fast, stop it."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="certfleet-rabbitmq-") as tmp:
        with running_rabbitmq(Path(tmp)) as rabbit:
            print(f"{rabbit.url} node {rabbit.node} started in {rabbit.start_seconds:.2f}s")
            began = time.monotonic()
        print(f"stopped in {time.monotonic() - began:.2f}s")


if __name__ == "__main__":
    main()
