"""The fleet scan classifies every (device, sec_tag) and keeps its summary."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.inventory import ExpiryClass, ExpiryWindow, TagCounts, classify
from orchestrator.services.scan import fleet_status, scan_fleet
from tests.fakes import FakeInventory, FakeLibrary
from tests.unit.builders import NOW, credential, digest, state

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)
KNOWN = digest("known root")
ROGUE = digest("rogue root")


@pytest.fixture
def store() -> FakeInventory:
    """Tag 7: one expired, two expiring, one ok, two on an unknown CA; tag 20: one ok."""
    inventory = FakeInventory()
    inventory.record_states(
        [
            state(
                "dev-a",
                credential(7, sha256=KNOWN, not_after=NOW - DAY, subject="CN=Old"),
                credential(20, sha256=KNOWN, not_after=NOW + 400 * DAY),
            ),
            state("dev-b", credential(7, sha256=KNOWN, not_after=NOW + 5 * DAY)),
            state("dev-c", credential(7, sha256=ROGUE, not_after=NOW + 100 * DAY)),
            state("dev-d", credential(7, sha256=ROGUE, not_after=NOW + DAY, subject="CN=Rogue")),
        ],
        received_at=NOW,
    )
    return inventory


@pytest.fixture
def library() -> FakeLibrary:
    """A library that knows only the legitimate root."""
    return FakeLibrary({KNOWN: "-----BEGIN CERTIFICATE-----\n..."})


def test_counts_per_tag_with_unknown_alongside(store: FakeInventory, library: FakeLibrary) -> None:
    """Each tag counts its devices per expiry class, and unknown CAs on top of that."""
    # when
    summary = scan_fleet(store, library, now=NOW, warning_days=30, list_limit=100)
    # then
    assert dict(summary.by_tag) == {
        7: TagCounts(ok=1, expiring=2, expired=1, unknown=2),
        20: TagCounts(ok=1),
    }
    assert summary.devices == 4
    assert summary.unknown_digests == (ROGUE,)


def test_expiring_list_soonest_first(store: FakeInventory, library: FakeLibrary) -> None:
    """Expired and expiring items are listed by notAfter, soonest first, with subjects."""
    # when
    summary = scan_fleet(store, library, now=NOW, warning_days=30, list_limit=100)
    # then
    assert [(i.device_id, i.sec_tag, i.not_after, i.subject) for i in summary.expiring] == [
        ("dev-a", 7, NOW - DAY, "CN=Old"),
        ("dev-d", 7, NOW + DAY, "CN=Rogue"),
        ("dev-b", 7, NOW + 5 * DAY, None),
    ]
    assert summary.expiring_total == 3
    assert not summary.expiring_truncated


@pytest.mark.parametrize("list_limit", [0, 1, 2])
def test_expiring_list_capped_total_kept(
    store: FakeInventory, library: FakeLibrary, list_limit: int
) -> None:
    """The list holds at most `list_limit` items; the total still counts them all."""
    # when
    summary = scan_fleet(store, library, now=NOW, warning_days=30, list_limit=list_limit)
    # then
    assert [i.device_id for i in summary.expiring] == ["dev-a", "dev-d"][:list_limit]
    assert summary.expiring_total == 3
    assert summary.expiring_truncated


def test_zero_warning_days_only_expired_listed(store: FakeInventory, library: FakeLibrary) -> None:
    """With no warning window, only what is past notAfter is listed."""
    # when
    summary = scan_fleet(store, library, now=NOW, warning_days=0, list_limit=100)
    # then
    assert [i.device_id for i in summary.expiring] == ["dev-a"]
    assert summary.by_tag[7] == TagCounts(ok=3, expiring=0, expired=1, unknown=2)


def test_summary_saved_and_reported_with_rejections(
    store: FakeInventory, library: FakeLibrary
) -> None:
    """fleet_status gives the saved scan plus the live rejection counts."""
    # given
    store.count_rejection("schema", 2)
    summary = scan_fleet(store, library, now=NOW, warning_days=30, list_limit=1)
    store.count_rejection("not_json")
    # when
    status = fleet_status(store)
    # then
    assert store.last_summary() == summary
    assert status == {
        **summary.as_json(),
        "rejected_reports": {"not_json": 1, "schema": 2},
    }
    assert status["expiring_truncated"] is True


def test_status_before_any_scan(store: FakeInventory) -> None:
    """Before the first scan the status has no scan time and the live device count."""
    # given
    store.count_rejection("too_large")
    # when
    status = fleet_status(store)
    # then
    assert status["scanned_at"] is None
    assert status["devices"] == 4
    assert status["by_tag"] == {}
    assert status["expiring"] == []
    assert status["rejected_reports"] == {"too_large": 1}


def test_scan_of_empty_fleet() -> None:
    """An empty inventory scans to an empty summary."""
    # when
    summary = scan_fleet(FakeInventory(), FakeLibrary(), now=NOW, warning_days=30, list_limit=10)
    # then
    assert (summary.devices, dict(summary.by_tag), summary.expiring) == (0, {}, ())


def test_tag_without_certificates_counted_in_no_class() -> None:
    """A tag holding only keys appears with zero counts."""
    # given
    store = FakeInventory()
    key = credential(3, cred_type=CredentialType.CLIENT_KEY)
    store.record_states([state("dev-1", key)], received_at=NOW)
    # when
    summary = scan_fleet(store, FakeLibrary(), now=NOW, warning_days=30, list_limit=10)
    # then
    assert dict(summary.by_tag) == {3: TagCounts()}


fleets = st.dictionaries(
    st.from_regex(r"dev-[0-9]{1,3}", fullmatch=True),
    st.dictionaries(st.sampled_from([1, 2, 3]), st.integers(-60, 60), min_size=1, max_size=3),
    max_size=15,
)


@given(fleet=fleets, warning_days=st.integers(0, 40))
def test_scan_matches_classifying_each_device(
    fleet: dict[str, dict[int, int]], warning_days: int
) -> None:
    """Per tag, the scan's counts equal classifying every device one by one."""
    # given
    store = FakeInventory()
    store.record_states(
        [
            state(
                device_id,
                *(credential(tag, not_after=NOW + days * DAY) for tag, days in tags.items()),
            )
            for device_id, tags in fleet.items()
        ],
        received_at=NOW,
    )
    window = ExpiryWindow(now=NOW, warning=warning_days * DAY)
    expected: dict[int, TagCounts] = {}
    for tags in fleet.values():
        for tag, days in tags.items():
            counts = expected.setdefault(tag, TagCounts())
            cls = classify(NOW + days * DAY, window)
            counts.ok += cls is ExpiryClass.OK
            counts.expiring += cls is ExpiryClass.EXPIRING
            counts.expired += cls is ExpiryClass.EXPIRED
            counts.unknown += 1
    # when
    summary = scan_fleet(store, FakeLibrary(), now=NOW, warning_days=warning_days, list_limit=5)
    # then
    assert dict(summary.by_tag) == expected
    assert summary.expiring_total == sum(c.expired + c.expiring for c in expected.values())
    assert len(summary.expiring) == min(5, summary.expiring_total)
    assert [i.not_after for i in summary.expiring] == sorted(i.not_after for i in summary.expiring)
