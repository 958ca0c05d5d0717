"""The HTTP API against a real redis-server: signed CA webhooks, bearer auth, health, metrics."""

from __future__ import annotations

import base64
import importlib
import json
import os
import socket
import sys
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from schemathesis.core.result import Ok
from standardwebhooks import Webhook

from orchestrator.api import ApiConfigError, create_app
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.inventory import FleetSummary, IdentityCounts, IdentitySummary
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    RolloutState,
    WaveState,
)
from tests.pem_sizes import ca_cert_pem_of_size
from tests.properties import examples

pytestmark = pytest.mark.integration

RENEWALS = "orchestrator.services.renewals"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


SECRET = _secret()
NEXT_SECRET = _secret()
UNKNOWN_SECRET = _secret()
TOKEN = "token-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
AUTH = {"Authorization": f"Bearer {TOKEN}"}

EVENT = {
    "type": "ca.renewed",
    "timestamp": "2026-11-25T12:00:00Z",
    "data": {"ca_pem": "-----BEGIN CERTIFICATE-----\n...", "endpoints": ["mqtt.example.com:8883"]},
}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def renewals_service(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The renewal service module; a stand-in holding its InvalidEventError until it exists."""
    try:
        return importlib.import_module(RENEWALS)
    except ModuleNotFoundError as exc:
        if exc.name != RENEWALS:
            raise
    stub = types.ModuleType(RENEWALS)

    class InvalidEventError(CertfleetError):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.message = message

    stub.InvalidEventError = InvalidEventError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, RENEWALS, stub)
    return stub


@dataclass
class FakeRenewals:
    """Records the events the API hands on; answers like the renewal service."""

    service: types.ModuleType
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reject_with: str | None = None

    def accept_event(
        self, container: Container, event_type: str, data: dict[str, Any], *, now: datetime
    ) -> Mapping[str, Any]:
        self.events.append((event_type, data))
        if self.reject_with is not None:
            raise self.service.InvalidEventError(self.reject_with)
        return {"plan_id": f"plan-{len(self.events)}", "status": "planned"}

    def plan_view(self, container: Container, plan_id: str) -> Mapping[str, Any] | None:
        if plan_id != "plan-1":
            return None
        return {"id": plan_id, "state": "adding", "impact": {"at_risk": 60}}


@pytest.fixture
def renewals(renewals_service: types.ModuleType) -> FakeRenewals:
    """A fake renewal service."""
    return FakeRenewals(service=renewals_service)


@pytest.fixture
def make_container(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Container]]:
    """Build containers from the environment plus the given CERTFLEET_* overrides."""
    built: list[Container] = []

    def make(**env: str) -> Container:
        for name, value in env.items():
            monkeypatch.setenv(f"CERTFLEET_{name.upper()}", value)
        container = bootstrap(Settings(), logging=False)
        built.append(container)
        return container

    yield make
    for container in built:
        container.close()


@pytest.fixture
def api_container(make_container: Callable[..., Container]) -> Container:
    """A container with two webhook secrets (mid-rotation) and two API tokens."""
    return make_container(webhook_secrets=f"{SECRET}, {NEXT_SECRET}", api_tokens=f"{TOKEN},other")


@pytest.fixture
def app(api_container: Container, renewals: FakeRenewals) -> FastAPI:
    """The API over real Redis with the fake renewal service."""
    return create_app(
        api_container, accept_event=renewals.accept_event, plan_view=renewals.plan_view
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTP client of the app."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def rollout_id(api_container: Container) -> str:
    """A running rollout of one device in one wave."""
    rollout_id = "ro-20261125-120000-beef"
    spec = RolloutSpec.from_json(
        {"kind": "trust.retire", "tag": 42, "spare_tag": 43, "waves": "100%"}
    )
    api_container.rollouts.create(
        Rollout.planned(rollout_id, spec, seed="test", sizes=[1], now=NOW),
        waves=[["dev-a"]],
        active={"dev-a": [42]},
        actor="test",
    )
    assert api_container.rollouts.change(
        rollout_id,
        Change(state=RolloutState.RUNNING, waves={0: WaveChange(state=WaveState.RUNNING)}),
    )
    return rollout_id


def signed(
    body: str,
    *,
    secret: str = SECRET,
    msg_id: str = "msg_1",
    at: datetime | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed with `secret` at `at` (default: now)."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def deliver(client: TestClient, body: str, headers: Mapping[str, str]) -> httpx.Response:
    """POST a CA webhook."""
    response: httpx.Response = client.post(
        "/v1/webhooks/ca", content=body.encode(), headers=dict(headers)
    )
    return response


def webhook_count(client: TestClient, outcome: str) -> float:
    """`certfleet_webhooks_total{outcome}` as /metrics shows it now."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "certfleet_webhooks_total" and sample.labels == {"outcome": outcome}:
                return sample.value
    return 0.0


# -- webhooks -----------------------------------------------------------------------------------


def test_a_signed_ca_event_is_accepted(client: TestClient, renewals: FakeRenewals) -> None:
    """A webhook signed with the configured secret gets 202 and reaches the renewal service."""
    body = json.dumps(EVENT)

    response = deliver(client, body, signed(body))

    assert response.status_code == 202, response.text
    assert response.json() == {"plan_id": "plan-1", "status": "planned"}
    assert renewals.events == [("ca.renewed", EVENT["data"])]


def _changed_body(body: str) -> tuple[str, dict[str, str]]:
    return body.replace("ca.renewed", "ca.revoked"), signed(body)


def _six_minutes_old(body: str) -> tuple[str, dict[str, str]]:
    return body, signed(body, at=datetime.now(UTC) - timedelta(minutes=6))


def _six_minutes_ahead(body: str) -> tuple[str, dict[str, str]]:
    return body, signed(body, at=datetime.now(UTC) + timedelta(minutes=6))


def _unknown_secret(body: str) -> tuple[str, dict[str, str]]:
    return body, signed(body, secret=UNKNOWN_SECRET)


def _without(header: str) -> Callable[[str], tuple[str, dict[str, str]]]:
    def forge(body: str) -> tuple[str, dict[str, str]]:
        headers = signed(body)
        del headers[header]
        return body, headers

    return forge


def _malformed_signature(body: str) -> tuple[str, dict[str, str]]:
    return body, {**signed(body), "webhook-signature": "v1-no-comma"}


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        pytest.param(_changed_body, "no matching signature", id="changed-body"),
        pytest.param(_six_minutes_old, "too old", id="six-minutes-old"),
        pytest.param(_six_minutes_ahead, "too new", id="six-minutes-ahead"),
        pytest.param(_unknown_secret, "no matching signature", id="unknown-secret"),
        pytest.param(_without("webhook-id"), "missing header: webhook-id", id="no-id"),
        pytest.param(
            _without("webhook-timestamp"), "missing header: webhook-timestamp", id="no-timestamp"
        ),
        pytest.param(
            _without("webhook-signature"), "missing header: webhook-signature", id="no-signature"
        ),
        pytest.param(_malformed_signature, "malformed", id="malformed-signature"),
    ],
)
def test_a_webhook_that_does_not_verify_gets_401(
    client: TestClient,
    renewals: FakeRenewals,
    forge: Callable[[str], tuple[str, dict[str, str]]],
    says: str,
) -> None:
    """A forged, stale (over 5 minutes) or incomplete webhook gets 401 saying why; nothing runs."""
    body, headers = forge(json.dumps(EVENT))

    response = deliver(client, body, headers)

    assert response.status_code == 401
    detail = response.json()["detail"]
    assert says in detail.lower()
    assert SECRET.removeprefix("whsec_") not in detail
    assert renewals.events == []


