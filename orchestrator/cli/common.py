"""Shared pieces of the `certfleet` command: consoles, JSON output, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["JsonFlag", "connected", "err", "fail", "out", "print_json"]

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def print_json(data: Any) -> None:
    """JSON on stdout, for machines."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error on stderr; raise the returned Exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextmanager
def connected() -> Iterator[Container]:
    """The process's adapters for one command: a certfleet error becomes a clean exit 1."""
    from orchestrator.bootstrap import bootstrap  # noqa: PLC0415 -- keeps `--help` light
    from orchestrator.domain.errors import CertfleetError  # noqa: PLC0415

    container = bootstrap()
    try:
        yield container
    except CertfleetError as exc:
        raise fail(str(exc)) from None
    finally:
        container.close()
