"""The console's Jinja2 templates and static assets, shipped in this package.

Templates escape everything they print (autoescape on every template); nothing is
fetched from another origin. Static files are served under `/static/` with their
content digest in the URL (`asset_url`), so a browser may cache them for a year.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from orchestrator.domain.sessions import ConsoleSession

__all__ = ["STATIC_DIR", "asset_url", "environment", "render", "render_fragment"]

PACKAGE: Final = "orchestrator.api.console"
STATIC_DIR: Final = str(resources.files(PACKAGE).joinpath("static"))


@functools.cache
def asset_url(name: str) -> str:
    """`/static/<name>?v=<digest>`: the URL changes whenever the file does."""
    data = resources.files(PACKAGE).joinpath("static", name).read_bytes()
    return f"/static/{name}?v={hashlib.sha256(data).hexdigest()[:12]}"


def _when(value: object) -> str:
    """An ISO time or datetime as `YYYY-MM-DD HH:MM:SS UTC`; anything else as given."""
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def _number(value: object) -> str:
    """An integer with thin thousands separators (`12 345`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "" if value is None else str(value)
    return f"{value:,}".replace(",", "\u2009")


@functools.cache
def environment() -> Environment:
    """The one Jinja2 environment of the process (templates compiled once)."""
    env = Environment(
        loader=PackageLoader(PACKAGE, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["asset_url"] = asset_url
    env.filters["when"] = _when
    env.filters["number"] = _number
    return env


def _context(session: ConsoleSession | None, ctx: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user": session.name if session else None,
        "role": session.role if session else None,
        "csrf": session.csrf if session else "",
        "may_act": session is not None and session.role == "operator",
    }
    base.update(ctx)
    return base


def render_fragment(name: str, session: ConsoleSession | None, **ctx: Any) -> str:
    """A template rendered to a string (a page's live part, sent over SSE)."""
    return environment().get_template(name).render(_context(session, ctx))


def render(
    request: Request,
    name: str,
    *,
    session: ConsoleSession | None,
    status_code: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    """A whole page: `name` rendered with the session's user, role and CSRF token."""
    ctx.setdefault("path", request.url.path)
    html = environment().get_template(name).render(_context(session, ctx))
    return HTMLResponse(html, status_code=status_code)