def test_the_next_secret_verifies_during_a_rotation(
    client: TestClient, renewals: FakeRenewals
) -> None:
    """A webhook signed with the second configured secret is accepted like one with the first."""
    body = json.dumps(EVENT)

    response = deliver(client, body, signed(body, secret=NEXT_SECRET, msg_id="msg_next"))

    assert response.status_code == 202
    assert len(renewals.events) == 1


def test_a_repeated_webhook_id_gets_the_first_answer_and_runs_once(
    client: TestClient, renewals: FakeRenewals, api_container: Container
) -> None:
    """A redelivery with the same webhook-id gets the first answer; the handler ran once."""
    body = json.dumps(EVENT)
    first = deliver(client, body, signed(body, msg_id="msg_repeat"))

    again = deliver(client, body, signed(body, msg_id="msg_repeat"))

    assert again.status_code == first.status_code == 202
    assert again.json() == first.json()
    assert len(renewals.events) == 1
    stored = json.loads(str(api_container.redis.get("certfleet:webhook:msg_repeat")))
    assert stored == {"status_code": 202, "body": first.json()}
    ttl = api_container.redis.ttl("certfleet:webhook:msg_repeat")
    assert 23 * 3600 < int(ttl) <= 24 * 3600


def test_a_401_is_not_remembered(client: TestClient, renewals: FakeRenewals) -> None:
    """A forged delivery does not burn its webhook-id: the genuine one is still accepted."""
    body = json.dumps(EVENT)
    forged = deliver(client, body, signed(body, secret=UNKNOWN_SECRET, msg_id="msg_x"))

    genuine = deliver(client, body, signed(body, msg_id="msg_x"))

    assert forged.status_code == 401
    assert genuine.status_code == 202
    assert len(renewals.events) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param("{not json", "invalid json", id="not-json"),
        pytest.param('["ca.renewed"]', "envelope", id="not-an-object"),
        pytest.param('{"type": "ca.renewed"}', "data: field required", id="no-data"),
        pytest.param('{"data": {}}', "type: field required", id="no-type"),
        pytest.param('{"type": "ca.renewed", "data": []}', "data:", id="data-not-object"),
    ],
)
def test_a_body_that_is_not_an_envelope_gets_400_and_is_remembered(
    client: TestClient, renewals: FakeRenewals, body: str, says: str
) -> None:
    """A signed body that is not an envelope with type and data gets 400, and so does its retry."""
    first = deliver(client, body, signed(body, msg_id="msg_bad"))

    again = deliver(client, body, signed(body, msg_id="msg_bad"))

    assert first.status_code == 400
    assert says in first.json()["detail"].lower()
    assert (again.status_code, again.json()) == (400, first.json())
    assert renewals.events == []


