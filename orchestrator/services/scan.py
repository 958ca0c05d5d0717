"""The fleet scan: classify every (device, sec_tag) from the expiry index, and every
client certificate (type 1) from the identity index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.inventory import (
    ExpiringItem,
    ExpiryWindow,
    FleetSummary,
    IdentityCounts,
    IdentitySummary,
    TagCounts,
)
from orchestrator.logs import get_logger
from orchestrator.ports import CredentialLibrary, InventoryStore

__all__ = [
    "EXPIRING_PAGE_SIZE",
    "ExpiringPage",
    "InvalidPageCursorError",
    "expiring_page",
    "fleet_status",
    "page_cursor",
    "parse_page_cursor",
    "scan_fleet",
    "scan_identities",
]

EXPIRING_PAGE_SIZE: Final = 50
"""Items on a page of the expiring list."""
OFFSET_PAGES_MAX: Final = 200
"""The deepest page reached by its number alone (no neighbour to start from): such a
page reads every item before it, the pages linked from one another do not."""

log = get_logger(__name__)


def scan_fleet(
    store: InventoryStore,
    library: CredentialLibrary,
    *,
    now: datetime,
    warning_days: int,
    list_limit: int,
    identity_days: int | None = None,
) -> FleetSummary:
    """Classify the fleet by range queries on the index, store and return the summary.

    The work is O(sec_tags + distinct CA digests + listed items), never a walk of
    every device. Client certificates are classified by their own index against
    `identity_days` (`CERTFLEET_IDENTITY_RENEW_DAYS`; None: the CA warning window).
    """
    window = ExpiryWindow(now=now, warning=timedelta(days=warning_days))
    sec_tags = store.sec_tags()
    by_tag = {tag: TagCounts() for tag in sec_tags}
    for tag, (expired, expiring, ok) in store.expiry_counts(sec_tags, window).items():
        counts = by_tag[tag]
        counts.expired, counts.expiring, counts.ok = expired, expiring, ok
    digest_counts = store.ca_digest_counts(sec_tags)
    all_digests = sorted({d for per_tag in digest_counts.values() for d in per_tag})
    known = library.known(all_digests)
    unknown_digests: set[str] = set()
    for tag, per_digest in digest_counts.items():
        for digest, holders in per_digest.items():
            if digest not in known:
                by_tag[tag].unknown += holders
                unknown_digests.add(digest)
    listed = store.expiring_items(sec_tags, window, limit=list_limit)
    summary = FleetSummary(
        scanned_at=now,
        warning_days=warning_days,
        devices=store.device_count(),
        by_tag=by_tag,
        expiring=tuple(listed),
        expiring_total=sum(c.expired + c.expiring for c in by_tag.values()),
        unknown_digests=tuple(sorted(unknown_digests)),
        identities=scan_identities(
            store,
            sec_tags,
            now=now,
            renew_days=warning_days if identity_days is None else identity_days,
            list_limit=list_limit,
        ),
    )
    store.save_summary(summary)
    log.info(
        "fleet_scanned",
        devices=summary.devices,
        sec_tags=len(sec_tags),
        expiring_total=summary.expiring_total,
        unknown_digests=len(unknown_digests),
        identities_expiring=summary.identities.expiring_total if summary.identities else 0,
    )
    return summary


def scan_identities(
    store: InventoryStore,
    sec_tags: Sequence[int],
    *,
    now: datetime,
    renew_days: int,
    list_limit: int,
) -> IdentitySummary:
    """Classify the client certificates held in `sec_tags`: two round trips, whatever the fleet.

    Only tags that hold a client certificate are listed.
    """
    window = ExpiryWindow(now=now, warning=timedelta(days=renew_days))
    by_tag = {
        tag: IdentityCounts(expired=expired, expiring=expiring, ok=ok)
        for tag, (expired, expiring, ok) in store.identity_expiry_counts(sec_tags, window).items()
        if expired + expiring + ok > 0
    }
    return IdentitySummary(
        renew_days=renew_days,
        by_tag=by_tag,
        expiring=tuple(store.expiring_identity_items(sorted(by_tag), window, limit=list_limit)),
        expiring_total=sum(c.expired + c.expiring for c in by_tag.values()),
    )


def fleet_status(store: InventoryStore) -> dict[str, Any]:
    """The last scan's summary with the live rejection counts.

    Before the first scan, `scanned_at` is None, the counts are empty and
    `devices` is the live number of devices that have reported.
    """
    summary = store.last_summary()
    if summary is None:
        status: dict[str, Any] = {
            "scanned_at": None,
            "warning_days": None,
            "devices": store.device_count(),
            "by_tag": {},
            "expiring": [],
            "expiring_total": 0,
            "expiring_truncated": False,
            "unknown_digests": [],
            "identities": IdentitySummary.none_json(),
        }
    else:
        status = summary.as_json()
    status["rejected_reports"] = store.rejection_counts()
    return status


class InvalidPageCursorError(CertfleetError):
    """A page link's `after` or `before` is not an item of the expiring list."""


