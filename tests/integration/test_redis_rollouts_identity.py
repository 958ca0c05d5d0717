"""The rollout store against a real redis-server with identity.rotate's states and steps:
keygen, CSR, issued stage, retire, each matched to the bundles issued for it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.bootstrap import Container
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    TransitionRefusal,
    TransitionResult,
    sources_of,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
RID = "ro-id-1"
D = DeviceRolloutState
STAGE, RETIRE = PushStep.STAGE, PushStep.RETIRE


def _spec() -> RolloutSpec:
    return RolloutSpec(
        kind="identity.rotate",
        ca_pems=(),
        tag=44,
        spare_tag=45,
        probe_host="broker.invalid",
        probe_port=8884,
        waves=parse_waves("1,100%"),
        device_timeout_seconds=600,
    )


@pytest.fixture
def store(container: Container) -> RedisRollouts:
    """An identity rollout of 3 devices in two waves, all pending."""
    rollouts = container.rollouts
    rollouts.create(
        Rollout.planned(RID, _spec(), seed="test", sizes=[1, 2], now=NOW),
        waves=[["a"], ["b", "c"]],
        active={"a": [42], "b": [42], "c": [42, 43]},
        actor="test",
    )
    return rollouts


def _move(
    store: RedisRollouts,
    device: str,
    new: DeviceRolloutState,
    *,
    match: tuple[PushStep, int] | None = None,
    step: PushStep | None = None,
    seq: int | None = None,
    bundle: bytes | None = None,
) -> TransitionResult:
    """One transition as the engine makes it (every source the new state may come from)."""
    [result] = store.transition(
        RID,
        [
            DeviceTransition(
                device_id=device,
                new=new,
                allowed=sources_of(new),
                cause="test",
                step=step,
                seq=seq,
                bundle=bundle if bundle is not None else (b"bundle" if step else None),
                match=match,
            )
        ],
        now=NOW,
        actor="test",
    )
    return result


def _keygen(store: RedisRollouts, device: str, seq: int) -> None:
    """pending -> sent with the keygen stored as the stage step, then received."""
    assert _move(store, device, D.SENT, step=STAGE, seq=seq, bundle=b"keygen").applied
    assert _move(store, device, D.RECEIVED, match=(STAGE, seq)).applied


def _issued(store: RedisRollouts, device: str, keygen_seq: int, stage_seq: int) -> None:
    """The device through its keygen and CSR to `issued`, the certificate's stage stored."""
    _keygen(store, device, keygen_seq)
    assert _move(store, device, D.CSR, match=(STAGE, keygen_seq)).applied
    issued = _move(store, device, D.ISSUED, step=STAGE, seq=stage_seq, bundle=b"identity stage")
    assert issued.applied


def test_keygen_csr_and_issued_stage_are_matched_by_either_seq(store: RedisRollouts) -> None:
    """The issued stage is stored under the stage step with a second seq; reports about the
    keygen's seq and the stage's both match, a seq never issued does not."""
    # given
    _issued(store, "a", keygen_seq=11, stage_seq=12)
    # when
    unknown = _move(store, "a", D.STAGED, match=(STAGE, 13))
    staged = _move(store, "a", D.STAGED, match=(STAGE, 12))
    healthy = _move(store, "a", D.HEALTH_OK, match=(STAGE, 11))
    # then
    assert (unknown.applied, unknown.reason) == (False, TransitionRefusal.SEQ)
    assert staged.applied
    assert healthy.applied
    assert store.bundles(RID, ["a"], STAGE) == {"a": b"identity stage"}
    assert store.send_counts(RID, ["a"], STAGE) == {"a": 2}
    moves = [e["to"] for e in store.log(RID) if e["kind"] == "device"]
    assert moves == ["sent", "received", "csr", "issued", "staged", "health_ok"]


def test_a_refused_csr_is_final(store: RedisRollouts) -> None:
    """csr -> csr_refused; no later report, stage, commit, retire or rollback moves it."""
    # given
    _keygen(store, "b", 21)
    assert _move(store, "b", D.CSR, match=(STAGE, 21)).applied
    # when
    refused = _move(store, "b", D.CSR_REFUSED)
    later = [
        _move(store, "b", D.ISSUED, step=STAGE, seq=22),
        _move(store, "b", D.STAGED, match=(STAGE, 21)),
        _move(store, "b", D.COMMITTED, match=(STAGE, 21)),
        _move(store, "b", D.ROLLBACK_SENT),
        _move(store, "b", D.RETIRED, match=(RETIRE, 21)),
    ]
    # then
    assert refused.applied
    assert [r.applied for r in later] == [False] * len(later)
    assert later[-1].reason is TransitionRefusal.NO_BUNDLE
    assert store.device_states(RID, ["b"]) == {"b": "csr_refused"}
    assert store.wave_counts(RID, 2)[1] == {"csr_refused": 1, "pending": 1}


