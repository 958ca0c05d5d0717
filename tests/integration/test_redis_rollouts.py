"""The rollout store against a real redis-server: atomic, idempotent device transitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_claims import claim_holders, legacy_claims_key
from orchestrator.adapters.redis_keys import SHARDS, by_shard
from orchestrator.adapters.redis_rollout_plan import rollout_key
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.bootstrap import Container
from orchestrator.domain.rollout import RolloutSpec, parse_waves, parse_window
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import AuditEntry, Change, Expect, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
    WaveState,
    sources_of,
)
from orchestrator.ports import RolloutStore
from orchestrator.services.rollout import COMMIT_RESEND_SECONDS, RolloutDeps, commit_healthy
from simulator.pki import make_ca
from tests.fake_rollouts import FakeRollouts

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=99))
D = DeviceRolloutState
R = RolloutState
W = WaveState


def _allowed(new: str) -> frozenset[DeviceRolloutState]:
    return sources_of(DeviceRolloutState(new))


def _move(store: RedisRollouts, device: str, new: str) -> bool:
    [result] = store.transition(
        "ro-1",
        [DeviceTransition(device_id=device, new=D(new), allowed=_allowed(new), cause="test")],
        now=NOW,
        actor="test",
    )
    return result.applied


def _spec(device_timeout: float) -> RolloutSpec:
    return RolloutSpec(
        kind="trust.add",
        ca_pems=(CA.pem.decode(),),
        tag=42,
        spare_tag=43,
        probe_host="probe.invalid",
        probe_port=8443,
        waves=parse_waves("100%"),
        device_timeout_seconds=device_timeout,
    )


@pytest.fixture
def store(container: Container) -> RedisRollouts:
    """A rollout of 3 devices in two waves, all pending."""
    rollouts = container.rollouts
    rollouts.create(
        Rollout.planned("ro-1", _spec(900), seed="test", sizes=[1, 2], now=NOW),
        waves=[["a"], ["b", "c"]],
        active={"a": [42], "b": [42], "c": [42]},
        actor="test",
    )
    return rollouts


def test_transitions_move_wave_counts_in_the_same_step(store: RedisRollouts) -> None:
    """Counts per wave follow every applied transition and always add up to the wave size."""
    assert _move(store, "b", "sent")
    assert _move(store, "b", "staged")
    assert store.wave_counts("ro-1", 2) == [{"pending": 1}, {"pending": 1, "staged": 1}]
    assert store.devices_in("ro-1", [D.STAGED]) == ["b"]


def test_late_and_duplicate_reports_change_nothing(store: RedisRollouts) -> None:
    """After committed, a late `staged` or a second `committed` is refused and uncounted."""
    for state in ("sent", "received", "staged", "health_ok", "committed"):
        assert _move(store, "a", state)
    assert not _move(store, "a", "staged")
    assert not _move(store, "a", "committed")
    assert not _move(store, "a", "health_failed")
    assert store.device_states("ro-1", ["a"]) == {"a": "committed"}
    assert store.wave_counts("ro-1", 1) == [{"committed": 1}]
    moves = [e for e in store.log("ro-1") if e["kind"] == "device"]
    assert [e["to"] for e in moves] == ["sent", "received", "staged", "health_ok", "committed"]


def test_a_step_bundle_is_stored_with_its_transition(store: RedisRollouts) -> None:
    """The bundle of a step is kept atomically with pending -> sent, for identical re-sends."""
    [result] = store.transition(
        "ro-1",
        [
            DeviceTransition(
                device_id="c",
                new=D.SENT,
                allowed=frozenset({D.PENDING}),
                cause="stage",
                deadline=NOW.timestamp() + 60,
                step=PushStep.STAGE,
                bundle=b"\xd2\x84bundle",
            )
        ],
        now=NOW,
        actor="test",
    )
    [again] = store.transition(
        "ro-1",
        [
            DeviceTransition(
                device_id="c",
                new=D.SENT,
                allowed=frozenset({D.PENDING}),
                cause="stage",
                step=PushStep.STAGE,
                bundle=b"another",
            )
        ],
        now=NOW,
        actor="test",
    )
    assert (result.applied, again.applied, again.previous) == (True, False, "sent")
    assert store.bundle("ro-1", "c", PushStep.STAGE) == b"\xd2\x84bundle"
    assert store.overdue("ro-1", NOW.timestamp() + 61) == ["c"]


def test_two_rollouts_cannot_claim_the_same_device(store: RedisRollouts) -> None:
    """Claims are per device: a second claim fails on other tags too, names the devices,
    and keeps nothing."""
    assert store.claim("ro-1", [42, 43], ["a", "b"]) == []
    assert store.claim("ro-2", [50, 51], ["b", "x"]) == ["b"]
    assert store.claim("ro-3", [44], ["x"]) == [], "the failed claim left nothing behind"
    store.release("ro-1", [42, 43], ["a", "b"])
    assert store.claim("ro-2", [43], ["b"]) == []


def test_a_claim_that_fails_in_a_later_chunk_leaves_no_chunk_claimed(
    store: RedisRollouts, container: Container
) -> None:
    """Devices are claimed a chunk at a time; a conflict in the last releases the first."""
    many = [f"d{n:05d}" for n in range(2500)]
    assert store.claim("ro-1", [42, 43], [many[-1]]) == []
    assert store.claim("ro-2", [42, 43], many) == [many[-1]]
    assert claim_holders(container.redis, many) == {many[-1]: "ro-1"}, "only ro-1's is left"
    assert store.claim("ro-3", [42, 43], many[:-1]) == []


def test_a_conflict_in_a_later_shard_releases_the_earlier_shards(
    store: RedisRollouts, container: Container
) -> None:
    """Each shard is claimed by its own script; a conflict in the last shard claimed
    releases what every earlier shard took, so nothing stays claimed."""
    # given: one device of every shard, and another rollout holding a device of the last
    devices = [f"dev-{n}" for n in range(200)]
    shards = by_shard(devices)
    assert len(shards) == SHARDS
    last = list(shards.values())[-1][0]
    assert store.claim("ro-1", [42, 43], [last]) == []
    # when
    conflicts = store.claim("ro-2", [42, 43], devices)
    # then
    assert conflicts == [last]
    assert claim_holders(container.redis, devices) == {last: "ro-1"}, "nothing of ro-2 kept"
    assert store.claim("ro-3", [42, 43], [d for d in devices if d != last]) == []


def test_claims_of_a_claim_that_died_between_shards_are_taken_over(
    store: RedisRollouts, container: Container
) -> None:
    """A claim that died after its first shards left claims held by a rollout never
    stored; once its claiming mark is gone they are stale and a new claim takes them,
    while the claims of a stored rollout still hold."""
    # given: ro-dead claimed its devices, then died before storing the rollout
    client = container.redis
    assert store.claim("ro-dead", [42, 43], ["x", "y"]) == []
    assert store.claim("ro-next", [42, 43], ["x", "b"]) == ["x"], "still being claimed"
    store.claim("ro-1", [42, 43], ["b"])
    # when: its claiming mark expires
    client.delete(rollout_key("ro-dead", "claiming"))
    # then
    assert store.claim("ro-next", [42, 43], ["x", "y", "b"]) == ["b"], "ro-1 is stored"
    assert store.claim("ro-next", [42, 43], ["x", "y"]) == []
    assert claim_holders(client, ["x", "y", "b"]) == {"x": "ro-next", "y": "ro-next", "b": "ro-1"}
    store.release("ro-dead", [42, 43], ["x", "y"])
    assert claim_holders(client, ["x", "y"]) == {"x": "ro-next", "y": "ro-next"}


def test_per_tag_claims_of_a_stored_rollout_still_hold_its_devices(
    store: RedisRollouts, container: Container
) -> None:
    """A rollout stored with per-(device, sec_tag) claims keeps its devices until it ends,
    whatever tags a new rollout changes; its end releases them."""
    client = container.redis
    client.hset(legacy_claims_key(42), mapping={"a": "ro-old", "b": "ro-old"})
    client.hset(legacy_claims_key(43), mapping={"a": "ro-old", "b": "ro-old"})
    assert store.claim("ro-new", [50, 51], ["a", "c"]) == ["a"]
    assert claim_holders(client, ["a", "c"]) == {}, "nothing kept on a conflict"
    store.release("ro-old", [42, 43], ["a", "b"])
    assert not client.exists(legacy_claims_key(42))
    assert not client.exists(legacy_claims_key(43))
    assert store.claim("ro-new", [50, 51], ["a", "c"]) == []


def test_a_send_is_claimed_once_per_period(store: RedisRollouts) -> None:
    """Overlapping evaluations claim a device's commit once; after the period, once more."""
    t = NOW.timestamp()
    commit, stage = PushStep.COMMIT, PushStep.STAGE
    assert store.claim_sends("ro-1", commit, ["b", "c"], now=t, every=30) == ["b", "c"]
    assert store.claim_sends("ro-1", commit, ["b", "c"], now=t + 1, every=30) == []
    assert store.claim_sends("ro-1", stage, ["b"], now=t + 1, every=30) == ["b"]
    assert store.claim_sends("ro-1", commit, ["c", "b"], now=t + 31.5, every=30) == ["c", "b"]
    assert store.sent_since("ro-1", commit, t + 31.5) == {"b", "c"}
    assert store.sent_since("ro-1", stage, t) == {"b"}
    assert store.sent_since("ro-1", stage, t + 2) == set()