def test_an_event_the_service_refuses_gets_400_with_its_message(
    client: TestClient, renewals: FakeRenewals
) -> None:
    """The renewal service's InvalidEventError becomes a 400 carrying its message."""
    renewals.reject_with = "the new CA chain does not validate: issuer unknown"
    body = json.dumps(EVENT)

    response = deliver(client, body, signed(body, msg_id="msg_refused"))

    assert response.status_code == 400
    assert response.json() == {"detail": "the new CA chain does not validate: issuer unknown"}


def test_a_redelivery_while_the_first_is_handled_gets_409(
    client: TestClient, renewals: FakeRenewals, api_container: Container
) -> None:
    """While a delivery holds the claim on its id, a redelivery gets 409 and runs nothing."""
    api_container.redis.set("certfleet:webhook:msg_busy", "claim:0123456789abcdef", ex=60)
    body = json.dumps(EVENT)

    response = deliver(client, body, signed(body, msg_id="msg_busy"))

    assert response.status_code == 409
    assert "being handled" in response.json()["detail"]
    assert renewals.events == []


def test_a_handler_that_fails_leaves_the_id_free_for_the_retry(
    api_container: Container, renewals: FakeRenewals
) -> None:
    """A crash in the handler gives 500 and keeps no answer, so the sender's retry is handled."""
    failures = [RuntimeError("worker lost")]

    def flaky(
        container: Container, event_type: str, data: dict[str, Any], *, now: datetime
    ) -> Mapping[str, Any]:
        if failures:
            raise failures.pop()
        return renewals.accept_event(container, event_type, data, now=now)

    app = create_app(api_container, accept_event=flaky)
    body = json.dumps(EVENT)

    with TestClient(app, raise_server_exceptions=False) as client:
        crashed = deliver(client, body, signed(body, msg_id="msg_retry"))
        retried = deliver(client, body, signed(body, msg_id="msg_retry"))

    assert crashed.status_code == 500
    assert retried.status_code == 202
    assert len(renewals.events) == 1