def test_a_retire_is_its_own_step_matched_by_its_own_seq(store: RedisRollouts) -> None:
    """A committed device's retire, stored once per device, moves it to retired only by a
    report about that retire; the retire's seq read as a stage's matches nothing."""
    # given
    _issued(store, "c", keygen_seq=31, stage_seq=32)
    for state, seq in ((D.STAGED, 32), (D.HEALTH_OK, 32)):
        assert _move(store, "c", state, match=(STAGE, seq)).applied
    assert _move(store, "c", D.COMMITTED, step=PushStep.COMMIT, seq=33).applied
    # when
    first = store.put_bundles_if_absent(RID, RETIRE, {"c": b"retire"}, seqs={"c": 34})
    again = store.put_bundles_if_absent(RID, RETIRE, {"c": b"retire again"}, seqs={"c": 35})
    as_stage = _move(store, "c", D.RETIRED, match=(STAGE, 34))
    never_sent = _move(store, "c", D.RETIRED, match=(RETIRE, 35))
    retired = _move(store, "c", D.RETIRED, match=(RETIRE, 34))
    # then
    assert (first, again) == (1, 0), "how many were stored"
    assert (as_stage.applied, as_stage.reason) == (False, TransitionRefusal.SEQ)
    assert (never_sent.applied, never_sent.reason) == (False, TransitionRefusal.SEQ)
    assert retired.applied
    assert store.bundles(RID, ["c"], RETIRE) == {"c": b"retire"}
    assert store.send_counts(RID, ["c"], RETIRE) == {"c": 1}
    assert store.devices_in(RID, [D.RETIRED]) == ["c"]


def test_wave_counts_add_up_through_the_identity_states(store: RedisRollouts) -> None:
    """Each wave's counts follow every applied move and sum to the wave's size."""
    # given
    _issued(store, "a", keygen_seq=1, stage_seq=2)
    _keygen(store, "b", 3)
    assert _move(store, "b", D.CSR, match=(STAGE, 3)).applied
    assert _move(store, "b", D.CSR_REFUSED).applied
    _keygen(store, "c", 4)
    # when
    counts = store.wave_counts(RID, 2)
    # then
    assert counts == [{"issued": 1}, {"csr_refused": 1, "received": 1}]
    assert [sum(wave.values()) for wave in counts] == [1, 2]
    assert store.devices_in(RID, [D.CSR, D.ISSUED]) == ["a"]


def test_retire_and_stage_sends_are_claimed_apart(store: RedisRollouts) -> None:
    """A retire claimed for a device does not hold back its stage re-send, nor the reverse."""
    t = NOW.timestamp()
    assert store.claim_sends(RID, RETIRE, ["b", "c"], now=t, every=30) == ["b", "c"]
    assert store.claim_sends(RID, STAGE, ["b", "c"], now=t + 1, every=30) == ["b", "c"]
    assert store.claim_sends(RID, RETIRE, ["c"], now=t + 2, every=30) == []
    assert store.claim_sends(RID, STAGE, ["c"], now=t + 2, every=30) == []
    assert store.claim_sends(RID, RETIRE, ["c", "b"], now=t + 31, every=30) == ["c", "b"]


def test_rollback_reaches_csr_and_issued_but_not_retired(store: RedisRollouts) -> None:
    """An abort rolls back a device that made its key or got its certificate; a retired
    device is final (its new identity is proven and in use)."""
    # given
    _keygen(store, "b", 41)
    assert _move(store, "b", D.CSR, match=(STAGE, 41)).applied
    _issued(store, "a", keygen_seq=42, stage_seq=43)
    _issued(store, "c", keygen_seq=44, stage_seq=45)
    for state in (D.STAGED, D.HEALTH_OK):
        assert _move(store, "c", state, match=(STAGE, 45)).applied
    assert _move(store, "c", D.COMMITTED, step=PushStep.COMMIT, seq=46).applied
    store.put_bundles_if_absent(RID, RETIRE, {"c": b"retire"}, seqs={"c": 47})
    assert _move(store, "c", D.RETIRED, match=(RETIRE, 47)).applied
    # when
    results = {d: _move(store, d, D.ROLLBACK_SENT) for d in ("a", "b", "c")}
    # then
    assert {d: r.applied for d, r in results.items()} == {"a": True, "b": True, "c": False}
    assert results["c"].reason is TransitionRefusal.STATE
    assert store.device_states(RID, ["a", "b", "c"]) == {
        "a": "rollback_sent",
        "b": "rollback_sent",
        "c": "retired",
    }
