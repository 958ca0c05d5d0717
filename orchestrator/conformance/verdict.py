"""Whether a step passed: its reports against the expected phases, then the device's trust.

Pure: the runner hands in what it sent and heard. A step fails on the first of
several kinds of evidence, and its detail lists every one found, so a firmware team
sees all that is wrong with one bundle at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.conformance.csr_form import csr_problems
from orchestrator.conformance.inbox import Heard, trust_of, trust_problems
from orchestrator.conformance.model import Expect, Step, Trust

__all__ = ["Sent", "StepResult", "judge", "judge_state", "order_problems"]


@dataclass(frozen=True, slots=True)
class Sent:
    """What a sent bundle says of itself, for the reports to name (seq 0: unreadable)."""

    seq: int
    rid: str
    op: str | None


@dataclass(frozen=True, slots=True)
class StepResult:
    """One row of the result table, and of the JSON document."""

    name: str
    passed: bool
    expected: str
    got: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form (docs/conformance.md)."""
        return {
            "name": self.name,
            "passed": self.passed,
            "expected": self.expected,
            "got": self.got,
            "detail": self.detail,
        }


def _phase(heard: Heard) -> str:
    phase, reason = heard.get("phase", "?"), heard.get("reason", "?")
    return str(phase) if reason == "ok" else f"{phase}/{reason}"


def _report_problems(expect: Expect, sent: Sent, heard: Sequence[Heard]) -> list[str]:
    problems = [h.problem for h in heard if h.problem]
    phases = tuple(h.get("phase") for h in heard)
    if phases != expect.phases:
        problems.append(f"phases {list(phases)}, expected {list(expect.phases)}")
    elif heard[-1].get("reason") not in expect.reasons:
        problems.append(
            f"reason {heard[-1].get('reason')!r}, expected one of {sorted(expect.reasons)}"
        )
    elif any(h.get("reason") != "ok" for h in heard[:-1]):
        problems.append("a phase before the last carries a reason other than ok")
    for h in heard:
        if h.get("phase") == "csr":
            problems.extend(csr_problems(h))
        names = (h.get("seq"), h.get("rollout_id"), h.get("op"))
        if expect.named and sent.seq and names != (sent.seq, sent.rid, sent.op):
            problems.append(
                f"{h.get('phase')} names seq/rid/op {list(names)}, "
                f"the bundle is {[sent.seq, sent.rid, sent.op]}"
            )
        if not expect.named and names != (0, "", None):
            problems.append(
                f"{h.get('phase')} names seq/rid/op {list(names)}: a bundle refused before its "
                "signature verified (or unreadable) must name none (0, '', no op)"
            )
    return problems


def judge_state(
    expected: Trust, state: Heard | None, seen: Sequence[Heard]
) -> tuple[str, list[str]]:
    """The device's trust as its last state says, and what is wrong with it or on the way."""
    problems = [h.problem for h in seen if h.problem]
    for heard in seen:
        if heard.document is not None and not heard.problem:
            problems.extend(
                f"a state broke an invariant: {p}" for p in trust_problems(trust_of(heard.document))
            )
    if state is None or state.document is None:
        return "no state message", [*problems, "no state message heard from the device"]
    got = trust_of(state.document)
    if not got.same_as(expected):
        problems.append(f"state {got.describe()}; expected {expected.describe()}")
    return f"active {sorted(got.active)}", problems


def judge(
    step: Step,
    sent: Sequence[Sent],
    heard: Sequence[Sequence[Heard]],
    *,
    state: Heard | None,
    states_seen: Sequence[Heard],
    timeout: float,
    problems: Sequence[str] = (),
) -> StepResult:
    """The result of `step`: every report as expected, and the trust as `step.trust`.

    Args:
        problems: what the runner found wrong besides (bundles answered out of order).
    """
    assert step.trust is not None  # noqa: S101 -- the script sets it on every step
    problems = list(problems)
    got_parts: list[str] = []
    for expect, bundle, reports in zip(step.expects, sent, heard, strict=True):
        got_parts.append(", ".join(_phase(h) for h in reports) or "no report")
        if not reports:
            problems.append(f"no report within {timeout:g} s")
            continue
        problems.extend(_report_problems(expect, bundle, reports))
    state_got, state_problems = judge_state(step.trust, state, states_seen)
    problems.extend(state_problems)
    last = heard[-1][-1] if heard and heard[-1] else None
    reported_active = last.get("active_tags") if last is not None else None
    if isinstance(reported_active, list) and sorted(reported_active) != sorted(step.trust.active):
        problems.append(
            f"the last report says active {reported_active}, expected {sorted(step.trust.active)}"
        )
    expected = "; ".join(e.describe() for e in step.expects)
    active = f"active {sorted(step.trust.active)}"
    return StepResult(
        name=step.name,
        passed=not problems,
        expected=f"{expected} -> {active}" if expected else active,
        got=f"{'; '.join(got_parts)} -> {state_got}" if got_parts else state_got,
        detail="; ".join(problems),
    )


def order_problems(answered: Sequence[object], sent: Sequence[Sent]) -> list[str]:
    """Bundles sent at once must be answered in the order sent (`answered`: the seqs of
    the reports in arrival order)."""
    answered = list(answered)
    firsts = [answered.index(b.seq) for b in sent if b.seq in answered]
    if firsts != sorted(firsts):
        order = [answered[i] for i in sorted(firsts)]
        return [f"bundles sent in seq order {[b.seq for b in sent]} were answered {order}"]
    return []
