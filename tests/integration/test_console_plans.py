"""The console's renewal plan pages against a real redis-server: plans made from signed CA
webhooks, their impact, their at-risk devices a page at a time, their rollouts."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.api import create_app
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.renewal import ChainSummary, PlanImpact, PlanState, RenewalPlan
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import DeviceRolloutState, DeviceTransition, RolloutState
from simulator.pki import IssuedCA, make_ca
from tests.console import sign_in
from tests.html_tree import body_rows, parse
from tests.integration.renewal_calls import accept_event, watch_renewals

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
OPERATOR = "op-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
VIEWER = "view-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
DEVICES = 120
ENDPOINT = "mqtt.example.net:8883"
ROGUE_CN = "<img src=x onerror=alert(1)> & co"


# -- a few lines of HTML reading ----------------------------------------------------------------


# -- fixtures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Console:
    container: Container
    client: TestClient
    old_ca: IssuedCA


@pytest.fixture
def console(
    service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Console]:
    """The app over the test's Redis, with an operator and a viewer token, a webhook secret,
    and DEVICES devices that trust only the old CA (in sec_tag 42)."""
    key = tmp_path / "signing.pem"
    generate_key_file(key)
    monkeypatch.setenv("CERTFLEET_SIGNING_KEY_FILE", str(key))
    monkeypatch.setenv("CERTFLEET_API_TOKENS", f"ops:{OPERATOR}:operator,watch:{VIEWER}:viewer")
    monkeypatch.setenv("CERTFLEET_WEBHOOK_SECRETS", SECRET)
    monkeypatch.setenv("CERTFLEET_RETIRE_SOAK_SECONDS", "0")
    container = bootstrap(Settings(), logging=False)
    old_ca = make_ca("CA 2025", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(30))
    digest = sha256_hex(old_ca.pem)
    container.library.add({digest: old_ca.pem.decode()})
    item = ReportedCredential(
        sec_tag=42,
        type=CredentialType.CA_CHAIN,
        sha256=digest,
        not_after=old_ca.certificate.not_valid_after_utc,
        subject="CN=CA 2025",
    )
    container.inventory.record_states(
        [
            DeviceState(
                device_id=f"dev-{n:03d}", reported_at=NOW, credentials=(item,), active_tags=(42,)
            )
            for n in range(DEVICES)
        ],
        received_at=NOW,
    )
    client = TestClient(
        create_app(container), base_url="http://console.test", follow_redirects=False
    )
    with client:
        yield Console(container, client, old_ca)
    container.close()


def renewed_by_webhook(console: Console, common_name: str) -> str:
    """Deliver a signed `ca.renewed` of a new CA named `common_name`; its plan's id."""
    return renewed_with(console, new_ca(common_name))


def new_ca(common_name: str) -> IssuedCA:
    """A renewed CA named `common_name`, valid since yesterday."""
    return make_ca(common_name, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(700))


def renewed_with(console: Console, ca: IssuedCA) -> str:
    """Deliver a signed `ca.renewed` of `ca` for the fleet's endpoint; its plan's id."""
    body = json.dumps(
        {
            "type": "ca.renewed",
            "timestamp": NOW.isoformat(),
            "data": {"ca_pem": ca.pem.decode(), "endpoints": [ENDPOINT]},
        }
    )
    at = datetime.now(UTC)
    msg_id = f"msg_{sha256_hex(ca.pem)[:32]}"
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, at, body),
        "content-type": "application/json",
    }
    answer = console.client.post("/v1/webhooks/ca", content=body.encode(), headers=headers)
    assert answer.status_code == 202, answer.text
    plan_id: str = answer.json()["plan_id"]
    return plan_id


def move(console: Console, rollout_id: str, devices: list[str], state: DeviceRolloutState) -> None:
    """Put `devices` of the rollout in `state`, as their reports would."""
    results = console.container.rollouts.transition(
        rollout_id,
        [DeviceTransition(d, state, frozenset(DeviceRolloutState), "test") for d in devices],
        now=NOW,
        actor="test",
    )
    assert all(r.applied for r in results)


def add_rollout_of(console: Console, plan_id: str) -> str:
    plan = console.container.plans.load(plan_id)
    assert plan is not None
    assert plan.add_rollout is not None
    return plan.add_rollout


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/plans", "/plans/plan-x", "/plans/plan-x?page=2"])
def test_plan_pages_send_a_browser_without_a_session_to_sign_in(
    console: Console, path: str
) -> None:
    """Without a session every plan page is a 303 to the sign-in form, which comes back."""
    response = console.client.get(path)

    assert response.status_code == 303
    assert response.headers["location"] == f"/signin?next={path.split('?', maxsplit=1)[0]}"


