"""Put the device back as the suite found it when a failed step left it otherwise.

The plan restores the device itself when every step passes. When one failed, the
device may still trust one of the suite's temporary signer keys (which die with the
run), hold the suite's list of revoked delegations, present the identity the suite
gave it, or hold a spare tag: the suite then sends, best effort, the bundles that make
its original key the trusted one, send its revocation back, roll its identity back and
retire the spare tags, and reports whether the device ends with its first trust.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.conformance.inbox import trust_of
from orchestrator.conformance.model import Expect, Send, Step, Trust
from orchestrator.conformance.plan import COMMITTED, RETIRED, ROLLED_BACK, PlanInputs, Script
from orchestrator.conformance.runner import Runner
from orchestrator.conformance.verdict import StepResult

__all__ = ["restore", "restore_bundles"]


def _touches_signers(step: Step) -> bool:
    return any(s.op == "trust-signer" or s.signer.startswith("temp") for s in step.sends)


def _revokes(step: Step) -> bool:
    return any(s.op == "revoke" for s in step.sends)


def restore_bundles(
    inputs: PlanInputs, steps: Sequence[Step], failed: set[str], current: Trust | None
) -> list[tuple[Send, Expect]]:
    """What to send, in order, to undo what failed steps may have left (empty: nothing)."""
    script = Script(inputs)
    bundles: list[tuple[Send, Expect]] = []
    if any(step.name in failed and _touches_signers(step) for step in steps):
        temporary = sorted(name for name in inputs.signers if name.startswith("temp"))
        for name in temporary:
            if name != "temp1":
                bundles.append(
                    (script.trust_signer("main", retire=name, signer="temp1"), COMMITTED)
                )
        for signer in ("temp1", "main"):
            bundles.append((script.trust_signer("main", retire="temp1", signer=signer), COMMITTED))
    if any(step.name in failed and _revokes(step) for step in steps):
        held = tuple(sorted(inputs.revocation.kids))
        bundles.append((script.revoke(held, inputs.revocation.before), COMMITTED))
    initial = inputs.initial
    if current is not None and current.identity != initial.identity:
        keygens = [
            send.rid
            for step in steps
            for send in step.sends
            if send.op == "keygen" and send.fields.get("tag") == current.identity
        ]
        if keygens:
            bundles.append((script.rollback(keygens[-1]), ROLLED_BACK))
    if current is not None and not current.same_as(initial):
        intact = all(current.items.get((t, 0)) == initial.items.get((t, 0)) for t in initial.active)
        extra = sorted({tag for tag, _ in current.items} - {tag for tag, _ in initial.items})
        if intact and extra:
            bundles.append((script.retire("", tuple(extra), initial.active), RETIRED))
    return bundles


async def restore(
    runner: Runner, inputs: PlanInputs, steps: Sequence[Step], results: Sequence[StepResult]
) -> StepResult | None:
    """Send the restore bundles if any are needed; the `restore` row, or None."""
    state = runner.inbox.latest_state()
    current = trust_of(state.document or {}) if state is not None else None
    failed = {r.name for r in results if not r.passed}
    bundles = restore_bundles(inputs, steps, failed, current)
    if not bundles:
        return None
    answers = []
    for send, expect in bundles:
        reports = await runner.send(send, expect)
        answers.append(f"{send.op}: {reports[-1].get('phase') if reports else 'no report'}")
    after = await runner.settle(inputs.initial)
    passed = after is not None and after.same_as(inputs.initial)
    return StepResult(
        name="restore",
        passed=passed,
        expected=inputs.initial.describe(),
        got=after.describe() if after is not None else "no state",
        detail="sent " + ", ".join(answers),
    )
