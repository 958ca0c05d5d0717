"""Console sign-in against a real redis-server: the session cookie, roles, CSRF, sign-out,
expiry, and tokens removed or demoted in the settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.api.auth import token_sha256
from orchestrator.api.console import CONTENT_SECURITY_POLICY
from orchestrator.api.console.session import COOKIE
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.clock import utcnow
from orchestrator.config import Settings
from orchestrator.domain.sessions import ConsoleSession
from simulator.pki import issue_server_cert, make_ca
from simulator.services import free_port, wait_for_port
from tests.console import csrf_of, form_token_of, sign_in
from tests.procs import certfleet, start

pytestmark = pytest.mark.integration

OPERATOR = "op-4b1c0e0d2c"
VIEWER = "view-6d12aa90"
TOKENS = f"ops:{OPERATOR}:operator,watch:{VIEWER}:viewer"


@pytest.fixture
def make_client(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TestClient]]:
    """TestClients of apps built with the given API tokens, over the test's Redis."""
    containers: list[Container] = []

    def make(tokens: str = TOKENS, *, https: bool = False, minutes: int = 480) -> TestClient:
        monkeypatch.setenv("CERTFLEET_API_TOKENS", tokens)
        monkeypatch.setenv("CERTFLEET_CONSOLE_SESSION_MINUTES", str(minutes))
        container = bootstrap(Settings(), logging=False)
        containers.append(container)
        base = "https://console.test" if https else "http://console.test"
        return TestClient(create_app(container), base_url=base, follow_redirects=False)

    yield make
    for container in containers:
        container.close()


def _session_cookie(response_headers: list[tuple[str, str]]) -> SimpleCookie:
    for name, value in response_headers:
        if name.lower() == "set-cookie" and value.startswith(f"{COOKIE}="):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(value)
            return cookie
    raise AssertionError("no session cookie was set")


def _post_signin(client: TestClient, token: str, next_path: str = "/") -> httpx.Response:
    form = client.get("/signin")
    return client.post(
        "/signin",
        data={"token": token, "form_token": form_token_of(form.text), "next": next_path},
    )


