"""`certfleet api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.bootstrap import bootstrap
from orchestrator.cli.common import fail
from orchestrator.domain.errors import CertfleetError
from orchestrator.logs import get_logger

__all__ = ["api"]

log = get_logger(__name__)


def api(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
) -> None:
    """Serve CA webhooks, status, control, /metrics and /healthz until Ctrl-C."""
    import uvicorn  # noqa: PLC0415 -- the server loads only here

    from orchestrator.api import create_app  # noqa: PLC0415

    container = bootstrap()
    try:
        try:
            app = create_app(container)
        except CertfleetError as exc:
            raise fail(str(exc)) from None
        settings = container.settings
        log.info(
            "api_starting",
            host=host,
            port=port,
            webhook_secrets=len(settings.webhook_secret_list),
            api_tokens=len(settings.api_token_list),
        )
        uvicorn.run(app, host=host, port=port, log_config=None, server_header=False)
        log.info("api_stopped")
    finally:
        container.close()
