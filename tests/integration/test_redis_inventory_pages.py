"""The expiring list in pages against a real Redis (one, or a cluster): pages after and
before an item, ties of notAfter across shards and tags, device id prefixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters import redis_inventory_pages
from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiringItem, ExpiryWindow
from tests.fakes import FakeInventory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW = ExpiryWindow(now=NOW, warning=timedelta(days=30))


def _ca(tag: int, not_after: datetime, subject: str) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256="c" * 64,
        not_after=not_after,
        subject=subject,
        issuer=subject,
    )


def _fleet(devices: int) -> list[DeviceState]:
    """Devices in two tags; most share one of three notAfters (ties across every shard),
    one in seven is past the window, one in five has its own notAfter."""
    states = []
    for n in range(devices):
        if n % 7 == 0:
            day = 40  # past the window: never listed
        elif n % 5 == 0:
            day = n % 29
        else:
            day = (n % 3) * 10
        not_after = NOW - timedelta(days=5) + timedelta(days=day)
        credentials = [_ca(42, not_after, f"CN=A{n % 3}")]
        if n % 2 == 0:
            credentials.append(_ca(16842753, not_after, "CN=B"))
        group = ("plant-1", "plant-10", "lab")[n % 3]
        states.append(
            DeviceState(
                device_id=f"{group}-{n:04d}", reported_at=NOW, credentials=tuple(credentials)
            )
        )
    return states


def _key(item: ExpiringItem) -> tuple[datetime, str, int]:
    return (item.not_after, item.device_id, item.sec_tag)


@pytest.fixture
def stores(container: Container) -> tuple[Container, FakeInventory]:
    """The same fleet in Redis and in the fake, which lists it by brute force."""
    fake = FakeInventory()
    fleet = _fleet(700)
    container.inventory.record_states(fleet, received_at=NOW)
    fake.record_states(fleet, received_at=NOW)
    return container, fake


def test_walking_forward_page_after_page_lists_the_whole_list_in_order(
    stores: tuple[Container, FakeInventory],
) -> None:
    """Pages read after the last item of the page before add up to the whole list, soonest
    first (ties broken by device id, then sec_tag), each item once."""
    container, fake = stores
    inv, tags = container.inventory, [42, 16842753]
    expected = fake.expiring_page(tags, WINDOW, limit=10_000)
    assert len(expected) > 500

    walked: list[ExpiringItem] = []
    after = None
    while page := inv.expiring_page(tags, WINDOW, limit=50, after=after):
        walked.extend(page)
        after = page[-1]

    assert [_key(i) for i in walked] == [_key(i) for i in expected]
    assert walked[0].subject in ("CN=A0", "CN=A1", "CN=A2", "CN=B")


def test_walking_back_page_before_page_lists_the_same_pages(
    stores: tuple[Container, FakeInventory],
) -> None:
    """A page read before the first item of the next one is the page that was read forward."""
    container, _ = stores
    inv, tags = container.inventory, [42, 16842753]
    forward = []
    after = None
    while page := inv.expiring_page(tags, WINDOW, limit=37, after=after):
        forward.append([_key(i) for i in page])
        after = page[-1]

    assert len(forward) > 10
    backward = []
    for page_keys in reversed(forward[1:]):
        at, device_id, tag = page_keys[0]
        start = ExpiringItem(device_id=device_id, sec_tag=tag, not_after=at, subject=None)
        backward.append([_key(i) for i in inv.expiring_page(tags, WINDOW, limit=37, before=start)])
    assert backward == list(reversed(forward[:-1]))


def test_a_prefix_keeps_only_its_devices_in_the_same_order(
    stores: tuple[Container, FakeInventory],
) -> None:
    """`plant-1` lists plant-1 and plant-10 devices, in list order, page after page; a
    prefix no device has lists nothing."""
    container, fake = stores
    inv, tags = container.inventory, [42, 16842753]
    expected = [
        _key(i)
        for i in fake.expiring_page(tags, WINDOW, limit=10_000)
        if i.device_id.startswith("plant-1")
    ]
    walked: list[tuple[datetime, str, int]] = []
    after = None
    while page := inv.expiring_page(
        tags, WINDOW, limit=20, after=after, device_id_prefix="plant-1"
    ):
        walked.extend(_key(i) for i in page)
        after = page[-1]

    assert walked == expected
    assert {d.rsplit("-", 1)[0] for _, d, _ in walked} == {"plant-1", "plant-10"}
    exact = inv.expiring_page(tags, WINDOW, limit=5, device_id_prefix="plant-10-0004")
    assert [(i.device_id, i.sec_tag) for i in exact] == [
        ("plant-10-0004", 42),
        ("plant-10-0004", 16842753),
    ]
    assert inv.expiring_page(tags, WINDOW, limit=5, device_id_prefix="nobody") == []


def test_a_page_before_the_head_of_the_list_is_empty(
    stores: tuple[Container, FakeInventory],
) -> None:
    """Nothing comes before the first item, and pages of one tag list that tag alone."""
    container, fake = stores
    inv = container.inventory
    first = inv.expiring_page([42], WINDOW, limit=3)
    assert [_key(i) for i in first] == [_key(i) for i in fake.expiring_page([42], WINDOW, limit=3)]
    assert inv.expiring_page([42], WINDOW, limit=3, before=first[0]) == []
    assert [_key(i) for i in inv.expiring_page([42], WINDOW, limit=2, before=first[2])] == [
        _key(i) for i in first[:2]
    ]


def test_a_prefix_read_a_few_entries_a_call_finds_the_same_pages(
    stores: tuple[Container, FakeInventory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget of four entries a call, lists that find nothing in a call are read
    again until they find or end: the pages forward and back are still exact."""
    monkeypatch.setattr(redis_inventory_pages, "EXAMINE_FIRST", 1)
    monkeypatch.setattr(redis_inventory_pages, "EXAMINE_MAX", 4)
    container, fake = stores
    inv, tags = container.inventory, [42, 16842753]
    expected = [
        _key(i) for i in fake.expiring_page(tags, WINDOW, limit=10_000, device_id_prefix="lab")
    ]
    pages: list[list[ExpiringItem]] = []
    after = None
    while page := inv.expiring_page(tags, WINDOW, limit=40, after=after, device_id_prefix="lab"):
        pages.append(page)
        after = page[-1]

    assert [_key(i) for page in pages for i in page] == expected
    back = inv.expiring_page(tags, WINDOW, limit=40, before=pages[2][0], device_id_prefix="lab")
    assert [_key(i) for i in back] == [_key(i) for i in pages[1]]
