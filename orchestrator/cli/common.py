"""Shared pieces of the `certfleet` command: consoles, JSON output, errors."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["JsonFlag", "err", "fail", "out", "print_json"]

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