def test_the_real_renewal_service_is_wired_by_default(
    make_container: Callable[..., Container],
) -> None:
    """By default the real renewal service answers: InvalidEventError is 400, no plan is 404."""
    app = create_app(make_container(webhook_secrets=SECRET, api_tokens=TOKEN))
    body = json.dumps(
        {"type": "certificate.revoked", "timestamp": "2026-11-25T12:00:00Z", "data": {}}
    )

    with TestClient(app) as client:
        event = deliver(client, body, signed(body, msg_id="msg_real"))
        plan = client.get("/v1/plans/plan-nope", headers=AUTH)

    assert event.status_code == 400
    assert "certificate.revoked" in event.json()["detail"]
    assert plan.status_code == 404


@pytest.mark.parametrize(("size", "status"), [(4093, 202), (4097, 422)])
def test_a_ca_over_the_modem_item_limit_gets_422_and_no_plan(
    make_container: Callable[..., Container], size: int, status: int
) -> None:
    """A CA whose PEM is over 4096 bytes gets 422 with the reason and stores no plan; 4093
    bytes (the largest PEM a certificate has at or under 4096) is accepted."""
    container = make_container(webhook_secrets=SECRET, api_tokens=TOKEN)
    app = create_app(container)
    data = {"ca_pem": ca_cert_pem_of_size(size), "endpoints": ["broker.example.net:8883"]}
    body = json.dumps({"type": "ca.renewed", "timestamp": "2026-11-25T12:00:00Z", "data": data})

    with TestClient(app) as client:
        event = deliver(client, body, signed(body, msg_id=f"msg_size_{size}"))

    assert event.status_code == status, event.text
    plans = container.plans.recent()
    if status == 422:
        assert f"{size} bytes as PEM" in event.json()["detail"]
        assert event.json()["detail"].startswith("too_large")
        assert plans == []
    else:
        assert [p.id for p in plans] == [event.json()["plan_id"]]


def test_webhooks_are_refused_without_a_configured_secret(
    make_container: Callable[..., Container], renewals: FakeRenewals
) -> None:
    """With CERTFLEET_WEBHOOK_SECRETS empty every webhook gets 401 saying so."""
    app = create_app(
        make_container(webhook_secrets=" , "),
        accept_event=renewals.accept_event,
        plan_view=renewals.plan_view,
    )
    body = json.dumps(EVENT)

    with TestClient(app) as client:
        response = deliver(client, body, signed(body))

    assert response.status_code == 401
    assert "no secret is configured" in response.json()["detail"]
    assert renewals.events == []


def test_a_malformed_secret_stops_the_app_from_starting(
    make_container: Callable[..., Container],
) -> None:
    """A secret that is not whsec_+base64 is a configuration error that names the setting."""
    container = make_container(webhook_secrets=f"{SECRET},whsec_a")

    with pytest.raises(ApiConfigError, match="CERTFLEET_WEBHOOK_SECRETS: secret 2"):
        create_app(container)


# -- bearer auth and the protected routes -------------------------------------------------------

