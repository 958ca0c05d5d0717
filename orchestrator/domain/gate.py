"""The health gate: whether a rollout goes on, passes its wave, or aborts.

Over the counts of every wave started so far (cumulative):

- failures = rejected + health_failed + fallback, plus timed_out when the policy
  says `timeouts_fail`;
- decided = committed + failures (so timed_out is decided only when it fails);
- started = every device of the started waves, decided or not.

ABORT early, without waiting for stragglers, when failures alone exceed the
threshold of the whole started population — `failures > max_failure *
max(started, min_sample)`, so the rate stays over the threshold even if every
undecided device succeeds — once at least `min(min_sample, started)` devices are
decided. Fast failures early in a wave therefore do not abort a rollout whose
failures stay within the threshold.

When every device of the current wave is decided (committed, a failure, or
timed_out, which ends a device's wait whatever the policy), the wave PASSES if
`failures <= max_failure * max(decided, min_sample)`, else the rollout ABORTS.
Otherwise CONTINUE.

The minimum sample keeps a small canary from failing on noise: with 10% and
min_sample 10 the budget is one failure until more than 10 devices are decided, so
a canary of 5 passes with one failure and aborts with two.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from orchestrator.domain.errors import InvalidGateInputError, InvalidRolloutSpecError
from orchestrator.domain.rollout_states import DECIDED, FAILURES, SUCCESS, DeviceRolloutState

__all__ = ["GateDecision", "GateInput", "GatePolicy", "Verdict", "evaluate_gate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatePolicy:
    """How many failures a rollout tolerates, and over how many devices at least."""

    max_failure: float
    min_sample: int
    timeouts_fail: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_failure, bool) or not (
            isinstance(self.max_failure, int | float)
            and math.isfinite(self.max_failure)
            and 0 <= self.max_failure <= 1
        ):
            raise InvalidRolloutSpecError(
                f"max_failure must be a fraction from 0 to 1, got {self.max_failure!r}"
            )
        if isinstance(self.min_sample, bool) or not (
            isinstance(self.min_sample, int) and self.min_sample >= 1
        ):
            raise InvalidRolloutSpecError(f"min_sample must be >= 1, got {self.min_sample!r}")


_STATES = frozenset(DeviceRolloutState)


def _check_counts(name: str, counts: Mapping[str, int]) -> None:
    for state, count in counts.items():
        if state not in _STATES:
            raise InvalidGateInputError(f"{name} has an unknown device state {state!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidGateInputError(f"{name}[{state!r}] must be a count >= 0, got {count!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GateInput:
    """The counts a gate judges: per device state, in the current wave and over all waves."""

    wave_size: int
    wave_counts: Mapping[str, int]
    cumulative_counts: Mapping[str, int]

    def __post_init__(self) -> None:
        if isinstance(self.wave_size, bool) or not isinstance(self.wave_size, int):
            raise InvalidGateInputError(f"wave_size must be an integer, got {self.wave_size!r}")
        if self.wave_size < 0:
            raise InvalidGateInputError(f"wave_size must be >= 0, got {self.wave_size}")
        _check_counts("wave_counts", self.wave_counts)
        _check_counts("cumulative_counts", self.cumulative_counts)


class Verdict(enum.StrEnum):
    """What the gate decides."""

    CONTINUE = "continue"
    PASS = "pass"  # noqa: S105 -- a gate verdict, not a password
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A verdict with the numbers behind it and a sentence for people."""

    verdict: Verdict
    failures: int
    decided: int
    budget: float
    reason: str


def _total(counts: Mapping[str, int], states: frozenset[DeviceRolloutState]) -> int:
    return sum(counts.get(state, 0) for state in states)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def evaluate_gate(policy: GatePolicy, data: GateInput) -> GateDecision:
    """Judge the rollout by the rule in this module's docstring."""
    failing = FAILURES | {DeviceRolloutState.TIMED_OUT} if policy.timeouts_fail else FAILURES
    failures = _total(data.cumulative_counts, failing)
    decided = _total(data.cumulative_counts, SUCCESS) + failures
    started = sum(data.cumulative_counts.values())
    rate = Fraction(str(float(policy.max_failure)))
    early_budget = rate * max(started, policy.min_sample)
    budget = rate * max(decided, policy.min_sample)
    wave_decided = _total(data.wave_counts, DECIDED)
    if decided >= min(policy.min_sample, started) and failures > early_budget:
        verdict, used = Verdict.ABORT, early_budget
        reason = (
            f"{_plural(failures, 'failure')} over a budget of {float(early_budget):g} "
            f"({float(rate * 100):g}% of max({started} started, min sample {policy.min_sample})), "
            "whatever the undecided devices do"
        )
    elif wave_decided >= data.wave_size:
        basis = (
            f"a budget of {float(budget):g} ({float(rate * 100):g}% of "
            f"max({decided} decided, min sample {policy.min_sample}))"
        )
        used = budget
        if failures > budget:
            verdict = Verdict.ABORT
            reason = f"wave complete; {_plural(failures, 'failure')} over {basis}"
        else:
            verdict = Verdict.PASS
            reason = (
                f"wave complete ({wave_decided} of {data.wave_size} decided); "
                f"{_plural(failures, 'failure')} within {basis}"
            )
    else:
        verdict, used = Verdict.CONTINUE, early_budget
        reason = (
            f"waiting for {data.wave_size - wave_decided} of {data.wave_size} devices; "
            f"{_plural(failures, 'failure')} within {float(early_budget):g} of {started} started"
        )
    return GateDecision(
        verdict=verdict, failures=failures, decided=decided, budget=float(used), reason=reason
    )
