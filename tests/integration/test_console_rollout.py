"""The console's rollout pages against a real redis-server: the waves and their counts, the
gate's decisions, failed devices a page at a time, the audit tail, and the operator's
commands (CSRF, roles, the audit naming the console user); the rollout store's reads
behind them (`events`, `log_tail`, `devices_page`), on one Redis and on a cluster."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from orchestrator.adapters import redis_rollouts
from orchestrator.adapters.redis_rollout_plan import rollout_key
from orchestrator.api import create_app
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    RolloutState,
    WaveState,
)
from orchestrator.services.rollout import FAILED_PAGE_SIZE
from tests.console import sign_in
from tests.html_tree import Node, body_rows, parse

pytestmark = pytest.mark.integration

D = DeviceRolloutState
NOW = datetime.now(UTC).replace(microsecond=0)
OPERATOR = "op-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
VIEWER = "view-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
ROGUE_DEVICE = "<script>alert(1)</script>"
ROGUE_REASON = "<img src=x onerror=alert(2)>"
EVERY = frozenset(D)


# -- reading the page ---------------------------------------------------------------------------


# -- fixtures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Console:
    container: Container
    client: TestClient


@pytest.fixture
def console(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    """The app over the test's Redis with an operator (`ops`) and a viewer (`watch`)."""
    monkeypatch.setenv("CERTFLEET_API_TOKENS", f"ops:{OPERATOR}:operator,watch:{VIEWER}:viewer")
    container = bootstrap(Settings(), logging=False)
    client = TestClient(
        create_app(container), base_url="http://console.test", follow_redirects=False
    )
    with client:
        yield Console(container, client)
    container.close()


def planned(
    container: Container, rollout_id: str, waves: list[list[str]], *, running: bool = True
) -> None:
    """A trust.retire of sec_tag 42 over `waves`; wave 0 running unless told not to."""
    spec = RolloutSpec.from_json(
        {
            "kind": "trust.retire",
            "tag": 42,
            "spare_tag": 43,
            "waves": ",".join(str(len(w)) for w in waves[:-1]) + ",100%"
            if len(waves) > 1
            else "100%",
        }
    )
    rollout = Rollout.planned(rollout_id, spec, seed="t", sizes=[len(w) for w in waves], now=NOW)
    container.rollouts.create(
        rollout, waves=waves, active={d: [42] for w in waves for d in w}, actor="test"
    )
    if running:
        start = rollout.start(now=NOW, actor="test")
        assert start is not None
        assert container.rollouts.change(rollout_id, start)
        assert container.rollouts.change(
            rollout_id, Change(waves={0: WaveChange(state=WaveState.RUNNING)})
        )


def move(container: Container, rollout_id: str, state: DeviceRolloutState, *devices: str) -> None:
    results = container.rollouts.transition(
        rollout_id,
        [DeviceTransition(d, state, EVERY, cause=f"test: {state}") for d in devices],
        now=NOW,
        actor="test",
    )
    assert all(r.applied for r in results), results


def report(device: str, rollout_id: str, reason: str) -> DeviceReport:
    return DeviceReport(
        device_id=device,
        rollout_id=rollout_id,
        seq=1,
        op="stage",
        phase="failed",
        reason=reason,
        detail=f"why: {reason}",
        time=NOW,
    )


RID = "ro-20261202-080000-c0de"
WAVE0 = [f"dev-0-{n:02d}" for n in range(10)]
WAVE1 = [f"dev-1-{n:02d}" for n in range(30)]


@pytest.fixture
def rollout(console: Console) -> str:
    """Wave 0 of 10 running (5 committed, 2 rejected, 1 timed out, 1 sent, 1 pending);
    wave 1 of 30 pending; a failed device's last report."""
    planned(console.container, RID, [WAVE0, WAVE1])
    move(console.container, RID, D.COMMITTED, *WAVE0[:5])
    move(console.container, RID, D.REJECTED, *WAVE0[5:7])
    move(console.container, RID, D.TIMED_OUT, WAVE0[7])
    move(console.container, RID, D.SENT, WAVE0[8])
    console.container.inventory.record_reports([report(WAVE0[5], RID, "bad_signature")])
    return RID