PROTECTED = [
    pytest.param("GET", "/v1/fleet/status", 200, id="fleet-status"),
    pytest.param("GET", "/v1/rollouts", 200, id="rollouts"),
    pytest.param("GET", "/v1/rollouts/{rollout}", 200, id="rollout"),
    pytest.param("POST", "/v1/rollouts/{rollout}/pause", 200, id="pause"),
    pytest.param("POST", "/v1/rollouts/{rollout}/resume", 409, id="resume"),
    pytest.param("POST", "/v1/rollouts/ro-nope/abort", 404, id="abort"),
    pytest.param("POST", "/v1/rollouts/{rollout}/approve", 409, id="approve"),
    pytest.param("GET", "/v1/plans/plan-1", 200, id="plan"),
]


@pytest.mark.parametrize(("method", "path", "authorized_status"), PROTECTED)
def test_protected_routes_need_a_bearer_token(
    client: TestClient, rollout_id: str, method: str, path: str, authorized_status: int
) -> None:
    """No or a wrong token gets 401 with `WWW-Authenticate: Bearer`; a configured one passes."""
    url = path.format(rollout=rollout_id)

    missing = client.request(method, url)
    wrong = client.request(method, url, headers={"Authorization": "Bearer not-a-token"})
    basic = client.request(method, url, headers={"Authorization": f"Basic {TOKEN}"})

    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"]
    authorized = client.request(method, url, headers=AUTH)
    assert authorized.status_code == authorized_status, authorized.text


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer  {TOKEN}",
        f"Bearer {TOKEN} ",
        f" Bearer {TOKEN}",
        f"Bearer\t{TOKEN}",
        f"Bearer{TOKEN}",
        f"Bearer {TOKEN} extra",
        f"Bearer {TOKEN},",
        f'Bearer "{TOKEN}"',
        f"Bearertoken {TOKEN}",
    ],
    ids=repr,
)
def test_malformed_bearer_header_is_refused(client: TestClient, header: str) -> None:
    """Only `Bearer <token68>` with exactly one space passes, even carrying the right token."""
    response = client.get("/v1/fleet/status", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "malformed" in response.json()["detail"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(client: TestClient, scheme: str) -> None:
    """The auth scheme matches in any case (RFC 7235); the token still must match exactly."""
    right = client.get("/v1/fleet/status", headers={"Authorization": f"{scheme} {TOKEN}"})
    wrong = client.get("/v1/fleet/status", headers={"Authorization": f"{scheme} {TOKEN.upper()}"})

    assert right.status_code == 200
    assert wrong.status_code == 401


def test_two_authorization_headers_are_refused(client: TestClient) -> None:
    """A request with two Authorization headers is refused, even if one carries the token."""
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")]

    response = client.get("/v1/fleet/status", headers=httpx.Headers(headers))

    assert response.status_code == 401


def test_fleet_status_before_any_scan(client: TestClient) -> None:
    """Before the first scan the status has no scan time and no counts."""
    response = client.get("/v1/fleet/status", headers=AUTH)

    assert response.json() == {
        "scanned_at": None,
        "warning_days": None,
        "devices": 0,
        "by_tag": {},
        "expiring": [],
        "expiring_total": 0,
        "expiring_truncated": False,
        "unknown_digests": [],
        "rejected_reports": {},
        "identities": {
            "renew_days": None,
            "by_tag": {},
            "expiring": [],
            "expiring_total": 0,
            "expiring_truncated": False,
        },
    }


def test_rollouts_are_listed_with_their_totals(client: TestClient, rollout_id: str) -> None:
    """The list shows each rollout's id, kind, state, creation time and device totals."""
    [row] = client.get("/v1/rollouts", headers=AUTH).json()

    assert row["id"] == rollout_id
    assert (row["kind"], row["state"], row["created_at"]) == (
        "trust.retire",
        "running",
        NOW.isoformat(),
    )
    assert row["totals"]["pending"] == 1
    assert sum(row["totals"].values()) == 1


def test_a_rollout_is_paused_once(client: TestClient, rollout_id: str) -> None:
    """pause moves a running rollout to paused; a second pause is a 409 saying why."""
    first = client.post(f"/v1/rollouts/{rollout_id}/pause", headers=AUTH)
    second = client.post(f"/v1/rollouts/{rollout_id}/pause", headers=AUTH)
    status = client.get(f"/v1/rollouts/{rollout_id}", headers=AUTH).json()

    assert first.json() == {"id": rollout_id, "state": "paused"}
    assert second.status_code == 409
    assert "only a running rollout can be paused" in second.json()["detail"]
    assert status["state"] == "paused"


def test_an_operator_abort_starts_the_rollback(client: TestClient, rollout_id: str) -> None:
    """abort moves a running rollout to rolling_back and records the API as the cause."""
    response = client.post(f"/v1/rollouts/{rollout_id}/abort", headers=AUTH)
    status = client.get(f"/v1/rollouts/{rollout_id}", headers=AUTH).json()

    assert response.json() == {"id": rollout_id, "state": "rolling_back"}
    assert status["abort_reason"] == "aborted by api"


def test_rollout_status_lists_devices_that_refused_their_undo(
    client: TestClient, api_container: Container, rollout_id: str
) -> None:
    """A device in undo_refused is counted and listed in the API's rollout status."""
    store = api_container.rollouts
    for state in (DeviceRolloutState.ROLLBACK_SENT, DeviceRolloutState.UNDO_REFUSED):
        [moved] = store.transition(
            rollout_id,
            [DeviceTransition("dev-a", state, frozenset(DeviceRolloutState), "test")],
            now=NOW,
            actor="test",
        )
        assert moved.applied

    status = client.get(f"/v1/rollouts/{rollout_id}", headers=AUTH)

    assert status.status_code == 200
    assert status.json()["undo_refused"] == {"count": 1, "devices": ["dev-a"]}
    assert status.json()["totals"]["undo_refused"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/rollouts/ro-nope"),
        ("POST", "/v1/rollouts/ro-nope/pause"),
        ("POST", "/v1/rollouts/ro-nope/abort"),
        ("GET", "/v1/plans/plan-nope"),
    ],
)
def test_an_unknown_rollout_or_plan_is_404(client: TestClient, method: str, path: str) -> None:
    """An id certfleet does not know gets 404 naming it."""
    response = client.request(method, path, headers=AUTH)

    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


# -- health and metrics -------------------------------------------------------------------------


def test_healthz_is_ok_when_redis_and_the_broker_answer(client: TestClient) -> None:
    """/healthz needs no token and says ok for Redis and the broker."""
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "broker": "ok"}


