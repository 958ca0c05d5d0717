"""The Redis adapters against a real redis-server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_library import LIBRARY_SHARE_MAX
from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiryWindow
from orchestrator.domain.reports import DeviceReport

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW = ExpiryWindow(now=NOW, warning=timedelta(days=30))


def _ca(
    tag: int, digest_char: str, not_after: datetime, subject: str = "CN=CA"
) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256=digest_char * 64,
        not_after=not_after,
        subject=subject,
        issuer=subject,
    )


def _state(device_id: str, *items: ReportedCredential, at: datetime = NOW) -> DeviceState:
    return DeviceState(device_id=device_id, reported_at=at, credentials=items)


def test_expiry_counts_at_the_window_edges(container: Container) -> None:
    """notAfter at now and at now+30d is `expiring`; a second either side falls out of it."""
    inv = container.inventory
    second = timedelta(seconds=1)
    edge = NOW + WINDOW.warning
    inv.record_states(
        [
            _state("a", _ca(42, "a", NOW - second)),
            _state("b", _ca(42, "a", NOW)),
            _state("c", _ca(42, "a", edge)),
            _state("d", _ca(42, "a", edge + second)),
        ],
        received_at=NOW,
    )

    assert inv.expiry_counts([42], WINDOW) == {42: (1, 2, 1)}
    listed = inv.expiring_items([42], WINDOW, limit=10)
    assert [i.device_id for i in listed] == ["a", "b", "c"]
    assert listed[0].subject == "CN=CA"


def test_a_new_report_replaces_the_old_and_moves_every_index(container: Container) -> None:
    """A device that moves its CA from tag 42 to 43 leaves no trace in tag 42's indexes."""
    inv = container.inventory
    inv.record_states([_state("dev-1", _ca(42, "a", NOW + timedelta(days=5)))], received_at=NOW)
    assert inv.sec_tags() == [42]
    assert inv.ca_digest_counts([42]) == {42: {"a" * 64: 1}}

    later = NOW + timedelta(minutes=1)
    inv.record_states(
        [_state("dev-1", _ca(43, "b", NOW + timedelta(days=400)), at=later)], received_at=later
    )

    assert inv.sec_tags() == [43]
    assert inv.expiry_counts([42, 43], WINDOW) == {42: (0, 0, 0), 43: (0, 0, 1)}
    assert inv.ca_digest_counts([42, 43]) == {42: {}, 43: {"b" * 64: 1}}
    state = inv.device_credentials("dev-1")
    assert state is not None
    assert [(c.sec_tag, c.sha256[0]) for c in state.credentials] == [(43, "b")]
    assert inv.device_count() == 1


def test_an_older_report_changes_nothing(container: Container) -> None:
    """Reports applied out of order never move a device back to an older state."""
    inv = container.inventory
    newer, older = NOW, NOW - timedelta(hours=1)
    applied = inv.record_states([_state("dev-1", _ca(42, "b", NOW), at=newer)], received_at=NOW)
    stale = inv.record_states([_state("dev-1", _ca(42, "a", NOW), at=older)], received_at=NOW)

    assert (applied, stale) == (1, 0)
    assert inv.ca_digest_counts([42]) == {42: {"b" * 64: 1}}


def test_digest_counts_follow_many_devices(container: Container) -> None:
    """Counts per CA digest add up over devices and drop to zero when the last holder moves."""
    inv = container.inventory
    inv.record_states(
        [
            _state(f"d{n}", _ca(42, "a" if n < 3 else "c", NOW + timedelta(days=90)))
            for n in range(5)
        ],
        received_at=NOW,
    )
    assert inv.ca_digest_counts([42]) == {42: {"a" * 64: 3, "c" * 64: 2}}

    later = NOW + timedelta(seconds=5)
    inv.record_states(
        [_state(f"d{n}", _ca(42, "c", NOW + timedelta(days=90)), at=later) for n in range(3)],
        received_at=later,
    )
    assert inv.ca_digest_counts([42]) == {42: {"c" * 64: 5}}


def test_items_without_expiry_count_for_the_tag_but_not_the_index(container: Container) -> None:
    """A tag holding only a PSK is a known tag with no expiry class."""
    inv = container.inventory
    psk = ReportedCredential(sec_tag=7, type=CredentialType.PSK, sha256="e" * 64)
    inv.record_states([_state("dev-1", psk)], received_at=NOW)

    assert inv.sec_tags() == [7]
    assert inv.expiry_counts([7], WINDOW) == {7: (0, 0, 0)}


def test_expiring_items_merge_tags_soonest_first_and_cap(container: Container) -> None:
    """The list is ordered by notAfter over all tags and cut at the limit."""
    inv = container.inventory
    inv.record_states(
        [
            _state(
                "x", _ca(42, "a", NOW + timedelta(days=3)), _ca(43, "b", NOW - timedelta(days=1))
            ),
            _state("y", _ca(42, "a", NOW + timedelta(days=1))),
        ],
        received_at=NOW,
    )
    listed = inv.expiring_items([42, 43], WINDOW, limit=2)
    assert [(i.device_id, i.sec_tag) for i in listed] == [("x", 43), ("y", 42)]


