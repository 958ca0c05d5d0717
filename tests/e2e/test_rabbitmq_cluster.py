"""Rollouts end to end on the production engines: RabbitMQ as Celery's broker, a
three-master Redis Cluster as the state store.

Debian's rabbitmq-server (`tests.rabbitmq`) carries every task over quorum queues with
publisher confirms, and the scan's result over `rpc://` (no result backend is set); the
cluster (`CERTFLEET_REDIS_CLUSTER=true`) holds the inventory, the rollouts, the claims,
beat's schedule and lock. A real worker, beat, the listener and 60 simulated devices,
with a TLS probe endpoint under CA2: a rogue CA aborts in its canary and rolls back, a
good CA completes wave by wave.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.celery_queue import QUEUES
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from simulator.pki import make_ca
from simulator.services import LocalCluster, start_mosquitto, start_redis_cluster
from tests.e2e.stack import NOW, StackSetup, prepare_stack, sizes_add_up, start_fleet
from tests.procs import Proc, certfleet, start_certfleet, wait_until
from tests.rabbitmq import LocalRabbit, rabbitmq_available, start_rabbitmq
from tests.tlsserver import tls_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not rabbitmq_available(), reason="rabbitmq-server is not installed"),
]

DEVICES = 60
WAVES = "10%,100%"
ENDED = ("completed", "completed_with_timeouts", "rolled_back")


@dataclass
class EngineStack:
    """The running stack on RabbitMQ and a Redis Cluster."""

    rabbit: LocalRabbit
    cluster: LocalCluster
    setup: StackSetup
    env: dict[str, str]
    probe_port: int
    container: Container
    """Adapters wired by bootstrap in this process, on the cluster as the CLI's are."""
    procs: dict[str, Proc]

    def run(self, *args: str) -> str:
        """A `certfleet` command's output; it must succeed."""
        done = subprocess.run(
            certfleet(*args), env=self.env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    def create(self, ca: Path, name: str) -> str:
        """A trust.add of `ca` into sec_tag 43, waves 10%,100%, auto advance."""
        out = self.run(
            *("rollout", "create", "--kind", "trust.add", "--ca", str(ca), "--tag", "42"),
            *("--spare-tag", "43", "--probe", f"127.0.0.1:{self.probe_port}"),
            *("--waves", WAVES, "--bake", "0", "--advance", "auto"),
            *("--max-failure", "10%", "--min-sample", "5", "--device-timeout", "60"),
            *("--name", name, "--json"),
        )
        return str(json.loads(out)["id"])

    def wait_final(self, rollout_id: str, timeout: float = 240) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            status: dict[str, Any] = json.loads(self.run("rollout", "status", rollout_id, "--json"))
            return status if status["state"] in ENDED else None

        return wait_until(ended, timeout=timeout, interval=1.0, what=f"{rollout_id} to end")

    def exited(self) -> list[str]:
        return [
            f"{role} (exit {proc.process.returncode})"
            for role, proc in self.procs.items()
            if proc.process.poll() is not None
        ]


@contextlib.contextmanager
def engine_stack(base: Path) -> Iterator[EngineStack]:
    """Everything running, the fleet reported to the cluster; a probe endpoint under CA2."""
    rabbit = start_rabbitmq(base / "rabbitmq")
    cluster: LocalCluster | None = None
    mqtt = None
    procs: dict[str, Proc] = {}
    container: Container | None = None
    try:
        cluster = start_redis_cluster(base / "cluster", masters=3, replicas=0)
        mqtt = start_mosquitto(base / "mosquitto")
        setup = prepare_stack(base, cluster.nodes[0], mqtt)
        env = {
            **setup.env,
            "CERTFLEET_REDIS_CLUSTER": "true",
            "CERTFLEET_BROKER_URL": rabbit.url,
        }
        settings = Settings(
            redis_url=env["CERTFLEET_REDIS_URL"],
            redis_cluster=True,
            broker_url=rabbit.url,
            mqtt_host=mqtt.host,
            mqtt_port=mqtt.port,
            signing_key_file=Path(env["CERTFLEET_SIGNING_KEY_FILE"]),
        )
        container = bootstrap(settings, logging=False)
        logs = setup.logs
        procs.update(start_certfleet(env, logs))
        procs["fleet"] = start_fleet(env, base, logs, "dev-", DEVICES, faults=())
        inventory = container.inventory
        wait_until(
            lambda: inventory.device_count() == DEVICES, timeout=90, what="the fleet reported"
        )
        with tls_server(setup.server.pem, setup.server.key_pem) as (_, port):
            yield EngineStack(rabbit, cluster, setup, env, port, container, procs)
    finally:
        for proc in reversed(procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.stop()
        if container is not None:
            container.close()
        if mqtt is not None:
            mqtt.stop()
        if cluster is not None:
            cluster.stop()
        rabbit.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStack]:
    """60 healthy devices on CA1 in sec_tag 42, over RabbitMQ and a Redis Cluster."""
    with engine_stack(tmp_path_factory.mktemp("rabbitmq-cluster")) as s:
        yield s


def _active(stack: EngineStack, device_ids: list[str]) -> dict[str, tuple[int, ...] | None]:
    return stack.container.inventory.active_tags_of(device_ids)


def test_a_rogue_ca_aborts_in_its_canary_and_rolls_back(stack: EngineStack) -> None:
    """The probe fails under the rogue CA: the canary wave fails, the rollout is rolled
    back, no later wave is sent, and the canary devices trust sec_tag 42 only again."""
    # given a CA the probe endpoint's certificate does not chain to
    rogue = make_ca(
        "Not the server's CA",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=99),
    )
    (stack.setup.logs.parent / "rogue.pem").write_bytes(rogue.pem)

    # when it is rolled out
    rollout_id = stack.create(stack.setup.logs.parent / "rogue.pem", "rogue-ca")
    status = stack.wait_final(rollout_id)

    # then it aborts at the gate of its canary and rolls it back
    assert status["state"] == "rolled_back", status
    assert status["abort_reason"].startswith("gate:"), status["abort_reason"]
    canary, rest = status["waves"][0], status["waves"][1:]
    assert canary["state"] == "failed"
    assert canary["counts"]["rolled_back"] + canary["counts"]["health_failed"] == canary["size"]
    assert all(w["state"] == "pending" for w in rest)
    sizes_add_up(status)
    every = [f"dev-{n:05d}" for n in range(DEVICES)]
    wait_until(
        lambda: set(_active(stack, every).values()) == {(42,)},
        timeout=60,
        what="every device trusting sec_tag 42 only",
    )
    assert stack.exited() == []


