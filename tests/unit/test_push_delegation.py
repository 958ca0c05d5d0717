"""push_batch under delegations: every bundle carries the worker's delegation and opens on a
device trusting only the root, the root signs once for many batches, and a worker without a
delegation sends nothing more: no unsigned or stale bundle, the push stopped and counted."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import structlog

from orchestrator.adapters.delegated_signer import ROOT_SIGNATURES_METRIC, DelegatedSigner
from orchestrator.domain.errors import DelegationUnavailableError
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import DeviceRolloutState, PushStep, RolloutState, WaveState
from orchestrator.protocol.bundle import open_bundle
from orchestrator.protocol.delegation import Scope, delegation_of
from orchestrator.services.rollout import PushDeps, create_rollout, push_batch
from orchestrator.services.rollout import push as push_service
from orchestrator.services.rollout.push import PUBLISH_CHUNK, PUSH_STOPPED_METRIC
from tests.fake_rollouts import (
    FakeDelegationRegistry,
    FakeMetrics,
    FakePublisher,
    FakeRollouts,
    FakeSigner,
    RecordingTasks,
    trust_add_spec,
)
from tests.fakes import FakeInventory
from tests.rollout_rig import Engine
from tests.unit.builders import NOW, credential
from tests.unit.test_delegated_signer import Clock, CountingRoot

pytestmark = pytest.mark.unit

DEVICES = [f"dev-{i:03d}" for i in range(2 * PUBLISH_CHUNK + 20)]
SCOPE = Scope(ops=("stage", "commit", "rollback", "retire", "keygen"), kinds=(0, 1))


def _running(engine: Engine) -> str:
    engine.inventory.record_states(
        [
            DeviceState(
                device_id=d, reported_at=NOW, credentials=(credential(42),), active_tags=(42,)
            )
            for d in DEVICES
        ],
        received_at=NOW,
    )
    rid = create_rollout(
        engine.deps, trust_add_spec(), now=NOW, actor="test", start=False, devices=DEVICES
    )
    running = Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)})
    engine.store.change(rid, running)
    return rid


def _engine() -> Engine:
    return Engine(
        FakeRollouts(),
        RecordingTasks(),
        FakeInventory(),
        FakePublisher(),
        FakeMetrics(),
        FakeSigner(),
    )


def _deps(engine: Engine, signer: object) -> PushDeps:
    return PushDeps(
        store=engine.store,
        signer=signer,  # type: ignore[arg-type]
        sequences=engine.sequences,
        publisher=engine.publisher,
        metrics=engine.metrics,
    )


def test_every_bundle_is_delegated_and_the_root_signs_once() -> None:
    """Stage then commit to 120 devices: each bundle carries the worker key's delegation and
    opens on a device that trusts only the root; the root signed one delegation in all."""
    # given
    engine = _engine()
    rid = _running(engine)
    root, registry = CountingRoot(), FakeDelegationRegistry()
    signer = DelegatedSigner(
        root,
        scope=SCOPE,
        lifetime_seconds=48 * 3600,
        clock=Clock(),
        registry=registry,
        worker="host-a:101",
        metrics=engine.metrics,
    )
    deps = _deps(engine, signer)
    # when
    sent = push_batch(deps, rid, DEVICES, PushStep.STAGE, now=NOW)
    # then
    assert sent == len(DEVICES)
    for device, data in engine.publisher.sent:
        delegation = delegation_of(data)
        assert delegation is not None
        assert delegation.kid == signer.key_id
        bundle = open_bundle(
            data,
            signers={root.key_id: root.key.public_key},
            device_id=device,
            last_seq=0,
            now=NOW,
        )
        assert bundle.op == "stage"
    assert root.signatures == 1
    assert len(registry.issued) == 1
    assert engine.metrics.counters[(ROOT_SIGNATURES_METRIC, (("purpose", "delegation"),))] == 1


def test_without_a_delegation_nothing_is_signed_or_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root unreachable at the first renewal: push_batch raises DelegationUnavailableError
    (a TransientError: the task retries), sends nothing, spends no seq, moves no device; the
    stop is logged with its reason and counted."""
    # given
    engine = _engine()
    rid = _running(engine)
    root = CountingRoot(fail=True)
    signer = DelegatedSigner(
        root,
        scope=SCOPE,
        lifetime_seconds=48 * 3600,
        clock=Clock(),
        registry=FakeDelegationRegistry(),
        worker="host-a:101",
    )
    captured = structlog.testing.CapturingLogger()
    monkeypatch.setattr(push_service, "log", captured)  # whatever level logging was configured at
    # when
    with pytest.raises(DelegationUnavailableError):
        push_batch(_deps(engine, signer), rid, DEVICES, PushStep.STAGE, now=NOW)
    logs = [{"event": c.args[0], **c.kwargs} for c in captured.calls]
    # then
    assert engine.publisher.sent == []
    assert engine.sequences.last == {}
    states = engine.store.device_states(rid, DEVICES)
    assert set(states.values()) == {DeviceRolloutState.PENDING}
    stopped = [e for e in logs if e["event"] == "push_stopped"]
    assert len(stopped) == 1
    assert stopped[0]["reason"] == "no_delegation"
    assert stopped[0]["rollout_id"] == rid
    assert engine.metrics.counters[(PUSH_STOPPED_METRIC, (("reason", "no_delegation"),))] == 1


@dataclass
class LosesItsDelegation:
    """A signer whose delegation stops covering after `left` signatures (expired mid-batch)."""

    key: FakeSigner
    left: int

    @property
    def key_id(self) -> bytes:
        return self.key.key_id

    def delegation_for(self, expires_at: int) -> bytes | None:
        return None

    def sign(self, to_be_signed: bytes) -> bytes:
        if self.left <= 0:
            raise DelegationUnavailableError("the delegation expired")
        self.left -= 1
        return self.key.sign(to_be_signed)


def test_a_delegation_lost_mid_batch_stops_the_push_there() -> None:
    """The signer refuses after one chunk and some: the chunk signed and stored goes out and
    its devices move to `sent`; nothing after it is sent, the rest stay `pending` for the
    retry, which sends them once the signer can sign again."""
    # given
    engine = _engine()
    rid = _running(engine)
    signer = LosesItsDelegation(key=FakeSigner(), left=PUBLISH_CHUNK + 10)
    deps = _deps(engine, signer)
    # when
    with pytest.raises(DelegationUnavailableError):
        push_batch(deps, rid, DEVICES, PushStep.STAGE, now=NOW)
    first_try = [d for d, _ in engine.publisher.sent]
    signer.left = len(DEVICES)
    retried = push_batch(deps, rid, DEVICES, PushStep.STAGE, now=NOW)
    # then
    assert first_try == DEVICES[:PUBLISH_CHUNK]
    assert retried == len(DEVICES)  # the first chunk's stored bytes again, then the rest
    states = engine.store.device_states(rid, DEVICES)
    assert set(states.values()) == {DeviceRolloutState.SENT}
    assert engine.metrics.counters[(PUSH_STOPPED_METRIC, (("reason", "no_delegation"),))] == 1
