"""What the renewal use cases depend on: ports, the rollout use cases, a few settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.domain.endpoints import InvalidEndpointError, parse_endpoint
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.renewal import RenewalPlan
from orchestrator.domain.rollout import Kind, ProbeWith, RolloutSpec, parse_percent, parse_waves
from orchestrator.logs import get_logger
from orchestrator.ports import CredentialLibrary, InventoryStore, PlanStore, TlsProbe
from orchestrator.services.rollout import RolloutDeps

__all__ = [
    "EventTooLargeError",
    "InvalidEventError",
    "RenewalDeps",
    "RenewalPolicy",
    "endpoint",
    "switched",
]

log = get_logger(__name__)


class InvalidEventError(CertfleetError):
    """A CA event certfleet cannot act on; `message` says why (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EventTooLargeError(InvalidEventError):
    """A well-formed CA event whose CA or chain is over what a modem stores (HTTP 422).

    Refused before any plan is stored: no device could take it.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalPolicy:
    """The settings renewals follow (`CERTFLEET_*`), and the rollouts they plan with them."""

    ca_tag_pair: tuple[int, int]
    """The two sec_tags a rotation alternates between."""
    auto_rollout: bool
    """Whether a planned rollout starts by itself, or waits for `certfleet rollout resume`."""
    retire_soak_seconds: float
    """How long after the servers switch the old CA is retired."""
    rollout_waves: str
    rollout_bake_seconds: float
    rollout_max_failure: str
    rollout_min_sample: int
    rollout_device_timeout_seconds: float

    def spec(
        self,
        kind: Kind,
        *,
        ca_pems: tuple[str, ...],
        tag: int,
        spare_tag: int,
        probe: tuple[str, int],
        name: str,
        probe_with: ProbeWith = "spare",
    ) -> RolloutSpec:
        """A rollout with this policy's waves, bake, gate and device timeout.

        Raises:
            InvalidRolloutSpecError: the waves or the failure threshold do not parse.
        """
        host, port = probe
        return RolloutSpec(
            kind=kind,
            ca_pems=ca_pems,
            tag=tag,
            spare_tag=spare_tag,
            probe_host=host,
            probe_port=port,
            probe_with=probe_with,
            waves=parse_waves(self.rollout_waves),
            bake_seconds=self.rollout_bake_seconds,
            max_failure=parse_percent(self.rollout_max_failure),
            min_sample=self.rollout_min_sample,
            device_timeout_seconds=self.rollout_device_timeout_seconds,
            name=name,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalDeps:
    """The renewal use cases' dependencies (built by `Container.renewal_deps()`)."""

    plans: PlanStore
    inventory: InventoryStore
    library: CredentialLibrary
    tls_probe: TlsProbe
    rollouts: RolloutDeps
    """The rollout use cases renewals start and follow (no signer or publisher needed)."""
    policy: RenewalPolicy


def endpoint(text: object, what: str) -> tuple[str, int]:
    """`HOST:PORT` as (host, port).

    Raises:
        InvalidEventError: `text` is not an endpoint; the message names `what`.
    """
    try:
        return parse_endpoint(text, what=what)
    except InvalidEndpointError as exc:
        raise InvalidEventError(str(exc)) from None


def switched(deps: RenewalDeps, plan: RenewalPlan, *, now: datetime, cause: str) -> RenewalPlan:
    """`plan` once the servers serve the new chain, its soak started (the caller saves it)."""
    log.info("renewal_switched", plan_id=plan.id, cause=cause)
    soak = timedelta(seconds=deps.policy.retire_soak_seconds)
    return plan.switched(now=now, cause=cause, soak=soak)