def test_healthz_names_an_unreachable_broker(
    make_container: Callable[..., Container], renewals: FakeRenewals
) -> None:
    """With the broker down /healthz is 503 and names the broker, not Redis."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    container = make_container(broker_url=f"redis://127.0.0.1:{free_port}/0")

    with TestClient(create_app(container, accept_event=renewals.accept_event)) as client:
        response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "redis": "ok", "broker": "unreachable"}


def test_metrics_count_webhooks_and_show_the_fleet(
    client: TestClient, api_container: Container, rollout_id: str
) -> None:
    """/metrics parses as Prometheus text; its webhook counter moves with each outcome."""
    api_container.metrics.set("certfleet_scan_duration_seconds", 0.25)
    before = webhook_count(client, "accepted")
    body = json.dumps(EVENT)

    deliver(client, body, signed(body, msg_id="msg_m1"))
    deliver(client, body, signed(body, msg_id="msg_m1"))
    deliver(client, body, signed(body, secret=UNKNOWN_SECRET, msg_id="msg_m2"))
    response = client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert webhook_count(client, "accepted") == before + 1
    assert webhook_count(client, "duplicate") == 1
    assert webhook_count(client, "unauthorized") == 1
    assert families["certfleet_webhooks"].type == "counter"
    assert families["certfleet_scan_duration_seconds"].type == "gauge"
    assert families["certfleet_devices_reported"].samples[0].value == 0
    assert families["certfleet_library_evicted"].type == "counter"
    assert families["certfleet_library_evicted"].samples[0].value == 0
    assert families["certfleet_rollout_unconfirmed_devices"].samples[0].value == 0
    rollouts = {s.labels["state"]: s.value for s in families["certfleet_rollouts"].samples}
    assert rollouts["running"] == 1
    assert rollouts["completed"] == 0


def test_metrics_count_the_devices_rollouts_left_unconfirmed(
    client: TestClient, api_container: Container, rollout_id: str
) -> None:
    """A rollout completed_with_timeouts adds its unconfirmed devices to the gauge."""
    assert api_container.rollouts.change(
        rollout_id,
        Change(state=RolloutState.COMPLETED_WITH_TIMEOUTS, unconfirmed=("dev-a", "dev-b")),
    )

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    assert families["certfleet_rollout_unconfirmed_devices"].samples[0].value == 2


def test_metrics_show_the_identities_of_the_last_scan(
    client: TestClient, api_container: Container
) -> None:
    """certfleet_identities: the scan's client certificates by identity tag and class."""
    api_container.inventory.save_summary(
        FleetSummary(
            scanned_at=NOW,
            warning_days=30,
            devices=5,
            by_tag={},
            expiring=(),
            expiring_total=0,
            identities=IdentitySummary(
                renew_days=30, by_tag={44: IdentityCounts(ok=3, expiring=2, expired=0)}
            ),
        )
    )

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    samples = {
        (s.labels["sec_tag"], s.labels["expiry_class"]): s.value
        for s in families["certfleet_identities"].samples
    }
    assert samples == {("44", "ok"): 3, ("44", "expiring"): 2, ("44", "expired"): 0}