def test_a_good_ca_completes_wave_by_wave(stack: EngineStack) -> None:
    """CA2 goes out in two waves with auto advance: completed, every device committed and
    reporting [42, 43]; the tasks went over RabbitMQ's quorum queues."""
    # when CA2, the probe endpoint's, is rolled out
    rollout_id = stack.create(stack.setup.logs.parent / "ca2.pem", "good-ca")
    status = stack.wait_final(rollout_id, timeout=300)

    # then every wave passed and every device committed
    assert status["state"] == "completed", status
    assert [w["size"] for w in status["waves"]] == [6, 54]
    assert all(w["state"] == "passed" for w in status["waves"])
    assert status["totals"]["committed"] == DEVICES
    sizes_add_up(status)
    every = [f"dev-{n:05d}" for n in range(DEVICES)]
    wait_until(
        lambda: set(_active(stack, every).values()) == {(42, 43)},
        timeout=60,
        what="every device reporting [42, 43]",
    )

    # and the work went through RabbitMQ: its queues are quorum queues, and the scan's
    # result came back over it (no result backend is configured)
    types = stack.rabbit.queue_types()
    assert {name: types.get(name) for name in QUEUES} == dict.fromkeys(QUEUES, "quorum")
    scan = json.loads(stack.run("fleet", "scan", "--json"))
    assert scan["devices"] == DEVICES
    assert stack.exited() == []
