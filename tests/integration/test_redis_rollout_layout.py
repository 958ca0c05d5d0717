"""The rollout store's layout against a real redis-server (or cluster): compact per-device
records in listpack buckets, waves read in chunks, claims in the device's shard, and
rollouts stored before the records rewritten on first read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_claims import (
    DEVICE_CLAIMS,
    claim_bucket,
    claim_holders,
)
from orchestrator.adapters.redis_keys import shard_of, shard_prefix
from orchestrator.adapters.redis_rollout_codec import encode_rollout
from orchestrator.adapters.redis_rollout_plan import BUCKET_DEVICES, Layout, rollout_key
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.bootstrap import Container
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import DeviceRolloutState, DeviceTransition, sources_of
from simulator.pki import make_ca

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=99))
D = DeviceRolloutState


def _rollout(rollout_id: str, sizes: list[int]) -> Rollout:
    spec = RolloutSpec(
        kind="trust.add",
        ca_pems=(CA.pem.decode(),),
        tag=42,
        spare_tag=43,
        probe_host="probe.invalid",
        probe_port=8443,
        waves=parse_waves("10%,100%"),
    )
    return Rollout.planned(rollout_id, spec, seed="test", sizes=sizes, now=NOW)


def _move(store: RedisRollouts, rollout_id: str, devices: list[str], new: D) -> list[bool]:
    moves = [
        DeviceTransition(device_id=d, new=new, allowed=sources_of(new), cause="test")
        for d in devices
    ]
    return [r.applied for r in store.transition(rollout_id, moves, now=NOW, actor="test")]


def test_device_records_stay_in_compact_buckets(container: Container) -> None:
    """Every device's record lives in a small listpack bucket of the rollout's slot, and
    reads back its state, active tags and protocol version."""
    # given
    store = container.rollouts
    devices = [f"dev-{n:05d}" for n in range(3000)]
    store.create(
        _rollout("ro-big", [300, 2700]),
        waves=[devices[:300], devices[300:]],
        active={d: [42, 7] for d in devices},
        versions=dict.fromkeys(devices[::2], 2),
        actor="test",
    )
    # then
    layout = Layout.planned("ro-big", [300, 2700])
    assert layout.buckets == -(-3000 // BUCKET_DEVICES)
    client = container.redis
    encodings = {client.object("encoding", layout.bucket_key(b)) for b in range(layout.buckets)}
    assert encodings == {"listpack"}
    assert store.device_states("ro-big", ["dev-00001", "nope"]) == {"dev-00001": D.PENDING}
    assert store.active_tags("ro-big", ["dev-02999"]) == {"dev-02999": [42, 7]}
    assert store.protocol_versions("ro-big", devices[:2]) == {"dev-00000": 2, "dev-00001": 1}
    assert len(store.device_states("ro-big")) == 3000


def test_a_wave_is_read_in_chunks_and_pending_devices_found_without_a_set(
    container: Container,
) -> None:
    """A wave of more than one member string is read whole, each device once, and the
    devices still pending are found once others moved on."""
    # given
    store = container.rollouts
    devices = [f"dev-{n:05d}" for n in range(2500)]
    store.create(
        _rollout("ro-w", [100, 2400]),
        waves=[devices[:100], devices[100:]],
        active={d: [42] for d in devices},
        actor="test",
    )
    moved = devices[100:1600]
    # when
    assert all(_move(store, "ro-w", moved, D.SENT))
    # then
    assert store.wave_members("ro-w", 1) == sorted(devices[100:])
    chunks = list(store.scan_wave("ro-w", 1, [D.PENDING], count=400))
    found = [d for chunk in chunks for d in chunk]
    assert sorted(found) == devices[1600:]
    assert len(found) == len(set(found)), "each device once"
    assert store.devices_in("ro-w", [D.PENDING]) == devices[:100] + devices[1600:]
    assert store.devices_in("ro-w", [D.SENT]) == moved
    assert store.wave_counts("ro-w", 2) == [{"pending": 100}, {"pending": 900, "sent": 1500}]


def test_a_claim_lives_in_the_devices_shard(container: Container) -> None:
    """A device's claim is stored under its shard's hash tag, so one script per shard
    claims it on a cluster."""
    store = container.rollouts
    devices = [f"dev-{n}" for n in range(40)]
    assert store.claim("ro-1", [42], devices) == []
    for device in devices:
        assert claim_bucket(device).startswith(shard_prefix("claims", shard_of(device)))
    assert claim_holders(container.redis, devices) == dict.fromkeys(devices, "ro-1")


def test_claims_of_rollouts_stored_before_the_shards_hold_until_released(
    container: Container,
) -> None:
    """The one claims hash of rollouts stored before still holds its devices and is
    released by their end."""
    client, store = container.redis, container.rollouts
    client.hset(DEVICE_CLAIMS, mapping={"a": "ro-old"})
    assert store.claim("ro-new", [42], ["a", "b"]) == ["a"]
    assert claim_holders(client, ["a", "b"]) == {}
    store.release("ro-old", [42], ["a"])
    assert not client.exists(DEVICE_CLAIMS)
    assert store.claim("ro-new", [42], ["a", "b"]) == []


def test_a_rollout_stored_before_the_records_is_rewritten_on_first_read(
    container: Container,
) -> None:
    """A rollout stored as per-device hashes and sets reads the same after the upgrade,
    and moves on as records."""
    # given: the layout before (state, wave, active tags, version hashes, member sets)
    client, rid = container.redis, "ro-old"
    rollout = _rollout(rid, [1, 2])
    for field, value in encode_rollout(rollout).items():
        client.hset(rollout_key(rid, "meta"), field, value)
    client.hset(rollout_key(rid, "dev"), mapping={"a": "sent", "b": "pending", "c": "pending"})
    client.hset(rollout_key(rid, "wave"), mapping={"a": "0", "b": "1", "c": "1"})
    client.hset(rollout_key(rid, "active"), mapping={d: json.dumps([42]) for d in "abc"})
    client.hset(rollout_key(rid, "v"), "c", "2")
    client.sadd(rollout_key(rid, "w:0"), "a")
    client.sadd(rollout_key(rid, "w:1"), "b", "c")
    client.sadd(rollout_key(rid, "s:pending"), "b", "c")
    client.sadd(rollout_key(rid, "s:sent"), "a")
    client.hset(rollout_key(rid, "counts:0"), "sent", 1)
    client.hset(rollout_key(rid, "counts:1"), "pending", 2)
    # when
    store = RedisRollouts(client)
    states = store.device_states(rid)
    # then
    assert states == {"a": D.SENT, "b": D.PENDING, "c": D.PENDING}
    assert store.wave_members(rid, 1) == ["b", "c"]
    assert store.protocol_versions(rid, ["b", "c"]) == {"b": 1, "c": 2}
    assert store.active_tags(rid, ["a"]) == {"a": [42]}
    assert _move(store, rid, ["a"], D.RECEIVED) == [True]
    only_from_sent = DeviceTransition(
        device_id="b", new=D.RECEIVED, allowed=frozenset({D.SENT}), cause="test"
    )
    [refused] = store.transition(rid, [only_from_sent], now=NOW, actor="test")
    assert (refused.applied, refused.previous) == (False, D.PENDING)
    assert store.devices_in(rid, [D.RECEIVED, D.PENDING]) == ["a", "b", "c"]
    for name in ("dev", "wave", "active", "v", "w:0", "w:1", "s:pending"):
        assert not client.exists(rollout_key(rid, name)), name
    assert RedisRollouts(client).device_states(rid, ["a"]) == {"a": D.RECEIVED}
