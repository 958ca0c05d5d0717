"""What every benchmark reports: figures with their baseline and goal, as a table and as JSON.

Each `tests.bench.bench_*` module prints its figures with `print_table` and, given
`--json-out FILE`, appends them as JSON lines with `write_json`, so `tests.bench.run`
can gather every benchmark of `make bench` into one table and into BENCHMARKS.md.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "Figure",
    "exit_on_sigterm",
    "format_value",
    "markdown_table",
    "print_table",
    "read_json",
    "report",
    "write_json",
]


def exit_on_sigterm() -> None:
    """SIGTERM ends a benchmark like Ctrl-C does: its `finally` blocks stop what it started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure.

    `value` is what the goal is about (often a ratio ours/baseline); `baseline` says
    in words and numbers what it was compared with in the same run; `goal` is the
    issue's target as text (">= 0.9", "< 50 ms"); `met` whether the value reaches it
    (None when there is no goal); `detail` the absolute numbers behind a ratio.
    """

    section: str
    name: str
    value: float
    unit: str
    goal: str = ""
    met: bool | None = None
    baseline: str = ""
    detail: str = ""


def format_value(value: float, unit: str) -> str:
    """`1,234 devices/s`, `0.91`, `12.3 ms`: a figure as a person reads it."""
    if unit == "ratio":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def _row(figure: Figure) -> list[str]:
    met = {True: "yes", False: "NO", None: ""}[figure.met]
    return [
        figure.section,
        figure.name,
        format_value(figure.value, figure.unit),
        figure.goal,
        met,
        figure.baseline,
    ]


HEADER = ["section", "figure", "value", "goal", "met", "baseline (same run)"]


def print_table(figures: Iterable[Figure]) -> None:
    """A plain-text table on stdout."""
    rows = [HEADER, *(_row(f) for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown_table(figures: Iterable[Figure]) -> str:
    """The same table in Markdown, for BENCHMARKS.md."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in _row(f)) + " |" for f in figures]
    return "\n".join(lines)


def write_json(figures: Iterable[Figure], path: Path | None) -> None:
    """Append the figures to `path` as JSON lines (nothing when `path` is None)."""
    if path is None:
        return
    with path.open("a", encoding="utf-8") as out:
        for figure in figures:
            out.write(json.dumps(asdict(figure)) + "\n")


def read_json(path: Path) -> list[Figure]:
    """Figures written by `write_json`."""
    return [
        Figure(**json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def report(figures: Sequence[Figure], path: Path | None) -> None:
    """What every benchmark ends with: the table, the numbers behind it, the JSON lines."""
    print_table(figures)
    for figure in figures:
        if figure.detail:
            print(f"  {figure.name}: {figure.detail}")
    write_json(figures, path)
