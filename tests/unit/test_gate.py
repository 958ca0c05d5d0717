"""The health gate: failure budget, minimum sample, stragglers, timeouts and canaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.errors import InvalidGateInputError, InvalidRolloutSpecError
from orchestrator.domain.gate import GateInput, GatePolicy, Verdict, evaluate_gate
from orchestrator.domain.rollout import DeviceRolloutState

pytestmark = pytest.mark.unit

S = DeviceRolloutState
TEN_PERCENT = GatePolicy(max_failure=0.10, min_sample=10)


def wave(size: int, **counts: int) -> GateInput:
    """A first wave: its counts are also the cumulative counts."""
    return GateInput(wave_size=size, wave_counts=counts, cumulative_counts=counts)


def test_failures_equal_to_the_budget_pass() -> None:
    """Reaching the budget exactly is still within it."""
    # given: 30 decided, budget 10% of 30 = 3
    data = wave(30, committed=27, rejected=3)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.PASS
    assert (decision.failures, decision.decided, decision.budget) == (3, 30, 3.0)


def test_one_failure_over_the_budget_aborts() -> None:
    """One failure past the budget aborts."""
    # given: 30 decided, budget 3
    data = wave(30, committed=26, rejected=2, health_failed=1, fallback=1)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.ABORT
    assert decision.failures == 4
    assert decision.reason == (
        "4 failures over a budget of 3 (10% of max(30 started, min sample 10)), "
        "whatever the undecided devices do"
    )


@pytest.mark.parametrize(
    ("rate", "decided", "failures"),
    [(0.29, 100, 29), (0.07, 100, 7), (0.1, 30, 3), (0.3, 10, 3)],
)
def test_budget_boundary_is_exact(rate: float, decided: int, failures: int) -> None:
    """Float rounding never turns failures equal to the budget into an abort."""
    # given
    policy = GatePolicy(max_failure=rate, min_sample=1)
    data = wave(decided, committed=decided - failures, rejected=failures)
    # when
    decision = evaluate_gate(policy, data)
    # then
    assert decision.verdict is Verdict.PASS


def test_min_sample_floors_the_budget() -> None:
    """Below the minimum sample, the budget is computed over the minimum sample."""
    # given: 3 decided, min sample 10 -> budget 1
    data = wave(3, committed=2, rejected=1)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.budget == 1.0
    assert decision.verdict is Verdict.PASS


def test_budget_grows_past_the_min_sample() -> None:
    """Once more than min_sample are decided, the budget follows the decided count."""
    # given: 3 failures of 12 decided would abort against the floor of 1, not of 1.2
    data = wave(12, committed=9, rejected=3)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.budget == pytest.approx(1.2)
    assert decision.verdict is Verdict.ABORT
    assert decision.reason == (
        "3 failures over a budget of 1.2 (10% of max(12 started, min sample 10)), "
        "whatever the undecided devices do"
    )


def test_abort_does_not_wait_for_stragglers() -> None:
    """Failures alone over 10% of the whole wave abort, with 80 devices still on their way."""
    # given: a wave of 100 with 15 failures, 5 successes and 80 in flight
    data = wave(100, sent=60, staged=20, committed=5, health_failed=15)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.ABORT


def test_fast_failures_within_the_threshold_of_the_wave_do_not_abort() -> None:
    """8 quick failures among the first 53 decided of 233 started stay within 10% of 233."""
    # given: failures come back first (a refused probe is instant), successes take longer
    data = wave(233, sent=180, committed=45, health_failed=8)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.CONTINUE
    assert decision.budget == pytest.approx(23.3)


def test_continue_until_every_device_of_the_wave_is_decided() -> None:
    """A wave passes only once none of its devices is still in flight."""
    # given
    in_flight = wave(20, committed=19, health_ok=1)
    done = wave(20, committed=20)
    # when
    waiting = evaluate_gate(TEN_PERCENT, in_flight)
    passed = evaluate_gate(TEN_PERCENT, done)
    # then
    assert waiting.verdict is Verdict.CONTINUE
    assert waiting.reason.startswith("waiting for 1 of 20 devices")
    assert passed.verdict is Verdict.PASS


def test_later_wave_is_judged_on_cumulative_counts_but_waits_for_its_own() -> None:
    """Failures accumulate across waves; completion is judged on the current wave."""
    # given: canary of 5 done with 1 failure; wave 2 of 45 has 45 committed
    data = GateInput(
        wave_size=45,
        wave_counts={S.COMMITTED: 45},
        cumulative_counts={S.COMMITTED: 49, S.REJECTED: 1},
    )
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.PASS
    assert (decision.failures, decision.decided) == (1, 50)


def test_timed_out_is_neutral_by_default() -> None:
    """By default a timeout is neither a failure nor decided, but ends the device's wait."""
    # given
    data = wave(10, committed=5, timed_out=5)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.PASS
    assert (decision.failures, decision.decided) == (0, 5)