def test_the_list_shows_plans_newest_first_with_impact_and_rollout_progress(
    console: Console,
) -> None:
    """A renewal nobody trusts yet (all at risk, a trust.add) is listed above an older one
    every device already trusts (all covered, no rollout), with counts and progress."""
    older = accept_event(
        console.container,
        "ca.renewed",
        {"ca_pem": console.old_ca.pem.decode(), "endpoints": [ENDPOINT]},
        now=NOW - timedelta(days=1),
    )["plan_id"]
    newer = renewed_by_webhook(console, "CA 2026")
    add = add_rollout_of(console, newer)
    move(console, add, ["dev-000", "dev-001", "dev-002"], DeviceRolloutState.COMMITTED)
    move(console, add, ["dev-003", "dev-004"], DeviceRolloutState.REJECTED)
    sign_in(console.client, VIEWER)

    response = console.client.get("/plans")

    assert response.status_code == 200
    table = parse(response.text).by_id("plans")
    first, second = body_rows(table)
    assert [r.find_all("a")[0].attrs["href"] for r in (first, second)] == [
        f"/plans/{newer}",
        f"/plans/{older}",
    ]
    counts = {
        plan: {c.attrs["data-count"]: c.text for c in r.find_all("td") if "data-count" in c.attrs}
        for plan, r in ((newer, first), (older, second))
    }
    assert counts == {
        newer: {"at_risk": "120", "safe": "0", "unknown": "0"},
        older: {"at_risk": "0", "safe": "120", "unknown": "0"},
    }
    [rollout] = first.find_all("div", class_="plan-rollout")
    assert rollout.find_all("a")[0].attrs["href"] == f"/rollouts/{add}"
    assert "created" in rollout.text
    assert "5/120" in rollout.text  # 3 committed and 2 rejected are decided
    assert "2 failed" in rollout.text
    assert "CN=CA 2026" in first.text
    assert "mqtt.example.net:8883" in first.text
    assert "adding" in first.text
    assert "awaiting_switch" in second.text
    assert second.find_all("div", class_="plan-rollout") == []


def test_the_plan_page_shows_impact_timeline_and_rollouts(console: Console) -> None:
    """The plan page shows the plan's state, impact counts, timeline and its trust.add
    with the progress the rollout's counts give."""
    plan_id = renewed_by_webhook(console, "CA 2026")
    add = add_rollout_of(console, plan_id)
    move(console, add, ["dev-010", "dev-011"], DeviceRolloutState.COMMITTED)
    move(console, add, ["dev-012"], DeviceRolloutState.TIMED_OUT)
    sign_in(console.client, OPERATOR)

    response = console.client.get(f"/plans/{plan_id}")

    assert response.status_code == 200
    doc = parse(response.text)
    api = console.client.get(f"/v1/plans/{plan_id}", headers={"Authorization": f"Bearer {VIEWER}"})
    assert (api.json()["state"], api.json()["add_rollout_state"]) == ("adding", "created")
    assert doc.by_id("plan-state").text == "adding"
    impact = doc.by_id("impact")
    cards = {
        c.attrs["data-count"]: c.find_all("div")[0].text
        for c in impact.find_all("div", class_="card")
    }
    assert cards == {"at_risk": "120", "safe": "0", "unknown": "0"}
    [rollout] = body_rows(doc.by_id("plan-rollouts"))
    assert rollout.attrs["data-role"] == "add"
    assert rollout.find_all("a")[0].attrs["href"] == f"/rollouts/{add}"
    assert "trust.add" in rollout.text
    assert "created" in rollout.text
    assert "3/120" in rollout.text  # committed and timed out are decided
    cells = {
        c.attrs["data-progress"]: c.text
        for c in rollout.find_all("td")
        if "data-progress" in c.attrs
    }
    assert cells == {"devices": "120", "failed": "0", "timed_out": "1"}
    timeline = doc.by_id("timeline").text
    assert "planned from ca.renewed" in timeline
    assert "new CA expires" in timeline
    assert "42 → 43" in doc.by_id("plan-ca").text


