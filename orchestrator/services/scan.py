"""The fleet scan: classify every (device, sec_tag) from the expiry index."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.inventory import ExpiryWindow, FleetSummary, TagCounts
from orchestrator.logs import get_logger
from orchestrator.ports import CredentialLibrary, InventoryStore

__all__ = ["fleet_status", "scan_fleet"]

log = get_logger(__name__)


def scan_fleet(
    store: InventoryStore,
    library: CredentialLibrary,
    *,
    now: datetime,
    warning_days: int,
    list_limit: int,
) -> FleetSummary:
    """Classify the fleet by range queries on the index, store and return the summary.

    The work is O(sec_tags + distinct CA digests + listed items), never a walk of
    every device.
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
    )
    store.save_summary(summary)
    log.info(
        "fleet_scanned",
        devices=summary.devices,
        sec_tags=len(sec_tags),
        expiring_total=summary.expiring_total,
        unknown_digests=len(unknown_digests),
    )
    return summary


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
        }
    else:
        status = summary.as_json()
    status["rejected_reports"] = store.rejection_counts()
    return status
