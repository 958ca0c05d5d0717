"""Fleet status, rollouts and their commands, renewal plans: the bearer-token routes."""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from orchestrator.api.auth import Principal, require_operator
from orchestrator.api.models import (
    CommandResult,
    FleetStatusBody,
    PlanBody,
    RolloutStatusBody,
    RolloutSummary,
    error_responses,
)
from orchestrator.api.renewals import PlanView
from orchestrator.clock import utcnow
from orchestrator.logs import get_logger
from orchestrator.services.rollout import RolloutError, command, rollout_status
from orchestrator.services.scan import fleet_status

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["status_router"]

log = get_logger(__name__)

Verb = Literal["pause", "resume", "abort", "approve"]
VERBS: tuple[Verb, ...] = ("pause", "resume", "abort", "approve")
VERB_SUMMARIES: dict[Verb, str] = {
    "pause": "Pause a running rollout: nothing more is sent",
    "resume": "Resume a paused rollout, or start a held one",
    "abort": "Abort a rollout: every device that may hold the new CA is rolled back",
    "approve": "Approve the next wave of a manual rollout",
}


def _no_rollout(rollout_id: str) -> HTTPException:
    return HTTPException(404, f"no rollout {rollout_id!r} (see GET /v1/rollouts)")


def status_router(
    container: "Container", *, authenticate: Callable[..., Principal], plan_view: PlanView
) -> APIRouter:
    """The protected routes, bound to the container."""
    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(authenticate)],
        responses=error_responses(401, 503),
    )

    @router.get("/fleet/status", response_model=FleetStatusBody, tags=["fleet"])
    def get_fleet_status() -> dict[str, Any]:
        """The last scan's summary and the live counts of rejected device messages."""
        return fleet_status(container.inventory)

    @router.get("/rollouts", response_model=list[RolloutSummary], tags=["rollouts"])
    def list_rollouts(
        limit: Annotated[int, Query(ge=1, le=1000, description="Newest first, at most")] = 100,
    ) -> list[dict[str, Any]]:
        """Rollouts, newest first, with their device totals by state."""
        deps = container.rollout_deps()
        rows = []
        for rollout_id in container.rollouts.list_ids(limit=limit):
            try:
                status = rollout_status(deps, rollout_id)
            except RolloutError:
                continue  # removed since it was listed
            rows.append({k: status[k] for k in ("id", "kind", "state", "created_at", "totals")})
        return rows

    @router.get(
        "/rollouts/{rollout_id}",
        response_model=RolloutStatusBody,
        responses=error_responses(404),
        tags=["rollouts"],
    )
    def get_rollout(rollout_id: str) -> dict[str, Any]:
        """One rollout's waves, device counts and failed devices."""
        try:
            return rollout_status(container.rollout_deps(), rollout_id)
        except RolloutError:
            raise _no_rollout(rollout_id) from None

    def command_route(verb: Verb) -> Callable[..., CommandResult]:
        def run(
            rollout_id: str, principal: Annotated[Principal, Depends(authenticate)]
        ) -> CommandResult:
            require_operator(principal)
            if not container.rollouts.exists(rollout_id):
                raise _no_rollout(rollout_id)
            try:
                state = command(
                    container.rollout_deps(), rollout_id, verb, now=utcnow(), actor="api"
                )
            except RolloutError as exc:
                raise HTTPException(409, str(exc)) from None
            log.info("rollout_command", rollout_id=rollout_id, verb=verb, state=state, actor="api")
            return CommandResult.model_validate({"id": rollout_id, "state": state})

        run.__name__ = f"{verb}_rollout"
        run.__doc__ = VERB_SUMMARIES[verb] + "."
        return run

    for verb in VERBS:
        router.add_api_route(
            f"/rollouts/{{rollout_id}}/{verb}",
            command_route(verb),
            methods=["POST"],
            response_model=CommandResult,
            summary=VERB_SUMMARIES[verb],
            responses=error_responses(403, 404, 409),
            tags=["rollouts"],
        )

    @router.get(
        "/plans/{plan_id}",
        response_model=PlanBody,
        responses=error_responses(404),
        tags=["plans"],
    )
    def get_plan(plan_id: str) -> dict[str, Any]:
        """A renewal plan made from a CA event."""
        plan = plan_view(container, plan_id)
        if plan is None:
            raise HTTPException(404, f"no renewal plan {plan_id!r}")
        return dict(plan)

    return router
