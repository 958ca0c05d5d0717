"""`/plans`: the recent renewal plans; `/plans/{id}`: one plan laid out for an operator.

The plan page shows the document `GET /v1/plans/{id}` answers (the context's
`plan_view`): its impact, its at-risk devices a page at a time, its timeline and its
rollouts with their progress.
"""

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from orchestrator.api.console.templates import render
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.services.renewals.view import (
    at_risk_page,
    plan_rollouts,
    plan_timeline,
    recent_plans,
)

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext

__all__ = ["router"]


def router(ctx: "ConsoleContext") -> APIRouter:
    """The list of plans and one plan's page."""
    r = APIRouter(include_in_schema=False)
    container = ctx.container

    @r.get("/plans")
    def plans_page(
        request: Request,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        rows = recent_plans(container.plans, container.rollout_deps(), limit=limit)
        return render(request, "plans.html", session=session, plans=rows, limit=limit)

    @r.get("/plans/{plan_id}")
    def plan_page(
        request: Request,
        plan_id: str,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
        page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> Response:
        plan = ctx.plan_view(container, plan_id)
        if plan is None:
            return render(
                request, "plan.html", session=session, status_code=404, plan=None, plan_id=plan_id
            )
        rollouts = plan_rollouts(
            container.rollout_deps(),
            add=plan.get("add_rollout"),
            retire=plan.get("retire_rollout"),
        )
        return render(
            request,
            "plan.html",
            session=session,
            plan_id=plan_id,
            plan=plan,
            at_risk=at_risk_page(container.rollouts, plan, page=page),
            timeline=plan_timeline(plan),
            rollouts=rollouts,
        )

    return r
