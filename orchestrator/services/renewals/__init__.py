"""CA renewals: the webhook's events, impact analysis, and the two-phase rotation.

A `certificate.renewed` (or `ca.renewed`) event becomes a *plan*
(`orchestrator.domain.renewal.RenewalPlan`): the new chain is validated against what
the modem can take, certfleet checks the staging endpoint itself, works out which
devices would fail at cutover, and gives the `at_risk` ones a `trust.add` rollout
(`events`). Once the server serves the new chain (seen by the endpoint watch, or said
by `certificate.activated`) and a soak has passed, the devices holding both CAs get a
`trust.retire` of the old one (`watch`). Every use case takes a `RenewalDeps`.
"""

from orchestrator.services.renewals.deps import (
    EventTooLargeError,
    InvalidEventError,
    RenewalDeps,
    RenewalPolicy,
)
from orchestrator.services.renewals.events import accept_event
from orchestrator.services.renewals.watch import plan_view, watch_renewals

__all__ = [
    "EventTooLargeError",
    "InvalidEventError",
    "RenewalDeps",
    "RenewalPolicy",
    "accept_event",
    "plan_view",
    "watch_renewals",
]
