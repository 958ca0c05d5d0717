"""The inventory's shards against the session's store (a Redis, or a three-master cluster
with `CERTFLEET_TEST_REDIS=cluster`): a batch over every shard lands in each device's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_keys import SHARD_TAGS, SHARDS, shard_of
from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiryWindow
from orchestrator.domain.reports import DeviceReport

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW = ExpiryWindow(now=NOW, warning=timedelta(days=30))


def _ids_per_shard(per_shard: int) -> list[str]:
    """Device ids, `per_shard` of them in every shard."""
    found: dict[int, list[str]] = {s: [] for s in range(SHARDS)}
    n = 0
    while any(len(ids) < per_shard for ids in found.values()):
        device_id = f"dev-{n}"
        if len(found[shard_of(device_id)]) < per_shard:
            found[shard_of(device_id)].append(device_id)
        n += 1
    return [d for s in range(SHARDS) for d in found[s]]


def _ca(tag: int, digest: str, days: float, subject: str) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256=digest,
        not_after=NOW + timedelta(days=days),
        subject=subject,
        issuer="CN=Root",
    )


def test_a_batch_spanning_every_shard_lands_in_each_devices_shard(container: Container) -> None:
    """One call over devices of all 16 shards: each reads back whole from its own shard,
    and every fleet-wide read sums or merges the shards exactly."""
    inv, lib = container.inventory, container.library
    ids = _ids_per_shard(3)
    states = [
        DeviceState(
            device_id=d,
            reported_at=NOW,
            credentials=(_ca(42, f"{n % 4:064x}", 2 * n - 20, f"CN=CA {n % 4}"),),
            active_tags=(42,),
            protocol_version=2,
        )
        for n, d in enumerate(ids)
    ]
    pems = [{f"{n:064x}": f"PEM {d}"} for n, d in enumerate(ids)]
    keys = [[f"{n + 1000:064x}"] for n in range(len(ids))]

    applied = inv.record_states(states, received_at=NOW, pems=pems, keys=keys)
    inv.record_reports(
        [
            DeviceReport(
                device_id=d,
                rollout_id="ro-1",
                seq=1,
                op=None,
                phase="staged",
                reason="ok",
                detail="",
                time=NOW,
                active_tags=(42,),
            )
            for d in ids
        ]
    )

    assert applied == len(ids) == 3 * SHARDS
    assert inv.device_count() == len(ids)
    assert sorted(inv.device_ids()) == sorted(ids)
    for state in states:
        assert inv.device_credentials(state.device_id) == state
        stream = inv.report_stream_key(state.device_id)
        assert f"{{{SHARD_TAGS[shard_of(state.device_id)]}}}" in stream
        assert [r.phase for r in inv.recent_reports(state.device_id, limit=5)] == ["staged"]
    assert inv.report_phase_counts() == {"staged": len(ids)}
    assert inv.protocol_versions(ids) == dict.fromkeys(ids, 2)
    assert inv.active_ca_digests(ids[:5]) == {
        d: {42: f"{n % 4:064x}"} for n, d in enumerate(ids[:5])
    }
    assert lib.known(list(pems[7])) == set(pems[7])
    assert lib.get(next(iter(pems[7]))) == f"PEM {ids[7]}"
    assert inv.key_holders([keys[9][0]]) == {keys[9][0]: ids[9]}
    assert inv.ca_digest_counts([42]) == {42: {f"{k:064x}": 12 for k in range(4)}}
    expected = sorted((2 * n - 20, d) for n, d in enumerate(ids) if 2 * n - 20 <= 30)
    listed = inv.expiring_items([42], WINDOW, limit=len(ids))
    assert [(i.device_id, i.subject) for i in listed] == [
        (d, f"CN=CA {(days + 20) // 2 % 4}") for days, d in expected
    ]
    assert inv.expiry_counts([42], WINDOW) == {42: (10, 16, len(ids) - 26)}


def test_the_expiring_list_is_exact_when_one_shard_holds_most_of_it(
    container: Container,
) -> None:
    """A shard with far more than its even share of the list is read page after page:
    the merged list is still the soonest `limit`, in order."""
    inv = container.inventory
    crowded = [d for d in (f"x{n}" for n in range(2000)) if shard_of(d) == 0][:60]
    others = _ids_per_shard(2)
    states = [
        DeviceState(device_id=d, reported_at=NOW, credentials=(_ca(7, "a" * 64, n / 10, "CN=X"),))
        for n, d in enumerate(crowded)
    ] + [
        DeviceState(device_id=d, reported_at=NOW, credentials=(_ca(7, "b" * 64, 3 + n, "CN=Y"),))
        for n, d in enumerate(others)
    ]
    inv.record_states(states, received_at=NOW)
    soonest = sorted(states, key=lambda s: (s.credentials[0].not_after, s.device_id))

    listed = inv.expiring_items([7], WINDOW, limit=50)

    assert [i.device_id for i in listed] == [s.device_id for s in soonest[:50]]
    until = NOW + timedelta(days=30)
    assert len(inv.expiring_items([7], WINDOW, limit=1000)) == sum(
        1 for s in states if (s.credentials[0].not_after or until) <= until
    )