def test_pages_redirect_to_sign_in_and_back(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for path in ("/", "/rollouts"):
        page = client.get(path)
        assert page.status_code == 303
        assert page.headers["location"] == f"/signin?next={path}"
    done = _post_signin(client, OPERATOR, "/rollouts")
    assert done.status_code == 303
    assert done.headers["location"] == "/rollouts"
    assert client.get("/rollouts").status_code == 200


def test_the_session_cookie_is_httponly_strict_and_expires(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(minutes=90)
    done = _post_signin(client, OPERATOR)
    cookie = _session_cookie(done.headers.multi_items())
    morsel = cookie[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["max-age"] == str(90 * 60)
    assert morsel["path"] == "/"
    assert not morsel["secure"], "plain HTTP: a Secure cookie would never come back"
    assert len(morsel.value) >= 40


def test_the_session_cookie_is_secure_over_tls(make_client: Callable[..., TestClient]) -> None:
    client = make_client(https=True)
    done = _post_signin(client, OPERATOR)
    morsel = _session_cookie(done.headers.multi_items())[COOKIE]
    assert morsel["secure"] is True


def test_a_wrong_token_is_refused_and_counted(
    make_client: Callable[..., TestClient], container: Container
) -> None:
    client = make_client()
    done = _post_signin(client, "not-a-token")
    assert done.status_code == 401
    assert "not one certfleet accepts" in done.text
    assert COOKIE not in client.cookies
    counted = container.metrics.snapshot()
    assert counted[("certfleet_console_signin_refused_total", (("reason", "token"),))] == 1


def test_the_sign_in_form_needs_its_own_cookie(make_client: Callable[..., TestClient]) -> None:
    """A cross-site form posting a valid token (login CSRF) has no form cookie: refused."""
    client = make_client()
    done = client.post("/signin", data={"token": OPERATOR, "form_token": "forged", "next": "/"})
    assert done.status_code == 401
    assert COOKIE not in client.cookies


def test_next_never_leaves_the_site(make_client: Callable[..., TestClient]) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)", "rollouts"):
        client = make_client()
        done = _post_signin(client, OPERATOR, target)
        assert done.headers["location"] == "/", target


def test_sign_out_ends_the_session_on_the_server(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    csrf = sign_in(client, OPERATOR)
    stolen = client.cookies[COOKIE]
    refused = client.post("/signout", data={})
    assert refused.status_code == 403, "sign-out without the CSRF token"
    done = client.post("/signout", data={"csrf": csrf})
    assert done.status_code == 303
    assert done.headers["location"] == "/signin"
    replay = make_client()
    replay.cookies.set(COOKIE, stolen)
    assert replay.get("/rollouts").status_code == 303, "the old cookie still signs in"


def test_a_session_ends_at_its_expiry(
    make_client: Callable[..., TestClient], container: Container
) -> None:
    client = make_client()
    for session_id, lifetime in (("live-session-0123456789", 60), ("expired-session-0123", -1)):
        container.sessions.create(
            session_id,
            ConsoleSession(
                "ops",
                "operator",
                "c" * 32,
                utcnow() + timedelta(seconds=lifetime),
                token_sha256=token_sha256(OPERATOR),
            ),
        )
    client.cookies.set(COOKIE, "live-session-0123456789")
    assert client.get("/rollouts").status_code == 200, "the same session unexpired is good"
    client.cookies.set(COOKIE, "expired-session-0123")
    assert client.get("/rollouts").status_code == 303


def test_removing_demoting_or_changing_a_token_ends_its_sessions(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    sign_in(client, OPERATOR)
    cookie = client.cookies[COOKIE]
    demoted = make_client(f"ops:{OPERATOR}:viewer,watch:{VIEWER}:viewer")
    demoted.cookies.set(COOKIE, cookie)
    assert demoted.get("/rollouts").status_code == 303
    removed = make_client(f"watch:{VIEWER}:viewer")
    removed.cookies.set(COOKIE, cookie)
    assert removed.get("/rollouts").status_code == 303
    new_value = make_client(f"ops:{OPERATOR}-rotated:operator,watch:{VIEWER}:viewer")
    new_value.cookies.set(COOKIE, cookie)
    assert new_value.get("/rollouts").status_code == 303, "a leaked token's new value keeps none"
    same = make_client()
    same.cookies.set(COOKIE, cookie)
    assert same.get("/rollouts").status_code == 200


def test_pages_carry_the_security_headers(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    sign_in(client, VIEWER)
    page = client.get("/rollouts")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text.replace("<script src=", "")
    assert csrf_of(page.text)
    api = client.get("/healthz")
    assert "content-security-policy" not in api.headers


def test_a_viewer_token_reads_the_api_but_cannot_command(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    assert client.get("/v1/rollouts", headers=viewer).status_code == 200
    refused = client.post("/v1/rollouts/r-none/abort", headers=viewer)
    assert refused.status_code == 403
    assert "viewer" in refused.json()["detail"]
    operator = client.post(
        "/v1/rollouts/r-none/abort", headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert operator.status_code == 404, "an operator gets past the role check"


def test_certfleet_api_over_tls_gives_a_secure_cookie(
    service_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    """`certfleet api --tls-cert/--tls-key`: a real HTTPS server; the browser's session
    cookie comes back Secure, and signing in works over it."""
    now = datetime.now(UTC)
    ca = make_ca(
        "console test CA", not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1)
    )
    server = issue_server_cert(
        ca, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1)
    )
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "cert.pem").write_bytes(server.pem)
    (tmp_path / "key.pem").write_bytes(server.key_pem)
    port = free_port()
    env = {**os.environ, **service_env, "CERTFLEET_API_TOKENS": TOKENS}
    argv = certfleet(
        "api",
        "--port",
        str(port),
        "--tls-cert",
        str(tmp_path / "cert.pem"),
        "--tls-key",
        str(tmp_path / "key.pem"),
    )
    proc = start("api-tls", argv, env=env, log_dir=log_dir)
    try:
        wait_for_port("127.0.0.1", port, timeout=30, process=proc.process)
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}", verify=str(tmp_path / "ca.pem"), timeout=10
        ) as client:
            form = client.get("/signin")
            done = client.post(
                "/signin",
                data={"token": OPERATOR, "form_token": form_token_of(form.text), "next": "/"},
            )
            assert done.status_code == 303
            morsel = _session_cookie(done.headers.multi_items())[COOKIE]
            assert morsel["secure"] is True
            assert client.get("/rollouts").status_code == 200
    finally:
        proc.stop()


def test_console_errors_are_pages_and_api_errors_stay_json(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    csrf = sign_in(client, OPERATOR)
    missing = client.get("/rollouts/ro-<img src=x onerror=alert(1)>")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "content-security-policy" in missing.headers
    assert "ro-&lt;img src=x onerror=alert(1)&gt;" in missing.text, "the id is shown escaped"
    assert "<img" not in missing.text
    bad = client.get("/rollouts?limit=0")
    assert bad.status_code == 422
    assert "limit" in bad.text
    assert bad.headers["content-type"].startswith("text/html")
    refused = client.post("/rollouts/ro-none/pause", data={"csrf": "wrong" + csrf})
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    api = client.get("/v1/rollouts/ro-none", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert api.status_code == 404
    assert api.json()["detail"].startswith("no rollout")
    assert client.get(
        "/v1/rollouts?limit=0", headers={"Authorization": f"Bearer {OPERATOR}"}
    ).json()["detail"][0]["loc"] == ["query", "limit"]
