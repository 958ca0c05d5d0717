"""What every console page module is built from: the container, who is asking, the
renewal plan view, and the two route dependencies (signed in; operator with CSRF)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from orchestrator.api.console.session import ConsoleAuth
from orchestrator.api.renewals import PlanView
from orchestrator.domain.sessions import ConsoleSession

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["ConsoleContext"]


@dataclass
class ConsoleContext:
    """Handed to each page module's `router(ctx)`.

    `viewer` is the dependency of every page (any signed-in session, else a redirect to
    the sign-in form); `operator` the one of every state-changing route (an operator's
    session and the request's CSRF token, else 403).
    """

    container: Container
    auth: ConsoleAuth
    plan_view: PlanView
    viewer: Callable[[Request], ConsoleSession] = field(init=False)
    operator: Callable[[Request, ConsoleSession], Awaitable[ConsoleSession]] = field(init=False)

    def __post_init__(self) -> None:
        self.viewer, self.operator = self.auth.dependencies()
