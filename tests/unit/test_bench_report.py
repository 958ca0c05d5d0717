"""How `make bench` reports: figures as JSON lines, one table, one rewritten section."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.bench.figures import (
    Figure,
    format_value,
    markdown_table,
    read_json,
    report,
    write_json,
)
from tests.bench.run import END, START, _quick, render, write_section

pytestmark = pytest.mark.unit

FIGURES = [
    Figure("Push", "ours over raw", 0.5, "ratio", ">= 0.9", False, "raw: 1,000/s", "ours 500/s"),
    Figure("Inventory", "query", 12.5, "ms", "< 50 ms", True, "10,000 hits"),
]


def test_figures_survive_the_json_lines_between_processes(tmp_path: Path) -> None:
    # given
    out = tmp_path / "figures.jsonl"
    # when
    write_json(FIGURES[:1], out)
    write_json(FIGURES[1:], out)
    # then
    assert read_json(out) == FIGURES


def test_values_read_as_a_person_reads_them() -> None:
    assert format_value(0.912, "ratio") == "0.91"
    assert format_value(15079.4, "devices/s") == "15,079 devices/s"
    assert format_value(12.5, "ms") == "12.5 ms"


def test_the_table_says_which_goal_is_not_met() -> None:
    table = markdown_table(FIGURES).splitlines()
    assert len(table) == 2 + len(FIGURES)
    assert "| Push | ours over raw | 0.50 | >= 0.9 | NO | raw: 1,000/s |" in table


def test_a_run_replaces_only_the_latest_section(tmp_path: Path) -> None:
    # given
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold run\n{END}\n\n## History\nkept\n")
    section = render(
        FIGURES, when=datetime(2026, 11, 25, tzinfo=UTC), command="make bench", notes=[]
    )
    # when
    write_section(path, section)
    write_section(path, section)
    # then
    text = path.read_text()
    assert "old run" not in text
    assert text.count(START) == text.count(END) == 1
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert text.endswith("## History\nkept\n")
    assert "Command: `make bench`" in text
    assert "- Push, ours over raw: ours 500/s" in text


def test_quick_divides_counts_by_ten_and_keeps_flags() -> None:
    assert _quick(["--devices", "1000000", "--small", "10000"]) == [
        "--devices",
        "100000",
        "--small",
        "1000",
    ]


def test_a_benchmark_reports_its_table_details_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # when
    report(FIGURES, tmp_path / "out.jsonl")
    # then
    printed = capsys.readouterr().out
    assert "ours over raw" in printed
    assert "  ours over raw: ours 500/s" in printed
    assert read_json(tmp_path / "out.jsonl") == FIGURES
