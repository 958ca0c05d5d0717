"""The renewal watch (a beat task) moves open plans on; `plan_view` shows one with its rollouts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.renewal import PlanState, RenewalPlan
from orchestrator.domain.rollout_states import RolloutState
from orchestrator.logs import get_logger
from orchestrator.services.renewals.deps import RenewalDeps, endpoint, switched
from orchestrator.services.rollout import command, create_rollout, load

__all__ = ["plan_view", "watch_renewals"]

log = get_logger(__name__)

R = RolloutState


def plan_view(deps: RenewalDeps, plan_id: str) -> dict[str, Any] | None:
    """The plan with its impact and the live state of its rollouts (`GET /v1/plans/{id}`).

    A rollout's state is one read of the rollout, whatever its size.
    """
    plan = deps.plans.load(plan_id)
    if plan is None:
        return None
    view = plan.to_json()
    for field, rollout_id in (
        ("add_rollout", plan.add_rollout),
        ("retire_rollout", plan.retire_rollout),
    ):
        if rollout_id:
            view[f"{field}_state"] = load(deps.rollouts.store, rollout_id).state.value
    return view


def watch_renewals(deps: RenewalDeps, *, now: datetime) -> dict[str, str]:
    """Move open plans on: add done -> watch the endpoints -> soak -> retire -> done."""
    states = {}
    for plan in deps.plans.open_plans():
        advanced = _advance(deps, plan, now=now)
        if advanced != plan:  # never write back an unchanged copy
            deps.plans.save(advanced)
        states[plan.id] = advanced.state.value
    return states


def _advance(deps: RenewalDeps, plan: RenewalPlan, *, now: datetime) -> RenewalPlan:
    """One step of one plan, as far as its rollouts and the endpoints allow."""
    if plan.state is PlanState.ADDING and plan.add_rollout is not None:
        return _follow_add(deps, plan, plan.add_rollout, now=now)
    if plan.state is PlanState.AWAITING_SWITCH:
        return _watch_endpoints(deps, plan, now=now)
    if plan.state is PlanState.SOAKING and plan.retire_due(now):
        try:
            return _retire(deps, plan, now=now)
        except CertfleetError as exc:  # e.g. devices still claimed: try again next time
            log.warning("renewal_retire_waiting", plan_id=plan.id, error=str(exc))
            return plan.waiting(f"retire not planned yet: {exc}")
    if plan.state is PlanState.RETIRING and plan.retire_rollout is not None:
        return _follow_retire(deps, plan, plan.retire_rollout)
    return plan


def _follow_retire(deps: RenewalDeps, plan: RenewalPlan, rollout_id: str) -> RenewalPlan:
    """Done once the trust.retire ended; failed if it rolled back."""
    rollout = load(deps.rollouts.store, rollout_id)
    if rollout.state is R.COMPLETED_WITH_TIMEOUTS:
        unconfirmed = len(rollout.unconfirmed or ())
        reason = f"{unconfirmed} devices did not confirm the retire; they keep both CAs"
        return plan.moved_to(PlanState.DONE, reason=reason)
    if rollout.state in (R.COMPLETED, R.ROLLED_BACK):
        done = rollout.state is R.COMPLETED
        return plan.moved_to(PlanState.DONE if done else PlanState.FAILED)
    return plan


def _follow_add(
    deps: RenewalDeps, plan: RenewalPlan, rollout_id: str, *, now: datetime
) -> RenewalPlan:
    """Start the held trust.add once its chain is valid (auto rollout); see how it ended."""
    loaded = load(deps.rollouts.store, rollout_id)
    rollout = loaded.state
    if rollout is R.CREATED and deps.policy.auto_rollout and plan.chain_valid_at(now):
        command(deps.rollouts, rollout_id, "resume", now=now, actor="renewal")
    elif rollout is R.COMPLETED:
        return plan.add_completed()
    elif rollout is R.COMPLETED_WITH_TIMEOUTS:
        unconfirmed = loaded.unconfirmed or ()
        log.warning(
            "renewal_add_unconfirmed",
            plan_id=plan.id,
            rollout_id=rollout_id,
            devices=len(unconfirmed),
        )
        return plan.add_completed(unconfirmed=unconfirmed)
    elif rollout is R.ROLLED_BACK:
        reason = f"trust.add rollout {rollout_id} rolled back"
        return plan.moved_to(PlanState.FAILED, reason=reason)
    return plan


def _watch_endpoints(deps: RenewalDeps, plan: RenewalPlan, *, now: datetime) -> RenewalPlan:
    """Switched once any endpoint serves the new chain's leaf (certfleet's own handshake)."""
    leaf = plan.chain.leaf_sha256
    for each in plan.endpoints:
        host, port = endpoint(each, "endpoint")
        if leaf and deps.tls_probe.leaf_sha256(host, port) == leaf:
            return switched(deps, plan, now=now, cause=f"{each} serves the new chain")
    return plan


def _retire(deps: RenewalDeps, plan: RenewalPlan, *, now: datetime) -> RenewalPlan:
    """trust.retire of the old tag for the devices that hold both the old and the new CA."""
    old, new = plan.old_tag, plan.new_tag
    if old is None or new is None:
        return plan.moved_to(PlanState.DONE, reason="nothing was added, so nothing to retire")
    devices = deps.inventory.device_ids()
    active = deps.inventory.active_tags_of(devices)
    # Devices that never confirmed the new CA keep the old one, whatever they report.
    kept = set(plan.unconfirmed)
    both = sorted(
        d for d, tags in active.items() if tags and old in tags and new in tags and d not in kept
    )
    if not both:
        reason = "no device holds both CAs"
        if kept:
            reason = f"no confirmed device holds both CAs; {len(kept)} never confirmed the new CA"
        return plan.moved_to(PlanState.DONE, reason=reason)
    spec = deps.policy.spec(
        "trust.retire",
        ca_pems=(),
        tag=old,
        spare_tag=new,
        probe=endpoint(plan.endpoints[0], "endpoint"),
        name=f"{plan.id}-retire",
    )
    rollout_id = create_rollout(
        deps.rollouts, spec, now=now, actor="renewal", start=deps.policy.auto_rollout, devices=both
    )
    log.info("renewal_retiring", plan_id=plan.id, rollout_id=rollout_id, devices=len(both))
    return plan.retiring(rollout_id)
