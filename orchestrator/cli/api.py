"""`certfleet api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.bootstrap import bootstrap
from orchestrator.cli.common import fail
from orchestrator.domain.errors import CertfleetError
from orchestrator.logs import get_logger

__all__ = ["api"]

log = get_logger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 5
"""How long `certfleet api` lets open requests finish when asked to stop (live console
streams are then cancelled)."""


def api(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            exists=True,
            dir_okay=False,
            help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option("--tls-key", exists=True, dir_okay=False, help="The PEM private key."),
    ] = None,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies whose X-Forwarded-Proto/For are believed (comma-separated; a TLS "
            "proxy in front must send X-Forwarded-Proto: https for Secure console cookies).",
        ),
    ] = "127.0.0.1",
) -> None:
    """Serve the console, CA webhooks, status, control, /metrics and /healthz until Ctrl-C."""
    import uvicorn  # noqa: PLC0415 -- the server loads only here

    from orchestrator.api import create_app  # noqa: PLC0415

    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key go together")
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
            tls=tls_cert is not None,
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=None,
            server_header=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            proxy_headers=True,
            forwarded_allow_ips=forwarded_allow_ips,
            # uvicorn waits for open responses before it stops; a console page's live
            # stream never ends by itself, so stop waiting after this many seconds.
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        log.info("api_stopped")
    finally:
        container.close()
