"""Signing in to the console with an API token through the form, and out again."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import Console, Shot, submit_token

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_an_operator_signs_in_with_a_token_and_out_again(
    page: Page, console: Console, shot: Shot
) -> None:
    """A wrong token is refused with an error; the operator's lands on the fleet page under
    their name and role, in an HttpOnly SameSite=Strict cookie; signing out ends it."""
    # given a browser without a session: the fleet page sends it to the sign-in form
    page.goto("/")
    expect(page).to_have_url(f"{console.url}/signin?next=/")
    shot(page, "signin")

    # when a wrong token is sent
    submit_token(page, f"not-{console.operator_token}")
    # then the form says so and no session started
    expect(page.locator("p.error")).to_be_visible()
    expect(page.locator("form[action='/signout']")).to_have_count(0)
    assert not [c for c in page.context.cookies() if c["name"] == "certfleet_session"]
    shot(page, "signin-error")

    # when the operator's token is sent
    submit_token(page, console.operator_token)
    # then the fleet page, saying who is signed in
    expect(page).to_have_url(f"{console.url}/")
    expect(page.locator("#by-tag")).to_be_visible()
    who = page.locator("form[action='/signout']")
    expect(who).to_contain_text("ops")
    expect(who).to_contain_text("operator")
    cookie = next(c for c in page.context.cookies() if c["name"] == "certfleet_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    shot(page, "fleet")

    # when signing out
    who.get_by_role("button", name="Sign out").click()
    # then the sign-in form, and the fleet page asks for a token again
    expect(page).to_have_url(f"{console.url}/signin")
    shot(page, "signed-out")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin\?next=/$"))
    expect(page.locator("#token")).to_be_visible()
    shot(page, "signin-again")
