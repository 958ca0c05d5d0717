"""The operators' console: server-rendered pages served by `certfleet api` at `/`.

Pages (Jinja2, a few lines of plain JavaScript, every asset in this package): the fleet,
renewal plans, rollouts, one rollout (live over Server-Sent Events, with pause, resume,
approve and abort for operators), one device. Every page reads through the same
services the HTTP API uses. Sign-in and sessions: `session`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from orchestrator.api.console import devices, fleet, live, plans, rollouts
from orchestrator.api.console.context import ConsoleContext
from orchestrator.api.console.session import (
    ConsoleAuth,
    SignInRequiredError,
    session_router,
    signin_redirect,
)
from orchestrator.api.console.templates import STATIC_DIR
from orchestrator.api.renewals import PlanView

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["CONTENT_SECURITY_POLICY", "mount_console"]

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Nothing but this origin's own files: no inline script, no other host."""
_API_PREFIXES: Final = ("/v1/", "/webhooks", "/healthz", "/metrics", "/docs", "/openapi.json")


def _is_console(path: str) -> bool:
    return not path.startswith(_API_PREFIXES) and path != "/redoc"


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    if _is_console(request.url.path):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/static/"):
            headers.setdefault("Cache-Control", "public, max-age=31536000, immutable")
        else:
            headers.setdefault("Cache-Control", "no-store")
    return response


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequiredError)  # noqa: S101 -- registered for that type only
    return signin_redirect(exc.path)


def mount_console(app: FastAPI, container: Container, *, plan_view: PlanView) -> None:
    """Add the console's routes, static files and response headers to `app`."""
    auth = ConsoleAuth(container, container.settings.api_token_list)
    ctx = ConsoleContext(container, auth, plan_view)
    app.add_exception_handler(SignInRequiredError, _sign_in_required)
    app.middleware("http")(_security_headers)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(session_router(auth))
    for module in (fleet, plans, rollouts, live, devices):
        app.include_router(module.router(ctx))