def test_at_risk_devices_are_paged_fifty_at_a_time(console: Console) -> None:
    """120 at-risk devices are three pages (50, 50, 20) that together list each device once,
    each linking to its device page with its state in the trust.add; past the end is empty."""
    plan_id = renewed_by_webhook(console, "CA 2026")
    add = add_rollout_of(console, plan_id)
    move(console, add, ["dev-007"], DeviceRolloutState.COMMITTED)
    sign_in(console.client, VIEWER)

    pages = [parse(console.client.get(f"/plans/{plan_id}?page={n}").text) for n in range(4)]

    listed = [[r.find_all("a")[0] for r in body_rows(p.by_id("at-risk"))] for p in pages[:3]]
    assert [len(links) for links in listed] == [50, 50, 20]
    ids = [a.text for links in listed for a in links]
    assert sorted(ids) == [f"dev-{n:03d}" for n in range(DEVICES)]
    assert all(a.attrs["href"] == f"/devices/{a.text}" for links in listed for a in links)
    states = {
        r.find_all("a")[0].text: r.find_all("span")[0].text
        for p in pages[:3]
        for r in body_rows(p.by_id("at-risk"))
    }
    assert states.pop("dev-007") == "committed"
    assert set(states.values()) == {"pending"}
    nexts = [[a.attrs["href"] for a in p.find_all("a", class_="next")] for p in pages]
    prevs = [[a.attrs["href"] for a in p.find_all("a", class_="prev")] for p in pages]
    assert nexts == [[f"/plans/{plan_id}?page=1"] * 2, [f"/plans/{plan_id}?page=2"] * 2, [], []]
    assert prevs == [
        [],
        [f"/plans/{plan_id}?page=0"] * 2,
        [f"/plans/{plan_id}?page=1"] * 2,
        [f"/plans/{plan_id}?page=2"] * 2,
    ]
    assert body_rows(pages[3].by_id("at-risk")) == []


def test_a_plan_with_a_huge_device_list_renders_one_page_of_it(console: Console) -> None:
    """A plan that lists 10,000 of 25,000 devices at risk renders 50 of them, says how many
    it lists and how many there are, and its last page holds the last 50 listed."""
    at_risk = tuple(f"far-{n:05d}" for n in range(10_000))
    plan = RenewalPlan(
        id="plan-20261201-000000-beef",
        event="ca.renewed",
        created_at=NOW,
        endpoints=("mqtt.example.net:8883",),
        staging_endpoint=None,
        cutover_at=None,
        chain=ChainSummary(
            anchor_subject="CN=Huge",
            anchor_not_after=NOW + timedelta(days=700),
            hosts=(),
            chain_bytes=600,
            leaf_sha256=None,
            not_yet_valid_until=None,
        ),
        anchor_pem="-----BEGIN CERTIFICATE-----\n",
        impact=PlanImpact(
            counts={"safe": 0, "at_risk": 25_000, "unknown": 0},
            safe=(),
            at_risk=at_risk,
            unknown=(),
            truncated=True,
        ),
        state=PlanState.AWAITING_SWITCH,
    )
    console.container.plans.save(plan)
    sign_in(console.client, VIEWER)

    first = console.client.get(f"/plans/{plan.id}")
    last = console.client.get(f"/plans/{plan.id}?page=199")

    assert first.status_code == last.status_code == 200
    assert [r.find_all("a")[0].text for r in body_rows(parse(first.text).by_id("at-risk"))] == list(
        at_risk[:50]
    )
    assert [r.find_all("a")[0].text for r in body_rows(parse(last.text).by_id("at-risk"))] == list(
        at_risk[-50:]
    )
    assert "far-00050" not in first.text
    assert "first 10 000 of the 25 000 devices at risk" in parse(first.text).text.replace(
        "\u2009", " "
    )
    assert parse(last.text).find_all("a", class_="next") == []


def test_an_unknown_plan_is_a_404_page(console: Console) -> None:
    """An id certfleet has no plan for gets a 404 page naming it, escaped."""
    sign_in(console.client, VIEWER)

    response = console.client.get("/plans/%3Cb%3Eplan-nope")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert 'No renewal plan <span class="mono">&lt;b&gt;plan-nope</span>' in response.text
    assert "<b>plan-nope" not in response.text


def test_an_html_looking_ca_subject_is_shown_as_text(console: Console) -> None:
    """A CA whose subject looks like HTML is shown as text on the list and the plan page."""
    plan_id = renewed_by_webhook(console, ROGUE_CN)
    sign_in(console.client, VIEWER)

    listing = console.client.get("/plans").text
    shown = console.client.get(f"/plans/{plan_id}").text

    for html in (listing, shown):
        assert "<img" not in html
        assert "&lt;img src=x onerror=alert(1)\\&gt; &amp; co" in html
    assert "onerror=alert(1)" in parse(shown).by_id("plan-ca").text


