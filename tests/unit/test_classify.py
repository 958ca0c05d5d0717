"""Expiry classes at the window's edges, the per-tag notAfter and the scan summary's JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.inventory import (
    ExpiringItem,
    ExpiryClass,
    ExpiryWindow,
    FleetSummary,
    TagCounts,
    classify,
    earliest_not_after_by_tag,
)
from tests.unit.builders import NOW, credential, digest

pytestmark = pytest.mark.unit

SECOND = timedelta(seconds=1)
WARNING = timedelta(days=30)
RANK = {ExpiryClass.EXPIRED: 0, ExpiryClass.EXPIRING: 1, ExpiryClass.OK: 2}


@pytest.mark.parametrize(
    ("not_after", "expected"),
    [
        (NOW - SECOND, ExpiryClass.EXPIRED),
        (NOW, ExpiryClass.EXPIRING),
        (NOW + SECOND, ExpiryClass.EXPIRING),
        (NOW + WARNING, ExpiryClass.EXPIRING),
        (NOW + WARNING + SECOND, ExpiryClass.OK),
    ],
    ids=["second-before-now", "now", "second-after-now", "window-end", "past-window-end"],
)
def test_classify_at_window_edges(not_after: datetime, expected: ExpiryClass) -> None:
    """A certificate is valid through notAfter; both ends of the warning window are expiring."""
    # given
    window = ExpiryWindow(now=NOW, warning=WARNING)
    # when
    result = classify(not_after, window)
    # then
    assert result is expected


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (-SECOND, ExpiryClass.EXPIRED),
        (timedelta(0), ExpiryClass.EXPIRING),
        (SECOND, ExpiryClass.OK),
    ],
)
def test_zero_day_window(offset: timedelta, expected: ExpiryClass) -> None:
    """With no warning, only notAfter == now is expiring."""
    # given
    window = ExpiryWindow(now=NOW, warning=timedelta(0))
    # when
    result = classify(NOW + offset, window)
    # then
    assert result is expected


def test_same_instant_in_another_zone_classifies_alike() -> None:
    """Only the instant matters, not the zone it is written in."""
    # given
    window = ExpiryWindow(now=NOW, warning=WARNING)
    edge_elsewhere = (NOW + WARNING).astimezone(timezone(timedelta(hours=-7)))
    # when
    result = classify(edge_elsewhere, window)
    # then
    assert result is ExpiryClass.EXPIRING


def test_naive_now_rejected() -> None:
    """A window needs an aware `now`."""
    # given
    naive = datetime(2025, 6, 1, 12, 0)
    # when / then
    with pytest.raises(ValueError, match="timezone"):
        ExpiryWindow(now=naive, warning=WARNING)


def test_negative_window_rejected() -> None:
    """A warning window cannot be negative."""
    # when / then
    with pytest.raises(ValueError, match="negative"):
        ExpiryWindow(now=NOW, warning=-SECOND)


def test_earliest_not_after_by_tag() -> None:
    """Each sec_tag is decided by its earliest notAfter; items without one are skipped."""
    # given
    credentials = [
        credential(7, not_after=NOW + timedelta(days=90)),
        credential(7, cred_type=CredentialType.CLIENT_CERT, not_after=NOW + timedelta(days=10)),
        credential(7, cred_type=CredentialType.CLIENT_KEY),
        credential(8, not_after=NOW + timedelta(days=5)),
        credential(9, cred_type=CredentialType.PSK),
    ]
    # when
    earliest = earliest_not_after_by_tag(credentials)
    # then
    assert earliest == {7: NOW + timedelta(days=10), 8: NOW + timedelta(days=5)}


aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
windows = st.builds(
    ExpiryWindow,
    now=aware_datetimes,
    warning=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)),
)


@given(window=windows, a=aware_datetimes, b=aware_datetimes)
def test_classify_is_monotonic_in_not_after(window: ExpiryWindow, a: datetime, b: datetime) -> None:
    """A later notAfter never lands in a worse class than an earlier one."""
    # given
    earlier, later = sorted((a, b))
    # when
    ranks = RANK[classify(earlier, window)], RANK[classify(later, window)]
    # then
    assert ranks[0] <= ranks[1]


@given(window=windows)
def test_window_ends_are_expiring(window: ExpiryWindow) -> None:
    """notAfter at `now` and at `now + warning` is expiring, for any window."""
    # when
    at_now = classify(window.now, window)
    at_end = classify(window.now + window.warning, window)
    # then
    assert at_now is ExpiryClass.EXPIRING
    assert at_end is ExpiryClass.EXPIRING


def _summary(*, expiring_total: int) -> FleetSummary:
    return FleetSummary(
        scanned_at=NOW,
        warning_days=30,
        devices=3,
        by_tag={7: TagCounts(ok=1, expiring=1, expired=1, unknown=2), 1000: TagCounts(ok=3)},
        expiring=(
            ExpiringItem(
                device_id="dev-1",
                sec_tag=7,
                not_after=NOW - timedelta(days=1),
                subject="CN=Old Root",
            ),
            ExpiringItem(
                device_id="dev-2", sec_tag=7, not_after=NOW + timedelta(days=3), subject=None
            ),
        ),
        expiring_total=expiring_total,
        unknown_digests=(digest("a"), digest("b")),
    )


@pytest.mark.parametrize("expiring_total", [2, 5])
def test_fleet_summary_json_round_trip(expiring_total: int) -> None:
    """What as_json writes, through JSON text, from_json reads back equal."""
    # given
    summary = _summary(expiring_total=expiring_total)
    # when
    restored = FleetSummary.from_json(json.loads(json.dumps(summary.as_json())))
    # then
    assert restored == summary
    assert restored.as_json() == summary.as_json()


def test_fleet_summary_json_form() -> None:
    """The JSON form has string tags in order and says whether the list was cut."""
    # given
    summary = _summary(expiring_total=5)
    # when
    document = summary.as_json()
    # then
    assert list(document["by_tag"]) == ["7", "1000"]
    assert document["by_tag"]["7"] == {"ok": 1, "expiring": 1, "expired": 1, "unknown": 2}
    assert document["expiring_truncated"] is True
    assert document["expiring"][0]["not_after"] == "2025-05-31T12:00:00+00:00"


counts = st.builds(
    TagCounts,
    ok=st.integers(0, 10**6),
    expiring=st.integers(0, 10**6),
    expired=st.integers(0, 10**6),
    unknown=st.integers(0, 10**6),
)


@given(
    scanned_at=aware_datetimes,
    by_tag=st.dictionaries(st.integers(0, 2_147_483_647), counts, max_size=5),
    extra=st.integers(0, 100),
)
def test_fleet_summary_round_trip_any_counts(
    scanned_at: datetime, by_tag: dict[int, TagCounts], extra: int
) -> None:
    """Any summary survives the trip through its JSON form."""
    # given
    summary = FleetSummary(
        scanned_at=scanned_at,
        warning_days=30,
        devices=len(by_tag),
        by_tag=by_tag,
        expiring=(),
        expiring_total=extra,
    )
    # when
    restored = FleetSummary.from_json(json.loads(json.dumps(summary.as_json())))
    # then
    assert restored == summary
