"""The rollout engine's ports in memory, wired as the workers wire the real ones, with the
moves a test makes on them (a device's report, the queued pushes carried out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.ports.identity import IdentityStore
from orchestrator.protocol.bundle import Bundle, decode_payload, open_bundle
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.rollout import PushDeps, RolloutDeps, apply_reports, push_batch
from orchestrator.services.rollout.reports import PHASE_OPS
from tests.fake_rollouts import (
    FakeMetrics,
    FakePublisher,
    FakeRollouts,
    FakeSequences,
    FakeSigner,
    RecordingTasks,
)
from tests.fakes import FakeInventory
from tests.unit.builders import NOW, credential

__all__ = ["DEVICES", "Engine", "make_engine"]


@dataclass
class Engine:
    """The engine's ports, in memory."""

    store: FakeRollouts
    tasks: RecordingTasks
    inventory: FakeInventory
    publisher: FakePublisher
    metrics: FakeMetrics
    signer: FakeSigner
    sequences: FakeSequences = field(default_factory=FakeSequences)
    identity: IdentityStore | None = None

    @property
    def deps(self) -> RolloutDeps:
        return RolloutDeps(
            store=self.store,
            inventory=self.inventory,
            tasks=self.tasks,
            metrics=self.metrics,
            identity=self.identity,
        )

    @property
    def push(self) -> PushDeps:
        return PushDeps(
            store=self.store,
            signer=self.signer,
            sequences=self.sequences,
            publisher=self.publisher,
            metrics=self.metrics,
        )

    def opened(self, device_id: str, data: bytes) -> Bundle:
        """The bundle as the device checks it (signature, device, sequence, expiry)."""
        return open_bundle(
            data,
            signers={self.signer.key_id: self.signer.public_key},
            device_id=device_id,
            last_seq=0,
            now=NOW,
        )

    def rollout(self, rollout_id: str) -> Rollout:
        found = self.store.get(rollout_id)
        assert found is not None
        return found

    def answered(self, device_id: str, phase: str) -> tuple[int, str | None]:
        """seq and op of the last bundle sent to the device that `phase` answers (0, None: none)."""
        for sent_to, data in reversed(self.publisher.sent):
            bundle = decode_payload(Sign1Message.decode(data).payload)
            if sent_to == device_id and bundle.op in PHASE_OPS[phase]:
                return bundle.seq, bundle.op
        return 0, None

    def report(self, rollout_id: str, phase: str, *devices: str, reason: str = "ok") -> set[str]:
        """Each device reports `phase` about the last bundle it was sent that the phase answers."""
        return apply_reports(
            self.deps,
            [
                DeviceReport(
                    device_id=d,
                    rollout_id=rollout_id,
                    seq=self.answered(d, phase)[0],
                    op=self.answered(d, phase)[1],
                    phase=phase,
                    reason=reason,
                    detail="",
                    time=NOW,
                )
                for d in devices
            ],
            now=NOW,
        )

    def run_pushes(self, *, now: object = NOW) -> int:
        """Carry out every push_batch enqueued so far (as the workers would); how many went out."""
        sent = 0
        for rollout_id, _, ids, step, _ in self.tasks.named("push_batch"):
            sent += push_batch(self.push, rollout_id, ids, step, now=now)  # type: ignore[arg-type]
        self.tasks.calls = [c for c in self.tasks.calls if c[0] != "push_batch"]
        return sent


DEVICES = [f"dev-{i:02d}" for i in range(10)]


def make_engine() -> Engine:
    """Ten devices, each trusting a CA in sec_tag 42 with [42] active."""
    inventory = FakeInventory()
    inventory.record_states(
        [
            DeviceState(
                device_id=d, reported_at=NOW, credentials=(credential(42),), active_tags=(42,)
            )
            for d in DEVICES
        ],
        received_at=NOW,
    )
    return Engine(
        FakeRollouts(), RecordingTasks(), inventory, FakePublisher(), FakeMetrics(), FakeSigner()
    )
