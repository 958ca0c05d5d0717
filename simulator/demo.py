"""`make demo`: a simulated fleet's certificate state, then two CA rotations over it.

Starts what is missing (Redis and Mosquitto on free local ports unless
`CERTFLEET_REDIS_URL` / `CERTFLEET_MQTT_PORT` name running ones), a worker, beat and a
listener, three simulated fleets whose CA chains are made for the demo (healthy,
expiring within days, expired), imports those CAs, runs a scan through Celery and
prints the status table. Then it rolls a renewed CA out in waves to the devices whose
CA expires within 30 days (their health probes reach a real TLS server under that CA:
the rollout completes), tries an unrelated CA on the whole fleet (the canary's probes
fail, the gate aborts, the canary is rolled back), prints a summary of both, and stops
everything it started.

The devices trust one root key, a development key file here (a deployment keeps it in
a PKCS#11 token); it signs only delegations: the worker makes a key of its own and signs
every bundle under a delegation from the root, which the demo lists at its end
(`certfleet keys delegations`).

Beside them runs `certfleet api` on a free loopback port with a fresh operator token
and a viewer token: the demo prints the console's URL and both tokens at its start, so
the rollouts can be watched live in a browser, and again at its end, where on a
terminal it waits for Enter before it stops everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator.pki import IssuedCert, issue_server_cert, make_ca
from simulator.services import (
    ServiceError,
    free_port,
    start_mosquitto,
    start_redis,
    wait_for_port,
)

__all__ = ["main"]

console = Console(stderr=True)
out = Console()
BIN = Path(sys.executable).parent
CERTFLEET = str(BIN / "certfleet")
WORKDIR = Path(".demo")
LOG_DIR = WORKDIR / "logs"
FLEETS = (
    # id prefix, devices, CA common name, notAfter from now
    ("field-", 240, "certfleet demo CA 2027", timedelta(days=365)),
    ("legacy-", 45, "certfleet demo CA 2026", timedelta(days=6)),
    ("stale-", 15, "certfleet demo CA 2025", timedelta(days=-9)),
)
SEC_TAG = 42
FAILED = ("rejected", "health_failed", "fallback", "timed_out")
COMPLETED = ("completed", "completed_with_timeouts")
"""A rollout whose waves all passed: with every device confirmed, or with some that never did."""
ROLLOUT_TIMEOUT_S = 90
API_HOST = "127.0.0.1"


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


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

    def wait_for_log(self, name: str, text: str, timeout: float) -> None:
        """Wait until `text` appears in the log of the started process `name`."""
        deadline = time.monotonic() + timeout
        log_file = self._log_dir / f"{name}.log"
        while text not in log_file.read_text(errors="replace"):
            if name in self.exited() or time.monotonic() > deadline:
                raise DemoError(f"{name} did not log {text!r} within {timeout:g} s")
            time.sleep(0.1)

    def exited(self) -> list[str]:
        """Names of the started processes that are no longer running."""
        return [name for name, process in self._running if process.poll() is not None]

    def run(self, argv: list[str], *, timeout: float = 60, capture: bool = False) -> str:
        """Run a command to its end: stderr to the terminal, stdout too unless captured."""
        env = {**self._env, "CERTFLEET_LOG_LEVEL": "WARNING"}  # no info log lines in the story
        if capture:
            env["COLUMNS"] = "250"  # lines as long as they are: the terminal wraps them
        try:
            stdout = subprocess.PIPE if capture else None
            done = subprocess.run(argv, env=env, stdout=stdout, timeout=timeout, check=False)  # noqa: S603
        except subprocess.TimeoutExpired:
            raise DemoError(f"`{_shown(argv)}` did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            raise DemoError(f"`{_shown(argv)}` failed with exit code {done.returncode}")
        return done.stdout.decode() if capture else ""

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


@dataclass(frozen=True, slots=True)
class ConsoleAccess:
    """Where the demo's console listens and the two tokens that sign in to it."""

    port: int
    operator_token: str
    viewer_token: str

    @property
    def url(self) -> str:
        return f"http://{API_HOST}:{self.port}/"

    @property
    def api_tokens(self) -> str:
        """The `CERTFLEET_API_TOKENS` value: `name:token:role` for each of the two."""
        return (
            f"demo-operator:{self.operator_token}:operator,demo-viewer:{self.viewer_token}:viewer"
        )


