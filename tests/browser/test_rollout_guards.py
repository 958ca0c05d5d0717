"""Who may act on a rollout: a viewer sees no actions and is refused a forged one, and
an action without the session's CSRF token is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.harness import (
    GUARDED,
    Console,
    NewPage,
    Shot,
    create_rollout,
    csrf_of,
    sign_in,
)
from tests.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def guarded(console: Console) -> str:
    """A running rollout of 5 devices waiting for approval after its canary: pause,
    approve and abort would all be accepted from an operator."""
    stack = console.stack
    rollout_id = create_rollout(stack, "guarded", GUARDED, ca=stack.dir / "ca2.pem", waves="1,100%")
    wait_until(
        lambda: stack.status(rollout_id)["awaiting_approval"],
        timeout=120,
        interval=0.5,
        what="the canary to pass",
    )
    return rollout_id


def _unchanged(console: Console, rollout_id: str) -> dict[str, Any]:
    """What a refused action must leave as it was: the state, the waves, the audit log."""
    status = console.stack.status(rollout_id)
    log = console.stack.run("rollout", "log", rollout_id, "--json")
    assert log.returncode == 0, log.stderr
    keep = ("state", "current_wave", "awaiting_approval", "waves", "totals")
    return {**{key: status[key] for key in keep}, "log": json.loads(log.stdout)}


def test_a_viewer_sees_no_actions_and_a_forged_one_from_their_session_is_refused(
    new_page: NewPage, console: Console, guarded: str, shot: Shot
) -> None:
    """The operator's page has the abort form, the viewer's none at all; an abort posted
    from the viewer's session with its valid CSRF token gets 403 and changes nothing."""
    # given the rollout's page as the operator and as the viewer see it
    operator = new_page()
    sign_in(operator, console, console.operator_token, shot, who="operator")
    operator.goto(f"/rollouts/{guarded}")
    expect(operator.locator("form#action-abort")).to_have_count(1)
    shot(operator, "operator-rollout")
    viewer = new_page()
    sign_in(viewer, console, console.viewer_token, shot, who="viewer")
    viewer.goto(f"/rollouts/{guarded}")
    expect(viewer.locator("#rollout-state")).to_have_text("running")
    expect(viewer.locator("form#action-abort")).to_have_count(0)
    expect(viewer.locator("form[action^='/rollouts/']")).to_have_count(0)
    shot(viewer, "viewer-rollout")
    before = _unchanged(console, guarded)

    # when the viewer's session posts an abort anyway, with its own CSRF token
    response = viewer.context.request.post(
        f"/rollouts/{guarded}/abort", form={"csrf": csrf_of(viewer)}, max_redirects=0
    )

    # then it is refused for the role, and the rollout is as it was
    assert response.status == 403, response.text()
    assert "viewer" in response.text()
    assert _unchanged(console, guarded) == before
    viewer.reload()
    expect(viewer.locator("#rollout-state")).to_have_text("running")
    shot(viewer, "viewer-rollout-after")


def test_an_action_without_the_csrf_token_is_refused(
    new_page: NewPage, console: Console, guarded: str, shot: Shot
) -> None:
    """A pause posted from the operator's session without the CSRF token gets 403 and
    changes nothing, though the page offers pause."""
    # given the operator's page, which offers pause
    page = new_page()
    sign_in(page, console, console.operator_token, shot, who="operator")
    page.goto(f"/rollouts/{guarded}")
    expect(page.locator("form#action-pause")).to_have_count(1)
    shot(page, "operator-rollout")
    before = _unchanged(console, guarded)

    # when a pause is posted in that session without the token
    response = page.context.request.post(f"/rollouts/{guarded}/pause", form={}, max_redirects=0)

    # then it is refused, and the rollout is as it was
    assert response.status == 403, response.text()
    assert "CSRF" in response.text()
    assert _unchanged(console, guarded) == before
    page.reload()
    expect(page.locator("#rollout-state")).to_have_text("running")
    shot(page, "operator-rollout-after")
