"""The rollout store against a real redis-server: atomic, idempotent device transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_rollouts import RedisRollouts, Transition
from orchestrator.bootstrap import Container
from orchestrator.domain.rollout import DeviceRolloutState, RolloutSpec, may_transition, parse_waves
from orchestrator.services.rollout_engine import COMMIT_RESEND_SECONDS, RolloutDeps, _commit_healthy
from simulator.pki import make_ca

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _allowed(new: str) -> frozenset[str]:
    target = DeviceRolloutState(new)
    return frozenset(s.value for s in DeviceRolloutState if may_transition(s, target))


def _move(store: RedisRollouts, device: str, new: str) -> bool:
    [result] = store.transition(
        "ro-1",
        [Transition(device_id=device, new=new, allowed=_allowed(new), cause="test")],
        time=NOW.isoformat(),
        actor="test",
    )
    return result.applied


@pytest.fixture
def store(container: Container) -> RedisRollouts:
    """A rollout of 3 devices in two waves, all pending."""
    rollouts = container.rollouts
    rollouts.create(
        "ro-1",
        meta={"id": "ro-1", "state": "created", "sizes": "[1, 2]"},
        waves=[["a"], ["b", "c"]],
        active={"a": [42], "b": [42], "c": [42]},
        created_at=NOW,
        log_time=NOW.isoformat(),
        actor="test",
    )
    return rollouts


def test_transitions_move_wave_counts_in_the_same_step(store: RedisRollouts) -> None:
    """Counts per wave follow every applied transition and always add up to the wave size."""
    assert _move(store, "b", "sent")
    assert _move(store, "b", "staged")
    assert store.wave_counts("ro-1", 2) == [{"pending": 1}, {"pending": 1, "staged": 1}]
    assert store.devices_in("ro-1", ["staged"]) == ["b"]


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
            Transition(
                device_id="c",
                new="sent",
                allowed=frozenset({"pending"}),
                cause="stage",
                deadline=NOW.timestamp() + 60,
                step="stage",
                bundle=b"\xd2\x84bundle",
            )
        ],
        time=NOW.isoformat(),
        actor="test",
    )
    [again] = store.transition(
        "ro-1",
        [
            Transition(
                device_id="c",
                new="sent",
                allowed=frozenset({"pending"}),
                cause="stage",
                step="stage",
                bundle=b"another",
            )
        ],
        time=NOW.isoformat(),
        actor="test",
    )
    assert (result.applied, again.applied, again.previous) == (True, False, "sent")
    assert store.bundle("ro-1", "c", "stage") == b"\xd2\x84bundle"
    assert store.overdue("ro-1", NOW.timestamp() + 61) == ["c"]


def test_two_rollouts_cannot_claim_the_same_device_and_tag(store: RedisRollouts) -> None:
    """The second claim on (device, sec_tag) fails, names the devices, and keeps nothing."""
    assert store.claim("ro-1", [42, 43], ["a", "b"]) == []
    assert store.claim("ro-2", [43, 44], ["b", "x"]) == ["b"]
    assert store.claim("ro-3", [44], ["x"]) == [], "the failed claim left nothing behind"
    store.release("ro-1", [42, 43], ["a", "b"])
    assert store.claim("ro-2", [43], ["b"]) == []


def test_a_send_is_claimed_once_per_period(store: RedisRollouts) -> None:
    """Overlapping evaluations claim a device's commit once; after the period, once more."""
    t = NOW.timestamp()
    assert store.claim_sends("ro-1", "commit", ["b", "c"], now=t, every=30) == ["b", "c"]
    assert store.claim_sends("ro-1", "commit", ["b", "c"], now=t + 1, every=30) == []
    assert store.claim_sends("ro-1", "stage", ["b"], now=t + 1, every=30) == ["b"]
    assert store.claim_sends("ro-1", "commit", ["c", "b"], now=t + 31.5, every=30) == ["c", "b"]


def _spec(device_timeout: float) -> RolloutSpec:
    ca = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=99))
    return RolloutSpec(
        kind="trust.add",
        ca_pems=(ca.pem.decode(),),
        tag=42,
        spare_tag=43,
        probe_host="probe.invalid",
        probe_port=8443,
        waves=parse_waves("100%"),
        device_timeout_seconds=device_timeout,
    )


@pytest.mark.parametrize(("device_timeout", "period"), [(900, COMMIT_RESEND_SECONDS), (20, 5.0)])
def test_repeated_evaluations_send_each_healthy_device_one_commit(
    store: RedisRollouts, device_timeout: float, period: float
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
        rollouts=store,
        inventory=None,  # type: ignore[arg-type]
        signer=None,
        sequences=None,  # type: ignore[arg-type]
        publisher=None,
        tasks=Tasks(),  # type: ignore[arg-type]
    )
    spec = _spec(device_timeout)
    # when
    for seconds in (0, 0.5, 1, period - 1):
        _commit_healthy(deps, "ro-1", spec, 1, now=NOW + timedelta(seconds=seconds))
    assert sent == [("commit", ["b", "c"])]
    _commit_healthy(deps, "ro-1", spec, 1, now=NOW + timedelta(seconds=period + 0.5))
    # then
    assert sent == [("commit", ["b", "c"]), ("commit", ["b", "c"])]