def console_access() -> ConsoleAccess:
    """A free loopback port and two tokens made for this run only."""
    return ConsoleAccess(free_port(API_HOST), secrets.token_urlsafe(24), secrets.token_urlsafe(24))


def _print_console(access: ConsoleAccess) -> None:
    console.rule("[bold]the console")
    console.print(
        f"Open [bold]{access.url}[/] and sign in with a token:\n"
        f"  operator (may pause, resume, approve, abort)  [bold]{access.operator_token}[/]\n"
        f"  viewer (reads only)                           [bold]{access.viewer_token}[/]",
        highlight=False,
        soft_wrap=True,
    )


def _start_console(procs: _Processes, access: ConsoleAccess) -> subprocess.Popen[bytes]:
    """Start `certfleet api` (API and console) and say how to open the console."""
    api = procs.start("api", [CERTFLEET, "api", "--host", API_HOST, "--port", str(access.port)])
    _print_console(access)
    console.print("Watch the rollouts there while the demo goes on.")
    return api


def _console_listening(api: subprocess.Popen[bytes], access: ConsoleAccess) -> None:
    try:
        wait_for_port(API_HOST, access.port, timeout=30, process=api)
    except ServiceError as exc:
        raise DemoError(f"certfleet api (the console): {exc}") from None


def hold_until_enter(stdin: TextIO, access: ConsoleAccess) -> bool:
    """Say again how to open the console; on a terminal, wait for Enter (or Ctrl-C, or
    end of input) and return True. Elsewhere (CI, a pipe) read nothing, return False."""
    _print_console(access)
    if not stdin.isatty():
        console.print("stdin is not a terminal: stopping everything the demo started.")
        return False
    console.print("Press Enter to stop everything the demo started.")
    with contextlib.suppress(KeyboardInterrupt, EOFError):
        stdin.readline()
    return True


def _shown(argv: list[str]) -> str:
    return shlex.join(["certfleet" if argv[0] == CERTFLEET else Path(argv[0]).name, *argv[1:]])


