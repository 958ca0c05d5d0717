"""CA renewals: the webhook's events, impact analysis, and the two-phase rotation.

A `certificate.renewed` (or `ca.renewed`) event becomes a *plan*: the new chain is
validated against what the modem can take, certfleet checks the staging endpoint
itself, works out which devices would fail at cutover, and gives the `at_risk`
ones a `trust.add` rollout. Once the server serves the new chain (seen by the
endpoint watch, or said by `certificate.activated`) and a soak has passed, the
devices holding both CAs get a `trust.retire` of the old one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes

from orchestrator.domain.chains import (
    ChainValidationError,
    DeviceTrust,
    ValidatedChain,
    assess_ca_impact,
    assess_impact,
    validate_ca,
    validate_server_chain,
)
from orchestrator.domain.endpoints import InvalidEndpointError, parse_endpoint
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.rollout import (
    RolloutSpec,
    parse_percent,
    parse_waves,
)
from orchestrator.logs import get_logger
from orchestrator.services.rollout_engine import RolloutDeps
from orchestrator.services.rollouts import command, create_rollout, rollout_status

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["InvalidEventError", "accept_event", "plan_view", "watch_renewals"]

log = get_logger(__name__)

OPEN_STATES = ("scheduled", "adding", "awaiting_switch", "soaking", "retiring")


class InvalidEventError(CertfleetError):
    """A CA event certfleet cannot act on; `message` says why (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- plans ---------------------------------------------------------------------------------


def _save(container: Container, plan: dict[str, Any]) -> None:
    container.plans.save(plan)


def _load(container: Container, plan_id: str) -> dict[str, Any] | None:
    return container.plans.load(plan_id)


def _open_plans(container: Container) -> list[dict[str, Any]]:
    return [p for p in container.plans.recent() if p["state"] in OPEN_STATES]


def plan_view(container: Container, plan_id: str) -> dict[str, Any] | None:
    """The plan with its impact and the live state of its rollouts (`GET /v1/plans/{id}`)."""
    plan = _load(container, plan_id)
    if plan is None:
        return None
    deps = container.rollout_deps()
    for field in ("add_rollout", "retire_rollout"):
        rollout_id = plan.get(field)
        if rollout_id:
            status = rollout_status(deps, rollout_id)
            plan[f"{field}_state"] = status["state"]
    return plan


# -- events ---------------------------------------------------------------------------------


def _endpoint(text: object, what: str) -> tuple[str, int]:
    try:
        return parse_endpoint(text, what=what)
    except InvalidEndpointError as exc:
        raise InvalidEventError(str(exc)) from None


def _endpoints(data: Mapping[str, Any], *, required: bool) -> list[str]:
    endpoints = data.get("endpoints", [])
    if not isinstance(endpoints, list) or (required and not endpoints):
        raise InvalidEventError("data.endpoints must be a non-empty list of HOST:PORT strings")
    for endpoint in endpoints:
        _endpoint(endpoint, "each endpoint")
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
    container: Container, event_type: str, data: Mapping[str, Any], *, now: datetime
) -> dict[str, Any]:
    """Act on one verified CA event; returns `{"plan_id", "status", ...}`.

    Raises:
        InvalidEventError: the event is unknown, malformed, or its chain is unusable.
    """
    if not isinstance(data, Mapping):
        raise InvalidEventError("data must be an object")
    if event_type == "certificate.activated":
        return _activated(container, _endpoints(data, required=True), now=now)
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
        raise InvalidEventError(f"{exc.problem.value}: {exc.message}") from None
    endpoints = _endpoints(data, required=event_type == "certificate.renewed")
    staging = data.get("staging_endpoint")
    if staging is not None:
        _endpoint(staging, "data.staging_endpoint")
    if not endpoints and staging is None:
        raise InvalidEventError("ca.renewed needs endpoints or a staging_endpoint to probe")
    return _plan(
        container,
        event_type=event_type,
        chain=chain,
        endpoints=endpoints,
        staging=staging,
        cutover=_time(data, "cutover_at"),
        now=now,
    )


def _device_trust(container: Container) -> list[DeviceTrust]:
    inventory, library = container.inventory, container.library
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


def _tags(container: Container, devices: Sequence[str]) -> tuple[int, int]:
    """(live tag, spare tag) of the rotation pair, by what the devices use now."""
    first, second = container.settings.ca_tag_pair
    active = container.inventory.active_tags_of(list(devices))
    in_first = sum(1 for tags in active.values() if tags and first in tags)
    in_second = sum(1 for tags in active.values() if tags and second in tags)
    return (first, second) if in_first >= in_second else (second, first)