def counts_of(row: Node) -> dict[str, int]:
    return {
        c.attrs["data-count"]: int(c.attrs["data-n"])
        for c in row.find_all("td")
        if "data-count" in c.attrs
    }


def rollout_state(console: Console, rollout_id: str) -> RolloutState:
    stored = console.container.rollouts.get(rollout_id)
    assert stored is not None
    return stored.state


# -- the pages ----------------------------------------------------------------------------------


def test_the_rollout_page_shows_the_waves_and_their_counts(console: Console, rollout: str) -> None:
    """Each wave a row with its state and grouped counts; the failed devices with reasons."""
    sign_in(console.client, VIEWER)

    response = console.client.get(f"/rollouts/{rollout}")

    assert response.status_code == 200, response.text
    html = parse(response.text)
    assert html.by_id("rollout-state").text == "running"
    wave0, wave1 = html.by_id("wave-0"), html.by_id("wave-1")
    assert (wave0.attrs["data-state"], wave1.attrs["data-state"]) == ("running", "pending")
    assert counts_of(wave0) == {
        "committed": 5,
        "failed": 2,
        "timed_out": 1,
        "in_flight": 1,
        "pending": 1,
        "rollback": 0,
    }
    assert counts_of(wave1)["pending"] == 30
    failed = {r.find_all("td")[0].text: r for r in body_rows(html.by_id("failed"))}
    assert sorted(failed) == sorted(WAVE0[5:8])
    assert "failed: bad_signature" in failed[WAVE0[5]].text
    assert failed[WAVE0[5]].find_all("a")[0].attrs["href"] == f"/devices/{WAVE0[5]}"
    assert "timed_out" in failed[WAVE0[7]].text
    assert html.has_id("gate")
    assert html.by_id("live").attrs["data-live"] == f"/rollouts/{rollout}/events?failed_page=0"


def test_the_gate_reading_and_decisions_show_their_numbers(console: Console, rollout: str) -> None:
    """The running wave's reading (failures, decided, budget) and a logged pass's cause."""
    stored = console.container.rollouts.get(rollout)
    assert stored is not None
    passed = stored.pass_wave("wave complete (10 of 10 decided); 2 failures within 3", now=NOW)
    sign_in(console.client, VIEWER)
    before = parse(console.client.get(f"/rollouts/{rollout}").text)
    assert passed is not None
    assert console.container.rollouts.change(rollout, passed)

    after = parse(console.client.get(f"/rollouts/{rollout}").text)

    reading = before.by_id("gate-now").text
    assert "continue" in reading
    assert "2 failures" in reading
    assert "7 decided" in reading
    assert [r.attrs.get("data-verdict") for r in body_rows(before.by_id("gate"))] == [None]
    [decision] = body_rows(after.by_id("gate"))
    assert decision.attrs["data-verdict"] == "pass"
    assert "2 failures within 3" in decision.text
    assert not after.has_id("gate-now")


def test_the_audit_tail_is_newest_first(console: Console, rollout: str) -> None:
    """The audit table's first row is the last transition; it holds at most 20 rows."""
    move(console.container, RID, D.COMMITTED, WAVE0[9])
    sign_in(console.client, VIEWER)

    html = parse(console.client.get(f"/rollouts/{rollout}").text)

    audit = body_rows(html.by_id("audit"))
    assert len(audit) == 12  # created, start, wave 0's 10 device moves
    assert WAVE0[9] in audit[0].text
    assert "pending → committed" in audit[0].text
    assert "created" in audit[-1].text


