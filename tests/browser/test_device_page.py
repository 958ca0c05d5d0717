"""One device's page shows what the device reported as text, whatever it holds."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.harness import Console, PageErrors, Shot, report_state, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTILE = "<script>alert(1)</script>"


def test_a_certificate_subject_made_of_markup_is_shown_as_text(
    page: Page, console: Console, shot: Shot
) -> None:
    """A subject `<script>alert(1)</script>` reads as those characters on the device's
    page and in the fleet's expiring list: no script element, no dialog, nothing the
    Content-Security-Policy had to refuse."""
    # given a device whose modem describes its CA chain with a hostile subject and issuer
    device_id = "xss-00001"
    report_state(console.stack, device_id, subject=HOSTILE, issuer=HOSTILE)
    dialogs: list[str] = []

    def seen(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    errors = PageErrors(page)
    sign_in(page, console, console.operator_token, shot, who="operator")

    # when its page is opened
    page.goto(f"/devices/{device_id}")

    # then the subject is there as text, and nothing ran
    inventory = page.locator("#inventory")
    expect(inventory).to_contain_text(HOSTILE)
    assert page.locator("#inventory script").count() == 0
    assert page.locator("script:not([src])").count() == 0
    shot(page, "device")

    # when the fleet's expiring list is searched for the device
    page.goto("/")
    page.locator("form#expiring-search input[name=q]").fill(device_id)
    page.locator("form#expiring-search button[type=submit]").click()

    # then only its row is listed, showing the subject as text too, and nothing ran
    expect(page).to_have_url(re.compile(rf"[?&]q={device_id}\b"))
    expiring = page.locator("#expiring")
    expect(expiring.locator(f"a[href='/devices/{device_id}']")).to_have_count(1)
    expect(expiring.locator("a[href^='/devices/dev-']")).to_have_count(0)
    expect(expiring).to_contain_text(HOSTILE)
    assert page.locator("#expiring script").count() == 0
    assert page.locator("script:not([src])").count() == 0
    shot(page, "fleet-search")
    assert dialogs == []
    assert errors.seen == [], "the browser refused or failed something on these pages"
