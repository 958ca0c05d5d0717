"""The operators' console: server-rendered pages served by `certfleet api` at `/`.

Pages (Jinja2, a few lines of plain JavaScript, every asset in this package): the fleet,
renewal plans, rollouts, one rollout (live over Server-Sent Events, with pause, resume,
approve and abort for operators), one device. Every page reads through the same
services the HTTP API uses. Sign-in and sessions: `session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.console import devices, fleet, live, plans, rollouts
from orchestrator.api.console.context import ConsoleContext
from orchestrator.api.console.session import (
    ConsoleAuth,
    SignInRequiredError,
    session_router,
    signin_redirect,
)
from orchestrator.api.console.templates import STATIC_DIR, render
from orchestrator.api.renewals import PlanView

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders", "mount_console"]

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Nothing but this origin's own files: no inline script, no other host."""
_API_PREFIXES: Final = ("/v1/", "/webhooks", "/healthz", "/metrics", "/docs", "/openapi.json")


def _is_console(path: str) -> bool:
    return not path.startswith(_API_PREFIXES) and path != "/redoc"


class SecurityHeaders:
    """ASGI middleware: the console's responses get the CSP, nosniff, DENY, no-referrer and
    a cache policy (immutable for /static, no-store for pages); API routes are left as
    they are. Pure ASGI, so a Server-Sent Events stream passes through unbuffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not _is_console(path):
            await self.app(scope, receive, send)
            return
        cache = "public, max-age=31536000, immutable" if path.startswith("/static/") else "no-store"
        extra = {
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "no-referrer",
            "cache-control": cache,
        }

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequiredError)  # noqa: S101 -- registered for that type only
    return signin_redirect(exc.path)


_TITLES: Final = {
    400: "Bad request",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible now",
    422: "Bad request",
    503: "Redis is unreachable",
}


def _html_page(request: Request) -> bool:
    """A console page a browser navigates to (not the API, not a live stream)."""
    path = request.url.path
    return _is_console(path) and not path.endswith("/events") and not path.startswith("/static/")


def _error_page(request: Request, status_code: int, detail: str) -> Response:
    return render(
        request,
        "error.html",
        session=None,
        status_code=status_code,
        title=_TITLES.get(status_code, "Something went wrong"),
        detail=detail,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Console pages answer errors with an HTML page; the API keeps its JSON."""
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 -- registered for that type only
    if not _html_page(request):
        return await http_exception_handler(request, exc)
    return _error_page(request, exc.status_code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 -- registered for that type only
    if not _html_page(request):
        return await request_validation_exception_handler(request, exc)
    fields = ", ".join(
        ".".join(str(p) for p in e.get("loc", ())[1:]) or "request" for e in exc.errors()
    )
    return _error_page(request, 422, f"The page's address is not valid ({fields}).")


def mount_console(app: FastAPI, container: Container, *, plan_view: PlanView) -> None:
    """Add the console's routes, static files and response headers to `app`."""
    auth = ConsoleAuth(container, container.settings.api_token_list)
    ctx = ConsoleContext(container, auth, plan_view)
    app.add_exception_handler(SignInRequiredError, _sign_in_required)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(session_router(auth))
    for module in (fleet, plans, rollouts, live, devices):
        app.include_router(module.router(ctx))
