"""The fleet scan: classify every (device, sec_tag) from the expiry index, and every
client certificate (type 1) from the identity index."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.inventory import (
    ExpiryWindow,
    FleetSummary,
    IdentityCounts,
    IdentitySummary,
    TagCounts,
)
from orchestrator.logs import get_logger
from orchestrator.ports import CredentialLibrary, InventoryStore

__all__ = ["fleet_status", "scan_fleet", "scan_identities"]

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