def test_a_retiring_plan_shows_its_add_and_retire_its_switch_and_unconfirmed_devices(
    console: Console,
) -> None:
    """After a trust.add that two devices never confirmed, the servers' switch and the soak,
    the plan page shows the add and the retire in order, the switch and the soak in its
    timeline, the two devices as unconfirmed; the list shows both rollouts."""
    unconfirmed = ("dev-003", "dev-007")
    ca = new_ca("CA 2026")
    plan_id = renewed_with(console, ca)
    add = add_rollout_of(console, plan_id)
    later = NOW + timedelta(minutes=5)
    both = (
        ReportedCredential(
            sec_tag=42, type=CredentialType.CA_CHAIN, sha256=sha256_hex(console.old_ca.pem)
        ),
        ReportedCredential(sec_tag=43, type=CredentialType.CA_CHAIN, sha256=sha256_hex(ca.pem)),
    )
    console.container.inventory.record_states(
        [
            DeviceState(
                device_id=f"dev-{n:03d}", reported_at=later, credentials=both, active_tags=(42, 43)
            )
            for n in range(DEVICES)
        ],
        received_at=later,
    )
    accept_event(console.container, "certificate.activated", {"endpoints": [ENDPOINT]}, now=later)
    console.container.rollouts.change(
        add, Change(state=RolloutState.COMPLETED_WITH_TIMEOUTS, unconfirmed=unconfirmed)
    )
    console.container.rollouts.release(add, [42, 43], [f"dev-{n:03d}" for n in range(DEVICES)])
    watch_renewals(console.container, now=later)
    states = watch_renewals(console.container, now=later + timedelta(seconds=1))
    assert states[plan_id] == "retiring"
    sign_in(console.client, VIEWER)

    shown = parse(console.client.get(f"/plans/{plan_id}").text)
    listing = parse(console.client.get("/plans").text)

    assert shown.by_id("plan-state").text == "retiring"
    steps = body_rows(shown.by_id("plan-rollouts"))
    assert [(r.attrs["data-role"], r.find_all("span")[0].text) for r in steps] == [
        ("add", "completed_with_timeouts"),
        ("retire", "created"),
    ]
    retire = steps[1]
    assert "trust.retire" in retire.text
    assert retire.find_all("td", **{"data-progress": "devices"})[0].text == "118"
    moments = {
        what.text: note.text
        for _, what, note in (r.find_all("td") for r in body_rows(shown.by_id("timeline")))
    }
    assert moments["servers switched"] == "certificate.activated"
    assert moments["old CA retired after"] == "the soak after the switch"
    cards = shown.by_id("impact").find_all("div", class_="card")
    assert {c.attrs["data-count"]: c.find_all("div")[0].text for c in cards}["unconfirmed"] == "2"
    flagged = [
        r.find_all("a")[0].text
        for r in body_rows(shown.by_id("at-risk"))
        if "never confirmed" in r.text
    ]
    assert flagged == list(unconfirmed)
    [row] = [r for r in body_rows(listing.by_id("plans")) if plan_id in r.text]
    assert [d.attrs["data-role"] for d in row.find_all("div", class_="plan-rollout")] == [
        "add",
        "retire",
    ]


def test_a_plan_no_device_needs_shows_no_rollout_and_no_device_at_risk(console: Console) -> None:
    """A renewal to the CA every device already trusts has every device covered, no rollout
    and no device at risk, and says so."""
    plan_id = accept_event(
        console.container,
        "ca.renewed",
        {"ca_pem": console.old_ca.pem.decode(), "endpoints": [ENDPOINT]},
        now=NOW,
    )["plan_id"]
    sign_in(console.client, VIEWER)

    shown = parse(console.client.get(f"/plans/{plan_id}").text)

    assert shown.by_id("plan-state").text == "awaiting_switch"
    cards = shown.by_id("impact").find_all("div", class_="card")
    assert {c.attrs["data-count"]: c.find_all("div")[0].text for c in cards} == {
        "at_risk": "0",
        "safe": "120",
        "unknown": "0",
    }
    assert shown.by_id("plan-rollouts").text == "No rollout: no device is known to be at risk."
    assert shown.by_id("at-risk").text == "No device is known to be at risk."
