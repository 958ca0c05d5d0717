"""`/`: the fleet: the last scan's counts by sec_tag and class, the expiring list as it
is now (searched by device id prefix, 50 a page), refused device messages by reason."""

import re
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response

from orchestrator.api.console.templates import render
from orchestrator.clock import utcnow
from orchestrator.domain.inventory import ExpiringItem
from orchestrator.domain.sessions import ConsoleSession
from orchestrator.logs import get_logger
from orchestrator.protocol import DEVICE_ID_MAX_CHARS
from orchestrator.services.scan import (
    EXPIRING_PAGE_SIZE,
    ExpiringPage,
    InvalidPageCursorError,
    expiring_page,
    fleet_status,
    parse_page_cursor,
)

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext

__all__ = ["BAD_REQUESTS_METRIC", "router"]

log = get_logger(__name__)

BAD_REQUESTS_METRIC: Final = "certfleet_console_bad_requests_total"
"""Console requests refused for their query (labels: `page`)."""
PAGES_MAX: Final = 1_000_000
"""The highest page number a link may carry (50 items a page: 50 million items)."""
_QUERY = re.compile(rf"[A-Za-z0-9._:-]{{0,{DEVICE_ID_MAX_CHARS}}}")
"""What a device id prefix may hold (the characters of a device id, at most as long)."""


class _BadQueryError(ValueError):
    """A fleet page query the page cannot answer, with what to do instead."""


def _page_number(raw: str) -> int:
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > PAGES_MAX:
        raise _BadQueryError(
            f"page {raw[:20]!r} is not a page number (0 to {PAGES_MAX}); use the page links"
        )
    return int(raw)


def _cursor(raw: str | None) -> ExpiringItem | None:
    if not raw:
        return None
    try:
        return parse_page_cursor(raw)
    except InvalidPageCursorError as exc:
        raise _BadQueryError(str(exc)) from None


def _page_link(page: int, q: str, **cursor: str | None) -> str:
    query: dict[str, str | int] = {"page": page}
    if q:
        query["q"] = q
    query.update({name: value for name, value in cursor.items() if value})
    return "/?" + urlencode(query) + "#expiring-list"


def _by_tag_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per sec_tag (numeric order): the CA classes, unknown CAs, and the client
    certificates' classes where the scan found any in that tag."""
    identities = status["identities"]["by_tag"]
    tags = sorted({int(tag) for tag in status["by_tag"]} | {int(tag) for tag in identities})
    return [
        {
            "sec_tag": tag,
            "ca": status["by_tag"].get(str(tag)),
            "identity": identities.get(str(tag)),
        }
        for tag in tags
    ]


def router(ctx: "ConsoleContext") -> APIRouter:
    """`/`: the fleet."""
    r = APIRouter(include_in_schema=False)
    container = ctx.container

    @r.get("/")
    def fleet_page(
        request: Request,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
        *,
        q: str = "",
        page: str = "",
        after: str | None = None,
        before: str | None = None,
    ) -> Response:
        store = container.inventory
        status = fleet_status(store)
        q = q.strip()
        now = utcnow()
        warning_days = status["warning_days"] or container.settings.expiry_warning_days
        error: str | None = None
        listed: ExpiringPage | None = None
        try:
            if not _QUERY.fullmatch(q):
                raise _BadQueryError(
                    f"search by the start of a device id: letters, digits and . _ : - only,"
                    f" at most {DEVICE_ID_MAX_CHARS}"
                )
            listed = expiring_page(
                store,
                now=now,
                warning_days=warning_days,
                page=_page_number(page),
                device_id_prefix=q,
                after=_cursor(after),
                before=_cursor(before),
            )
        except _BadQueryError as exc:
            error = str(exc)
            container.metrics.incr(BAD_REQUESTS_METRIC, {"page": "fleet"})
            log.warning("console_bad_query", page="fleet", error=error)
        links: dict[str, str | None] = {"next": None, "prev": None}
        if listed is not None:
            if listed.next_cursor is not None:
                links["next"] = _page_link(listed.page + 1, q, after=listed.next_cursor)
            if listed.prev_cursor is not None:
                links["prev"] = _page_link(listed.page - 1, q, before=listed.prev_cursor)
        return render(
            request,
            "fleet.html",
            session=session,
            status_code=400 if error else 200,
            status=status,
            by_tag=_by_tag_rows(status),
            devices_now=store.device_count(),
            listed=listed,
            links=links,
            q=q,
            now=now,
            warning_days=warning_days,
            page_size=EXPIRING_PAGE_SIZE,
            error=error,
        )

    return r