def test_failed_devices_are_paged(console: Console) -> None:
    """130 failed devices: 50 a page in id order, the pager's links, a page past the end
    shows the last."""
    devices = [f"dev-{n:03d}" for n in range(130)]
    planned(console.container, RID, [devices])
    move(console.container, RID, D.HEALTH_FAILED, *devices)
    sign_in(console.client, VIEWER)

    pages = [
        parse(console.client.get(f"/rollouts/{RID}?failed_page={n}").text) for n in (0, 1, 2, 7)
    ]

    listed = [[r.find_all("td")[0].text for r in body_rows(p.by_id("failed"))] for p in pages]
    assert listed[0] + listed[1] + listed[2] == devices
    assert [len(x) for x in listed] == [FAILED_PAGE_SIZE, FAILED_PAGE_SIZE, 30, 30]
    first_pager, last_pager = pages[0].by_id("failed-pager"), pages[2].by_id("failed-pager")
    assert [a.attrs["href"] for a in first_pager.find_all("a")] == [
        f"/rollouts/{RID}?failed_page=1"
    ]
    assert [a.attrs["class"] for a in last_pager.find_all("a")] == ["prev"]


def test_the_rollouts_list_shows_state_and_progress(console: Console, rollout: str) -> None:
    """The list links the rollout, with its state and 8 of 40 devices decided."""
    sign_in(console.client, VIEWER)

    html = parse(console.client.get("/rollouts").text)

    [row] = body_rows(html.by_id("rollouts"))
    assert row.attrs["data-state"] == "running"
    assert row.find_all("a")[0].attrs["href"] == f"/rollouts/{rollout}"
    [bar] = row.find_all("progress")
    assert (bar.attrs["value"], bar.attrs["max"]) == ("8", "40")


def test_an_unknown_rollout_is_a_404(console: Console) -> None:
    """No such rollout: 404, not an error page of the server."""
    sign_in(console.client, VIEWER)

    assert console.client.get("/rollouts/ro-none").status_code == 404


def test_html_in_a_device_id_or_reason_is_shown_as_text(console: Console) -> None:
    """A device id and a report reason that look like HTML are escaped, never markup."""
    planned(console.container, RID, [[ROGUE_DEVICE, "dev-ok"]])
    move(console.container, RID, D.REJECTED, ROGUE_DEVICE)
    console.container.inventory.record_reports([report(ROGUE_DEVICE, RID, ROGUE_REASON)])
    sign_in(console.client, VIEWER)

    response = console.client.get(f"/rollouts/{RID}")

    assert ROGUE_DEVICE not in response.text
    assert ROGUE_REASON not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    html = parse(response.text)
    [row] = body_rows(html.by_id("failed"))
    assert row.find_all("td")[0].text == ROGUE_DEVICE
    assert ROGUE_REASON in row.text
    assert not [n for n in html.walk() if n.tag == "script" and not n.attrs.get("src")]
    assert not html.find_all("img")


# -- the commands -------------------------------------------------------------------------------


def test_an_operator_sees_the_commands_the_state_allows(console: Console, rollout: str) -> None:
    """Running: pause and abort, each a POST form with the CSRF token and a confirmation."""
    csrf = sign_in(console.client, OPERATOR)

    html = parse(console.client.get(f"/rollouts/{rollout}").text)

    forms = {
        f.attrs["id"]: f
        for f in html.find_all("form")
        if f.attrs.get("id", "").startswith("action-")
    }
    assert sorted(forms) == ["action-abort", "action-pause"]
    for verb in ("abort", "pause"):
        form = forms[f"action-{verb}"]
        assert form.attrs["method"] == "post"
        assert form.attrs["action"] == f"/rollouts/{rollout}/{verb}"
        assert form.attrs["data-confirm"]
        assert form.find_all("input", name="csrf")[0].attrs["value"] == csrf


def test_a_viewer_sees_no_command(console: Console, rollout: str) -> None:
    """A viewer's page has no action form at all."""
    sign_in(console.client, VIEWER)

    html = parse(console.client.get(f"/rollouts/{rollout}").text)

    assert not [f for f in html.find_all("form") if f.attrs.get("id", "").startswith("action-")]
    assert not html.has_id("actions")


