"""Bundles follow each device's protocol version: v2 bundles (a commit with `undo_by`) to
devices that reported v2, v1 bundles without v2-only keys to devices that reported v1."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout import parse_waves
from orchestrator.domain.rollout_states import PushStep
from orchestrator.protocol.bundle import Bundle, decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.protocol.state import StateMessage
from orchestrator.protocol.topics import Topics
from orchestrator.services.bundles import UNDO_WINDOW_SECONDS
from orchestrator.services.inventory import ingest_batch
from orchestrator.services.rollout import (
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    push_batch,
    start_rollout,
)
from tests.fake_rollouts import trust_add_spec
from tests.fakes import FakeInventory
from tests.rollout_rig import DEVICES, Engine, make_engine
from tests.unit.builders import NOW, credential

pytestmark = pytest.mark.unit

V2 = DEVICES[:4]
"""The devices that reported a v2 state; the others reported v1."""


@pytest.fixture
def engine() -> Engine:
    engine = make_engine()
    engine.inventory.record_states(
        [
            DeviceState(
                device_id=d,
                reported_at=NOW + timedelta(seconds=1),
                credentials=(credential(42),),
                active_tags=(42,),
                protocol_version=2,
            )
            for d in V2
        ],
        received_at=NOW,
    )
    return engine


def _sent(engine: Engine, op: str) -> dict[str, Bundle]:
    """The last `op` bundle published to each device, as a v2 device reads it."""
    found = {}
    for device, data in engine.publisher.sent:
        bundle = decode_payload(Sign1Message.decode(data).payload)
        if bundle.op == op:
            found[device] = bundle
    return found


def test_stage_and_commit_bundles_take_each_devices_version(engine: Engine) -> None:
    """v2 devices get v2 stages and commits with undo_by = commit time + the undo window;
    v1 devices get v1 bundles, which a v1 device opens (no v2-only key)."""
    spec = trust_add_spec(waves=parse_waves("100%"))
    rid = create_rollout(engine.deps, spec, now=NOW, actor="test", start=True)
    start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    engine.run_pushes()
    engine.report(rid, "health_ok", *DEVICES)
    later = NOW + timedelta(seconds=30)
    push_batch(engine.push, rid, DEVICES, PushStep.COMMIT, now=later)

    stages, commits = _sent(engine, "stage"), _sent(engine, "commit")
    assert {d: b.version for d, b in stages.items()} == {d: 2 if d in V2 else 1 for d in DEVICES}
    assert {d: b.version for d, b in commits.items()} == {d: 2 if d in V2 else 1 for d in DEVICES}
    undo_by = int(later.timestamp()) + UNDO_WINDOW_SECONDS
    assert {d: b.undo_by for d, b in commits.items()} == {
        d: undo_by if d in V2 else None for d in DEVICES
    }
    for device in DEVICES[len(V2) :]:
        for data in (d for to, d in engine.publisher.sent if to == device):
            assert decode_payload(Sign1Message.decode(data).payload, versions=(1,)).version == 1


def test_the_undo_window_is_a_setting(engine: Engine) -> None:
    """PushDeps' undo window (CERTFLEET_UNDO_WINDOW_SECONDS) sets a v2 commit's undo_by."""
    rid = create_rollout(
        engine.deps, trust_add_spec(waves=parse_waves("100%")), now=NOW, actor="t", start=True
    )
    start_rollout(engine.deps, rid, now=NOW, actor="t")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    engine.run_pushes()
    engine.report(rid, "health_ok", V2[0])
    push_batch(
        replace(engine.push, undo_window_seconds=3600), rid, [V2[0]], PushStep.COMMIT, now=NOW
    )
    assert _sent(engine, "commit")[V2[0]].undo_by == int(NOW.timestamp()) + 3600


@pytest.mark.parametrize("version", [1, 2])
def test_the_inventory_records_the_version_of_each_applied_state(version: int) -> None:
    """A state message's `v` becomes the device's protocol version in the inventory."""
    inventory = FakeInventory()
    message = StateMessage(
        v=version,  # type: ignore[arg-type]
        device_id="dev-v",
        time=NOW,
        credentials=[],
        active_tags=[42],
    )
    ingest_batch(
        inventory,
        Topics("certfleet"),
        [("certfleet/dev-v/state", message.to_json())],
        received_at=NOW,
        clock_skew=timedelta(seconds=300),
    )
    known = inventory.device_credentials("dev-v")
    assert known is not None
    assert known.protocol_version == version
    assert inventory.protocol_versions(["dev-v", "dev-unknown"]) == {
        "dev-v": version,
        "dev-unknown": 1,
    }
