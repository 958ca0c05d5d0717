"""The FastAPI application over one process's `Container`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orchestrator.api import renewals
from orchestrator.api.auth import bearer_auth
from orchestrator.api.console import mount_console
from orchestrator.api.ops import broker_client, ops_router
from orchestrator.api.renewals import AcceptEvent, PlanView
from orchestrator.api.status import status_router
from orchestrator.api.webhooks import WebhookVerifier, webhook_router
from orchestrator.domain.errors import StoreUnavailableError
from orchestrator.logs import get_logger

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["create_app"]

log = get_logger(__name__)


def _version() -> str:
    try:
        return metadata.version("certfleet")
    except metadata.PackageNotFoundError:
        return "0.0.0"


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("store_unavailable", path=request.url.path, error=str(exc))
    return JSONResponse({"detail": "Redis is unreachable; retry later"}, status_code=503)


def create_app(
    container: Container,
    *,
    accept_event: AcceptEvent = renewals.accept_event,
    plan_view: PlanView = renewals.plan_view,
) -> FastAPI:
    """The HTTP API over `container`; the caller keeps and closes the container.

    `accept_event` and `plan_view` default to `orchestrator.services.renewals` over
    the container's adapters. Raises `ApiConfigError` for a malformed webhook secret or a
    broker URL that is not Redis.
    """
    settings = container.settings
    verifier = WebhookVerifier(settings.webhook_secret_list)
    broker, own_broker = broker_client(settings, container.redis)
    if not settings.webhook_secret_list:
        log.warning("webhooks_disabled", reason="CERTFLEET_WEBHOOK_SECRETS is empty")
    if not settings.api_token_list:
        log.warning(
            "api_locked",
            reason="CERTFLEET_API_TOKENS is empty; every /v1 call gets 401 and nobody can sign "
            "in to the console",
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if own_broker:
            broker.close()

    app = FastAPI(
        title="certfleet",
        version=_version(),
        summary="Rotate the CA certificates a device fleet trusts: CA webhooks, status, control.",
        lifespan=lifespan,
    )
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    app.include_router(webhook_router(container, verifier=verifier, accept_event=accept_event))
    app.include_router(
        status_router(
            container, authenticate=bearer_auth(settings.api_token_list), plan_view=plan_view
        )
    )
    app.include_router(ops_router(container, broker=broker))
    mount_console(app, container, plan_view=plan_view)
    return app