@pytest.mark.parametrize(("device_timeout", "period"), [(900, COMMIT_RESEND_SECONDS), (20, 5.0)])
def test_repeated_evaluations_send_each_healthy_device_one_commit(
    container: Container, store: RedisRollouts, device_timeout: float, period: float
) -> None:
    """The evaluator runs every debounce and beat tick; the commit goes once per resend period,
    which is short enough to come again well before a short device timeout."""
    # given
    for state in ("sent", "received", "staged", "health_ok"):
        assert _move(store, "b", state)
        assert _move(store, "c", state)
    sent: list[tuple[str, list[str]]] = []

    class Tasks:
        def push_batch(
            self, rollout_id: str, wave: int, ids: list[str], step: str, **_: object
        ) -> None:
            sent.append((step, list(ids)))

    deps = RolloutDeps(
        store=store,
        inventory=container.inventory,
        tasks=Tasks(),  # type: ignore[arg-type]
        metrics=container.metrics,
    )
    stored = store.get("ro-1")
    assert stored is not None
    rollout = replace(stored, spec=_spec(device_timeout))
    # when
    for seconds in (0, 0.5, 1, period - 1):
        commit_healthy(deps, rollout, 1, now=NOW + timedelta(seconds=seconds))
    assert sent == [("commit", ["b", "c"])]
    commit_healthy(deps, rollout, 1, now=NOW + timedelta(seconds=period + 0.5))
    # then
    assert sent == [("commit", ["b", "c"]), ("commit", ["b", "c"])]


