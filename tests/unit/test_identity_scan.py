"""The fleet scan classifies the devices' client certificates (identities) by their own window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType, sha256_hex
from orchestrator.domain.identity_keys import spki_sha256
from orchestrator.domain.inventory import (
    DeviceState,
    ExpiryClass,
    ExpiryWindow,
    FleetSummary,
    IdentitySummary,
    classify,
)
from orchestrator.protocol import Topics
from orchestrator.protocol.state import parse_state
from orchestrator.services.inventory import client_keys, ingest_batch
from orchestrator.services.scan import fleet_status, scan_fleet
from simulator.pki import issue_server_cert, make_ca
from tests.fakes import FakeInventory, FakeLibrary
from tests.unit.builders import NOW, credential, digest, entry, state_payload

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)


def _device(device_id: str, tag: int, days: float, *, ca_days: float = 400) -> DeviceState:
    """A device on identity `tag` whose certificate expires in `days`, its CA in 42."""
    return DeviceState(
        device_id=device_id,
        reported_at=NOW,
        credentials=(
            credential(42, not_after=NOW + ca_days * DAY, subject="CN=Root"),
            credential(
                tag,
                cred_type=CredentialType.CLIENT_CERT,
                not_after=NOW + days * DAY,
                subject=f"CN={device_id}",
            ),
            credential(tag, cred_type=CredentialType.CLIENT_KEY),
        ),
        active_tags=(42,),
        identity_tag=tag,
    )


@pytest.fixture
def store() -> FakeInventory:
    """Tag 44: expired, expiring in 20 days, ok in 90; tag 45: expiring in 3 days."""
    inventory = FakeInventory()
    inventory.record_states(
        [
            _device("a", 44, -2),
            _device("b", 44, 20),
            _device("c", 44, 90),
            _device("d", 45, 3),
        ],
        received_at=NOW,
    )
    return inventory


def test_identities_are_counted_per_tag_against_their_window(store: FakeInventory) -> None:
    """Within 30 renew days: tag 44 has one of each class, tag 45 one expiring; 42 none."""
    # when
    summary = scan_fleet(
        store, FakeLibrary(), now=NOW, warning_days=7, list_limit=10, identity_days=30
    )
    # then
    assert summary.identities is not None
    assert summary.identities.renew_days == 30
    assert {tag: c.as_json() for tag, c in summary.identities.by_tag.items()} == {
        44: {"ok": 1, "expiring": 1, "expired": 1},
        45: {"ok": 0, "expiring": 1, "expired": 0},
    }
    listed = summary.identities.expiring
    assert [(i.device_id, i.sec_tag, i.subject) for i in listed] == [
        ("a", 44, "CN=a"),
        ("d", 45, "CN=d"),
        ("b", 44, "CN=b"),
    ]
    assert summary.identities.expiring_total == 3


def test_the_ca_classes_keep_their_own_window(store: FakeInventory) -> None:
    """The CA warning window (7 days) still decides `by_tag`; identities do not change it."""
    # when
    summary = scan_fleet(
        store, FakeLibrary(), now=NOW, warning_days=7, list_limit=10, identity_days=30
    )
    # then
    assert summary.by_tag[42].as_json() == {"ok": 4, "expiring": 0, "expired": 0, "unknown": 4}
    assert summary.by_tag[44].expiring == 0
    assert summary.by_tag[45].expiring == 1


def test_without_identity_days_the_warning_window_is_used(store: FakeInventory) -> None:
    """`identity_days` None classifies identities with the CA warning window."""
    # when
    summary = scan_fleet(store, FakeLibrary(), now=NOW, warning_days=7, list_limit=10)
    # then
    assert summary.identities is not None
    assert summary.identities.renew_days == 7
    assert summary.identities.by_tag[44].as_json() == {"ok": 2, "expiring": 0, "expired": 1}


def test_the_identity_list_is_capped_and_says_so(store: FakeInventory) -> None:
    """At most `list_limit` identities are listed; the total and the truncation say the rest."""
    # when
    summary = scan_fleet(
        store, FakeLibrary(), now=NOW, warning_days=7, list_limit=1, identity_days=30
    )
    # then
    assert summary.identities is not None
    assert [i.device_id for i in summary.identities.expiring] == ["a"]
    assert summary.identities.as_json()["expiring_truncated"] is True
    assert summary.identities.expiring_total == 3


def test_status_json_keeps_its_keys_and_adds_identities(store: FakeInventory) -> None:
    """`fleet status --json`: every earlier key, plus `identities`, read back from the store."""
    # given
    scan_fleet(store, FakeLibrary(), now=NOW, warning_days=7, list_limit=10, identity_days=30)
    # when
    status = fleet_status(store)
    # then
    assert set(status) == {
        "scanned_at",
        "warning_days",
        "devices",
        "by_tag",
        "expiring",
        "expiring_total",
        "expiring_truncated",
        "unknown_digests",
        "rejected_reports",
        "identities",
    }
    assert status["identities"]["by_tag"]["45"] == {"ok": 0, "expiring": 1, "expired": 0}
    assert status["identities"]["expiring"][0]["device_id"] == "a"


def test_status_before_any_scan_has_empty_identities() -> None:
    """Before the first scan, `identities` is there with nothing in it."""
    # when
    status = fleet_status(FakeInventory())
    # then
    assert status["identities"] == IdentitySummary.none_json()


def test_a_summary_stored_before_identities_reads_back() -> None:
    """A summary saved without `identities` reads back with none, and shows the empty form."""
    # given
    summary = scan_fleet(FakeInventory(), FakeLibrary(), now=NOW, warning_days=7, list_limit=5)
    old = summary.as_json()
    del old["identities"]
    # when
    read = FleetSummary.from_json(old)
    # then
    assert read.identities is None
    assert read.as_json()["identities"] == IdentitySummary.none_json()


def test_tags_without_client_certificates_are_not_listed() -> None:
    """A fleet with CAs only scans to no identity tag at all."""
    # given
    store = FakeInventory()
    store.record_states([_device("a", 44, 10)], received_at=NOW)
    store.record_states(
        [DeviceState(device_id="a", reported_at=NOW + DAY, credentials=(credential(42),))],
        received_at=NOW + DAY,
    )
    # when
    summary = scan_fleet(store, FakeLibrary(), now=NOW, warning_days=7, list_limit=5)
    # then
    assert summary.identities is not None
    assert summary.identities.by_tag == {}
    assert summary.identities.expiring == ()


@given(days=st.lists(st.integers(min_value=-60, max_value=120), min_size=1, max_size=12))
def test_counts_agree_with_classify(days: list[int]) -> None:
    """Each identity falls in exactly the class `classify` gives its notAfter."""
    # given
    store = FakeInventory()
    store.record_states([_device(f"d{i}", 44, d) for i, d in enumerate(days)], received_at=NOW)
    window = ExpiryWindow(now=NOW, warning=30 * DAY)
    # when
    summary = scan_fleet(
        store, FakeLibrary(), now=NOW, warning_days=7, list_limit=100, identity_days=30
    )
    # then
    assert summary.identities is not None
    classes = [classify(NOW + d * DAY, window) for d in days]
    counts = summary.identities.by_tag[44]
    assert (counts.expired, counts.expiring, counts.ok) == (
        classes.count(ExpiryClass.EXPIRED),
        classes.count(ExpiryClass.EXPIRING),
        classes.count(ExpiryClass.OK),
    )


def test_an_ingested_state_brings_its_identity_into_the_scan() -> None:
    """A state message naming its identity tag, with the certificate's pem, is indexed and
    classified, the certificate joins the library (to be revoked by serial later), and its
    key is known for good (a CSR for it is refused)."""
    # given
    ca = make_ca("Device CA", not_before=NOW - DAY, not_after=NOW + 365 * DAY)
    cert = issue_server_cert(ca, hosts=("dev-1",), not_before=NOW - DAY, not_after=NOW + 9 * DAY)
    pem = cert.pem.decode()
    payload = state_payload(
        "dev-1",
        v=2,
        active_tags=[42],
        identity_tag=44,
        credentials=[
            entry(42),
            entry(
                44,
                type=1,
                sha256=sha256_hex(pem.encode()),
                not_after=cert.certificate.not_valid_after_utc.isoformat(),
                subject="CN=dev-1",
                issuer="CN=Device CA",
                pem=pem,
            ),
            entry(44, type=2, sha256=digest("key"), not_after=None, subject=None, issuer=None),
        ],
    )
    store = FakeInventory()
    # when
    result = ingest_batch(
        store,
        Topics("certfleet"),
        [("certfleet/dev-1/state", payload)],
        received_at=NOW,
        clock_skew=timedelta(minutes=5),
    )
    summary = scan_fleet(
        store, store.library, now=NOW, warning_days=7, list_limit=10, identity_days=30
    )
    # then
    assert result.applied == 1
    assert store.identity_tags_of(["dev-1"]) == {"dev-1": 44}
    assert store.library.get(sha256_hex(pem.encode())) == pem
    assert store.key_holders([spki_sha256(cert.key.public_key())]) == {
        spki_sha256(cert.key.public_key()): "dev-1"
    }
    assert summary.identities is not None
    assert summary.identities.by_tag[44].expiring == 1
    assert [i.subject for i in summary.identities.expiring] == ["CN=dev-1"]


def test_only_client_certificates_the_library_took_give_keys() -> None:
    """A CA's pem gives no client key; a client certificate without a pem gives none."""
    # given
    ca = make_ca("Root", not_before=NOW - DAY, not_after=NOW + 365 * DAY)
    ca_pem = ca.pem.decode()
    message = parse_state(
        state_payload(
            "dev-1",
            credentials=[
                entry(42, sha256=sha256_hex(ca_pem.encode()), pem=ca_pem),
                entry(44, type=1, sha256=digest("no pem"), subject="CN=dev-1"),
            ],
        ),
        topic_device_id="dev-1",
    )
    # when
    keys = client_keys(message, {sha256_hex(ca_pem.encode()): ca_pem})
    # then
    assert keys == []