# -- the OpenAPI contract -----------------------------------------------------------------------


@pytest.fixture
def api_schema(api_container: Container, renewals: FakeRenewals) -> schemathesis.BaseSchema:
    """The app's OpenAPI schema, with the real renewal plan view (the fake while it is absent)."""
    try:
        plan_view = importlib.import_module(RENEWALS).plan_view
    except (ModuleNotFoundError, AttributeError):
        plan_view = renewals.plan_view
    app = create_app(api_container, accept_event=renewals.accept_event, plan_view=plan_view)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _signed_call(client: TestClient, case: schemathesis.Case[Any]) -> httpx.Response:
    """Send a generated webhook body, signed, so it reaches the envelope check and the handler."""
    if isinstance(case.body, NotSet):
        body = ""
    elif isinstance(case.body, bytes):
        body = case.body.decode("utf-8", "replace")
    else:
        body = json.dumps(case.body)
    headers = signed(body, msg_id=f"msg_{uuid.uuid4().hex}")
    response: httpx.Response = client.post(
        "/v1/webhooks/ca", content=body.encode(), headers=headers
    )
    return response


def test_every_response_matches_the_openapi_schema(
    api_schema: schemathesis.BaseSchema, rollout_id: str, renewals: FakeRenewals
) -> None:
    """No generated request, valid or not, gets a 5xx, and every answer matches its schema."""
    checks = schemathesis.checks
    run_checks = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]
    seen: dict[str, set[int]] = {}
    with TestClient(api_schema.app) as client:
        for result in api_schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            strategy = st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )

            @given(case=strategy)
            @settings(
                max_examples=examples(12),
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case[Any]) -> None:
                if case.operation.path == "/v1/webhooks/ca":
                    response: Any = _signed_call(client, case)
                    case.validate_response(response, checks=run_checks)
                else:
                    response = case.call_and_validate(headers=AUTH, checks=run_checks)
                seen.setdefault(case.operation.label, set()).add(response.status_code)

            call()

    assert len(seen) == 11, seen
    assert {202, 400} <= seen["POST /v1/webhooks/ca"], seen
    assert 200 in seen["GET /v1/fleet/status"], seen
