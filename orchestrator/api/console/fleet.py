"""Console pages: fleet (to be filled in)."""

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request, Response

from orchestrator.api.console.templates import render
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.services.scan import fleet_status

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext

__all__ = ["router"]


def router(ctx: "ConsoleContext") -> APIRouter:
    """`/`: the fleet."""
    r = APIRouter(include_in_schema=False)

    @r.get("/")
    def fleet_page(
        request: Request, session: Annotated[ConsoleSession, Depends(ctx.viewer)]
    ) -> Response:
        status = fleet_status(ctx.container.inventory)
        return render(request, "fleet.html", session=session, status=status)

    return r
