"""The wave plan: wave steps (a canary count, then cumulative percentages) and the cut."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from orchestrator.domain.durations import plain_number
from orchestrator.domain.errors import InvalidRolloutSpecError

__all__ = [
    "COUNT",
    "NUMBER",
    "WaveStep",
    "check_steps",
    "format_waves",
    "parse_waves",
    "plan_waves",
    "wave_sizes",
]

NUMBER: Final = re.compile(r"\d+(?:\.\d+)?")
COUNT: Final = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class WaveStep:
    """How far a wave reaches: a device count (a canary) or a cumulative percent of targets."""

    count: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.percent is None):
            raise InvalidRolloutSpecError("a wave is either a device count or a percentage")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise InvalidRolloutSpecError(f"a canary count must be >= 1, got {self.count!r}")
        if self.percent is not None and not (
            math.isfinite(self.percent) and 0 < self.percent <= 100
        ):
            raise InvalidRolloutSpecError(
                f"a wave percentage must be above 0% and at most 100%, got {self.percent!r}"
            )

    def __str__(self) -> str:
        if self.percent is None:
            return str(self.count)
        return f"{plain_number(self.percent)}%"


def check_steps(steps: Sequence[WaveStep]) -> None:
    """Refuse steps that are empty, unordered, or do not end at 100%."""
    if not steps:
        raise InvalidRolloutSpecError("a rollout needs at least one wave, e.g. '5,10%,100%'")
    last = 0.0
    for index, step in enumerate(steps):
        if step.percent is None:
            if index:
                raise InvalidRolloutSpecError(
                    f"only the first wave may be a device count, got {step} as wave {index + 1}"
                )
            continue
        if step.percent <= last:
            raise InvalidRolloutSpecError(
                f"wave percentages must increase: {step} after {plain_number(last)}%"
            )
        last = step.percent
    if steps[-1].percent != 100:
        raise InvalidRolloutSpecError(f"waves must end at 100%, not {steps[-1]}")


def parse_waves(text: str) -> tuple[WaveStep, ...]:
    """Read `"1%,10%,50%,100%"`, or a canary count first: `"5,25%,100%"`."""
    steps: list[WaveStep] = []
    for raw in text.split(","):
        item = raw.strip()
        if item.endswith("%") and NUMBER.fullmatch(item[:-1].strip()):
            steps.append(WaveStep(percent=float(item[:-1])))
        elif COUNT.fullmatch(item):
            steps.append(WaveStep(count=int(item)))
        else:
            raise InvalidRolloutSpecError(
                f"wave {item!r} in {text!r} is neither a device count nor a percentage like 10%"
            )
    check_steps(steps)
    return tuple(steps)


def format_waves(steps: Sequence[WaveStep]) -> str:
    """The text form `parse_waves` reads back, e.g. `"5,10%,100%"`."""
    return ",".join(str(step) for step in steps)


def wave_sizes(steps: Sequence[WaveStep], total: int) -> list[int]:
    """Devices per wave for `total` targets: each wave non-empty, the sizes summing to `total`.

    A wave reaches ceil(total * percent / 100) devices cumulatively (a count: at
    most `total`), and at least one more than the wave before while any remain.
    """
    if total < 0:
        raise InvalidRolloutSpecError(f"a rollout cannot target {total} devices")
    check_steps(steps)
    sizes: list[int] = []
    reached = 0
    for step in steps:
        if reached == total:
            break
        if step.count is not None:
            target = min(step.count, total)
        else:
            target = math.ceil(Fraction(total) * Fraction(str(step.percent)) / 100)
        cumulative = min(total, max(target, reached + 1))
        sizes.append(cumulative - reached)
        reached = cumulative
    return sizes


def plan_waves(
    seed: str, device_ids: Iterable[str], sizes_from: Sequence[WaveStep]
) -> list[list[str]]:
    """Cut the targets into waves in an order that only `seed` and the ids decide."""
    ordered = sorted(
        set(device_ids), key=lambda d: (hashlib.sha256(f"{seed}:{d}".encode()).digest(), d)
    )
    plan: list[list[str]] = []
    start = 0
    for size in wave_sizes(sizes_from, len(ordered)):
        plan.append(ordered[start : start + size])
        start += size
    return plan