# -- the aggregate: the Redis codec and guard, step for step as the in-memory store --------


def _planned(rollout_id: str) -> Rollout:
    """A manual rollout in three waves, with a window and a push rate (every spec field set)."""
    spec = replace(
        _spec(300),
        waves=parse_waves("1,50%,100%"),
        advance="manual",
        bake_seconds=12.5,
        push_rate=0.1 + 0.2,
        window=parse_window("0 2 * * *|4h"),
        name="q4 rotation",
    )
    return Rollout.planned(rollout_id, spec, seed="s33d", sizes=[1, 2, 3], now=NOW)


def _created(store: RolloutStore, rollout: Rollout) -> None:
    devices = [["w0-a"], ["w1-a", "w1-b"], ["w2-a", "w2-b", "w2-c"]]
    active = {d: [42] for wave in devices for d in wave}
    store.create(rollout, waves=devices, active=active, actor="test")


def _entry(cause: str) -> AuditEntry:
    return AuditEntry(
        time=NOW, actor="test", kind="rollout", subject="ro-9", old="", new="", cause=cause
    )


DUE = NOW.timestamp() + 1 / 3
"""A due time whose float has no short decimal form."""
GUARDED: list[tuple[str, Change]] = [
    # state
    ("state refused", Change(state=R.RUNNING, expect=Expect(state=R.PAUSED))),
    ("state", Change(state=R.RUNNING, expect=Expect(state=R.CREATED))),
    # wave state
    (
        "wave refused",
        Change(waves={0: WaveChange(state=W.BAKING)}, expect=Expect(wave=(0, W.RUNNING))),
    ),
    (
        "other wave refused",
        Change(waves={0: WaveChange(state=W.RUNNING)}, expect=Expect(wave=(1, W.RUNNING))),
    ),
    (
        "wave",
        Change(
            waves={0: WaveChange(state=W.RUNNING, started_at=NOW)},
            expect=Expect(wave=(0, W.PENDING)),
        ),
    ),
    # awaiting_approval: never written reads as False
    ("approval refused", Change(awaiting_approval=True, expect=Expect(awaiting_approval=True))),
    ("approval", Change(awaiting_approval=True, expect=Expect(awaiting_approval=False))),
    ("approved refused", Change(awaiting_approval=False, expect=Expect(awaiting_approval=False))),
    ("approved", Change(awaiting_approval=False, expect=Expect(awaiting_approval=True))),
    # dispatched_until: the re-dispatch race
    (
        "undispatched refused",
        Change(
            waves={0: WaveChange(dispatched_until=DUE)}, expect=Expect(dispatched_until=(0, DUE))
        ),
    ),
    ("dispatched", Change(waves={0: WaveChange(dispatched_until=DUE)})),
    (
        "due refused",
        Change(
            waves={0: WaveChange(dispatched_until=DUE + 60)},
            expect=Expect(dispatched_until=(0, DUE + 1e-6)),
        ),
    ),
    (
        "other wave due refused",
        Change(
            waves={1: WaveChange(dispatched_until=DUE + 60)},
            expect=Expect(dispatched_until=(1, DUE)),
        ),
    ),
    (
        "redispatched",
        Change(
            waves={0: WaveChange(dispatched_until=DUE + 60)},
            expect=Expect(dispatched_until=(0, DUE)),
        ),
    ),
    (
        "redispatched again refused",
        Change(
            waves={0: WaveChange(dispatched_until=DUE + 120)},
            expect=Expect(dispatched_until=(0, DUE)),
        ),
    ),
    # every part at once: one part off refuses the whole change
    (
        "all but one refused",
        Change(
            state=R.PAUSED,
            expect=Expect(
                state=R.RUNNING,
                wave=(0, W.RUNNING),
                awaiting_approval=False,
                dispatched_until=(0, DUE),
            ),
        ),
    ),
    (
        "all",
        Change(
            state=R.PAUSED,
            expect=Expect(
                state=R.RUNNING,
                wave=(0, W.RUNNING),
                awaiting_approval=False,
                dispatched_until=(0, DUE + 60),
            ),
        ),
    ),
]
"""Changes in order, each named for what it must do: a name ending in `refused` must not apply."""