def test_library_is_content_addressed(container: Container) -> None:
    """Adding the same digest twice keeps the first PEM and reports it as not new."""
    lib = container.library
    assert lib.add({"a" * 64: "PEM-A"}) == 1
    assert lib.add({"a" * 64: "PEM-OTHER", "b" * 64: "PEM-B"}) == 1
    assert lib.get("a" * 64) == "PEM-A"
    assert lib.known(["a" * 64, "b" * 64, "c" * 64]) == {"a" * 64, "b" * 64}


def test_rejections_are_counted_by_reason(container: Container) -> None:
    """HINCRBY per reason."""
    inv = container.inventory
    inv.count_rejection("schema")
    inv.count_rejection("schema")
    inv.count_rejection("not_json")
    assert inv.rejection_counts() == {"not_json": 1, "schema": 2}


def test_reports_are_kept_per_device_newest_last_and_capped(container: Container) -> None:
    """Each device keeps about its latest 50 reports, read back oldest first."""
    inv = container.inventory
    reports = [
        DeviceReport(
            device_id="dev-1",
            rollout_id="r-1",
            seq=n,
            op="stage",
            phase="staged",
            reason="ok",
            detail=f"step {n}",
            time=NOW + timedelta(seconds=n),
            active_tags=(42,),
        )
        for n in range(1, 201)
    ]
    inv.record_reports(reports)

    latest = inv.recent_reports("dev-1", limit=3)
    assert [r.seq for r in latest] == [198, 199, 200]
    assert latest[-1] == reports[-1]
    assert 50 <= len(inv.recent_reports("dev-1", limit=1000)) < 200
    assert inv.recent_reports("dev-2", limit=3) == []


def test_the_protocol_version_of_the_last_applied_state_is_recorded(container: Container) -> None:
    """`v` of the applied state is the device's version; a stale state does not change it;
    a device recorded without one reads as v1."""
    inventory = container.inventory
    v2 = DeviceState(device_id="d2", reported_at=NOW, credentials=(), protocol_version=2)
    stale = DeviceState(
        device_id="d2", reported_at=NOW - timedelta(hours=1), credentials=(), protocol_version=1
    )
    assert inventory.record_states([v2, stale, _state("d1")], received_at=NOW) == 2
    known = inventory.device_credentials("d2")
    assert known is not None
    assert known.protocol_version == 2
    assert inventory.protocol_versions(["d1", "d2", "nobody"]) == {"d1": 1, "d2": 2, "nobody": 1}


def _pems(device: str, first: int, count: int) -> dict[str, str]:
    return {f"{device}{n:063d}"[-64:]: f"PEM-{device}-{n}" for n in range(first, first + count)}


def test_a_devices_share_of_the_library_is_bounded_oldest_first(container: Container) -> None:
    """One device sending ever new pems holds at most LIBRARY_SHARE_MAX entries: the oldest
    leave (counted); an entry another device or an operator still holds stays."""
    inventory, lib, cap = container.inventory, container.library, LIBRARY_SHARE_MAX
    shared = {"f" * 64: "PEM-SHARED"}
    imported = {"e" * 64: "PEM-IMPORTED"}
    lib.add(imported)
    # given: another device holds the shared pem; the noisy one brings it and the import first
    inventory.record_states([_state("quiet")], received_at=NOW, pems=[shared])
    first = {**shared, **imported}
    inventory.record_states([_state("noisy")], received_at=NOW, pems=[first])
    # when: the noisy device brings new pems, state after state, up to its share exactly
    at = NOW
    for n in range(cap - 2):
        at += timedelta(seconds=1)
        inventory.record_states([_state("noisy", at=at)], received_at=at, pems=[_pems("a", n, 1)])
    within = lib.known([*shared, *imported])
    evicted_within = lib.evicted()
    # and: three more
    for n in range(cap - 2, cap + 1):
        at += timedelta(seconds=1)
        inventory.record_states([_state("noisy", at=at)], received_at=at, pems=[_pems("a", n, 1)])

    # then: at the bound nothing left; past it the three oldest of its share left it,
    # the shared and the imported entries stayed in the library, the oldest own one did not
    assert (within, evicted_within) == ({*shared, *imported}, 0)
    assert lib.evicted() == 3
    assert lib.known([*shared, *imported]) == {*shared, *imported}
    oldest_own = next(iter(_pems("a", 0, 1)))
    assert lib.known([oldest_own]) == set()
    assert len(lib.known(list(_pems("a", 1, cap)))) == cap
    assert len(lib.share_of("noisy")) == cap