def test_timed_out_fails_when_the_policy_says_so() -> None:
    """With timeouts_fail, a timeout counts as a failure and as decided."""
    # given
    policy = GatePolicy(max_failure=0.10, min_sample=10, timeouts_fail=True)
    data = wave(10, committed=5, timed_out=5)
    # when
    decision = evaluate_gate(policy, data)
    # then
    assert decision.verdict is Verdict.ABORT
    assert (decision.failures, decision.decided) == (5, 10)


def test_canary_of_five_aborts_with_two_failures_once_decided() -> None:
    """With 10% and min sample 10, a canary of 5 with two failures aborts once all 5 decided."""
    # given
    first = wave(5, rejected=1, sent=4)
    second = wave(5, rejected=2, sent=3)
    done = wave(5, rejected=2, committed=3)
    all_failed = wave(5, health_failed=5)
    # when / then
    assert evaluate_gate(TEN_PERCENT, first).verdict is Verdict.CONTINUE
    assert evaluate_gate(TEN_PERCENT, second).verdict is Verdict.CONTINUE
    assert evaluate_gate(TEN_PERCENT, done).verdict is Verdict.ABORT
    assert evaluate_gate(TEN_PERCENT, all_failed).verdict is Verdict.ABORT


def test_canary_of_five_with_one_failure_passes() -> None:
    """One failure in a canary of 5 is within the budget of the minimum sample."""
    # given
    data = wave(5, committed=4, fallback=1)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    assert decision.verdict is Verdict.PASS
    assert decision.reason == (
        "wave complete (5 of 5 decided); "
        "1 failure within a budget of 1 (10% of max(5 decided, min sample 10))"
    )


def test_zero_tolerance_aborts_at_the_first_failure() -> None:
    """With max_failure 0, any failure aborts."""
    # given
    policy = GatePolicy(max_failure=0, min_sample=1)
    data = wave(100, committed=50, rejected=1)
    # when
    decision = evaluate_gate(policy, data)
    # then
    assert decision.verdict is Verdict.ABORT


@pytest.mark.parametrize(
    ("max_failure", "min_sample"),
    [(1.5, 10), (-0.1, 10), (float("nan"), 10), (0.1, 0)],
)
def test_policy_validation(max_failure: float, min_sample: int) -> None:
    """A policy outside 0..1 or with no minimum sample is refused."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError):
        GatePolicy(max_failure=max_failure, min_sample=min_sample)


@pytest.mark.parametrize(
    "counts",
    [{"committed": -1}, {"done": 3}],
)
def test_input_validation(counts: dict[str, int]) -> None:
    """Negative counts and unknown states are refused rather than judged."""
    # given / when / then
    with pytest.raises(InvalidGateInputError):
        wave(10, **counts)


counts_strategy = st.fixed_dictionaries(
    {},
    optional={state.value: st.integers(min_value=0, max_value=10_000) for state in S},
)


policies = st.builds(
    GatePolicy,
    max_failure=st.floats(min_value=0, max_value=1),
    min_sample=st.integers(min_value=1, max_value=1000),
    timeouts_fail=st.booleans(),
)


@given(policies, st.integers(min_value=0, max_value=10_000), counts_strategy, counts_strategy)
def test_no_abort_without_failures(
    policy: GatePolicy, wave_size: int, wave_counts: dict[str, int], cumulative: dict[str, int]
) -> None:
    """Whatever the counts and policy, a rollout without failures never aborts."""
    # given
    failing = {S.REJECTED, S.HEALTH_FAILED, S.FALLBACK, S.CSR_REFUSED}
    if policy.timeouts_fail:
        failing.add(S.TIMED_OUT)
    cumulative = {state: count for state, count in cumulative.items() if state not in failing}
    data = GateInput(wave_size=wave_size, wave_counts=wave_counts, cumulative_counts=cumulative)
    # when
    decision = evaluate_gate(policy, data)
    # then
    assert decision.failures == 0
    assert decision.verdict is not Verdict.ABORT


@given(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=0, max_value=500),
    st.integers(min_value=0, max_value=500),
)
def test_verdict_follows_the_rule(size: int, committed: int, failed: int) -> None:
    """ABORT exactly when failures exceed the budget, else PASS exactly when all are decided."""
    # given
    data = wave(size, committed=committed, rejected=failed)
    budget = 0.10 * max(committed + failed, 10)
    # when
    decision = evaluate_gate(TEN_PERCENT, data)
    # then
    if failed > budget + 1e-9:
        assert decision.verdict is Verdict.ABORT
    elif committed + failed >= size:
        assert decision.verdict is Verdict.PASS
    else:
        assert decision.verdict is Verdict.CONTINUE
