"""The console on a whole certfleet stack, and what its browser tests do on it.

`running_console` starts `certfleet api` next to an e2e stack (tests/e2e/stack.py:
Redis, Mosquitto, the listener, a Celery worker, beat, a simulated fleet and a TLS
endpoint for its health probes) with an operator's and a viewer's token. The helpers
create rollouts on disjoint slices of the fleet (a device takes one rollout at a time),
sign a browser in through the form, make a device report what a test needs, count the
page's navigations and save a screenshot of each page a test visits.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import ConsoleMessage, Error, Frame, Page, expect
from standardwebhooks import Webhook

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.domain.credentials import CredentialType, sha256_hex
from orchestrator.protocol import CredentialEntry, StateMessage, Topics
from simulator.pki import make_ca
from simulator.services import free_port
from tests.e2e.stack import NOW, Stack
from tests.procs import REPO, Proc, certfleet, start, wait_until

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (`.ci/run` installs it); nothing is downloaded."""
SHOTS = REPO / "test-artifacts" / "console"
"""Where every test leaves a full-page screenshot of each page it visited."""
WAIT_MS = 15_000
"""How long a page's element may take to appear (a bound, not a measurement)."""
ROLLOUT_MS = 120_000
"""How long a rollout's wave may take on a loaded machine (a bound, not a measurement)."""

NewPage = Callable[[], Page]
"""Makes a page in a browser context of its own (one session each)."""
Shot = Callable[[Page, str], None]
"""Saves a full-page screenshot of a page under the test's name and the page's."""

FLEET = ("dev-", 40)
"""The simulated fleet: `dev-00000` to `dev-00039`, CA1 in sec_tag 42."""


@dataclass(frozen=True)
class Console:
    """A running console and the stack behind it."""

    stack: Stack
    url: str
    operator_token: str
    viewer_token: str
    webhook_secret: str
    api: Proc


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_console(stack: Stack) -> Iterator[Console]:
    """`certfleet api` on a free loopback port with the stack's settings, two tokens,
    `ops` (operator) and `watch` (viewer), and a CA webhook secret; stopped on exit."""
    operator_token, viewer_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    port = free_port()
    env = {
        **stack.env,
        "CERTFLEET_API_TOKENS": f"ops:{operator_token}:operator,watch:{viewer_token}:viewer",
        "CERTFLEET_WEBHOOK_SECRETS": webhook_secret,
    }
    api = start(
        "api",
        certfleet("api", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        log_dir=stack.logs,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _healthy(url) or api.process.poll() is not None, timeout=60, what="/healthz"
        )
        if api.process.poll() is not None:
            raise AssertionError(f"certfleet api exited:\n{api.log()}")
        yield Console(stack, url, operator_token, viewer_token, webhook_secret, api)
    finally:
        api.stop()


def slice_of(prefix: str, first: int, count: int) -> list[str]:
    """Device ids `{prefix}NNNNN` from `first`, as `certfleet simulate` names them."""
    return [f"{prefix}{n:05d}" for n in range(first, first + count)]


WATCHED = slice_of(FLEET[0], 0, 20)
"""The devices of the rollout a page watches wave by wave."""
ROGUE = slice_of(FLEET[0], 20, 10)
"""The devices of the rogue-CA rollout an operator aborts."""
GUARDED = slice_of(FLEET[0], 30, 5)
"""The devices of the rollout viewers and forged requests try to act on."""
LISTED = slice_of(FLEET[0], 35, 5)
"""The devices of a rollout that is only listed, never started."""


def create_rollout(
    stack: Stack,
    name: str,
    devices: Sequence[str],
    *,
    ca: Path,
    waves: str,
    max_failure: str = "10%",
    hold: bool = False,
) -> str:
    """`rollout create` of a trust.add of `ca` into sec_tag 43 for exactly `devices`,
    advanced by hand (`rollout approve`), no bake; `hold`: not started until `rollout
    resume`. Returns its id."""
    selection = stack.dir / f"{name}.txt"
    selection.write_text("\n".join(devices) + "\n")
    done = stack.run(
        "rollout",
        "create",
        "--kind",
        "trust.add",
        "--ca",
        str(ca),
        "--tag",
        "42",
        "--spare-tag",
        "43",
        "--probe",
        f"127.0.0.1:{stack.probe_port}",
        "--select",
        f"file:{selection}",
        "--waves",
        waves,
        "--bake",
        "0",
        "--advance",
        "manual",
        "--max-failure",
        max_failure,
        "--min-sample",
        "10",
        "--device-timeout",
        "60",
        "--name",
        name,
        "--json",
        *(["--hold"] if hold else []),
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def rogue_ca(stack: Stack) -> Path:
    """A CA that did not sign the probe endpoint: every device's health probe fails."""
    path = stack.dir / "rogue.pem"
    if not path.exists():
        rogue = make_ca(
            "Not the server's CA",
            not_before=NOW - timedelta(days=1),
            not_after=NOW + timedelta(days=99),
        )
        path.write_bytes(rogue.pem)
    return path


def sign_in(page: Page, console: Console, token: str, shot: Shot, *, who: str) -> None:
    """Sign in through the form with `token` and land on the fleet page; both pages are
    saved as `<who>-signin` and `<who>-fleet`."""
    page.goto("/signin")
    shot(page, f"{who}-signin")
    submit_token(page, token)
    expect(page).to_have_url(f"{console.url}/", timeout=WAIT_MS)
    shot(page, f"{who}-fleet")


def submit_token(page: Page, token: str) -> None:
    """Type `token` into the sign-in form on the page and send it."""
    page.locator("#token").fill(token)
    page.locator("form[action='/signin'] button[type=submit]").click()


def csrf_of(page: Page) -> str:
    """The session's CSRF token, as the sign-out form in the page header carries it."""
    value = page.locator("form[action='/signout'] input[name=csrf]").get_attribute("value")
    assert value, "the sign-out form carries no CSRF token"
    return value


def screenshot(page: Page, test: str, name: str) -> Path:
    """A full-page screenshot at `test-artifacts/console/<test>-<name>.png`."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{test}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class PageErrors:
    """What the page's console reported as an error (a script failing, a resource or an
    inline style or script the Content-Security-Policy refused), and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._uncaught)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"{message.location.get('url', '')}: {message.text}")

    def _uncaught(self, error: Error) -> None:
        self.seen.append(f"uncaught: {error.message}")


