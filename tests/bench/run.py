"""`make bench`: every benchmark in one go, one table, written into BENCHMARKS.md.

    .venv/bin/python -m tests.bench.run [--quick] [--only NAME ...] [--no-write]

Each benchmark runs as its own process (`python -m tests.bench.bench_NAME ...
--json-out FILE`) on its own throwaway services, one after another so they do not
share the two cores; their figures are gathered into one table, printed, and written
between the `bench:latest` markers of BENCHMARKS.md with the date, the machine and the
command. `--quick` runs every benchmark at a tenth of its size and writes nothing: a
check that they all work, not figures to keep.

Besides each benchmark's speed, the table holds what certfleet costs (issue 15): the
CPU per device rotated by component, the MQTT messages and Redis commands per device
against the protocol's minimum (`bench_e2e`), the worker's CPU per device pushed
(`bench_push`), the listener's CPU per report (`bench_ingest`) and Redis bytes per
device, inventory plus one rollout (`bench_inventory`, `bench_memory`), each with its
goal where the issue names one.

The console (issue 16, `bench_console`): the rollout page's weight, the `certfleet api`
process's CPU and Redis commands per open live page, and the page's first view in
Chromium, each for a 100,000-device rollout beside a 100-device one.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.figures import Figure, markdown_table, print_table, read_json

REPO = Path(__file__).resolve().parents[2]
START = "<!-- bench:latest:start -->"
END = "<!-- bench:latest:end -->"

BENCHES: dict[str, list[str]] = {
    "push": ["--devices", "100000"],
    "ingest": ["--reports", "100000"],
    "inventory": ["--devices", "1000000"],
    "e2e": ["--devices", "100000"],
    "memory": ["--devices", "1000000", "--small", "10000"],
    "console": ["--devices", "100000"],
}
"""Benchmark module suffix -> its arguments at full size (the sizes the issue names)."""


def _quick(args: Sequence[str]) -> list[str]:
    """The same arguments with every count divided by ten (at least 1,000)."""
    return [str(max(1_000, int(a) // 10)) if a.isdigit() else a for a in args]


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not found"
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    # `mosquitto -h` prints its version with its usage and exits non-zero.
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def machine() -> str:
    """One line about where the figures come from."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"MemTotal:\s*(\d+) kB", meminfo.read_text())
        memory = f", {int(found.group(1)) / 1024 / 1024:.0f} GiB" if found else ""
    redis_version = _version(["redis-server", "--version"])
    redis_version = re.sub(r"^Redis server v=(\S+).*", r"\1", redis_version)
    mosquitto = _version(["mosquitto", "-h"])
    mosquitto = re.sub(r"^mosquitto version (\S+).*", r"\1", mosquitto)
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}; Linux {platform.release()}; "
        f"Python {platform.python_version()}; redis-server {redis_version}; mosquitto {mosquitto}"
    )


def run_bench(name: str, args: Sequence[str], out: Path) -> tuple[list[Figure], float, str]:
    """Run one benchmark; its figures, seconds, and the tail of its output on failure."""
    argv = [sys.executable, "-m", f"tests.bench.bench_{name}", *args, "--json-out", str(out)]
    print(f"== {name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, check=False, text=True, capture_output=True)
    elapsed = time.monotonic() - started
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        print(f"!! {name} failed (exit {done.returncode}) after {elapsed:.0f} s:\n{tail}")
        return [], elapsed, tail
    return (read_json(out) if out.exists() else []), elapsed, ""


def render(figures: Sequence[Figure], *, when: datetime, command: str, notes: Sequence[str]) -> str:
    """The BENCHMARKS.md section of the latest run."""
    details = [f"- {f.section}, {f.name}: {f.detail}" for f in figures if f.detail]
    lines = [
        START,
        f"## Latest `make bench` ({when:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command}`. Machine: {machine()}.",
        "",
        markdown_table(figures),
        "",
        *(["Absolute numbers behind the ratios:", "", *details] if details else []),
        *notes,
        END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the text between the markers (or put it after the title when there is none)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        text = before + section + after
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{section}\n{body}"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of each size; no writing")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    figures: list[Figure] = []
    notes: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="certfleet-bench-run-") as tmp:
        for name, bench_args in BENCHES.items():
            if args.only and name not in args.only:
                continue
            sized = _quick(bench_args) if args.quick else list(bench_args)
            found, elapsed, failure = run_bench(name, sized, Path(tmp) / f"{name}.jsonl")
            figures += found
            failed = failed or bool(failure)
            if failure:
                notes.append(f"- `bench_{name}` failed in this run after {elapsed:.0f} s.")
            else:
                notes.append(f"- `bench_{name} {' '.join(sized)}` took {elapsed:.0f} s.")
    print()
    print_table(figures)
    if not (args.quick or args.no_write):
        command = "make bench"
        if args.only:
            command = f"python -m tests.bench.run --only {' '.join(args.only)}"
        section = render(figures, when=datetime.now(UTC), command=command, notes=["", *notes])
        write_section(REPO / "BENCHMARKS.md", section)
        print(f"\nwritten to {REPO / 'BENCHMARKS.md'}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
