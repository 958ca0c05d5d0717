"""`/rollouts`: every rollout with its state and progress; `/rollouts/{id}`: one rollout,
live; `POST /rollouts/{id}/{verb}`: an operator's pause, resume, approve or abort."""

from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse

from orchestrator.api.console.templates import render
from orchestrator.clock import utcnow
from orchestrator.domain.rollout_states import FAILURES, DeviceRolloutState
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.logs import get_logger
from orchestrator.services.rollout import (
    RolloutError,
    RolloutSummary,
    command,
    rollout_summary,
    rollout_view,
)

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext
    from orchestrator.bootstrap import Container

__all__ = ["MAX_LISTED", "progress", "rollout_live_context", "router"]

log = get_logger(__name__)

D = DeviceRolloutState
DONE = (D.COMMITTED, D.RETIRED, D.ROLLED_BACK, D.UNDO_REFUSED, D.CSR_REFUSED, D.TIMED_OUT)
FAILED = (*sorted(FAILURES), D.TIMED_OUT)
MAX_LISTED: Final = 1000
"""Most rollouts the list page shows."""
Verb = Literal["pause", "resume", "approve", "abort"]


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
    shared by every open page of that rollout (`live`). Keys: `rollout_id`, `view` (the
    rollout's `RolloutView`: waves, gate, a page of failed devices, the audit tail, the
    commands its state allows), `ended` (no more updates will come), `failed_page` (the
    page shown: the last one if the one asked for is past it).

    A handful of reads whatever the rollout's size. Raises `RolloutError` for an
    unknown rollout.
    """
    view = rollout_view(container.rollout_deps(), rollout_id, failed_page=failed_page)
    return {
        "rollout_id": rollout_id,
        "view": view,
        "ended": view.summary.ended,
        "failed_page": view.failed.page,
    }


def router(ctx: "ConsoleContext") -> APIRouter:
    """The rollouts list, one rollout's page and its commands."""
    r = APIRouter(include_in_schema=False)
    container = ctx.container

    def rollout_page_response(
        request: Request,
        session: ConsoleSession,
        rollout_id: str,
        *,
        failed_page: int = 0,
        error: str | None = None,
        status_code: int = 200,
    ) -> Response:
        try:
            live = rollout_live_context(container, rollout_id, failed_page=failed_page)
        except RolloutError:
            raise HTTPException(404, f"no rollout {rollout_id!r}") from None
        return render(
            request,
            "rollout.html",
            session=session,
            status_code=status_code,
            error=error,
            **live,
        )

    @r.get("/rollouts")
    def rollouts_page(
        request: Request,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
    ) -> Response:
        deps = container.rollout_deps()
        rows: list[RolloutSummary] = []
        for rollout_id in container.rollouts.list_ids(limit=limit):
            try:
                rows.append(rollout_summary(deps, rollout_id))
            except RolloutError:
                continue  # removed since it was listed
        return render(request, "rollouts.html", session=session, rollouts=rows, limit=limit)

    @r.get("/rollouts/{rollout_id}")
    def rollout_page(
        request: Request,
        rollout_id: str,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
        failed_page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> Response:
        return rollout_page_response(request, session, rollout_id, failed_page=failed_page)

    @r.post("/rollouts/{rollout_id}/{verb}")
    def rollout_command(
        request: Request,
        rollout_id: str,
        verb: Verb,
        session: Annotated[ConsoleSession, Depends(ctx.operator)],
    ) -> Response:
        if not container.rollouts.exists(rollout_id):
            raise HTTPException(404, f"no rollout {rollout_id!r}")
        actor = f"console:{session.name}"
        try:
            state = command(container.rollout_deps(), rollout_id, verb, now=utcnow(), actor=actor)
        except RolloutError as exc:
            container.metrics.incr("certfleet_console_commands_refused_total", {"verb": verb})
            log.warning(
                "rollout_command_refused",
                rollout_id=rollout_id,
                verb=verb,
                actor=actor,
                error=str(exc),
            )
            return rollout_page_response(
                request, session, rollout_id, error=str(exc), status_code=409
            )
        log.info("rollout_command", rollout_id=rollout_id, verb=verb, state=state, actor=actor)
        return RedirectResponse(f"/rollouts/{quote(rollout_id, safe='')}", status_code=303)

    return r