def _generate_signing_key(path: Path) -> str:
    """A new development root key in `path`, made as an operator makes one; devices trust
    its public half. Returns its key id (hex)."""
    argv = [CERTFLEET, "keys", "generate", "--out", str(path), "--force"]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DemoError(f"`{_shown(argv)}` failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()


def signing_story(root_kid: str, key_file: Path) -> str:
    """What the demo says about its keys: the root the devices trust signs only delegations;
    the workers sign every bundle with keys of their own under them."""
    return (
        f"Root key [bold]{root_kid}[/] (the devices trust it): a development key file, "
        f"{key_file}, where a deployment keeps it in a PKCS#11 token "
        "(CERTFLEET_ROOT_SIGNER=pkcs11). It signs only delegations: each worker process makes "
        "its own P-256 key in memory and signs every bundle with it, under a short-lived "
        "delegation from the root that names which operations it may sign."
    )


ROOT_SIGNATURES = "certfleet_root_signatures_total"
_SAMPLE = re.compile(ROOT_SIGNATURES + r'\{purpose="([a-z]+)"\} ([0-9.e+]+)$')


def root_signatures(metrics_text: str) -> dict[str, int]:
    """`certfleet_root_signatures_total` by purpose (`delegation`, `bundle`) from /metrics."""
    found: dict[str, int] = {}
    for line in metrics_text.splitlines():
        sample = _SAMPLE.match(line)
        if sample:
            found[sample.group(1)] = int(float(sample.group(2)))
    return found


def _print_delegations(procs: _Processes, access: ConsoleAccess) -> None:
    """The delegations the root signed in this run, and what the root signed (from /metrics):
    delegations only, never a bundle."""
    console.rule("[bold]signing keys")
    console.print("[dim]$ certfleet keys delegations[/]  (the worker keys the root delegated)")
    procs.run([CERTFLEET, "keys", "delegations"])
    url = f"http://{API_HOST}:{access.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            counts = root_signatures(response.read().decode())
    except OSError as exc:
        raise DemoError(f"cannot read {url}: {exc}") from None
    delegations, bundles = counts.get("delegation", 0), counts.get("bundle", 0)
    console.print(
        f"The root key signed {delegations} delegation{'s' if delegations != 1 else ''} "
        f"and {bundles} bundles ({ROOT_SIGNATURES} on {url}): every bundle of both "
        "rotations was signed by a worker's key under its delegation."
    )
    if bundles or not delegations:
        raise DemoError(f"the root key signed {bundles} bundles and {delegations} delegations")


@dataclass(frozen=True, slots=True)
class _Pki:
    fleet_cas: list[Path]  # one per entry of FLEETS
    renewed: Path  # the CA the probe server's certificate chains to
    wrong: Path  # an unrelated CA
    server: IssuedCert


def _make_pki(now: datetime) -> _Pki:
    def write(name: str, common_name: str, not_before: datetime, not_after: datetime) -> Path:
        path = WORKDIR / f"{name}-ca.pem"
        path.write_bytes(make_ca(common_name, not_before=not_before, not_after=not_after).pem)
        return path

    fleet_cas = [
        write(prefix.rstrip("-"), name, now - timedelta(days=700), now + lifetime)
        for prefix, _, name, lifetime in FLEETS
    ]
    renewed = make_ca(
        "certfleet demo CA 2027-renewed",
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=730),
    )
    (WORKDIR / "renewed-ca.pem").write_bytes(renewed.pem)
    server = issue_server_cert(
        renewed, not_before=now - timedelta(days=1), not_after=now + timedelta(days=90)
    )
    wrong = write("wrong", "not the server's CA", now - timedelta(days=1), now + timedelta(days=99))
    return _Pki(fleet_cas, WORKDIR / "renewed-ca.pem", wrong, server)


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


