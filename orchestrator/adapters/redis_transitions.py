"""The wire form of `lua/rollout_transition.lua`: transitions in, results out.

A chunk of `DeviceTransition`s becomes the script's JSON list, each with its device's
record bucket, and its bundles' bytes (the script's ARGV after the first four); the
script's JSON answer becomes one `TransitionResult` per transition, with the reason of
each refusal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final

from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    TransitionRefusal,
    TransitionResult,
)

__all__ = ["decode_results", "encode_transitions"]

FIRST_BUNDLE_ARG: Final = 5
"""ARGV index (Lua counts from 1) of the first bundle: after prefix, time, actor, list."""

_REFUSALS: Final[dict[int, TransitionRefusal]] = {
    0: TransitionRefusal.STATE,
    -1: TransitionRefusal.UNKNOWN_DEVICE,
    -2: TransitionRefusal.NO_BUNDLE,
    -3: TransitionRefusal.SEQ,
}
"""The script's result codes (1 is applied)."""


def _deadline_arg(t: DeviceTransition) -> str:
    """The script's deadline argument: '' keep, '-' clear, else the epoch."""
    if t.clear_deadline:
        return "-"
    return "" if t.deadline is None else repr(t.deadline)


def encode_transitions(
    transitions: Sequence[DeviceTransition], bucket: Callable[[str], int]
) -> tuple[str, list[bytes]]:
    """The script's list of transitions (JSON) and the bundles' bytes it points into;
    `bucket` gives a device's record bucket."""
    items: list[list[str | int]] = []
    bundles: list[bytes] = []
    for t in transitions:
        index = 0
        if t.step is not None:
            bundles.append(t.bundle or b"")
            index = FIRST_BUNDLE_ARG - 1 + len(bundles)
        answers, answered_seq = t.match if t.match is not None else (None, 0)
        items.append(
            [
                t.device_id,
                t.new.value,
                ",".join(sorted(s.value for s in t.allowed)),
                t.cause,
                _deadline_arg(t),
                t.step.value if t.step is not None else "",
                index,
                str(t.seq) if t.seq is not None else "",
                answers.value if answers is not None else "",
                str(answered_seq),
                str(bucket(t.device_id)),
            ]
        )
    return json.dumps(items), bundles


def decode_results(
    transitions: Sequence[DeviceTransition], answers: Sequence[str | bytes]
) -> list[TransitionResult]:
    """One result per transition from the script's answers (one JSON list per call)."""
    found = [result for raw in answers for result in json.loads(raw)]
    return [
        TransitionResult(
            device_id=t.device_id,
            applied=code == 1,
            previous=DeviceRolloutState(state) if state else None,
            reason=_REFUSALS.get(code),
        )
        for t, (code, state) in zip(transitions, found, strict=True)
    ]
