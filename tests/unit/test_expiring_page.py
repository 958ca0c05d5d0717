"""Pages of the expiring list: the links' items, page numbers, and a list that changed
under a link."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.services.scan import (
    ExpiringPage,
    InvalidPageCursorError,
    expiring_page,
    page_cursor,
    parse_page_cursor,
)
from tests.fakes import FakeInventory
from tests.unit.builders import NOW, credential, state

pytestmark = pytest.mark.unit


@pytest.fixture
def store() -> FakeInventory:
    """Devices d-00 .. d-24 expiring a day apart in tag 7 (d-24 after the window)."""
    inventory = FakeInventory()
    inventory.record_states(
        [
            state(f"d-{n:02d}", credential(7, not_after=NOW + timedelta(days=n + 7)))
            for n in range(25)
        ],
        received_at=NOW,
    )
    return inventory


def _ids(page: ExpiringPage) -> list[str]:
    return [item.device_id for item in page.items]


def test_a_link_item_reads_back_as_itself() -> None:
    """`page_cursor` and `parse_page_cursor` round-trip; a mangled link is refused with
    what to do."""
    item = expiring_page(_one(), now=NOW, warning_days=30).items[0]
    assert parse_page_cursor(page_cursor(item)).not_after == item.not_after
    assert parse_page_cursor(page_cursor(item)).device_id == item.device_id
    for bad in ("", "7", "x~2026-01-01T00:00:00+00:00~d", "7~2026-01-01T00:00:00~d", "7~2026~"):
        with pytest.raises(InvalidPageCursorError, match="first page"):
            parse_page_cursor(bad)


def _one() -> FakeInventory:
    inventory = FakeInventory()
    inventory.record_states(
        [state("solo", credential(7, not_after=NOW + timedelta(days=1)))], received_at=NOW
    )
    return inventory


def test_pages_follow_their_links_and_numbers(store: FakeInventory) -> None:
    """Page 0, the next by its link, the previous by its link; page 2 by number alone."""
    first = expiring_page(store, now=NOW, warning_days=30, size=10)
    assert first.prev_cursor is None
    assert first.next_cursor is not None
    second = expiring_page(
        store, now=NOW, warning_days=30, size=10, page=1, after=parse_page_cursor(first.next_cursor)
    )
    third = expiring_page(store, now=NOW, warning_days=30, size=10, page=2)
    assert second.prev_cursor is not None
    back = expiring_page(
        store,
        now=NOW,
        warning_days=30,
        size=10,
        page=0,
        before=parse_page_cursor(second.prev_cursor),
    )

    assert _ids(first) == [f"d-{n:02d}" for n in range(10)]
    assert _ids(second) == [f"d-{n:02d}" for n in range(10, 20)]
    assert _ids(third) == [f"d-{n:02d}" for n in range(20, 24)]
    assert (third.has_next, third.next_cursor) == (False, None)
    assert _ids(back) == _ids(first)
    assert back.page == 0


def test_a_previous_link_into_a_shrunken_list_shows_its_first_page(store: FakeInventory) -> None:
    """When fewer items than a page lie before the link's item (devices renewed since),
    the first page is shown, numbered 0."""
    fourth = expiring_page(store, now=NOW, warning_days=30, size=5, page=3)
    renewed = [
        state(f"d-{n:02d}", credential(7, not_after=NOW + timedelta(days=900)), reported_at=NOW)
        for n in range(13)
    ]
    store.record_states(renewed, received_at=NOW)
    assert fourth.prev_cursor is not None

    back = expiring_page(
        store,
        now=NOW,
        warning_days=30,
        size=5,
        page=2,
        before=parse_page_cursor(fourth.prev_cursor),
    )

    assert back.page == 0
    assert _ids(back) == [f"d-{n:02d}" for n in range(13, 18)]
    assert back.has_next
    assert back.prev_cursor is None


def test_a_next_link_past_the_end_of_a_shrunken_list_shows_its_first_page(
    store: FakeInventory,
) -> None:
    """Once every item after a next link's item has been renewed, the link shows page 0, and
    so does a page number past the end."""
    first = expiring_page(store, now=NOW, warning_days=30, size=20)
    assert first.next_cursor is not None
    renewed = [
        state(f"d-{n:02d}", credential(7, not_after=NOW + timedelta(days=900)), reported_at=NOW)
        for n in range(20, 25)
    ]
    store.record_states(renewed, received_at=NOW)

    past = expiring_page(
        store, now=NOW, warning_days=30, size=20, page=1, after=parse_page_cursor(first.next_cursor)
    )
    beyond = expiring_page(store, now=NOW, warning_days=30, size=20, page=7)

    for page in (past, beyond):
        assert page.page == 0
        assert _ids(page) == [f"d-{n:02d}" for n in range(20)]
        assert (page.has_next, page.prev_cursor) == (False, None)
