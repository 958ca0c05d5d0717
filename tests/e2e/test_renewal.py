"""The seed problem solved end to end: a CA renewal webhook drives a two-phase rotation.

A fleet trusts CA1 and reaches the broker over TLS. The CA announces a renewed server
chain under CA2 -> impact: every device at risk -> trust.add completes -> the broker
switches to the CA2 chain -> the devices that took the rollout reconnect, a control
group left out of it cannot -> certificate.activated -> trust.retire completes, and
the devices hold only CA2.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.redis_inventory import RedisInventory
from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from simulator.services import LocalService, free_port, start_mosquitto, start_redis
from tests.procs import BIN, Proc, celery_worker, certfleet, start, wait_until
from tests.tlsserver import tls_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOW = datetime.now(UTC)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "test-token-1"
FLEET, CONTROL = 40, 10


def _tls_listener(port: int, cert: IssuedCert, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert.pem)
    (directory / "key.pem").write_bytes(cert.key_pem)
    return (
        f"listener {port} 127.0.0.1\ncertfile {directory / 'cert.pem'}\n"
        f"keyfile {directory / 'key.pem'}\ntls_version tlsv1.2\n"
    )


@dataclass
class World:
    env: dict[str, str]
    redis: redis.Redis
    base: Path
    logs: Path
    api: str
    ca1: IssuedCA
    ca2: IssuedCA
    server1: IssuedCert
    server2: IssuedCert
    tls_port: int
    broker: LocalService
    procs: list[Proc]

    def webhook(
        self, event_type: str, data: dict[str, Any], *, msg_id: str | None = None
    ) -> httpx.Response:
        body = json.dumps(
            {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}
        )
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
        }
        return httpx.post(f"{self.api}/v1/webhooks/ca", content=body, headers=headers, timeout=60)

    def plan(self, plan_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.api}/v1/plans/{plan_id}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def seen_after(self, device_id: str, moment: float) -> bool:
        reported = RedisInventory(self.redis).reported_at([device_id]).get(device_id)
        return reported is not None and reported.timestamp() > moment

    def items(self, device_id: str) -> set[str]:
        held = RedisInventory(self.redis).device_credentials(device_id)
        return {f"{c.sec_tag}:{int(c.type)}" for c in (held.credentials if held else ())}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ca1 = make_ca(
        "Server CA 2025", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=30)
    )
    ca2 = make_ca(
        "Server CA 2026", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    window = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=90)}
    server1, server2 = issue_server_cert(ca1, **window), issue_server_cert(ca2, **window)
    (tmp_path / "ca1.pem").write_bytes(ca1.pem)
    redis_service = start_redis(tmp_path / "redis")
    tls_port = free_port()
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        extra_config=_tls_listener(tls_port, server1, tmp_path / "old"),
        persistent=True,
    )
    key = tmp_path / "signing.pem"
    generate_key_file(key)
    api_port = free_port()
    env = {
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_MQTT_HOST": broker.host,
        "CERTFLEET_MQTT_PORT": str(broker.port),
        "CERTFLEET_SIGNING_KEY_FILE": str(key),
        "CERTFLEET_WEBHOOK_SECRETS": SECRET,
        "CERTFLEET_API_TOKENS": TOKEN,
        "CERTFLEET_AUTO_ROLLOUT": "true",
        "CERTFLEET_ROLLOUT_WAVES": "10%,100%",
        "CERTFLEET_ROLLOUT_BAKE_SECONDS": "0",
        "CERTFLEET_ROLLOUT_DEVICE_TIMEOUT_SECONDS": "30",
        "CERTFLEET_RETIRE_SOAK_SECONDS": "2",
        "CERTFLEET_ENDPOINT_CHECK_SECONDS": "1",
        "CERTFLEET_TICK_INTERVAL_SECONDS": "1",
        "CERTFLEET_LOG_FORMAT": "json",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    client = redis.Redis(host=redis_service.host, port=redis_service.port, decode_responses=True)
    procs: list[Proc] = []
    world: World | None = None
    try:
        subprocess.run(
            certfleet("creds", "import", str(tmp_path / "ca1.pem")),
            env={**env},
            check=True,
            capture_output=True,
        )
        procs.append(start("listener", certfleet("listener"), env=env, log_dir=logs))
        wait_until(lambda: "listener_subscribed" in procs[0].log(), timeout=30, what="listener")
        procs.append(celery_worker(logs, env))
        procs.append(
            start("beat", [str(BIN / "celery"), "-A", "workers.app", "beat"], env=env, log_dir=logs)
        )
        procs.append(start("api", certfleet("api", "--port", str(api_port)), env=env, log_dir=logs))
        wait_until(lambda: _healthy(api_port), timeout=30, what="the API")
        world = World(
            env,
            client,
            tmp_path,
            logs,
            f"http://127.0.0.1:{api_port}",
            ca1,
            ca2,
            server1,
            server2,
            tls_port,
            broker,
            procs,
        )
        yield world
    finally:
        for proc in reversed(procs):
            proc.stop()
        client.close()
        # The test restarts the broker: stop the one running now, pass or fail.
        (world.broker if world is not None else broker).stop()
        redis_service.stop()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _fleet(world: World, prefix: str, count: int) -> Proc:
    proc = start(
        f"fleet-{prefix.rstrip('-')}",
        certfleet(
            "simulate",
            "--devices",
            str(count),
            "--ca",
            str(world.base / "ca1.pem"),
            "--tag",
            "42",
            "--id-prefix",
            prefix,
            "--tls",
            "--broker-port",
            str(world.tls_port),
        ),
        env=world.env,
        log_dir=world.logs,
    )
    world.procs.append(proc)
    return proc


def test_a_renewal_webhook_rotates_the_fleet_without_losing_a_device(world: World) -> None:
    """renewed -> at_risk -> trust.add -> broker switch -> control group cut off -> retire."""
    fleet = [f"dev-{n:05d}" for n in range(FLEET)]
    control = [f"ctl-{n:05d}" for n in range(CONTROL)]
    _fleet(world, "dev-", FLEET)
    wait_until(
        lambda: RedisInventory(world.redis).device_count() == FLEET, timeout=60, what="fleet on TLS"
    )

    with tls_server(world.server2.pem + world.ca2.pem, world.server2.key_pem) as (_, staging_port):
        renewed = {
            "endpoints": [f"127.0.0.1:{world.tls_port}"],
            "chain_pem": (world.server2.pem + world.ca2.pem).decode(),
            "staging_endpoint": f"127.0.0.1:{staging_port}",
        }
        accepted = world.webhook("certificate.renewed", renewed, msg_id="msg_renewed_1")
        assert accepted.status_code == 202, accepted.text
        again = world.webhook("certificate.renewed", renewed, msg_id="msg_renewed_1")
        assert (again.status_code, again.json()) == (202, accepted.json())
        plan_id = accepted.json()["plan_id"]

        impact = json.loads(
            subprocess.run(
                certfleet("impact", plan_id, "--json"),
                env=world.env,
                capture_output=True,
                check=True,
            ).stdout
        )
        assert impact["impact"]["counts"] == {"safe": 0, "at_risk": FLEET, "unknown": 0}
        assert sorted(impact["impact"]["at_risk"]) == fleet
        wait_until(
            lambda: world.plan(plan_id)["state"] == "awaiting_switch",
            timeout=180,
            what="trust.add done",
        )
    assert set(RedisInventory(world.redis).active_tags_of(fleet).values()) == {(42, 43)}

    # a control group joins after the plan: it never takes the rollout
    _fleet(world, "ctl-", CONTROL)
    wait_until(
        lambda: RedisInventory(world.redis).device_count() == FLEET + CONTROL,
        timeout=60,
        what="ctl",
    )

    # the broker switches to the renewed chain
    switched_at = time.time()
    world.broker.stop()
    world.broker = start_mosquitto(
        world.base / "mosquitto",
        port=world.broker.port,
        extra_config=_tls_listener(world.tls_port, world.server2, world.base / "new"),
        persistent=True,
    )
    wait_until(
        lambda: all(world.seen_after(d, switched_at) for d in fleet), timeout=60, what="fleet back"
    )
    time.sleep(3)
    assert not any(world.seen_after(d, switched_at) for d in control), (
        "the control group cannot connect"
    )

    activated = world.webhook(
        "certificate.activated", {"endpoints": [f"127.0.0.1:{world.tls_port}"]}
    )
    assert activated.status_code == 202, activated.text
    wait_until(
        lambda: world.plan(plan_id)["state"] == "done", timeout=180, what="trust.retire done"
    )
    plan = world.plan(plan_id)
    assert plan["retire_rollout_state"] == "completed"
    wait_until(
        lambda: all(world.items(d) == {"43:0"} for d in fleet), timeout=60, what="only CA2 left"
    )
    _metrics_moved(world)


def _metrics_moved(world: World) -> None:
    """/metrics counted the work: webhooks, bundles pushed, device transitions."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    text = httpx.get(f"{world.api}/metrics", timeout=10).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("certfleet_webhooks_total", (("outcome", "accepted"),))] >= 2
    assert samples[("certfleet_webhooks_total", (("outcome", "duplicate"),))] == 1
    assert samples[("certfleet_bundles_pushed_total", (("step", "stage"),))] >= FLEET
    assert samples[("certfleet_bundles_pushed_total", (("step", "commit"),))] >= FLEET
    assert samples[("certfleet_device_transitions_total", (("to", "committed"),))] >= 2 * FLEET
    assert samples[("certfleet_rollouts", (("state", "completed"),))] == 2