def test_an_abort_without_the_csrf_token_is_refused(console: Console, rollout: str) -> None:
    """An operator's POST without the CSRF token: 403, the rollout still running."""
    sign_in(console.client, OPERATOR)

    response = console.client.post(f"/rollouts/{rollout}/abort", data={})
    forged = console.client.post(f"/rollouts/{rollout}/abort", data={"csrf": "forged"})

    assert (response.status_code, forged.status_code) == (403, 403)
    assert rollout_state(console, rollout) is RolloutState.RUNNING


def test_a_viewers_abort_is_refused_even_with_its_csrf_token(
    console: Console, rollout: str
) -> None:
    """A viewer's POST with its own valid CSRF token: 403, nothing changed."""
    csrf = sign_in(console.client, VIEWER)

    response = console.client.post(f"/rollouts/{rollout}/abort", data={"csrf": csrf})

    assert response.status_code == 403
    assert rollout_state(console, rollout) is RolloutState.RUNNING
    assert all(e["actor"] != "console:watch" for e in console.container.rollouts.events(rollout))


def test_an_operators_abort_rolls_back_and_names_the_operator(
    console: Console, rollout: str
) -> None:
    """Abort from the page: 303 back to it, rolling_back, the audit names `console:ops`,
    and the page then offers no command."""
    csrf = sign_in(console.client, OPERATOR)

    response = console.client.post(f"/rollouts/{rollout}/abort", data={"csrf": csrf})

    assert response.status_code == 303
    assert response.headers["location"] == f"/rollouts/{rollout}"
    assert rollout_state(console, rollout) is RolloutState.ROLLING_BACK
    aborted = [e for e in console.container.rollouts.events(rollout) if e["to"] == "aborted"]
    assert [(e["actor"], e["cause"]) for e in aborted] == [
        ("console:ops", "aborted by console:ops")
    ]
    html = parse(console.client.get(f"/rollouts/{rollout}").text)
    assert html.by_id("rollout-state").text == "rolling_back"
    assert "console:ops" in html.by_id("audit").text
    assert not html.has_id("actions")


def test_a_refused_command_shows_why_on_the_page(console: Console, rollout: str) -> None:
    """Resume of a running rollout: 409 with the service's message on the rollout page."""
    csrf = sign_in(console.client, OPERATOR)

    response = console.client.post(f"/rollouts/{rollout}/resume", data={"csrf": csrf})

    assert response.status_code == 409
    html = parse(response.text)
    assert "only a paused or created rollout can be resumed" in html.by_id("action-error").text
    assert html.by_id("rollout-state").text == "running"


def test_pause_then_resume_from_the_page(console: Console, rollout: str) -> None:
    """Pause: paused, and the page offers resume and abort; resume: running again."""
    csrf = sign_in(console.client, OPERATOR)

    paused = console.client.post(f"/rollouts/{rollout}/pause", data={"csrf": csrf})
    page = parse(console.client.get(f"/rollouts/{rollout}").text)
    resumed = console.client.post(f"/rollouts/{rollout}/resume", data={"csrf": csrf})

    assert (paused.status_code, resumed.status_code) == (303, 303)
    forms = sorted(f.attrs["id"] for f in page.find_all("form") if "data-confirm" in f.attrs)
    assert forms == ["action-abort", "action-resume"]
    assert rollout_state(console, rollout) is RolloutState.RUNNING


def test_an_operator_approves_the_waiting_wave(console: Console, rollout: str) -> None:
    """A wave awaiting approval: the page offers approve; approving it clears the wait and
    the audit names the operator."""
    assert console.container.rollouts.change(rollout, Change(awaiting_approval=True))
    csrf = sign_in(console.client, OPERATOR)
    page = parse(console.client.get(f"/rollouts/{rollout}").text)

    response = console.client.post(f"/rollouts/{rollout}/approve", data={"csrf": csrf})

    assert page.has_id("action-approve")
    assert "awaits approval" in page.by_id("awaiting-approval").text
    assert response.status_code == 303
    stored = console.container.rollouts.get(rollout)
    assert stored is not None
    assert stored.awaiting_approval is False
    [approved] = [e for e in console.container.rollouts.events(rollout) if e["to"] == "approved"]
    assert (approved["actor"], approved["subject"]) == ("console:ops", "0")


