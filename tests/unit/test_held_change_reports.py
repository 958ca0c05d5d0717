"""A stage refused as `tag_in_use` settles its device as committed only if its inventory
shows the rollout's change made (certfleet lost the device's commit, e.g. in a Redis
Cluster failover, and sent the stage again); otherwise it stays a rejection."""

from __future__ import annotations

import pytest

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout import parse_waves
from orchestrator.domain.rollout_states import DeviceRolloutState
from orchestrator.services.rollout import (
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    start_rollout,
)
from orchestrator.services.rollout.reports import holds_change
from tests.fake_rollouts import trust_add_spec
from tests.rollout_rig import DEVICES, Engine, make_engine
from tests.unit.builders import NOW, credential

pytestmark = pytest.mark.unit

D = DeviceRolloutState
SPEC = trust_add_spec(kind="trust.replace", waves=parse_waves("100%"), max_failure=0.5)
NEW = SPEC.new_ca_digest or ""


def _sent(engine: Engine) -> str:
    """A trust.replace over every device, its only wave's stage pushed."""
    rid = create_rollout(engine.deps, SPEC, now=NOW, actor="test", start=True)
    start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    engine.run_pushes()
    return rid


def _replaced(engine: Engine, device: str) -> None:
    """The device's inventory: the new CA active in the spare tag 43, 42 no longer active."""
    engine.inventory.record_states(
        [
            DeviceState(
                device_id=device,
                reported_at=NOW,
                credentials=(credential(42), credential(43, sha256=NEW)),
                active_tags=(43,),
            )
        ],
        received_at=NOW,
    )


def test_a_device_holding_the_change_is_settled_committed() -> None:
    """The refused stage of a device whose inventory holds the new CA active in the spare
    tag (and not the old tag) moves it to committed, the cause saying why."""
    # given
    engine = make_engine()
    rid = _sent(engine)
    device = DEVICES[0]
    _replaced(engine, device)
    # when
    engine.report(rid, "rejected", device, reason="tag_in_use")
    # then
    assert engine.store.device_states(rid)[device] is D.COMMITTED
    causes = [e["cause"] for e in engine.store.log(rid) if e.get("subject") == device]
    assert "verified by inventory" in causes[-1]


def test_a_device_not_holding_the_change_stays_rejected() -> None:
    """The same refusal from a device whose inventory shows the old CA only is a rejection."""
    # given
    engine = make_engine()
    rid = _sent(engine)
    device = DEVICES[1]
    # when
    engine.report(rid, "rejected", device, reason="tag_in_use")
    # then
    assert engine.store.device_states(rid)[device] is D.REJECTED


def test_only_a_tag_in_use_refusal_is_checked() -> None:
    """Another reason from a device holding the change stays a rejection."""
    # given
    engine = make_engine()
    rid = _sent(engine)
    device = DEVICES[2]
    _replaced(engine, device)
    # when
    engine.report(rid, "rejected", device, reason="unsafe_active")
    # then
    assert engine.store.device_states(rid)[device] is D.REJECTED


def test_the_change_is_the_new_ca_active_in_the_spare_tag() -> None:
    """trust.add: the new CA active in the spare tag; trust.replace also needs the old tag
    inactive; the new CA inactive, or another CA there, is not the change."""
    add = trust_add_spec()
    assert holds_change(add, {42: "old", 43: NEW})
    assert holds_change(SPEC, {43: NEW})
    assert not holds_change(SPEC, {42: "old", 43: NEW})
    assert not holds_change(add, {42: "old"})
    assert not holds_change(add, {42: "old", 43: "another"})
    assert not holds_change(trust_add_spec(kind="trust.retire", ca_pems=()), {43: NEW})
