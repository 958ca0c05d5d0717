"""CA events: a renewal becomes a plan (impact, preflight, trust.add); an activation, a switch."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes

from orchestrator.domain.chains import (
    ChainProblem,
    ChainValidationError,
    DeviceTrust,
    ValidatedChain,
    assess_ca_impact,
    assess_impact,
    validate_ca,
    validate_server_chain,
)
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.renewal import ChainSummary, PlanImpact, PlanState, RenewalPlan
from orchestrator.logs import get_logger
from orchestrator.services.renewals.deps import (
    EventTooLargeError,
    InvalidEventError,
    RenewalDeps,
    endpoint,
    switched,
)
from orchestrator.services.rollout import create_rollout

__all__ = ["accept_event"]

log = get_logger(__name__)


def _endpoints(data: Mapping[str, Any], *, required: bool) -> list[str]:
    endpoints = data.get("endpoints", [])
    if not isinstance(endpoints, list) or (required and not endpoints):
        raise InvalidEventError("data.endpoints must be a non-empty list of HOST:PORT strings")
    for each in endpoints:
        endpoint(each, "each endpoint")
    return list(endpoints)


def _time(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidEventError(f"data.{key} must be an ISO 8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        raise InvalidEventError(f"data.{key} must carry a time zone")
    return moment


def accept_event(
    deps: RenewalDeps, event_type: str, data: Mapping[str, Any], *, now: datetime
) -> dict[str, Any]:
    """Act on one verified CA event; returns `{"plan_id", "status", ...}`.

    Raises:
        InvalidEventError: the event is unknown, malformed, or its chain is unusable;
            `EventTooLargeError` when the CA or chain is over what a modem stores.
    """
    if not isinstance(data, Mapping):
        raise InvalidEventError("data must be an object")
    if event_type == "certificate.activated":
        return _activated(deps, _endpoints(data, required=True), now=now)
    if event_type not in ("certificate.renewed", "ca.renewed"):
        raise InvalidEventError(
            f"unknown event type {event_type!r}; certfleet handles certificate.renewed, "
            "ca.renewed and certificate.activated"
        )
    try:
        if event_type == "certificate.renewed":
            pem = data.get("chain_pem")
            if not isinstance(pem, str):
                raise InvalidEventError("data.chain_pem must be the new chain, leaf first, in PEM")
            chain = validate_server_chain(pem, now=now)
        else:
            pem = data.get("ca_pem")
            if not isinstance(pem, str):
                raise InvalidEventError("data.ca_pem must be the new CA certificate in PEM")
            chain = validate_ca(pem, now=now)
    except ChainValidationError as exc:
        # Over the modem's CA chain item or server chain limit: well formed, but no
        # device could take it (422, not 400).
        error = EventTooLargeError if exc.problem is ChainProblem.TOO_LARGE else InvalidEventError
        raise error(f"{exc.problem.value}: {exc.message}") from None
    endpoints = _endpoints(data, required=event_type == "certificate.renewed")
    staging = data.get("staging_endpoint")
    if staging is not None:
        endpoint(staging, "data.staging_endpoint")
    if not endpoints and staging is None:
        raise InvalidEventError("ca.renewed needs endpoints or a staging_endpoint to probe")
    return _plan(
        deps,
        event_type=event_type,
        chain=chain,
        endpoints=endpoints,
        staging=staging,
        cutover=_time(data, "cutover_at"),
        now=now,
    )


def _device_trust(deps: RenewalDeps) -> list[DeviceTrust]:
    inventory, library = deps.inventory, deps.library
    devices = inventory.device_ids()
    digests = inventory.active_ca_digests(devices)
    every = sorted({d for per_device in digests.values() for d in per_device.values()})
    pems = {digest: library.get(digest) for digest in every}
    return [
        DeviceTrust(
            device_id=device,
            ca_pems=tuple(pem for d in per_device.values() if (pem := pems.get(d)) is not None),
            unknown_digests=tuple(d for d in per_device.values() if pems.get(d) is None),
        )
        for device, per_device in digests.items()
    ]


def _tags(deps: RenewalDeps, devices: Sequence[str]) -> tuple[int, int]:
    """(live tag, spare tag) of the rotation pair, by what the devices use now."""
    first, second = deps.policy.ca_tag_pair
    active = deps.inventory.active_tags_of(list(devices))
    in_first = sum(1 for tags in active.values() if tags and first in tags)
    in_second = sum(1 for tags in active.values() if tags and second in tags)
    return (first, second) if in_first >= in_second else (second, first)


def _chain_summary(chain: ValidatedChain) -> ChainSummary:
    own_leaf = bool(chain.intermediates) or chain.leaf is not chain.anchor
    return ChainSummary(
        anchor_subject=chain.anchor.subject.rfc4514_string(),
        anchor_not_after=chain.anchor.not_valid_after_utc,
        hosts=tuple(chain.hosts),
        chain_bytes=chain.chain_bytes,
        leaf_sha256=chain.leaf.fingerprint(hashes.SHA256()).hex() if own_leaf else None,
        not_yet_valid_until=chain.not_yet_valid_until,
    )


def _plan(
    deps: RenewalDeps,
    *,
    event_type: str,
    chain: ValidatedChain,
    endpoints: list[str],
    staging: str | None,
    cutover: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    policy = deps.policy
    plan_id = f"plan-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    at = max(cutover or now, now)
    trust = _device_trust(deps)
    impact = (
        assess_impact(chain, trust, at=at)
        if event_type == "certificate.renewed"
        else assess_ca_impact(chain, trust)
    )
    new_plan = functools.partial(
        RenewalPlan,
        id=plan_id,
        event=event_type,
        created_at=now,
        endpoints=tuple(endpoints),
        staging_endpoint=staging,
        cutover_at=cutover,
        chain=_chain_summary(chain),
        anchor_pem=chain.anchor_pem,
        impact=PlanImpact.of(impact),
    )
    # certfleet's own preflight: the staging endpoint must validate with the new CA alone
    if staging is not None:
        host, port = endpoint(staging, "staging_endpoint")
        outcome = deps.tls_probe.check(host, port, ca_pems=[chain.anchor_pem])
        if not outcome.ok:
            reason = f"preflight against {staging}: {outcome.detail}"
            deps.plans.save(new_plan(state=PlanState.REFUSED, reason=reason))
            log.warning("renewal_refused", plan_id=plan_id, reason=reason)
            return {"plan_id": plan_id, "status": "refused", "reason": reason}
    if not impact.at_risk:
        plan = new_plan(state=PlanState.AWAITING_SWITCH, reason="no device is at risk")
        deps.plans.save(plan)
        return {"plan_id": plan_id, "status": plan.state.value, "impact": impact.counts()}
    live, spare = _tags(deps, impact.at_risk)
    spec = policy.spec(
        "trust.add",
        ca_pems=(chain.anchor_pem,),
        tag=live,
        spare_tag=spare,
        probe=endpoint(staging or endpoints[0], "probe endpoint"),
        probe_with="spare" if staging else "active",
        name=f"{plan_id}-add",
    )
    start = policy.auto_rollout and chain.not_yet_valid_until is None
    try:
        rollout_id = create_rollout(
            deps.rollouts, spec, now=now, actor="webhook", start=start, devices=impact.at_risk
        )
    except CertfleetError as exc:
        deps.plans.save(new_plan(state=PlanState.REFUSED, reason=str(exc)))
        return {"plan_id": plan_id, "status": "refused", "reason": str(exc)}
    deps.plans.save(
        new_plan(state=PlanState.ADDING, add_rollout=rollout_id, old_tag=live, new_tag=spare)
    )
    log.info("renewal_planned", plan_id=plan_id, rollout_id=rollout_id, **impact.counts())
    return {
        "plan_id": plan_id,
        "status": "adding" if start else "planned",
        "rollout_id": rollout_id,
        "impact": impact.counts(),
    }


def _activated(deps: RenewalDeps, endpoints: list[str], *, now: datetime) -> dict[str, Any]:
    """Mark the newest plan for these endpoints as switched (if the watch has not already)."""
    matched = [
        plan
        for plan in deps.plans.recent()
        if plan.state not in (PlanState.REFUSED, PlanState.FAILED) and plan.serves(endpoints)
    ]
    if not matched:
        raise InvalidEventError(f"no renewal plan serves {', '.join(endpoints)}")
    plan = matched[0]
    if plan.may_switch:
        plan = switched(deps, plan, now=now, cause="certificate.activated")
        deps.plans.save(plan)
        return {"plan_id": plan.id, "status": plan.state.value}
    return {
        "plan_id": plan.id,
        "status": plan.state.value,
        "note": f"already switched ({plan.activated_by or 'activated'})",
    }
