"""`/devices/{device_id}`: one device: what it holds in each sec_tag (its last applied
state) and its latest bundle reports."""

from typing import TYPE_CHECKING, Annotated, Final

from fastapi import APIRouter, Depends, Request, Response

from orchestrator.api.console.templates import render
from orchestrator.clock import utcnow
from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.sessions import ConsoleSession

if TYPE_CHECKING:
    from orchestrator.api.console.context import ConsoleContext

__all__ = ["REPORTS_SHOWN", "router"]

REPORTS_SHOWN: Final = 20
"""The latest reports a device's page lists."""
TYPE_NAMES: Final = {
    CredentialType.CA_CHAIN: "CA chain",
    CredentialType.CLIENT_CERT: "client certificate",
    CredentialType.CLIENT_KEY: "client key",
    CredentialType.PSK: "PSK",
    CredentialType.PSK_IDENTITY: "PSK identity",
    CredentialType.PUBLIC_KEY: "public key",
}


def router(ctx: "ConsoleContext") -> APIRouter:
    """`/devices/{device_id}`."""
    r = APIRouter(include_in_schema=False)
    container = ctx.container

    @r.get("/devices/{device_id}")
    def device_page(
        request: Request,
        device_id: str,
        session: Annotated[ConsoleSession, Depends(ctx.viewer)],
    ) -> Response:
        store = container.inventory
        state = store.device_credentials(device_id)
        reports = store.recent_reports(device_id, limit=REPORTS_SHOWN)
        known = state is not None or bool(reports)
        return render(
            request,
            "device.html",
            session=session,
            status_code=200 if known else 404,
            device_id=device_id,
            state=state,
            reports=list(reversed(reports)),
            known=known,
            type_names=TYPE_NAMES,
            now=utcnow(),
            reports_shown=REPORTS_SHOWN,
        )

    return r