def _apply_guarded(store: RolloutStore) -> tuple[list[bool], list[Rollout | None], list[str]]:
    """Each change of GUARDED in turn: whether it applied, the rollout after, the log's causes."""
    _created(store, _planned("ro-9"))
    applied, after = [], []
    for name, change in GUARDED:
        applied.append(store.change("ro-9", replace(change, entries=(_entry(name),))))
        after.append(store.get("ro-9"))
    return applied, after, [e["cause"] for e in store.log("ro-9")]


def test_a_change_applies_only_while_each_part_of_its_expect_holds(
    container: Container,
) -> None:
    """State, wave state, awaiting_approval and dispatched_until each refuse a change (and its
    log entries) when they differ, exactly as the in-memory store does."""
    # given the Redis store and the in-memory one, each with the same planned rollout
    # when the same guarded changes are written to each
    applied, after, causes = _apply_guarded(container.rollouts)
    fake_applied, fake_after, fake_causes = _apply_guarded(FakeRollouts())
    # then a change applies exactly when its guard holds, and nothing of a refused one is kept
    assert applied == [not name.endswith("refused") for name, _ in GUARDED]
    assert causes == ["created", *(name for name, _ in GUARDED if not name.endswith("refused"))]
    assert after[-1] is not None
    assert (after[-1].state, after[-1].waves[0].state) == (R.PAUSED, W.RUNNING)
    assert after[-1].waves[0].dispatched_until == DUE + 60
    # and the Redis store agrees with the in-memory one at every step
    assert (applied, after, causes) == (fake_applied, fake_after, fake_causes)


