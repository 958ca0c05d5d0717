"""Signing in to the console from a test, as a browser does: the form, its cookie, the token."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

__all__ = ["csrf_of", "form_token_of", "sign_in"]

_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def form_token_of(html: str) -> str:
    """The sign-in form's hidden `form_token`."""
    found = _FORM_TOKEN.search(html)
    assert found is not None, "no sign-in form on the page"
    return found.group(1)


def csrf_of(html: str) -> str:
    """The session's CSRF token, from any signed-in page (the sign-out form carries it)."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token on the page (not signed in?)"
    return found.group(1)


def sign_in(client: TestClient | httpx.Client, token: str) -> str:
    """Sign `client` in with `token` through GET and POST /signin; return the session's
    CSRF token. The client keeps the session cookie."""
    form = client.get("/signin")
    assert form.status_code == 200, form.text
    done = client.post(
        "/signin",
        data={"token": token, "form_token": form_token_of(form.text), "next": "/rollouts"},
        follow_redirects=False,
    )
    assert done.status_code == 303, f"sign-in refused: {done.status_code} {done.text[:200]}"
    page = client.get("/rollouts", follow_redirects=False)
    assert page.status_code == 200, page.text[:200]
    return csrf_of(page.text)