# -- the store's reads behind the page ---------------------------------------------------------


def test_events_hold_the_rollout_and_wave_entries_only(console: Console, rollout: str) -> None:
    """`events`: the created and start lines, no device's; `log_tail`: newest first."""
    store = console.container.rollouts

    events = store.events(rollout)
    tail = store.log_tail(rollout, 3)

    assert [(e["kind"], e["cause"]) for e in events] == [
        ("rollout", "created"),
        ("rollout", "start"),
    ]
    assert [e["subject"] for e in tail] == [WAVE0[8], WAVE0[7], WAVE0[6]]
    assert tail == store.log(rollout)[::-1][:3]


@pytest.mark.parametrize("chunk", [4, redis_rollouts.LOG_CHUNK], ids=["chunks-of-4", "one-chunk"])
def test_events_of_a_rollout_stored_before_them_are_rebuilt_from_its_log(
    console: Console, rollout: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `…:events` (a rollout stored before it), or with only the entries since,
    `events` reads them from the log once, a stretch at a time, with the log's ids, and
    keeps them."""
    monkeypatch.setattr(redis_rollouts, "LOG_CHUNK", chunk)
    store, redis = console.container.rollouts, console.container.redis
    from_log = [e for e in store.log(rollout) if e["kind"] != "device"]
    redis.delete(rollout_key(rollout, "events"))
    pause = store.get(rollout)
    assert pause is not None
    change = pause.pause(now=NOW, actor="test")
    assert change is not None
    assert store.change(rollout, change)  # written to a fresh `…:events`: its only entry

    rebuilt = store.events(rollout)
    again = store.events(rollout)

    paused = [e for e in store.log(rollout) if e["kind"] != "device"]
    assert len(paused) == len(from_log) + 1
    assert rebuilt == again == paused
    assert redis.xlen(rollout_key(rollout, "events")) == len(paused)


def test_a_page_of_devices_is_sorted_over_every_state_asked(console: Console) -> None:
    """`devices_page` over three states: the union in id order, the total, any offset."""
    devices = [f"dev-{n:03d}" for n in range(30)]
    planned(console.container, RID, [devices])
    move(console.container, RID, D.REJECTED, *devices[0::3])
    move(console.container, RID, D.TIMED_OUT, *devices[1::3])
    move(console.container, RID, D.COMMITTED, *devices[2::3])
    store = console.container.rollouts
    failed = sorted(devices[0::3] + devices[1::3])

    first = store.devices_page(RID, [D.REJECTED, D.TIMED_OUT, D.FALLBACK], offset=0, count=7)
    rest = store.devices_page(RID, [D.REJECTED, D.TIMED_OUT, D.FALLBACK], offset=7, count=50)
    one = store.devices_page(RID, [D.COMMITTED], offset=9, count=5)
    none = store.devices_page(RID, [D.FALLBACK], offset=0, count=5)

    assert first == (20, failed[:7])
    assert rest == (20, failed[7:])
    assert one == (10, devices[2::3][9:])
    assert none == (0, [])
    assert not redis_has(console, rollout_key(RID, "page"))
    with pytest.raises(ValueError, match="pending"):
        store.devices_page(RID, [D.PENDING], offset=0, count=5)


def redis_has(console: Console, key: str) -> bool:
    return bool(console.container.redis.exists(key))


def test_the_events_stream_is_written_by_create_and_change(console: Console) -> None:
    """A new rollout's `…:events` starts with its created line and grows with its changes,
    not with its devices' transitions."""
    planned(console.container, RID, [WAVE0], running=False)
    move(console.container, RID, D.SENT, *WAVE0)
    stored = console.container.rollouts.get(RID)
    assert stored is not None
    abort = stored.abort(cause="test", now=NOW + timedelta(seconds=1), actor="t", failed_wave=0)
    assert abort is not None
    assert console.container.rollouts.change(RID, abort)

    events = console.container.rollouts.events(RID)

    assert [e["to"] for e in events] == ["created", "aborted", "rolling_back"]
    assert re.fullmatch(r"\d+-\d+", events[0]["id"])