def page_cursor(item: ExpiringItem) -> str:
    """The item a page link starts from, as a query value: `<sec_tag>~<notAfter>~<device id>`."""
    return f"{item.sec_tag}~{item.not_after.isoformat()}~{item.device_id}"


def parse_page_cursor(value: str) -> ExpiringItem:
    """The item of a `page_cursor` value."""
    tag, _, rest = value.partition("~")
    not_after, _, device_id = rest.partition("~")
    try:
        at = datetime.fromisoformat(not_after)
        sec_tag = int(tag)
    except ValueError:
        raise InvalidPageCursorError(
            f"page link {value[:100]!r} is not <sec_tag>~<notAfter>~<device id>;"
            " start again from the first page"
        ) from None
    if at.tzinfo is None or not device_id:
        raise InvalidPageCursorError(
            f"page link {value[:100]!r} lacks a timezone or a device id;"
            " start again from the first page"
        )
    return ExpiringItem(device_id=device_id, sec_tag=sec_tag, not_after=at, subject=None)


@dataclass(frozen=True, slots=True)
class ExpiringPage:
    """One page of the expiring list as it is now (the index, not the last scan)."""

    items: tuple[ExpiringItem, ...]
    page: int
    """0-based."""
    has_next: bool
    warning_days: int
    device_id_prefix: str

    @property
    def next_cursor(self) -> str | None:
        """The `after` of the next page's link (None: this is the last page)."""
        return page_cursor(self.items[-1]) if self.has_next and self.items else None

    @property
    def prev_cursor(self) -> str | None:
        """The `before` of the previous page's link (None: this is the first page)."""
        return page_cursor(self.items[0]) if self.page > 0 and self.items else None


def expiring_page(
    store: InventoryStore,
    *,
    now: datetime,
    warning_days: int,
    page: int = 0,
    size: int = EXPIRING_PAGE_SIZE,
    device_id_prefix: str = "",
    after: ExpiringItem | None = None,
    before: ExpiringItem | None = None,
) -> ExpiringPage:
    """Page `page` of the expired and expiring items, soonest first, of devices whose id
    starts with `device_id_prefix`.

    A page is read next to its neighbour's item (`after`, `before`: what the previous and
    next links carry), at the same cost however deep; by its number alone only up to
    `OFFSET_PAGES_MAX`. A link into a list that has shrunk since shows the list's first
    page (page 0) when nothing is left on its side of the link's item.
    """
    if page < 0:
        raise ValueError("page numbers start at 0")
    window = ExpiryWindow(now=now, warning=timedelta(days=warning_days))
    sec_tags = store.sec_tags()
    if before is not None and page > 0:
        items = store.expiring_page(
            sec_tags, window, limit=size, before=before, device_id_prefix=device_id_prefix
        )
        if len(items) == size:
            return ExpiringPage(
                items=tuple(items),
                page=page,
                has_next=True,
                warning_days=warning_days,
                device_id_prefix=device_id_prefix,
            )
        page, after = 0, None  # the list shrank ahead of the link: its first page
    if after is None and page > 0:
        page = min(page, OFFSET_PAGES_MAX)
        found = store.expiring_page(
            sec_tags, window, limit=(page + 1) * size + 1, device_id_prefix=device_id_prefix
        )
        items, has_next = found[page * size : (page + 1) * size], len(found) > (page + 1) * size
    else:
        found = store.expiring_page(
            sec_tags,
            window,
            limit=size + 1,
            after=after if page > 0 else None,
            device_id_prefix=device_id_prefix,
        )
        items, has_next = found[:size], len(found) > size
    if not items and page > 0:  # past the list's end (it shrank since the link was made)
        return expiring_page(
            store, now=now, warning_days=warning_days, size=size, device_id_prefix=device_id_prefix
        )
    return ExpiringPage(
        items=tuple(items),
        page=page,
        has_next=has_next,
        warning_days=warning_days,
        device_id_prefix=device_id_prefix,
    )
