"""A Redis Cluster master killed mid-rollout: its replica takes over and the rollout converges.

The state store is a Redis Cluster of three masters with one replica each
(`cluster-node-timeout 2000`), named by one node's URL (`CERTFLEET_REDIS_CLUSTER=true`);
Celery's broker and result backend are a redis-server of their own (Celery's Redis
transport cannot use a cluster). A real worker, beat, the listener and 60 simulated
devices whose modems the test reads back (`tests.chaos.devices`).

Once the canary wave passed, the master serving the rollout's hash slot is SIGKILLed, and
the test waits until its replica is promoted (about 4 s); certfleet must converge: the
listener and the tasks retry until the slot is served again, the rollout ends `completed`,
and every device it calls committed holds the new CA active in its own modem.

Redis replicates asynchronously, so writes the dead master acknowledged last may be lost
(a transition, a claim, a recorded report). On loopback the replica is rarely behind, so
the second case makes sure they are: from the canary's end the replica is stopped and cut
off from its master for 1.5 s (the second wave's dispatch, pushes and reports) until the
kill, and takes over without what the master acknowledged meanwhile. certfleet does not
converge from that yet (`LOST_WRITES_BREAK`): that case is a strict xfail until it does,
run by `make chaos` (`CERTFLEET_CHAOS=1`), not by `make test`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import RedisClusterException

from orchestrator.adapters.redis_rollout_plan import rollout_key
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.errors import TransientError
from orchestrator.services.rollout.commands import rollout_status
from simulator.services import (
    LocalCluster,
    LocalService,
    start_mosquitto,
    start_redis,
    start_redis_cluster,
)
from tests.e2e.stack import StackSetup, prepare_stack, sizes_add_up
from tests.procs import BIN, Proc, certfleet, start, start_certfleet, wait_until
from tests.tlsserver import tls_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES = 60
WAVES = "10%,100%"
DEVICE_TIMEOUT = 40
"""Above the evaluator's lock (30 s): a kill that lands while an evaluation holds the lock
leaves it held on the promoted replica (the evaluation's unlock fails with the master), so
no evaluation runs, and no commit goes, until it expires; with a shorter device timeout
the wave's healthy devices give up waiting for their commit first and fall back."""
LOSS_SECONDS = 1.5
"""How long the replica is cut off before its master is killed, in the case that loses
writes: the writes of that time (the second wave's reports, transitions, commits) are
acknowledged and then lost. Below `cluster-node-timeout` (2 s), so the cluster does not
mark the stopped replica failed meanwhile."""
END_SECONDS = 90
"""How long the rollout may take to end after the failover: a device whose progress was
lost is sent its stage again at its deadline (the device timeout) if it still reads sent,
or 60 s after the wave's dispatch was due (the redispatch grace) if it reads pending, and
then needs its round trips."""
ENDED = ("completed", "completed_with_timeouts", "rolled_back")


@dataclass
class ClusterStack:
    """The running stack on a Redis Cluster with replicas."""

    cluster: LocalCluster
    setup: StackSetup
    env: dict[str, str]
    probe_port: int
    modems_file: Path
    container: Container
    """Adapters wired by bootstrap in this process, reading what the CLI would."""
    procs: dict[str, Proc]
    unanswered: str = ""
    """Why the last status read failed."""

    def status(self, rollout_id: str) -> dict[str, Any] | None:
        """`rollout status --json` made in-process, or None while the store cannot answer
        (the error kept in `unanswered`)."""
        try:
            return rollout_status(self.container.rollout_deps(), rollout_id)
        except (TransientError, redis.RedisError, RedisClusterException) as exc:
            self.unanswered = repr(exc)
            return None

    def modems(self) -> dict[str, Any]:
        """What the devices' own modems hold (the fleet rewrites it every second)."""
        document: dict[str, Any] = json.loads(self.modems_file.read_text())
        return document

    def exited(self) -> list[str]:
        return [
            f"{role} (exit {proc.process.returncode})"
            for role, proc in self.procs.items()
            if proc.process.poll() is not None
        ]

    def create(self) -> str:
        done = self.run(
            *("rollout", "create", "--kind", "trust.replace"),
            *("--ca", str(self.setup.logs.parent / "ca2.pem"), "--tag", "42"),
            *("--spare-tag", "43", "--probe", f"127.0.0.1:{self.probe_port}"),
            *("--waves", WAVES, "--bake", "0", "--advance", "auto"),
            *("--max-failure", "10%", "--min-sample", "5"),
            *("--device-timeout", str(DEVICE_TIMEOUT)),
            *("--name", "failover", "--json"),
        )
        return str(json.loads(done)["id"])

    def run(self, *args: str) -> str:
        """A `certfleet` command's output; it must succeed."""
        done = subprocess.run(
            certfleet(*args), env=self.env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()


def _ask(node: LocalService, *args: str) -> Any:
    """`CLUSTER <args>` asked of one node, parsed by redis-py."""
    client = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        return client.cluster(*args)
    finally:
        client.close()


def _linked(node: LocalService) -> bool:
    """A master, or a replica whose link to its master is up (a replica that never synced
    refuses to take over)."""
    client = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        replication = client.info("replication")
    finally:
        client.close()
    return replication["role"] == "master" or replication.get("master_link_status") == "up"


def _serving(node: LocalService, slot: int) -> int | None:
    """The port of the master `node` says serves `slot` (CLUSTER NODES), if any."""
    for address, view in _ask(node, "NODES").items():
        flags = view["flags"].split(",")
        covered = any(int(lo) <= slot <= int(hi) for lo, hi, *_ in view["slots"])
        if covered and "master" in flags and "fail" not in flags:
            return int(address.rsplit(":", 1)[1].split("@")[0])
    return None


def _promoted(survivor: LocalService, dead: LocalService, slot: int) -> int | None:
    """The port of the master serving `slot` once it is not the dead one and `survivor`
    says the cluster is ok again."""
    try:
        if _ask(survivor, "INFO")["cluster_state"] != "ok":
            return None
        port = _serving(survivor, slot)
    except redis.RedisError:
        return None
    return port if port != dead.port else None


@contextlib.contextmanager
def cluster_stack(base: Path) -> Iterator[ClusterStack]:
    """Everything running, the fleet reported to the cluster; a probe endpoint under CA2."""
    cluster = start_redis_cluster(base / "cluster", masters=3, replicas=1)
    broker = start_redis(base / "broker")
    mqtt = start_mosquitto(base / "mosquitto")
    procs: dict[str, Proc] = {}
    container: Container | None = None
    try:
        wait_until(
            lambda: all(_linked(node) for node in cluster.nodes),
            timeout=30,
            what="every replica linked to its master",
        )
        setup = prepare_stack(base, cluster.nodes[0], mqtt)
        broker_url = f"redis://{broker.host}:{broker.port}"
        env = {
            **setup.env,
            "CERTFLEET_REDIS_CLUSTER": "true",
            "CERTFLEET_BROKER_URL": f"{broker_url}/0",
            "CERTFLEET_RESULT_BACKEND": f"{broker_url}/1",
        }
        settings = Settings(
            redis_url=cluster.url,
            redis_cluster=True,
            mqtt_host=mqtt.host,
            mqtt_port=mqtt.port,
            signing_key_file=Path(env["CERTFLEET_SIGNING_KEY_FILE"]),
        )
        container = bootstrap(settings, logging=False)
        logs = setup.logs
        procs.update(start_certfleet(env, logs))
        fleet = [str(BIN / "python"), "-m", "tests.chaos.devices", "--count", str(DEVICES)]
        fleet += ["--ca", str(base / "ca1.pem"), "--out", str(base / "modems.json")]
        procs["fleet"] = start("fleet", fleet, env=env, log_dir=logs)
        inventory = container.inventory
        wait_until(
            lambda: inventory.device_count() == DEVICES, timeout=60, what="the fleet reported"
        )
        with tls_server(setup.server.pem, setup.server.key_pem) as (_, port):
            yield ClusterStack(cluster, setup, env, port, base / "modems.json", container, procs)
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.stop()
        if container is not None:
            container.close()
        mqtt.stop()
        broker.stop()
        cluster.stop()


def _replica_of(cluster: LocalCluster, master: LocalService) -> LocalService:
    """The replica of `master`, as CLUSTER NODES says."""
    nodes = _ask(master, "NODES")
    master_id = next(v["node_id"] for v in nodes.values() if "myself" in v["flags"])
    address = next(a for a, v in nodes.items() if v["master_id"] == master_id)
    port = int(address.rsplit(":", 1)[1].split("@")[0])
    return next(n for n in cluster.nodes if n.port == port)


def _offset(master: LocalService) -> int:
    """How many bytes of writes `master` has put in its replication stream so far."""
    client = redis.Redis(host=master.host, port=master.port, decode_responses=True)
    try:
        return int(client.info("replication")["master_repl_offset"])
    finally:
        client.close()


def _cut_replicas(master: LocalService) -> None:
    """Close `master`'s links to its replicas (CLIENT KILL TYPE replica)."""
    client = redis.Redis(host=master.host, port=master.port, decode_responses=True)
    try:
        client.client_kill_filter(_type="replica")
    finally:
        client.close()


@dataclass(frozen=True)
class Failover:
    """What the kill did: the slot, the dead and the promoted master, the writes lost."""

    slot: int
    dead: int
    promoted: int
    lost_bytes: int
    seconds: float


def _kill(stack: ClusterStack, key: str, *, losing: float) -> Failover:
    """SIGKILL the master serving `key`'s slot and wait for its replica to take over; with
    `losing` > 0, once the replica missed that many seconds of the master's writes.

    To lose writes the replica is stopped (SIGSTOP) and its link closed by the master, so it
    can neither receive nor reconnect until it is resumed (SIGCONT) after the kill; what the
    master wrote to the closed link before is read from the socket then, nothing after it.
    """
    node = stack.cluster.nodes[0]
    slot = int(_ask(node, "KEYSLOT", key))
    master = next(n for n in stack.cluster.nodes if n.port == _serving(node, slot))
    replica = _replica_of(stack.cluster, master)
    survivor = next(n for n in stack.cluster.nodes if n not in (master, replica))
    lost = 0
    if losing:
        replica.process.send_signal(signal.SIGSTOP)
    try:
        if losing:
            _cut_replicas(master)
            cut = _offset(master)
            time.sleep(losing)
            lost = _offset(master) - cut
        master.process.send_signal(signal.SIGKILL)
        master.process.wait(timeout=10)
    finally:
        if losing:
            replica.process.send_signal(signal.SIGCONT)
    killed = time.monotonic()
    promoted = wait_until(
        lambda: _promoted(survivor, master, slot), timeout=30, interval=0.2, what="a promotion"
    )
    return Failover(slot, master.port, promoted, lost, time.monotonic() - killed)


LOST_WRITES_BREAK = (
    "a failover that loses the rollout's last writes does not converge yet: devices whose "
    "commit was lost are sent the stage again and refuse it as tag_in_use; those whose "
    "inventory shows the new CA settle as committed, but a device whose inventory record "
    "(in a shard of the dead master) lost its latest state too cannot be verified, counts "
    "as rejected, and the gate rolls the wave back"
)


@pytest.mark.parametrize(
    "losing",
    [
        pytest.param(0.0, id="kill"),
        pytest.param(
            LOSS_SECONDS,
            id="kill-losing-writes",
            marks=[
                pytest.mark.xfail(strict=True, reason=LOST_WRITES_BREAK),
                pytest.mark.skipif(
                    os.environ.get("CERTFLEET_CHAOS") != "1",
                    reason="about 100 s: runs in `make chaos` (CERTFLEET_CHAOS=1)",
                ),
            ],
        ),
    ],
)
def test_a_master_killed_mid_rollout_is_replaced_and_the_rollout_converges(
    tmp_path: Path, losing: float
) -> None:
    """SIGKILL of the master serving the rollout's slot once the canary passed (its replica
    first cut off for `losing` seconds, the writes of that time lost): the replica is
    promoted, the rollout ends completed, every device committed holds the new CA active,
    wave counts add up, and no worker, beat or listener exited."""
    with cluster_stack(tmp_path) as stack:
        started = time.monotonic()
        rollout_id = stack.create()

        def canary_passed() -> dict[str, Any] | None:
            status = stack.status(rollout_id)
            if status is None or status["state"] in ENDED:
                return status
            return status if status["current_wave"] >= 1 else None

        at = wait_until(canary_passed, timeout=60, interval=0.05, what="the canary passed")
        assert at["state"] not in ENDED, at
        # when
        failover = _kill(stack, rollout_key(rollout_id, "state"), losing=losing)
        killed = time.monotonic() - failover.seconds

        def ended() -> dict[str, Any] | None:
            status = stack.status(rollout_id)
            return status if status is not None and status["state"] in ENDED else None

        try:
            status = wait_until(ended, timeout=END_SECONDS, interval=0.3, what="the rollout's end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the last status read failed: {stack.unanswered}") from exc
        converged = time.monotonic()
        time.sleep(1.5)  # a fresh modem dump, made after the devices' last key store work
        modems = stack.modems()
        log = stack.container.rollouts.log(rollout_id)
        exited = stack.exited()

    # then
    print(
        f"failover: slot {failover.slot} from :{failover.dead} to :{failover.promoted} in "
        f"{failover.seconds:.1f}s, {failover.lost_bytes} bytes of writes lost; the rollout "
        f"ended {converged - killed:.1f}s after the kill, {converged - started:.1f}s after "
        "its start"
    )
    if losing:
        assert failover.lost_bytes > 0, "the replica missed no write: nothing was at stake"
    moves = Counter(
        f"{e.get('from')}->{e['to']} {e.get('cause', '')}".strip()
        for e in log
        if e["kind"] == "device"
    )
    assert status["state"] == "completed", (status["state"], status.get("abort_reason"), moves)
    sizes_add_up(status)
    assert status["totals"]["committed"] == DEVICES, status["totals"]
    new_ca = hashlib.sha256(stack.setup.ca2.pem).hexdigest()

    def on_new_ca(view: dict[str, Any]) -> bool:
        return new_ca in {view["items"].get(f"{tag}:0", "") for tag in view["active"]}

    committed = {e["subject"] for e in log if e["kind"] == "device" and e["to"] == "committed"}
    assert len(committed) == DEVICES
    devices = modems["devices"]
    assert sorted(d for d in committed if not on_new_ca(devices[d])) == []
    assert sorted(d for d, view in devices.items() if not on_new_ca(view)) == []
    assert modems["ever_untrusted"] == []
    assert exited == []
