"""The whole suite: read the device's state, build the plan from it, run it, judge it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.conformance import (
    plan_delegation,
    plan_identity,
    plan_ops,
    plan_refusals,
    plan_unsafe,
)
from orchestrator.conformance.forge import Forge
from orchestrator.conformance.inbox import Inbox, trust_of
from orchestrator.conformance.material import IdentityIssuer, KeyHolder, SuiteKey, public_point
from orchestrator.conformance.model import Step, Trust
from orchestrator.conformance.plan import PlanInputs, Script
from orchestrator.conformance.restore import restore
from orchestrator.conformance.runner import (
    Broker,
    ConformanceError,
    Runner,
    connected,
    first_state_result,
)
from orchestrator.conformance.verdict import StepResult
from orchestrator.protocol.delegation import Revocation
from orchestrator.protocol.limits import SIGNERS_MAX
from orchestrator.protocol.topics import Topics

__all__ = ["Outcome", "SuiteOptions", "build_plan", "run_suite", "spare_tags"]


def build_plan(inputs: PlanInputs) -> list[Step]:
    """Every step, in order; the last checks the device ends with the trust it began with."""
    script = Script(inputs)
    plan_ops.lifecycle(script)
    plan_refusals.refusals(script)
    plan_refusals.limits(script)
    plan_ops.signers(script)
    plan_unsafe.unsafe_sequences(script)
    plan_delegation.delegations(script)
    plan_delegation.revocations(script)
    plan_identity.identity(script)
    plan_identity.rotation(script)
    script.add(
        "ends as it started",
        "after the suite the device holds exactly its first trust (items, active list, identity)",
        (),
        (),
        trust=inputs.initial,
    )
    return script.steps


def spare_tags(trust: Trust, count: int = 3) -> tuple[int, ...]:
    """The first `count` tags above the device's active ones that hold nothing."""
    used = {tag for tag, _ in trust.items} | set(trust.active)
    tags: list[int] = []
    candidate = max(trust.active) + 1
    while len(tags) < count:
        if candidate not in used:
            tags.append(candidate)
        candidate += 1
    return tuple(tags)


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteOptions:
    """How to run the suite against one device (the `certfleet conformance` options)."""

    ca_good: str
    ca_bad: str
    probe_good: tuple[str, int]
    probe_bad: tuple[str, int]
    probe_bad_reason: str = "unknown_ca"
    spare: tuple[int, int, int] | None = None
    trusted_keys: int = 1
    step_timeout: float = 60.0
    state_wait: float = 60.0
    fallback_after: float = 5.0
    undo_window: float = 60.0
    identity_issuer: IdentityIssuer | None = None
    """With `probe_identity`: the CA the identity rotation's certificate is issued by."""
    probe_identity: tuple[str, int] | None = None
    """The identity rotation's probe: a TLS server the device's own CA tags validate, which
    requires a client certificate of `identity_issuer`."""
    revocation: Revocation = field(default_factory=Revocation)
    """The revoked delegations the device holds (certfleet's fleet-wide revocation): the
    revocation steps end by sending it back."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Every step's result; the device passed if every step did."""

    device_id: str
    results: list[StepResult]

    @property
    def passed(self) -> bool:
        """Whether every step passed."""
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[str]:
        """The names of the steps that failed, in order."""
        return [r.name for r in self.results if not r.passed]

    def to_json(self) -> dict[str, Any]:
        """`{"device_id", "passed", "steps": [...]}`, the schema of docs/conformance.md."""
        return {
            "device_id": self.device_id,
            "passed": self.passed,
            "steps": [r.to_json() for r in self.results],
        }


async def run_suite(
    *,
    device_id: str,
    broker: Broker,
    topics: Topics,
    main_key: KeyHolder,
    next_seq: Callable[[], int],
    clock: Callable[[], datetime],
    options: SuiteOptions,
    known_trust: Callable[[], Trust | None] = lambda: None,
    on_waiting: Callable[[float], None] = lambda _: None,
    on_result: Callable[[StepResult], None] | None = None,
) -> Outcome:
    """Run the suite against `device_id`.

    Args:
        main_key: the key the device trusts (the deployment's root key): it signs the
            suite's bundles, trust-signer and revoke, and the delegations of the suite's
            online keys.
        known_trust: the device's trust as certfleet last recorded it, used when the
            device publishes no state within `options.state_wait` seconds.
        on_waiting: called once the suite listens and waits for the device's state.
    """
    topics.state(device_id)  # a valid device id, or ValueError
    inbox = Inbox(device_id)
    async with connected(broker, topics, inbox) as client:
        on_waiting(options.state_wait)
        await inbox.wait(lambda: bool(inbox.states), options.state_wait)
        state = inbox.latest_state()
        trust, source = (trust_of(state.document or {}), "state message") if state else (None, "")
        if trust is None:
            trust, source = known_trust(), "certfleet's inventory"
        first = first_state_result(inbox.states[0] if inbox.states else None, trust, source)
        if on_result is not None:
            on_result(first)
        if trust is None:
            raise ConformanceError(
                f"no state from {device_id} within {options.state_wait:g} s and certfleet holds "
                "none: reset the device (it publishes its state on every CONNECT) after the "
                "suite says it is waiting, or run `certfleet listener` while it connects"
            )
        used = {tag for tag, _ in trust.items} | set(trust.active)
        if options.spare and used & set(options.spare):
            raise ConformanceError(
                f"--spare-tags {sorted(used & set(options.spare))} hold items or are active on "
                f"{device_id}; name tags it holds nothing in"
            )
        temp = {f"temp{n}": SuiteKey.generate() for n in (*range(1, SIGNERS_MAX + 1), 9)}
        online = {name: SuiteKey.generate() for name in plan_delegation.ONLINE_KEYS}
        keys: dict[str, KeyHolder] = {
            "main": main_key,
            "foreign": SuiteKey.generate(),
            **temp,
            **online,
        }
        inputs = PlanInputs(
            device_id=device_id,
            initial=trust,
            spare=options.spare or spare_tags(trust),  # type: ignore[arg-type]  # three tags
            ca_good=options.ca_good,
            ca_bad=options.ca_bad,
            probe_good=options.probe_good,
            probe_bad=options.probe_bad,
            probe_bad_reason=options.probe_bad_reason,
            signers={name: (key.key_id, public_point(key)) for name, key in keys.items()},
            run_id=uuid.uuid4().hex[:8],
            trusted_keys=options.trusted_keys,
            stage_window=max(900.0, 10 * options.step_timeout),
            fallback_after=options.fallback_after,
            undo_window=options.undo_window,
            probe_identity=options.probe_identity if options.identity_issuer else None,
            revocation=options.revocation,
        )
        issuer = options.identity_issuer
        runner = Runner(
            client,
            inbox,
            topics=topics,
            forge=Forge(device_id, keys),
            next_seq=next_seq,
            clock=clock,
            step_timeout=options.step_timeout,
            on_result=on_result,
            certify=issuer.certify if issuer is not None else None,
        )
        steps = build_plan(inputs)
        results = await runner.run(steps)
        restored = await restore(runner, inputs, steps, results)
        if restored is not None:
            results.append(restored)
            if on_result is not None:
                on_result(restored)
    return Outcome(device_id, [first, *results])
