"""Beat's identity rotation planning against the in-memory inventory and rollout store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout_states import RolloutState
from orchestrator.services.identity.plan import (
    IdentityPlanDeps,
    held_devices,
    plan_identity_rotations,
)
from orchestrator.services.renewals import RenewalPolicy
from orchestrator.services.rollout import RolloutDeps
from tests.fake_rollouts import FakeMetrics, FakeRollouts, RecordingTasks
from tests.fakes import FakeInventory
from tests.unit.builders import NOW, credential

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)
PROBE = ("127.0.0.1", 8884)


def _device(
    device_id: str,
    tag: int | None,
    days: float,
    *,
    cert_tag: int | None = None,
    version: int = 2,
) -> DeviceState:
    """A v2 device with a CA in 42 (active) and a client certificate in `cert_tag` (or `tag`)."""
    held = cert_tag if cert_tag is not None else tag
    items = [credential(42, not_after=NOW + 400 * DAY, subject="CN=Root")]
    if held is not None:
        items.append(
            credential(
                held,
                cred_type=CredentialType.CLIENT_CERT,
                not_after=NOW + days * DAY,
                subject=f"CN={device_id}",
            )
        )
        items.append(credential(held, cred_type=CredentialType.CLIENT_KEY))
    return DeviceState(
        device_id=device_id,
        reported_at=NOW,
        credentials=tuple(items),
        active_tags=(42,),
        protocol_version=version,
        identity_tag=tag,
    )


def _policy(*, auto: bool = False) -> RenewalPolicy:
    return RenewalPolicy(
        ca_tag_pair=(42, 43),
        auto_rollout=auto,
        retire_soak_seconds=0,
        rollout_waves="10%,100%",
        rollout_bake_seconds=60,
        rollout_max_failure="10%",
        rollout_min_sample=1,
        rollout_device_timeout_seconds=300,
    )


def _deps(
    states: Sequence[DeviceState],
    *,
    auto: bool = False,
    probe: tuple[str, int] | None = PROBE,
    store: FakeRollouts | None = None,
) -> IdentityPlanDeps:
    inventory = FakeInventory()
    inventory.record_states(states, received_at=NOW)
    rollouts = RolloutDeps(
        store=store or FakeRollouts(),
        inventory=inventory,
        tasks=RecordingTasks(),
        metrics=FakeMetrics(),
    )
    return IdentityPlanDeps(
        rollouts=rollouts,
        policy=_policy(auto=auto),
        identity_tags=(44, 45),
        renew_days=30,
        probe=probe,
    )


FLEET = [
    _device("a", 44, 10),  # due: 44 -> 45
    _device("b", 44, -3),  # expired: due too
    _device("c", 44, 90),  # not due
    _device("d", 45, 29),  # due: 45 -> 44
    _device("e", 45, 31),  # not due
    _device("f", 45, 5, cert_tag=44),  # presents 45, holds a certificate in 44 only: no identity
    _device("g", None, 5, cert_tag=44),  # reports no identity tag
    _device("h", 44, 5, version=1),  # a v1 contract: no keygen
]


def _rollouts(deps: IdentityPlanDeps) -> dict[tuple[int, int], list[str]]:
    """(tag, spare_tag) -> the devices of each rollout created."""
    store = deps.rollouts.store
    found = {}
    for rollout_id in store.list_ids():
        rollout = store.get(rollout_id)
        assert rollout is not None
        found[(rollout.spec.tag, rollout.spec.spare_tag)] = sorted(store.device_states(rollout_id))
    return found


def test_one_rollout_per_identity_tag_for_the_due_devices() -> None:
    """A and B each get a rollout to the other tag, of the devices presenting it and due."""
    # given
    deps = _deps(FLEET)
    # when
    outcome = plan_identity_rotations(deps, now=NOW)
    # then
    assert _rollouts(deps) == {(44, 45): ["a", "b"], (45, 44): ["d"]}
    assert sorted(outcome.planned.values()) == [1, 2]
    assert outcome.skipped == {"other_tag": 1, "protocol_v1": 1}
    for rollout_id in outcome.planned:
        rollout = deps.rollouts.store.get(rollout_id)
        assert rollout is not None
        assert rollout.spec.kind == "identity.rotate"
        assert rollout.spec.ca_pems == ()
        assert (rollout.spec.probe_host, rollout.spec.probe_port) == PROBE


def test_held_unless_auto_rollout() -> None:
    """Without auto rollout the rollouts wait for an operator; with it they start."""
    # given
    held, auto = _deps(FLEET), _deps(FLEET, auto=True)
    # when
    plan_identity_rotations(held, now=NOW)
    plan_identity_rotations(auto, now=NOW)
    # then
    tasks = held.rollouts.tasks
    assert isinstance(tasks, RecordingTasks)
    assert tasks.named("start_rollout") == []
    for rollout_id in held.rollouts.store.list_ids():
        rollout = held.rollouts.store.get(rollout_id)
        assert rollout is not None
        assert rollout.state is RolloutState.CREATED
    started = auto.rollouts.tasks
    assert isinstance(started, RecordingTasks)
    assert sorted(args[0] for args in started.named("start_rollout")) == sorted(  # type: ignore[type-var]
        auto.rollouts.store.list_ids()
    )


def test_a_second_tick_plans_no_device_twice() -> None:
    """While its rollouts hold them, the due devices are left out of the next tick."""
    # given
    deps = _deps(FLEET)
    plan_identity_rotations(deps, now=NOW)
    # when
    again = plan_identity_rotations(deps, now=NOW + timedelta(minutes=5))
    # then
    assert again.planned == {}
    assert again.skipped == {"other_tag": 1, "protocol_v1": 1, "held": 3}
    assert len(deps.rollouts.store.list_ids()) == 2


def test_a_device_due_later_gets_a_rollout_of_its_own() -> None:
    """A device that becomes due after a tick is planned alone; the held ones stay out."""
    # given
    deps = _deps(FLEET)
    plan_identity_rotations(deps, now=NOW)
    first = set(deps.rollouts.store.list_ids())
    inventory = deps.rollouts.inventory
    later = NOW + timedelta(minutes=1)
    inventory.record_states([_device("c", 44, 20)], received_at=later)  # renewed sooner
    # when
    outcome = plan_identity_rotations(deps, now=later)
    # then
    (new,) = set(deps.rollouts.store.list_ids()) - first
    assert outcome.planned == {new: 1}
    assert sorted(deps.rollouts.store.device_states(new)) == ["c"]
    assert held_devices(deps.rollouts.store, ["a", "b", "c", "d", "e"]) == {"a", "b", "c", "d"}


def test_no_probe_plans_nothing_and_says_why() -> None:
    """Without the broker's mutual-TLS listener to probe, nothing is planned."""
    # given
    deps = _deps(FLEET, probe=None)
    # when
    outcome = plan_identity_rotations(deps, now=NOW)
    # then
    assert outcome.planned == {}
    assert deps.rollouts.store.list_ids() == []
    assert "CERTFLEET_IDENTITY_PROBE" in outcome.errors[0]


def test_nothing_due_creates_nothing() -> None:
    """A fleet whose identities are all beyond the renew window gets no rollout."""
    # given
    deps = _deps([_device("c", 44, 90), _device("e", 45, 31)])
    # when
    outcome = plan_identity_rotations(deps, now=NOW)
    # then
    assert outcome.as_json() == {"planned": {}, "skipped": {}, "errors": []}
    assert deps.rollouts.store.list_ids() == []


def test_held_devices_reads_only_active_rollouts() -> None:
    """No rollout: nothing held; an empty list asks nothing."""
    # given
    store = FakeRollouts()
    # then
    assert held_devices(store, ["a"]) == set()
    assert held_devices(store, []) == set()