@pytest.mark.parametrize("unconfirmed", [(), ("w1-b", "w2-c")])
def test_get_reads_back_exactly_what_create_and_change_wrote(
    container: Container, unconfirmed: tuple[str, ...]
) -> None:
    """A rollout goes through the meta hash and back unchanged: spec, times, floats, lists."""
    # given a planned rollout, stored
    store, fake = container.rollouts, FakeRollouts()
    expected = _planned("ro-9")
    _created(store, expected)
    _created(fake, expected)
    assert store.get("ro-9") == expected
    # when it is changed field by field, through every state a rollout may stand in
    changes = [
        Change(
            state=R.RUNNING,
            current=1,
            awaiting_approval=True,
            waves={
                0: WaveChange(
                    state=W.PASSED,
                    started_at=NOW + timedelta(microseconds=123_457),
                    bake_until=NOW.timestamp() + 12.5 + 1 / 7,
                    dispatched_until=DUE,
                )
            },
        ),
        Change(
            awaiting_approval=False,
            waves={1: WaveChange(state=W.RUNNING, started_at=NOW + timedelta(hours=1))},
        ),
        Change(
            state=R.ROLLING_BACK,
            abort_reason="gate: 3 failures over a budget of 1.2 <&>",
            rollback_deadline=NOW.timestamp() + 300.000_001,
            waves={1: WaveChange(state=W.FAILED, dispatched_until=1e-7)},
        ),
        Change(
            state=R.ROLLED_BACK,
            unconfirmed=unconfirmed,
            finished_at=NOW + timedelta(seconds=1.5),
        ),
    ]
    for change in changes:
        assert store.change("ro-9", change)
        assert fake.change("ro-9", change)
        expected = expected.applied(change)
        # then each read gives back the rollout as changed, as the in-memory store holds it
        assert store.get("ro-9") == expected
        assert fake.get("ro-9") == expected
    assert expected.unconfirmed == unconfirmed
    assert expected.waves[0].bake_until == NOW.timestamp() + 12.5 + 1 / 7


def test_each_devices_protocol_version_is_stored_with_the_plan(container: Container) -> None:
    """The versions given at create are read back per device; one left out reads as v1,
    and so does every device of a rollout stored before versions were."""
    rollouts = container.rollouts
    rollouts.create(
        Rollout.planned("ro-v", _spec(900), seed="test", sizes=[3], now=NOW),
        waves=[["a", "b", "c"]],
        active={"a": [42], "b": [42], "c": [42]},
        versions={"a": 2, "b": 1},
        actor="test",
    )
    assert rollouts.protocol_versions("ro-v", ["a", "b", "c"]) == {"a": 2, "b": 1, "c": 1}
    assert rollouts.protocol_versions("ro-1", ["a"]) == {"a": 1}
