"""An inventory stored before the shards, carried over to them by the upgrade step."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.adapters.redis_inventory_legacy import (
    delete_legacy_inventory,
    migrate_legacy_inventory,
)
from orchestrator.adapters.redis_keys import shard_of
from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiryWindow

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEGACY = "certfleet:inv:"
SAME_SHARD_AS_DEV_2 = next(f"x{n}" for n in range(1000) if shard_of(f"x{n}") == shard_of("dev-2"))


def _item(sha: str, days: int, typ: CredentialType) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=42 if typ is CredentialType.CA_CHAIN else 44,
        type=typ,
        sha256=sha * 64,
        not_after=NOW + timedelta(days=days),
        subject=f"CN={sha}",
        issuer="CN=Root",
    )


def _write_legacy(container: Container, state: DeviceState) -> None:
    """A device as the inventory stored it before the shards (one Redis, global keys)."""
    r = container.redis
    fields: dict[Any, Any] = {
        f"{c.sec_tag}:{int(c.type)}": json.dumps(
            {
                "sha256": c.sha256,
                "not_after": c.not_after.timestamp() if c.not_after else None,
                "subject": c.subject,
                "issuer": c.issuer,
            }
        )
        for c in state.credentials
    }
    fields |= {"_received": str(NOW.timestamp()), "_v": str(state.protocol_version)}
    if state.active_tags is not None:
        fields["_active"] = json.dumps(list(state.active_tags))
    if state.identity_tag is not None:
        fields["_identity"] = str(state.identity_tag)
    r.hset(f"{LEGACY}dev:{state.device_id}", mapping=fields)
    r.zadd(LEGACY + "devices", {state.device_id: state.reported_at.timestamp()})


def test_the_legacy_inventory_reads_back_from_the_shards_and_its_keys_stay_refused(
    container: Container,
) -> None:
    """Every legacy device reads back as it was; a device's newer state since is kept;
    a client key seen before the upgrade still names its first holder; the legacy keys
    go when asked."""
    old = [
        DeviceState(
            device_id=f"dev-{n}",
            reported_at=NOW - timedelta(hours=1),
            credentials=(
                _item("a", 10 + n, CredentialType.CA_CHAIN),
                _item(str(n), 300, CredentialType.CLIENT_CERT),
            ),
            active_tags=(42, 44),
            protocol_version=2,
            identity_tag=44,
        )
        for n in range(7)
    ]
    for state in old:
        _write_legacy(container, state)
    container.redis.hset(LEGACY + "keys", mapping={"k" * 64: "dev-3", "j" * 64: "dev-2"})
    inv = container.inventory
    newer = DeviceState(device_id="dev-0", reported_at=NOW, credentials=(), active_tags=(42,))
    inv.record_states([newer], received_at=NOW)
    inv.record_states(
        [DeviceState(device_id="dev-5", reported_at=NOW, credentials=())],
        received_at=NOW,
        keys=[["k" * 64]],
    )
    inv.record_states(  # a device of dev-2's shard reports dev-2's old key after the upgrade
        [DeviceState(device_id=SAME_SHARD_AS_DEV_2, reported_at=NOW, credentials=())],
        received_at=NOW,
        keys=[["j" * 64]],
    )

    result = migrate_legacy_inventory(container.redis, now=NOW)
    again = migrate_legacy_inventory(container.redis, now=NOW)

    assert (result.devices, result.client_keys) == (5, 2)
    assert again.devices == 5  # recorded again, changing nothing
    assert inv.device_credentials("dev-0") == newer
    for state in old[1:5] + old[6:]:
        assert inv.device_credentials(state.device_id) == state
    assert inv.device_credentials("dev-5").credentials == ()  # type: ignore[union-attr]
    assert inv.device_count() == 8
    assert inv.key_holders(["k" * 64, "j" * 64]) == {"k" * 64: "dev-3", "j" * 64: "dev-2"}
    window = ExpiryWindow(now=NOW, warning=timedelta(days=30))
    assert [i.device_id for i in inv.expiring_items([42], window, limit=10)] == [
        f"dev-{n}" for n in (1, 2, 3, 4, 6)
    ]
    assert delete_legacy_inventory(container.redis) == 7 + 2
    assert inv.device_count() == 8
    assert not container.redis.exists(LEGACY + "devices")
    assert not container.redis.exists(LEGACY + "dev:dev-1")
