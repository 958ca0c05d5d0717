"""The device contract's conformance suite: `certfleet conformance DEVICE_ID ...`.

Drives any device that speaks docs/protocol.md over MQTT through a scripted
sequence of signed bundles (the plan: `plan_ops`, `plan_refusals`, `plan_unsafe`,
`plan_delegation`, and `plan_identity` for a device with an identity), and judges each
step by the device's reports and its reported trust (docs/conformance.md).
"""

from orchestrator.conformance.model import Expect, Send, Step, Trust
from orchestrator.conformance.suite import Outcome, SuiteOptions, build_plan, run_suite
from orchestrator.conformance.verdict import StepResult

__all__ = [
    "Expect",
    "Outcome",
    "Send",
    "Step",
    "StepResult",
    "SuiteOptions",
    "Trust",
    "build_plan",
    "run_suite",
]
