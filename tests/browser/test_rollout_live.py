"""A rollout's page follows it live (Server-Sent Events), and an operator stops it there."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Dialog, Locator, Page, expect

from tests.browser.harness import (
    ROGUE,
    ROLLOUT_MS,
    WATCHED,
    Console,
    Navigations,
    PageErrors,
    Shot,
    create_rollout,
    rogue_ca,
    sign_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _wave(page: Page, index: int) -> Locator:
    return page.locator(f"tr#wave-{index}")


def _count(page: Page, index: int, state: str) -> Locator:
    return _wave(page, index).locator(f"[data-count='{state}']")


def test_a_rollout_page_follows_the_waves_live_without_reloading(
    page: Page, console: Console, shot: Shot
) -> None:
    """Opened before the rollout starts, the page shows each wave pass and the rollout
    complete as the devices report, and is never reloaded."""
    # given a rollout of 20 devices in waves of 2, 5 and 13, each approved by hand,
    # created but not started, and its page open
    stack = console.stack
    rollout_id = create_rollout(
        stack, "watched", WATCHED, ca=stack.dir / "ca2.pem", waves="2,35%,100%", hold=True
    )
    errors = PageErrors(page)
    sign_in(page, console, console.operator_token, shot, who="operator")
    navigations = Navigations(page)
    page.goto(f"/rollouts/{rollout_id}")
    state = page.locator("#rollout-state")
    expect(state).to_have_text("created")
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))
    expect(_count(page, 2, "pending")).to_have_text("13")
    shot(page, "rollout-created")

    # when it starts
    assert stack.run("rollout", "resume", rollout_id).returncode == 0
    # then the canary passes and the next wave waits for approval
    expect(_wave(page, 0)).to_have_attribute("data-state", "passed", timeout=ROLLOUT_MS)
    expect(state).to_have_text("running")
    expect(_count(page, 0, "committed")).to_have_text("2")
    expect(_wave(page, 1)).to_have_attribute("data-state", "pending")
    expect(_count(page, 1, "pending")).to_have_text("5")
    shot(page, "rollout-wave-0-passed")

    # when the second wave is approved
    assert stack.run("rollout", "approve", rollout_id).returncode == 0
    # then it passes in turn, the last one still pending
    expect(_wave(page, 1)).to_have_attribute("data-state", "passed", timeout=ROLLOUT_MS)
    expect(_count(page, 1, "committed")).to_have_text("5")
    expect(_wave(page, 2)).to_have_attribute("data-state", "pending")
    shot(page, "rollout-wave-1-passed")

    # when the last wave is approved
    assert stack.run("rollout", "approve", rollout_id).returncode == 0
    # then the rollout completes with every device committed
    expect(state).to_have_text("completed", timeout=ROLLOUT_MS)
    expect(_wave(page, 2)).to_have_attribute("data-state", "passed")
    expect(_count(page, 2, "committed")).to_have_text("13")
    for index in range(3):
        expect(_count(page, index, "failed")).to_have_text("0")
    shot(page, "rollout-completed")
    assert navigations.count == 1, "the page was navigated or reloaded"
    assert errors.seen == []
    assert stack.status(rollout_id)["totals"]["committed"] == len(WATCHED)


def test_an_operator_aborts_a_rogue_ca_rollout_from_its_page_and_sees_it_rolled_back(
    page: Page, console: Console, shot: Shot
) -> None:
    """Every canary device fails its probe under a lenient gate; the operator's abort from
    the page sends nothing until confirmed, then the page follows the rollout to its end,
    rolled back."""
    # given a rogue CA's rollout whose gate tolerates every failure, its canary failed
    stack = console.stack
    rollout_id = create_rollout(
        stack, "rogue", ROGUE, ca=rogue_ca(stack), waves="5,100%", max_failure="100%"
    )
    errors = PageErrors(page)
    sign_in(page, console, console.operator_token, shot, who="operator")
    page.goto(f"/rollouts/{rollout_id}")
    expect(_count(page, 0, "failed")).to_have_text("5", timeout=ROLLOUT_MS)
    expect(page.locator("#failed a[href^='/devices/']")).to_have_count(5)
    expect(page.locator("#rollout-state")).to_have_text("running")
    shot(page, "rollout-canary-failed")
    answers = [False, True]  # the first confirmation is declined, the second accepted
    confirmations: list[str] = []

    def confirm(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        if answers.pop(0):
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", confirm)
    navigations = Navigations(page)

    # when the operator clicks abort but declines the confirmation
    page.locator("#action-abort button").click()
    # then nothing was sent: the same page, the rollout still running
    assert len(confirmations) == 1, confirmations
    assert confirmations[0], "the confirmation says nothing"
    assert stack.status(rollout_id)["state"] == "running"
    expect(page.locator("#rollout-state")).to_have_text("running")
    assert navigations.count == 0, "a declined confirmation still sent the form"

    # when the operator aborts it from the page, confirming
    with page.expect_navigation():
        page.locator("#action-abort button").click()
    posted = navigations.count

    # then it rolls back and ends rolled back, the page following without a reload
    expect(page.locator("#rollout-state")).to_have_text("rolled_back", timeout=ROLLOUT_MS)
    expect(_wave(page, 1)).to_have_attribute("data-state", "pending")
    expect(page.locator("form#action-abort")).to_have_count(0)
    shot(page, "rollout-rolled-back")
    assert len(confirmations) == 2, confirmations
    assert navigations.count == posted == 1, "the page was navigated or reloaded"
    assert errors.seen == []
    status = stack.status(rollout_id)
    assert status["state"] == "rolled_back"
    assert "ops" in status["abort_reason"], status["abort_reason"]
