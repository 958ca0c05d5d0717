"""Console sign-in: an API token exchanged for a session cookie, roles, CSRF, sign-out.

A browser signs in with one of `CERTFLEET_API_TOKENS`; it gets a random session id in an
HttpOnly, SameSite=Strict cookie (Secure when the request came over TLS) that ends with
the session (`CERTFLEET_CONSOLE_SESSION_MINUTES`). The session (`SessionStore`) keeps
the token's name and role and a CSRF token that every state-changing request must send
back (form field `csrf` or header `X-CSRF-Token`). A session whose token was removed
from the settings, or given another role, is refused at its next request. The sign-in
form itself is protected by a double-submit cookie.
"""

import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.responses import RedirectResponse

from orchestrator.api.auth import match_token, token_sha256
from orchestrator.api.console.templates import render
from orchestrator.clock import utcnow
from orchestrator.config import ApiToken
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.logs import get_logger

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "ConsoleAuth",
    "SignInRequiredError",
    "session_router",
]

log = get_logger(__name__)

COOKIE: Final = "certfleet_session"
SIGNIN_COOKIE: Final = "certfleet_signin"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"
SIGNIN_COOKIE_SECONDS: Final = 600


class SignInRequiredError(Exception):
    """The request has no live session: pages redirect to the sign-in form."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def safe_next(target: str | None) -> str:
    """A same-site path to go to after signing in (`/` for anything else)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@dataclass
class ConsoleAuth:
    """What the console's routes depend on to know who is asking."""

    container: "Container"
    tokens: Sequence[ApiToken]
    _valid: frozenset[tuple[str, str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._valid = frozenset((t.name, t.role, token_sha256(t.token)) for t in self.tokens)

    def _live(self, request: Request) -> ConsoleSession | None:
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        session = self.container.sessions.get(session_id)
        if session is None or session.expired(utcnow()):
            return None
        # A token removed from the settings, given another role or a new value ends the
        # sessions signed in with it.
        if (session.name, session.role, session.token_sha256) not in self._valid:
            return None
        return session

    def viewer(self, request: Request) -> ConsoleSession:
        """The request's session (any role); pages redirect to sign-in without one."""
        session = self._live(request)
        if session is None:
            raise SignInRequiredError(request.url.path)
        return session

    def operator(self, request: Request, session: ConsoleSession) -> ConsoleSession:
        """The session, if it is an operator's; 403 for a viewer."""
        if session.role != "operator":
            log.warning(
                "console_action_refused", who=session.name, path=request.url.path, reason="viewer"
            )
            self.container.metrics.incr("certfleet_console_refused_total", {"reason": "viewer"})
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"{session.name} is a viewer: only operators may act"
            )
        return session

    async def check_csrf(self, request: Request, session: ConsoleSession) -> None:
        """403 unless the request carries the session's CSRF token (form field or header)."""
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
        if given is None or not hmac.compare_digest(given.encode(), session.csrf.encode()):
            log.warning(
                "console_action_refused", who=session.name, path=request.url.path, reason="csrf"
            )
            self.container.metrics.incr("certfleet_console_refused_total", {"reason": "csrf"})
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token; reload the page"
            )

    def dependencies(
        self,
    ) -> tuple[
        Callable[[Request], ConsoleSession],
        Callable[[Request, ConsoleSession], Awaitable[ConsoleSession]],
    ]:
        """FastAPI dependencies: any signed-in session; an operator's with a valid CSRF
        token (for every state-changing route)."""

        def viewer(request: Request) -> ConsoleSession:
            return self.viewer(request)

        async def operator(
            request: Request, session: Annotated[ConsoleSession, Depends(viewer)]
        ) -> ConsoleSession:
            await self.check_csrf(request, session)
            return self.operator(request, session)

        return viewer, operator


def session_router(auth: ConsoleAuth) -> APIRouter:
    """`/signin` (GET form, POST token) and `/signout` (POST)."""
    router = APIRouter(include_in_schema=False)
    viewer, _ = auth.dependencies()
    settings = auth.container.settings

    @router.get("/signin")
    def signin_form(request: Request, next: str | None = None) -> Response:
        form_token = secrets.token_urlsafe(24)
        response = render(
            request,
            "signin.html",
            session=None,
            form_token=form_token,
            next=safe_next(next),
            error=None,
        )
        _set_signin_cookie(request, response, form_token)
        return response

    @router.post("/signin")
    def signin(
        request: Request,
        token: Annotated[str, Form(max_length=512)] = "",
        form_token: Annotated[str, Form(max_length=128)] = "",
        next: Annotated[str, Form(max_length=2048)] = "/",
    ) -> Response:
        expected = request.cookies.get(SIGNIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), form_token.encode()):
            auth.container.metrics.incr(
                "certfleet_console_signin_refused_total", {"reason": "csrf"}
            )
            log.warning("console_signin_refused", reason="csrf", client=_client(request))
            return _signin_error(request, "The sign-in form expired; try again.", next)
        matched = match_token(auth.tokens, token.strip())
        if matched is None:
            auth.container.metrics.incr(
                "certfleet_console_signin_refused_total", {"reason": "token"}
            )
            log.warning("console_signin_refused", reason="token", client=_client(request))
            return _signin_error(request, "That token is not one certfleet accepts.", next)
        session_id = secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(minutes=settings.console_session_minutes)
        session = ConsoleSession(
            name=matched.name,
            role=matched.role,
            csrf=secrets.token_urlsafe(32),
            expires_at=expires,
            token_sha256=token_sha256(matched.token),
        )
        auth.container.sessions.create(session_id, session)
        log.info("console_signed_in", who=matched.name, role=matched.role, client=_client(request))
        response = RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=settings.console_session_minutes * 60,
            path="/",
            secure=_secure(request),
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(
            SIGNIN_COOKIE, path="/signin", secure=_secure(request), httponly=True, samesite="strict"
        )
        return response

    @router.post("/signout")
    async def signout(
        request: Request, session: Annotated[ConsoleSession, Depends(viewer)]
    ) -> Response:
        await auth.check_csrf(request, session)
        session_id = request.cookies.get(COOKIE, "")
        auth.container.sessions.delete(session_id)
        log.info("console_signed_out", who=session.name)
        response = RedirectResponse("/signin", status_code=status.HTTP_303_SEE_OTHER)
        response.delete_cookie(
            COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict"
        )
        return response

    return router


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _set_signin_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        value,
        max_age=SIGNIN_COOKIE_SECONDS,
        path="/signin",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def _signin_error(request: Request, message: str, next_path: str) -> Response:
    form_token = secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        status_code=status.HTTP_401_UNAUTHORIZED,
        session=None,
        form_token=form_token,
        next=safe_next(next_path),
        error=message,
    )
    _set_signin_cookie(request, response, form_token)
    return response


def signin_redirect(path: str) -> RedirectResponse:
    """Where a page without a session sends the browser."""
    return RedirectResponse(f"/signin?next={quote(path)}", status_code=status.HTTP_303_SEE_OTHER)