def _plan(
    container: Container,
    *,
    event_type: str,
    chain: ValidatedChain,
    endpoints: list[str],
    staging: str | None,
    cutover: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    settings = container.settings
    plan_id = f"plan-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    at = max(cutover or now, now)
    trust = _device_trust(container)
    impact = (
        assess_impact(chain, trust, at=at)
        if event_type == "certificate.renewed"
        else assess_ca_impact(chain, trust)
    )
    plan: dict[str, Any] = {
        "id": plan_id,
        "event": event_type,
        "created_at": now.isoformat(),
        "endpoints": endpoints,
        "staging_endpoint": staging,
        "cutover_at": cutover.isoformat() if cutover else None,
        "chain": {
            "anchor_subject": chain.anchor.subject.rfc4514_string(),
            "anchor_not_after": chain.anchor.not_valid_after_utc.isoformat(),
            "hosts": list(chain.hosts),
            "chain_bytes": chain.chain_bytes,
            "leaf_sha256": _leaf_sha256(chain),
            "not_yet_valid_until": (
                chain.not_yet_valid_until.isoformat() if chain.not_yet_valid_until else None
            ),
        },
        "anchor_pem": chain.anchor_pem,
        "impact": impact.as_json(),
        "add_rollout": None,
        "retire_rollout": None,
    }
    # certfleet's own preflight: the staging endpoint must validate with the new CA alone
    if staging is not None:
        host, port = _endpoint(staging, "staging_endpoint")
        outcome = container.tls_probe.check(host, port, ca_pems=[chain.anchor_pem])
        if not outcome.ok:
            plan.update(state="refused", reason=f"preflight against {staging}: {outcome.detail}")
            _save(container, plan)
            log.warning("renewal_refused", plan_id=plan_id, reason=plan["reason"])
            return {"plan_id": plan_id, "status": "refused", "reason": plan["reason"]}
    if not impact.at_risk:
        plan.update(state="awaiting_switch", reason="no device is at risk")
        _save(container, plan)
        return {"plan_id": plan_id, "status": plan["state"], "impact": impact.counts()}
    live, spare = _tags(container, impact.at_risk)
    probe_host, probe_port = _endpoint(staging or endpoints[0], "probe endpoint")
    spec = RolloutSpec(
        kind="trust.add",
        ca_pems=(chain.anchor_pem,),
        tag=live,
        spare_tag=spare,
        probe_host=probe_host,
        probe_port=probe_port,
        probe_with="spare" if staging else "active",
        waves=parse_waves(settings.rollout_waves),
        bake_seconds=settings.rollout_bake_seconds,
        max_failure=parse_percent(settings.rollout_max_failure),
        min_sample=settings.rollout_min_sample,
        device_timeout_seconds=settings.rollout_device_timeout_seconds,
        name=f"{plan_id}-add",
    )
    start = settings.auto_rollout and chain.not_yet_valid_until is None
    try:
        rollout_id = create_rollout(
            container.rollout_deps(),
            spec,
            now=now,
            actor="webhook",
            start=start,
            devices=impact.at_risk,
        )
    except CertfleetError as exc:
        plan.update(state="refused", reason=str(exc))
        _save(container, plan)
        return {"plan_id": plan_id, "status": "refused", "reason": plan["reason"]}
    plan.update(state="adding", add_rollout=rollout_id, old_tag=live, new_tag=spare)
    _save(container, plan)
    log.info("renewal_planned", plan_id=plan_id, rollout_id=rollout_id, **impact.counts())
    return {
        "plan_id": plan_id,
        "status": "adding" if start else "planned",
        "rollout_id": rollout_id,
        "impact": impact.counts(),
    }


def _leaf_sha256(chain: ValidatedChain) -> str | None:
    if not chain.intermediates and chain.leaf is chain.anchor:
        return None
    return str(chain.leaf.fingerprint(hashes.SHA256()).hex())


def _activated(container: Container, endpoints: list[str], *, now: datetime) -> dict[str, Any]:
    """Mark the newest plan for these endpoints as switched (if the watch has not already)."""
    matched = [
        p
        for p in container.plans.recent()
        if p["state"] not in ("refused", "failed") and set(endpoints) & set(p["endpoints"])
    ]
    if not matched:
        raise InvalidEventError(f"no renewal plan serves {', '.join(endpoints)}")
    plan = matched[0]
    if plan["state"] in ("adding", "awaiting_switch") and not plan.get("activated_at"):
        _mark_switched(container, plan, now=now, cause="certificate.activated")
        return {"plan_id": plan["id"], "status": plan["state"]}
    return {
        "plan_id": plan["id"],
        "status": plan["state"],
        "note": f"already switched ({plan.get('activated_by', 'activated')})",
    }


def _mark_switched(
    container: Container, plan: dict[str, Any], *, now: datetime, cause: str
) -> None:
    plan["activated_at"] = now.isoformat()
    plan["activated_by"] = cause
    plan["retire_after"] = (
        now + timedelta(seconds=container.settings.retire_soak_seconds)
    ).isoformat()
    if plan["state"] == "awaiting_switch":
        plan["state"] = "soaking"
    _save(container, plan)
    log.info("renewal_switched", plan_id=plan["id"], cause=cause)


# -- the beat task --------------------------------------------------------------------------


def watch_renewals(container: Container, *, now: datetime) -> dict[str, str]:
    """Move open plans on: add done -> watch the endpoints -> soak -> retire -> done."""
    states = {}
    deps = container.rollout_deps()
    for plan in _open_plans(container):
        before = json.dumps(plan, sort_keys=True)
        _advance(container, deps, plan, now=now)
        if json.dumps(plan, sort_keys=True) != before:  # never write back an unchanged copy
            _save(container, plan)
        states[plan["id"]] = plan["state"]
    return states


def _advance(
    container: Container, deps: RolloutDeps, plan: dict[str, Any], *, now: datetime
) -> None:
    """One step of one plan, as far as its rollouts and the endpoints allow."""
    state = plan["state"]
    if state == "adding":
        rollout = rollout_status(deps, plan["add_rollout"])["state"]
        valid_from = plan["chain"].get("not_yet_valid_until")
        if (
            rollout == "created"
            and container.settings.auto_rollout
            and (valid_from is None or now >= datetime.fromisoformat(valid_from))
        ):
            command(deps, plan["add_rollout"], "resume", now=now, actor="renewal")
        elif rollout == "completed":
            plan["state"] = "soaking" if plan.get("activated_at") else "awaiting_switch"
        elif rollout == "rolled_back":
            plan.update(
                state="failed", reason=f"trust.add rollout {plan['add_rollout']} rolled back"
            )
    elif state == "awaiting_switch":
        leaf = plan["chain"].get("leaf_sha256")
        for endpoint in plan["endpoints"]:
            host, port = _endpoint(endpoint, "endpoint")
            if leaf and container.tls_probe.leaf_sha256(host, port) == leaf:
                _mark_switched(container, plan, now=now, cause=f"{endpoint} serves the new chain")
                break
    elif state == "soaking" and now >= datetime.fromisoformat(plan["retire_after"]):
        try:
            _retire(container, plan, now=now)
        except CertfleetError as exc:  # e.g. devices still claimed: try again next time
            plan["reason"] = f"retire not planned yet: {exc}"
            log.warning("renewal_retire_waiting", plan_id=plan["id"], error=str(exc))
    elif state == "retiring":
        rollout = rollout_status(deps, plan["retire_rollout"])["state"]
        if rollout in ("completed", "rolled_back"):
            plan["state"] = "done" if rollout == "completed" else "failed"


def _retire(container: Container, plan: dict[str, Any], *, now: datetime) -> None:
    """trust.retire of the old tag for the devices that hold both the old and the new CA."""
    settings = container.settings
    old, new = plan.get("old_tag"), plan.get("new_tag")
    if old is None or new is None:
        plan.update(state="done", reason="nothing was added, so nothing to retire")
        return
    devices = container.inventory.device_ids()
    active = container.inventory.active_tags_of(devices)
    both = sorted(d for d, tags in active.items() if tags and old in tags and new in tags)
    if not both:
        plan.update(state="done", reason="no device holds both CAs")
        return
    host, port = _endpoint(plan["endpoints"][0], "endpoint")
    spec = RolloutSpec(
        kind="trust.retire",
        ca_pems=(),
        tag=old,
        spare_tag=new,
        probe_host=host,
        probe_port=port,
        waves=parse_waves(settings.rollout_waves),
        bake_seconds=settings.rollout_bake_seconds,
        max_failure=parse_percent(settings.rollout_max_failure),
        min_sample=settings.rollout_min_sample,
        device_timeout_seconds=settings.rollout_device_timeout_seconds,
        name=f"{plan['id']}-retire",
    )
    rollout_id = create_rollout(
        container.rollout_deps(),
        spec,
        now=now,
        actor="renewal",
        start=settings.auto_rollout,
        devices=both,
    )
    plan.update(state="retiring", retire_rollout=rollout_id)
    log.info("renewal_retiring", plan_id=plan["id"], rollout_id=rollout_id, devices=len(both))
