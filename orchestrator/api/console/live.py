"""Console pages: live (to be filled in)."""

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext

__all__ = ["router"]


def router(ctx: "ConsoleContext") -> APIRouter:
    """No routes yet."""
    return APIRouter(include_in_schema=False)
