"""`certfleet fleet status`: the tables of the devices' client certificates (identities)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from rich.table import Table

from orchestrator.cli.common import out

__all__ = ["SHOWN", "identity_tables"]

SHOWN: Final = 15
"""Expiring identities listed in the table (`--json` lists up to the scan's limit)."""


def identity_tables(status: Mapping[str, Any], *, now: datetime) -> None:
    """Print the identities per tag (ok / expiring / expired) and the soonest to expire.

    Nothing is printed when the scan found no client certificate (or predates them).
    """
    identities = status.get("identities") or {}
    by_tag: Mapping[str, Mapping[str, int]] = identities.get("by_tag") or {}
    if not by_tag:
        return
    days = identities["renew_days"]
    table = Table(
        "identity sec_tag",
        "ok",
        "expiring",
        "expired",
        title=f"Device identities (client certificates) by sec_tag · renewed {days} days ahead",
    )
    for tag, counts in by_tag.items():
        table.add_row(
            tag,
            f"[green]{counts['ok']}[/]",
            f"[yellow]{counts['expiring']}[/]",
            f"[red]{counts['expired']}[/]",
        )
    out.print(table)
    expiring = identities.get("expiring") or []
    if not expiring:
        return
    shown = expiring[:SHOWN]
    title = (
        "Identities expired and expiring, soonest first "
        f"({len(shown)} of {identities['expiring_total']})"
    )
    table = Table("device", "sec_tag", "not after (UTC)", "days left", "subject", title=title)
    for item in shown:
        not_after = datetime.fromisoformat(item["not_after"])
        left = (not_after - now).total_seconds() / 86400
        table.add_row(
            item["device_id"],
            str(item["sec_tag"]),
            not_after.strftime("%Y-%m-%d %H:%M"),
            f"[red]{left:.1f}[/]" if left < 0 else f"[yellow]{left:.1f}[/]",
            item["subject"] or "",
        )
    out.print(table)
