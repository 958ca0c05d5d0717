"""The in-memory fakes keep the ports' contracts, as the Redis adapters do."""

from __future__ import annotations

import inspect
import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.inventory import ExpiryWindow
from orchestrator.ports import CredentialLibrary, InventoryStore
from tests.fakes import FakeInventory, FakeLibrary
from tests.unit.builders import NOW, credential, digest, state

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)


def _protocol_members(protocol: type) -> list[str]:
    return [name for name in vars(protocol) if not name.startswith("_")]


@pytest.mark.parametrize(
    ("protocol", "fake"), [(InventoryStore, FakeInventory), (CredentialLibrary, FakeLibrary)]
)
def test_fakes_have_the_protocol_signatures(protocol: type, fake: type) -> None:
    """Each fake has every method of its port with the same parameters."""
    # given
    members = _protocol_members(protocol)
    # when
    mismatched = [
        name
        for name in members
        if inspect.signature(getattr(protocol, name)).parameters.keys()
        != inspect.signature(getattr(fake, name, lambda: None)).parameters.keys()
    ]
    # then
    assert members
    assert mismatched == []


def test_fakes_satisfy_the_protocols_structurally() -> None:
    """The fakes can stand where the ports are expected (checked by mypy, used here)."""
    # given
    store: InventoryStore = FakeInventory()
    library: CredentialLibrary = FakeLibrary()
    # when
    store.record_states([state("dev-1", credential(7))], received_at=NOW)
    library.add({digest("a"): "pem"})
    # then
    assert store.device_count() == 1
    assert library.known([digest("a"), digest("b")]) == {digest("a")}


def test_older_report_ignored_equal_time_applied() -> None:
    """A report older than the stored one is ignored; one of the same time replaces it."""
    # given
    store = FakeInventory()
    store.record_states([state("dev-1", credential(7), reported_at=NOW)], received_at=NOW)
    # when
    older = store.record_states(
        [state("dev-1", credential(8), reported_at=NOW - DAY)], received_at=NOW
    )
    same = store.record_states([state("dev-1", credential(9), reported_at=NOW)], received_at=NOW)
    # then
    assert (older, same) == (0, 1)
    held = store.device_credentials("dev-1")
    assert held is not None
    assert [c.sec_tag for c in held.credentials] == [9]
    assert store.sec_tags() == [9]


def test_report_replaces_all_items_and_indexes() -> None:
    """A newer report drops the tags, digests and expiry entries of the previous one."""
    # given
    store = FakeInventory()
    window = ExpiryWindow(now=NOW, warning=30 * DAY)
    old_ca = credential(7, sha256=digest("old"), not_after=NOW + DAY)
    store.record_states([state("dev-1", old_ca, reported_at=NOW)], received_at=NOW)
    # when
    new_ca = credential(8, sha256=digest("new"), not_after=NOW + 90 * DAY)
    store.record_states([state("dev-1", new_ca, reported_at=NOW + DAY)], received_at=NOW)
    # then
    assert store.sec_tags() == [8]
    assert store.ca_digest_counts([7, 8]) == {7: {}, 8: {digest("new"): 1}}
    assert store.expiry_counts([7, 8], window) == {7: (0, 0, 0), 8: (0, 0, 1)}


def test_tag_decided_by_earliest_not_after() -> None:
    """A tag whose client certificate expires before its CA is expiring."""
    # given
    store = FakeInventory()
    window = ExpiryWindow(now=NOW, warning=30 * DAY)
    ca = credential(7, not_after=NOW + 365 * DAY, subject="CN=Root")
    client = credential(7, cred_type=CredentialType.CLIENT_CERT, not_after=NOW + 3 * DAY)
    store.record_states([state("dev-1", ca, client)], received_at=NOW)
    # when
    counts = store.expiry_counts([7], window)
    items = store.expiring_items([7], window, limit=10)
    # then
    assert counts == {7: (0, 1, 0)}
    assert [(i.device_id, i.not_after, i.subject) for i in items] == [
        ("dev-1", NOW + 3 * DAY, "CN=Root")
    ]


def test_items_without_not_after_not_indexed_for_expiry() -> None:
    """A tag holding only keys counts as held but falls in no expiry class."""
    # given
    store = FakeInventory()
    key = credential(5, cred_type=CredentialType.CLIENT_KEY)
    store.record_states([state("dev-1", key)], received_at=NOW)
    # when
    counts = store.expiry_counts([5], ExpiryWindow(now=NOW, warning=DAY))
    # then
    assert store.sec_tags() == [5]
    assert counts == {5: (0, 0, 0)}


def test_library_entries_never_change() -> None:
    """Content-addressed: adding a known digest again neither counts nor overwrites."""
    # given
    library = FakeLibrary({digest("a"): "first"})
    # when
    new = library.add({digest("a"): "second", digest("b"): "b"})
    # then
    assert new == 1
    assert library.get(digest("a")) == "first"
    assert library.get(digest("c")) is None


@given(
    times=st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True),
    order=st.randoms(use_true_random=False),
)
def test_newest_report_wins_whatever_the_arrival_order(
    times: list[int], order: random.Random
) -> None:
    """However reports of one device arrive, the one with the latest time is kept."""
    # given
    store = FakeInventory()
    reports = [
        state("dev-1", credential(tag % 1000), reported_at=NOW + timedelta(seconds=tag))
        for tag in times
    ]
    order.shuffle(reports)
    # when
    for report in reports:
        store.record_states([report], received_at=NOW)
    # then
    held = store.device_credentials("dev-1")
    assert held is not None
    assert held.reported_at == NOW + timedelta(seconds=max(times))
    assert [c.sec_tag for c in held.credentials] == [max(times) % 1000]
