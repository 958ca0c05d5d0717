"""`certfleet fleet migrate`: an inventory stored before the shards, carried over by the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from orchestrator.bootstrap import Container
from orchestrator.cli.main import app
from tests.conftest import CLUSTER

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CLUSTER, reason="an inventory of before the shards lived on one Redis"),
]

LEGACY = "certfleet:inv:"
SHA = "ab" * 32


def test_migrate_carries_devices_over_then_deletes_the_legacy_keys(container: Container) -> None:
    r = container.redis
    reported = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    item = {"sha256": SHA, "not_after": reported + 86400 * 40, "subject": "CN=CA", "issuer": "CN=R"}
    for device in ("dev-1", "dev-2"):
        r.hset(f"{LEGACY}dev:{device}", mapping={"42:0": json.dumps(item), "_v": "2"})
        r.zadd(LEGACY + "devices", {device: reported})
    r.hset(LEGACY + "keys", "cd" * 32, "dev-1")
    assert container.inventory.device_count() == 0

    result = CliRunner().invoke(app, ["fleet", "migrate", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "devices": 2,
        "client_keys": 1,
        "legacy_keys_deleted": None,
    }
    assert container.inventory.device_count() == 2
    state = container.inventory.device_credentials("dev-2")
    assert state is not None
    assert [(c.sec_tag, c.sha256) for c in state.credentials] == [(42, SHA)]
    assert r.exists(LEGACY + "devices")

    again = CliRunner().invoke(app, ["fleet", "migrate", "--delete-legacy"])
    assert again.exit_code == 0, again.output
    assert "Carried over 2 devices and 1 client keys." in again.output
    assert "Deleted 4 legacy keys." in again.output
    assert not r.exists(LEGACY + "devices", LEGACY + "dev:dev-1", LEGACY + "keys")
    assert container.inventory.device_count() == 2