@contextlib.contextmanager
def _tls_server(cert: IssuedCert) -> Iterator[int]:
    """A TLS server presenting `cert` on a free 127.0.0.1 port (yielded): the probe target."""
    chain_file, key_file = WORKDIR / "probe-server.pem", WORKDIR / "probe-server-key.pem"
    chain_file.write_bytes(cert.pem)
    key_file.write_bytes(cert.key_pem)
    key_file.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)

    class Handshake(socketserver.BaseRequestHandler):
        def handle(self) -> None:  # the handshake, then close; a refused chain is expected
            self.request.settimeout(5)
            with contextlib.suppress(OSError), context.wrap_socket(self.request, server_side=True):
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handshake)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="probe-server", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _wait_for_devices(procs: _Processes, total: int, timeout: float) -> int:
    """Show a bar while devices connect and their state lands in the inventory (as a
    scan on the worker counts them, once a second); return how many did."""
    recorded = 0
    bar = (TextColumn("devices reporting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*bar, console=console) as progress:
        task = progress.add_task("report", total=total)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            scanned = procs.run([CERTFLEET, "fleet", "scan", "--json"], capture=True)
            recorded = int(json.loads(scanned)["devices"])
            progress.update(task, completed=recorded)
            if recorded >= total:
                break
            time.sleep(1.0)
    return recorded


def _start_stack(procs: _Processes, fleet_cas: list[Path]) -> list[str]:
    """Worker, beat, listener and the simulated fleets; return the device ids."""
    celery = [str(BIN / "celery"), "-A", "workers.app"]
    worker = ["worker", "-Q", "control,push,scan", "--concurrency", "1", "--without-gossip"]
    procs.start("worker", [*celery, *worker, "--hostname", f"demo-{os.getpid()}@%h"])
    procs.start("beat", [*celery, "beat", "--loglevel", "INFO"])
    procs.start("listener", [CERTFLEET, "listener"])
    # Devices report their state once on connect: the listener must be subscribed first.
    procs.wait_for_log("listener", "listener_subscribed", timeout=30)
    device_ids: list[str] = []
    for (prefix, count, _, _), pem in zip(FLEETS, fleet_cas, strict=True):
        argv = ["simulate", "--devices", str(count), "--ca", str(pem), "--tag", str(SEC_TAG)]
        procs.start(f"simulate-{prefix.rstrip('-')}", [CERTFLEET, *argv, "--id-prefix", prefix])
        device_ids += [f"{prefix}{n:05d}" for n in range(count)]
    return device_ids


def _inventory(procs: _Processes, pki: _Pki) -> None:
    """Start everything, wait for every device's state, scan and print the status table."""
    procs.run([CERTFLEET, "creds", "import", *map(str, [*pki.fleet_cas, pki.renewed])])
    device_ids = _start_stack(procs, pki.fleet_cas)
    console.print(
        f"{len(device_ids)} simulated nRF9160 devices connect over MQTT and report "
        f"their sec_tag {SEC_TAG} CA chains"
    )
    recorded = _wait_for_devices(procs, len(device_ids), timeout=60)
    if recorded < len(device_ids):
        raise DemoError(f"only {recorded} of {len(device_ids)} devices reported")
    console.print("\n[bold]certfleet fleet scan[/] (runs scan_fleet on the Celery worker)")
    procs.run([CERTFLEET, "fleet", "scan"])


def _rotation(procs: _Processes, probe: str, ca: Path, spare: int, *opts: str) -> dict[str, Any]:
    """Create a trust.add rollout, watch it to its end, print its table; its final status."""
    create = [CERTFLEET, "rollout", "create", "--kind", "trust.add", "--ca", str(ca)]
    create += ["--tag", str(SEC_TAG), "--spare-tag", str(spare)]
    create += ["--probe", probe, "--waves", "1%,10%,50%,100%", "--bake", "2"]
    create += ["--advance", "auto", "--max-failure", "10%", "--min-sample", "10"]
    create += ["--device-timeout", "60", *opts]
    console.print(f"[dim]$ {_shown(create)}[/]", highlight=False)
    rollout_id = procs.run(create, capture=True).strip()
    watch = [CERTFLEET, "rollout", "status", rollout_id, "--watch", "--json"]
    console.print(f"[dim]$ {_shown(watch)}[/]  (bars per wave until it ends)", highlight=False)
    status: dict[str, Any] = json.loads(procs.run(watch, timeout=ROLLOUT_TIMEOUT_S, capture=True))
    console.print(f"[dim]$ certfleet rollout status {rollout_id}[/]", highlight=False)
    procs.run([CERTFLEET, "rollout", "status", rollout_id])
    return status


def _rotations(procs: _Processes, pki: _Pki, probe: str) -> list[str]:
    console.rule("[bold]rotation 1: the renewed CA, to the devices whose CA expires within 30 days")
    console.print(
        f"The probe server on {probe} presents a certificate under "
        f"{pki.renewed}; trust.add stages that CA in sec_tag 43 beside 42, each device "
        "probes the server with it, and commits only when the TLS handshake verifies."
    )
    good = _rotation(
        procs, probe, pki.renewed, 43, "--select", "expiring:30", "--name", "demo-good"
    )
    if good["state"] not in COMPLETED:
        raise DemoError(f"rotation 1 ended {_outcome(good)}: {good.get('abort_reason', '?')}")
    if good.get("unconfirmed"):
        console.print(
            f"[yellow]rotation 1 ended {_outcome(good)}: they never confirmed the renewed CA "
            "(timed out, or failed within the gate's allowance) and keep the old one[/]"
        )
    console.rule("[bold]rotation 2: an unrelated CA, to the whole fleet")
    console.print(
        f"{pki.wrong} is not the CA of the probe server's certificate: the canary's TLS "
        "probes fail, its devices discard the staged CA, the health gate aborts and the "
        "rollout is rolled back before any other device gets a bundle."
    )
    bad = _rotation(procs, probe, pki.wrong, 44, "--select", "all", "--name", "demo-bad")
    if bad["state"] != "rolled_back":
        raise DemoError(f"rotation 2 ended {_outcome(bad)}, not rolled_back")
    console.print(f"[dim]$ certfleet rollout log {bad['id']} | tail -n 12[/]", highlight=False)
    log = procs.run([CERTFLEET, "rollout", "log", bad["id"]], capture=True)
    sys.stdout.write("".join(log.splitlines(keepends=True)[-12:]))
    sys.stdout.flush()
    return [good["id"], bad["id"]]


def _outcome(status: Mapping[str, Any]) -> str:
    """A rollout's state, and how many devices never confirmed it when some did not."""
    unconfirmed = len(status.get("unconfirmed") or ())
    return f"{status['state']} ({unconfirmed} unconfirmed)" if unconfirmed else str(status["state"])


def _summary_row(status: Mapping[str, Any]) -> tuple[str, ...]:
    """One rollout's line of the summary, from its `rollout status --json`.

    `unconfirmed`: devices of a `completed_with_timeouts` rollout that never confirmed
    the new trust (they keep the old one).
    """
    totals: Mapping[str, int] = status["totals"]
    counts = (
        sum(totals.values()),
        totals.get("committed", 0),
        sum(totals.get(state, 0) for state in FAILED),
        len(status.get("unconfirmed") or ()),
        totals.get("rolled_back", 0),
    )
    row = (status["id"], status["kind"], status["state"], *map(str, counts))
    return (*row, status.get("abort_reason", "-"))


def _summary(procs: _Processes, rollout_ids: list[str]) -> Table:
    table = Table(title="the two rotations")
    columns = ("rollout", "kind", "state", "devices", "committed", "failed", "unconfirmed")
    for column in (*columns, "rolled back"):
        table.add_column(column, no_wrap=True)
    table.add_column("abort reason")
    for rollout_id in rollout_ids:
        status = json.loads(
            procs.run([CERTFLEET, "rollout", "status", rollout_id, "--json"], capture=True)
        )
        table.add_row(*_summary_row(status))
    return table


def main() -> None:
    """Run the demo end to end."""
    started = time.monotonic()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    key_file = (WORKDIR / "signing-key.pem").resolve()
    pki = _make_pki(datetime.now(UTC))
    access = console_access()

    with _services(WORKDIR / "services") as env, _tls_server(pki.server) as probe_port:
        procs = _Processes(
            {
                **env,
                "CERTFLEET_API_TOKENS": access.api_tokens,
                "CERTFLEET_LOG_FORMAT": "json",
                "CERTFLEET_SIGNING_KEY_FILE": str(key_file),
                "CERTFLEET_TICK_INTERVAL_SECONDS": "1",
            },
            LOG_DIR,
        )
        try:
            root_kid = _generate_signing_key(key_file)
            console.print(signing_story(root_kid, WORKDIR / "signing-key.pem"))
            api = _start_console(procs, access)
            _inventory(procs, pki)
            _console_listening(api, access)
            rollout_ids = _rotations(procs, pki, f"127.0.0.1:{probe_port}")
            _print_delegations(procs, access)
            console.rule("[bold]summary")
            out.print(_summary(procs, rollout_ids))
            elapsed = time.monotonic() - started
            hold_until_enter(sys.stdin, access)
        except DemoError as exc:
            console.print(f"\n[bold red]demo failed:[/] {exc}", highlight=False)
            for name in procs.exited():
                console.print(f"[red]{name} exited early[/]: see {LOG_DIR / name}.log")
            console.print(f"Logs of this run: {LOG_DIR}/")
            sys.exit(1)
        finally:
            procs.stop_all()
    console.print(f"\nDone in {elapsed:.0f} s. Logs of this run: {LOG_DIR}/")


if __name__ == "__main__":
    main()
