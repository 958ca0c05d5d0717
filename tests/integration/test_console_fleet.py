"""The console's fleet and device pages against a real Redis: counts by sec_tag, the
expiring list searched and paged, refused messages, one device's inventory and reports,
and a hostile certificate subject shown as text."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState
from orchestrator.protocol.topics import Topics
from orchestrator.services.inventory import ingest_batch
from orchestrator.services.scan import scan_fleet
from tests.console import sign_in

pytestmark = pytest.mark.integration

VIEWER = "view-0c5e9a7d41"
TOKENS = f"watch:{VIEWER}:viewer"
TOPICS = Topics("certfleet")
HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class _Tables(HTMLParser):
    """The rows of every table with an id: id -> rows, a row its attributes and cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict[str, str], list[str]]]] = {}
        self.links: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "table" and "id" in found:
            self._table = found["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append((found, []))
        elif tag in ("td", "th") and self._table is not None and self.tables[self._table]:
            self._cell = []
        elif tag == "a" and found.get("class") in ("next", "prev"):
            self.links[found["class"]] = found["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1][1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: httpx.Response) -> _Tables:
    parser = _Tables()
    parser.feed(page.text)
    return parser


def _listed(page: httpx.Response) -> list[tuple[str, str]]:
    """(device id, sec_tag) of each row of the expiring list."""
    return [
        (attrs["data-device"], attrs["data-sec-tag"])
        for attrs, _ in _parse(page).tables["expiring"]
        if "data-device" in attrs
    ]


@pytest.fixture
def client(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A TestClient of the API app (console included) over the test's Redis, not signed in."""
    monkeypatch.setenv("CERTFLEET_API_TOKENS", TOKENS)
    container = bootstrap(Settings(), logging=False)
    yield TestClient(create_app(container), base_url="http://console.test", follow_redirects=False)
    container.close()


def _hostile_certificate(now: datetime) -> str:
    """A self-signed certificate whose subject and issuer CN is a script tag, expiring in
    five days, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after((now + timedelta(days=5)).replace(microsecond=0))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _ingest_hostile_device(container: Container, now: datetime) -> str:
    """Device `evil-1` reports (through the listener's ingest) a CA chain whose subject is
    a script tag, and a report whose detail is one; returns the chain's sha256."""
    pem = _hostile_certificate(now)
    certificate = x509.load_pem_x509_certificate(pem.encode())
    # What a modem prints of the certificate's names, unescaped.
    subject = "CN=" + str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    digest = sha256_hex(pem.encode())
    state = {
        "v": 2,
        "device_id": "evil-1",
        "time": now.isoformat(),
        "active_tags": [42],
        "credentials": [
            {
                "sec_tag": 42,
                "type": 0,
                "sha256": digest,
                "not_after": certificate.not_valid_after_utc.isoformat(),
                "subject": subject,
                "issuer": subject,
                "pem": pem,
            }
        ],
    }
    report = {
        "v": 2,
        "device_id": "evil-1",
        "rollout_id": "ro-1",
        "seq": 3,
        "phase": "rejected",
        "reason": "bad_envelope",
        "detail": HOSTILE,
        "time": now.isoformat(),
    }
    result = ingest_batch(
        container.inventory,
        TOPICS,
        [
            (TOPICS.state("evil-1"), json.dumps(state).encode()),
            (TOPICS.report("evil-1"), json.dumps(report).encode()),
        ],
        received_at=now,
        clock_skew=timedelta(minutes=5),
    )
    assert (result.applied, result.rejected, len(result.reports)) == (1, 0, 1)
    return digest


def _ca(tag: int, not_after: datetime) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256="a" * 64,
        not_after=not_after,
        subject="CN=Fleet CA",
        issuer="CN=Fleet CA",
    )


def test_signed_out_requests_are_sent_to_sign_in(client: TestClient) -> None:
    """The fleet page and a device page answer a request without a session with 303 to
    the sign-in form, coming back to where it was going."""
    for path in ("/", "/devices/dev-1"):
        page = client.get(path)
        assert page.status_code == 303
        assert page.headers["location"] == f"/signin?next={path}"


def test_a_script_in_a_certificate_subject_is_shown_as_text(
    client: TestClient, container: Container
) -> None:
    """A device whose CA's subject (and a report's detail) is `<script>alert(1)</script>`
    appears escaped on its page and in the fleet's expiring list, never as markup."""
    now = datetime.now(UTC)
    digest = _ingest_hostile_device(container, now)
    sign_in(client, VIEWER)

    device = client.get("/devices/evil-1")
    fleet = client.get("/")

    assert device.status_code == 200
    assert fleet.status_code == 200
    for page in (device, fleet):
        assert f"CN={ESCAPED}" in page.text
        assert "<script>alert(1)" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    inventory = _parse(device).tables["inventory"]
    cells = inventory[1][1]
    assert cells[0] == "42"
    assert f"CN={HOSTILE}" in cells  # subject and issuer, as text
    assert digest in cells
    reports = _parse(device).tables["reports"]
    assert reports[1][1][1] == "ro-1"
    assert reports[1][1][-1] == HOSTILE
    assert 'href="/rollouts/ro-1"' in device.text
    assert _listed(fleet) == [("evil-1", "42")]
    assert 'href="/devices/evil-1"' in fleet.text


def test_the_device_page_lists_each_sec_tag_and_the_latest_reports_newest_first(
    client: TestClient, container: Container
) -> None:
    """Each item a device holds is a row (sec_tag, type, subject, issuer, notAfter,
    sha256, active or not); its reports are listed newest first; an unknown device is 404."""
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    client_cert = ReportedCredential(
        sec_tag=16842753,
        type=CredentialType.CLIENT_CERT,
        sha256="b" * 64,
        not_after=now + timedelta(days=300),
        subject="CN=dev-9",
        issuer="CN=Device CA",
    )
    container.inventory.record_states(
        [
            DeviceState(
                device_id="dev-9",
                reported_at=now,
                credentials=(_ca(42, now + timedelta(days=900)), client_cert),
                active_tags=(16842753,),
                protocol_version=2,
                identity_tag=16842753,
            )
        ],
        received_at=now,
    )
    reports = [
        {
            "v": 2,
            "device_id": "dev-9",
            "rollout_id": f"ro-{seq}",
            "seq": seq,
            "phase": "received",
            "reason": "ok",
            "time": (now + timedelta(minutes=seq)).isoformat(),
        }
        for seq in range(3)
    ]
    ingest_batch(
        container.inventory,
        TOPICS,
        [(TOPICS.report("dev-9"), json.dumps(r).encode()) for r in reports],
        received_at=now,
        clock_skew=timedelta(minutes=5),
    )
    sign_in(client, VIEWER)

    page = client.get("/devices/dev-9")
    unknown = client.get("/devices/nobody-here")

    assert page.status_code == 200
    rows = _parse(page).tables["inventory"][1:]
    assert [(attrs["data-sec-tag"], attrs["data-type"]) for attrs, _ in rows] == [
        ("42", "0"),
        ("16842753", "1"),
    ]
    ca, identity = rows[0][1], rows[1][1]
    assert ca[1:5] == ["CA chain", "inactive", "CN=Fleet CA", "CN=Fleet CA"]
    assert ca[5] == (now + timedelta(days=900)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert ca[6] == "a" * 64
    assert identity[0] == "16842753 identity"
    assert identity[1:5] == ["client certificate", "active", "CN=dev-9", "CN=Device CA"]
    assert "protocol version 2" in page.text
    listed = _parse(page).tables["reports"][1:]
    assert [cells[1] for _, cells in listed] == ["ro-2", "ro-1", "ro-0"]
    assert unknown.status_code == 404
    assert "nobody-here" in unknown.text
    assert "inventory" not in _parse(unknown).tables


def _fleet(container: Container, now: datetime) -> list[tuple[str, str]]:
    """130 devices, `lab-` and `plant-` in turn, their tag 42 CA expiring a minute apart
    (one in ten in tag 7 as well, the same minute); 20 more whose CA is years away.
    Returns the expiring list's device ids, soonest first."""
    states = []
    expected: list[tuple[str, str]] = []
    for n in range(130):
        device_id = f"{'lab' if n % 2 else 'plant'}-{n:03d}"
        not_after = now - timedelta(days=2) + timedelta(minutes=n)
        credentials = [_ca(42, not_after)]
        if n % 10 == 0:
            credentials.insert(0, _ca(7, not_after))
        states.append(
            DeviceState(device_id=device_id, reported_at=now, credentials=tuple(credentials))
        )
        expected.extend([(device_id, "7")] if n % 10 == 0 else [])
        expected.append((device_id, "42"))
    for n in range(20):
        states.append(
            DeviceState(
                device_id=f"later-{n}",
                reported_at=now,
                credentials=(_ca(42, now + timedelta(days=2000)),),
            )
        )
    container.inventory.record_states(states, received_at=now)
    return expected


def _follow(client: TestClient, href: str) -> httpx.Response:
    page: httpx.Response = client.get(html.unescape(href))
    return page


def test_the_expiring_list_pages_and_searches_in_order(
    client: TestClient, container: Container
) -> None:
    """50 a page, soonest first (a sec_tag before another at the same notAfter), the next
    and previous links walk the list, a device id prefix keeps its devices in order."""
    now = datetime.now(UTC)
    expected = _fleet(container, now)
    sign_in(client, VIEWER)

    first = client.get("/")
    assert "prev" not in _parse(first).links
    second = _follow(client, _parse(first).links["next"])
    third = _follow(client, _parse(second).links["next"])
    back = _follow(client, _parse(third).links["prev"])
    again = _follow(client, _parse(back).links["prev"])

    assert len(expected) == 143
    assert _listed(first) == expected[:50]
    assert _listed(second) == expected[50:100]
    assert _listed(third) == expected[100:]
    assert "next" not in _parse(third).links
    assert _listed(back) == expected[50:100]
    assert _listed(again) == expected[:50]
    assert "page 3, items 101 to 143" in " ".join(third.text.split())

    labs = [item for item in expected if item[0].startswith("lab-")]
    found = client.get("/", params={"q": "lab-"})
    found_next = _follow(client, _parse(found).links["next"])
    assert _listed(found) == labs[:50]
    assert _listed(found_next) == labs[50:]
    assert "q=lab-" in _parse(found).links["next"]
    assert _listed(client.get("/", params={"q": "plant-010"})) == [
        ("plant-010", "7"),
        ("plant-010", "42"),
    ]
    assert _listed(client.get("/", params={"q": "later-"})) == []
    by_number = client.get("/", params={"page": "1"})
    assert _listed(by_number) == expected[50:100]


def test_counts_by_tag_and_refused_messages_are_shown(
    client: TestClient, container: Container
) -> None:
    """After a scan the sec_tags' classes are in #by-tag; refused device messages are
    counted by reason in #refused; a bad search or page link is refused with a message."""
    now = datetime.now(UTC)
    _fleet(container, now)
    identities = [
        DeviceState(
            device_id=f"id-{n}",
            reported_at=now,
            credentials=(
                ReportedCredential(
                    sec_tag=16842753,
                    type=CredentialType.CLIENT_CERT,
                    sha256="b" * 64,
                    not_after=now + timedelta(days=(3, 9, 300)[n]),
                    subject=f"CN=id-{n}",
                    issuer="CN=Device CA",
                ),
            ),
            identity_tag=16842753,
        )
        for n in range(3)
    ]
    container.inventory.record_states(identities, received_at=now)
    before_scan = client.get("/", follow_redirects=True)  # not signed in yet: the form
    assert "signin" in str(before_scan.url)
    sign_in(client, VIEWER)
    unscanned = _parse(client.get("/")).tables["by-tag"]
    scan_fleet(
        container.inventory,
        container.library,
        now=now,
        warning_days=30,
        list_limit=10,
        identity_days=5,
    )
    ingest_batch(
        container.inventory,
        TOPICS,
        [
            (TOPICS.state("dev-x"), b"not json"),
            (TOPICS.state("dev-y"), b"{also not"),
            ("elsewhere/dev-z/state", b"{}"),
        ],
        received_at=now,
        clock_skew=timedelta(minutes=5),
    )

    page = client.get("/")
    tables = _parse(page).tables

    rows = {attrs.get("id"): cells for attrs, cells in tables["by-tag"][2:]}
    # 42: 130 expired (two days ago and up to 129 minutes after), 20 ok; the fleet's CA
    # was never sent in full, so the library does not know it
    assert rows["tag-42"] == ["42", "20", "0", "130", "150", "none"]
    assert rows["tag-7"] == ["7", "0", "0", "13", "13", "none"]
    # a tag's earliest item is classified, a client certificate too (30 days: 2 expiring,
    # 1 ok), and the client certificates again against their own window (5 days)
    assert rows["tag-16842753"] == ["16842753", "1", "2", "0", "0", "2", "1", "0"]
    assert [cells for _, cells in unscanned[2:]] == [["No counts yet."]]
    assert "Last scan" in page.text
    refused = {attrs["data-reason"]: cells[1] for attrs, cells in tables["refused"][1:]}
    assert refused == {"bad_topic": "1", "not_json": "2"}
    bad_query = client.get("/", params={"q": "<b>"})
    assert bad_query.status_code == 400
    assert re.search(r'<p class="error">search by the start of a device id', bad_query.text)
    assert "&lt;b&gt;" in bad_query.text
    bad_link = client.get("/", params={"page": "2", "after": "x~y"})
    assert bad_link.status_code == 400
    assert "start again from the first page" in bad_link.text
