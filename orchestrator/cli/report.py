"""`certfleet rollout report`: a rollout as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import connected, fail, out
from orchestrator.services.report import rollout_report

__all__ = ["report"]


def report(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    html: Annotated[
        Path,
        typer.Option(
            "--html", dir_okay=False, help="Where to write the report (an HTML file, no network)."
        ),
    ],
) -> None:
    """Write an HTML report: spec, timeline per wave, gate decisions, failed devices."""
    with connected() as container:
        document = rollout_report(container.rollout_deps(), container.inventory, rollout_id)
    try:
        html.write_text(document, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write the report to {html}: {exc}") from None
    out.print(str(html), highlight=False, soft_wrap=True)