class Navigations:
    """How many times the page's main frame navigated (a load, a reload, a form post)."""

    def __init__(self, page: Page) -> None:
        self.count = 0
        self._main = page.main_frame
        page.on("framenavigated", self._seen)

    def _seen(self, frame: Frame) -> None:
        if frame == self._main:
            self.count += 1


def report_state(stack: Stack, device_id: str, *, subject: str, issuer: str) -> None:
    """Publish `device_id`'s state message (one CA chain in sec_tag 42 with this subject
    and issuer, as a device's modem would describe it) and wait for the listener to
    record it in the inventory."""
    content = f"CA chain of {device_id}".encode()
    state = StateMessage(
        device_id=device_id,
        time=datetime.now(UTC),
        credentials=[
            CredentialEntry(
                sec_tag=42,
                type=CredentialType.CA_CHAIN,
                sha256=sha256_hex(content),
                not_after=datetime.now(UTC) + timedelta(days=20),
                subject=subject,
                issuer=issuer,
            )
        ],
        active_tags=[42],
    )
    topic = Topics(stack.env.get("CERTFLEET_TOPIC_PREFIX", "certfleet")).state(device_id)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(stack.mqtt.host, stack.mqtt.port)
    client.loop_start()
    try:
        client.publish(topic, state.to_json(), qos=1).wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()
    inventory = RedisInventory(stack.redis)
    wait_until(
        lambda: inventory.device_credentials(device_id) is not None,
        timeout=30,
        what=f"{device_id}'s state recorded",
    )


def announce_renewal(console: Console, ca: Path) -> str:
    """Deliver a signed `ca.renewed` webhook of `ca` for the stack's probe endpoint, as
    the CA would; returns the renewal plan's id."""
    body = json.dumps(
        {
            "type": "ca.renewed",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                "ca_pem": ca.read_text(),
                "endpoints": [f"127.0.0.1:{console.stack.probe_port}"],
            },
        }
    )
    at = datetime.now(UTC)
    msg_id = f"msg_{secrets.token_hex(16)}"
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(console.webhook_secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }
    answer = httpx.post(f"{console.url}/v1/webhooks/ca", content=body, headers=headers, timeout=60)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["plan_id"])
