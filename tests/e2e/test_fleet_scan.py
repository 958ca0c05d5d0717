"""The foundation end to end: simulated fleet -> MQTT -> listener -> Redis -> Celery scan -> CLI."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.config import Settings
from simulator.pki import make_ca
from tests.procs import celery_worker, certfleet, start, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _write_ca(path: Path, name: str, not_after: datetime) -> Path:
    ca = make_ca(name, not_before=datetime.now(UTC) - timedelta(days=400), not_after=not_after)
    path.write_bytes(ca.pem)
    return path


def test_mixed_fleet_scan_reports_exact_classes(
    service_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    """150 healthy, 30 expiring in 10 days, 20 expired -> status reports exactly 150/30/20."""
    now = datetime.now(UTC)
    healthy = _write_ca(tmp_path / "healthy.pem", "Healthy CA", now + timedelta(days=365))
    expiring = _write_ca(tmp_path / "expiring.pem", "Expiring CA", now + timedelta(days=10))
    expired = _write_ca(tmp_path / "expired.pem", "Expired CA", now - timedelta(days=3))
    imported = subprocess.run(
        certfleet("creds", "import", str(healthy), str(expiring), str(expired), "--json"),
        capture_output=True,
        check=True,
    )
    assert len(json.loads(imported.stdout)) == 3

    worker = celery_worker(log_dir, service_env)
    listener = start("listener", certfleet("listener"), env=service_env, log_dir=log_dir)
    # devices report on connect: the listener must be subscribed before they come
    wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="listener")
    fleets = [
        start(
            f"sim-{prefix}",
            certfleet(
                "simulate",
                "--devices",
                str(n),
                "--ca",
                str(pem),
                "--tag",
                "42",
                "--id-prefix",
                prefix,
            ),
            env=service_env,
            log_dir=log_dir,
        )
        for prefix, n, pem in (
            ("ok-", 150, healthy),
            ("soon-", 30, expiring),
            ("old-", 20, expired),
        )
    ]
    try:
        r = redis.Redis.from_url(Settings().redis_url)
        wait_until(
            lambda: RedisInventory(r).device_count() == 200,
            timeout=60,
            what="200 devices recorded",
        )
        scan = subprocess.run(
            certfleet("fleet", "scan", "--json"), capture_output=True, check=True, timeout=120
        )
        assert json.loads(scan.stdout)["by_tag"]["42"]["expired"] == 20

        status = json.loads(
            subprocess.run(
                certfleet("fleet", "status", "--json"), capture_output=True, check=True
            ).stdout
        )
    finally:
        for proc in (*fleets, listener, worker):
            proc.stop()

    assert status["devices"] == 200
    assert status["by_tag"] == {"42": {"ok": 150, "expiring": 30, "expired": 20, "unknown": 0}}
    listed = status["expiring"]
    assert len(listed) == 50
    assert {item["device_id"][: item["device_id"].index("-") + 1] for item in listed} == {
        "soon-",
        "old-",
    }
    not_afters = [item["not_after"] for item in listed]
    assert not_afters == sorted(not_afters), "soonest first"
    assert listed[0]["device_id"].startswith("old-")
    assert all(item["sec_tag"] == 42 for item in listed)
    assert {item["subject"] for item in listed} == {
        "CN=Expiring CA,O=certfleet simulation",
        "CN=Expired CA,O=certfleet simulation",
    }
    assert all(proc.process.returncode == 0 for proc in fleets), (
        "simulators exit cleanly on SIGTERM"
    )
