"""`/rollouts`: every rollout with its state and progress; `/rollouts/{id}`: one rollout."""

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from orchestrator.api.console.templates import render
from orchestrator.domain.rollout_states import FAILURES, DeviceRolloutState
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.services.rollout import RolloutError, rollout_status

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext
    from orchestrator.bootstrap import Container

__all__ = ["progress", "rollout_live_context", "router"]

D = DeviceRolloutState
DONE = (D.COMMITTED, D.RETIRED, D.ROLLED_BACK, D.UNDO_REFUSED, D.CSR_REFUSED, D.TIMED_OUT)
FAILED = (*sorted(FAILURES), D.TIMED_OUT)


def progress(totals: dict[str, int]) -> dict[str, int]:
    """Devices in all, done (committed, retired, rolled back, failed, timed out), failed."""
    devices = sum(totals.values())
    failed = sum(totals.get(s, 0) for s in FAILED)
    done = sum(totals.get(s, 0) for s in DONE) + failed - totals.get(D.TIMED_OUT, 0)
    return {"devices": devices, "done": min(done, devices), "failed": failed}


def rollout_live_context(
    container: "Container", rollout_id: str, *, failed_page: int = 0
) -> dict[str, Any]:
    """Everything `rollout_live.html` renders for one rollout: read once per update and
    shared by every open page of that rollout (`live`). Keys: `status` (the rollout's
    state, waves and counts), `ended` (no more updates will come), `failed_page`.

    Raises `RolloutError` for an unknown rollout.
    """
    status = rollout_status(container.rollout_deps(), rollout_id)
    ended = status["state"] in ("completed", "completed_with_timeouts", "rolled_back")
    return {"status": status, "ended": ended, "failed_page": failed_page}


def router(ctx: "ConsoleContext") -> APIRouter:
    """The rollouts list and one rollout's page."""
    r = APIRouter(include_in_schema=False)
    container = ctx.container

    @r.get("/rollouts")
    def rollouts_page(
        request: Request,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        deps = container.rollout_deps()
        rows: list[dict[str, Any]] = []
        for rollout_id in container.rollouts.list_ids(limit=limit):
            try:
                status = rollout_status(deps, rollout_id)
            except RolloutError:
                continue  # removed since it was listed
            rows.append({**status, "progress": progress(status["totals"])})
        return render(request, "rollouts.html", session=session, rollouts=rows, limit=limit)

    @r.get("/rollouts/{rollout_id}")
    def rollout_page(
        request: Request,
        rollout_id: str,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
    ) -> Response:
        try:
            live = rollout_live_context(container, rollout_id)
        except RolloutError:
            raise HTTPException(404, f"no rollout {rollout_id!r}") from None
        return render(request, "rollout.html", session=session, rollout_id=rollout_id, **live)

    return r
