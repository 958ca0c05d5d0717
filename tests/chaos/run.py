"""`make chaos`: every fault on a few hundred devices, then the hostile input at full size.

    python -m tests.chaos.run [--devices 300] [--messages 10000] [--bundles 10000]
                              [--faults broker_kill,...] [--seed 11] [--keep DIR]

Prints one row per fault (end state, devices on the new CA, devices without an
active credential, reports lost, time to converge) and the hostile input's counts,
then every finding; exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.chaos.bundles import run_bundles
from tests.chaos.faults import FAULTS, FaultResult, run_fault
from tests.chaos.listener_run import run_messages

__all__ = ["main"]


def _row(result: FaultResult) -> str:
    converge = f"{result.converge_seconds:.1f}" if result.converge_seconds is not None else "-"
    return (
        f"| {result.fault} | {result.end_state} | {result.on_new_ca}/{result.devices} "
        f"| {result.unconfirmed} | {result.untrusted} | {result.lost} of {result.witnessed} "
        f"| {converge} | {'ok' if not result.problems else 'FINDING'} |"
    )


HEADER = (
    "| fault | end state | on new CA | unconfirmed | without active CA | reports lost "
    "| converge s | checks |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    """Run the suite and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--bundles", type=int, default=10_000)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, help="Keep the logs in this directory.")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="certfleet-chaos-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        results = []
        for fault in faults:
            began = time.monotonic()
            print(f"{fault}: {FAULTS[fault][0]} ...", flush=True)
            result = run_fault(base / fault, fault, args.devices)
            results.append(result)
            (base / fault / "result.json").write_text(json.dumps(asdict(result), indent=1))
            print(f"  injected at: {result.injected_at}", flush=True)
            print(f"  {_row(result)}  ({time.monotonic() - began:.0f} s)", flush=True)
            findings += [f"{fault}: {p}" for p in result.problems]
        began = time.monotonic()
        messages = run_messages(base / "messages", args.messages, seed=args.seed)
        message_seconds = time.monotonic() - began
        findings += [f"hostile messages: {p}" for p in messages.problems]
        began = time.monotonic()
        bundles = run_bundles(args.bundles, seed=args.seed)
        bundle_seconds = time.monotonic() - began
        findings += [f"mutated bundles: {p}" for p in bundles.problems]

    print(f"\n{args.devices} devices, trust.replace, one fault in the middle of the 50% wave\n")
    print(HEADER)
    for result in results:
        print(_row(result))
    print()
    for result in results:
        print(f"{result.fault} injected at: {result.injected_at}")
    print(
        f"\nhostile messages: {messages.total} at a real listener in {message_seconds:.0f} s, "
        f"{len(messages.problems)} findings"
    )
    for kind, n in sorted(messages.expected.items()):
        print(f"  {kind}: {n} sent, {messages.counted.get(kind, '-')} counted")
    print(
        f"mutated bundles: {bundles.total} at a device in {bundle_seconds:.0f} s, "
        f"{len(bundles.problems)} findings ({bundles.redrawn} bit flips redrawn)"
    )
    for (kind, reason), n in sorted(bundles.reasons.items()):
        print(f"  {kind} -> {reason}: {n}")
    if findings:
        print("\nFINDINGS")
        for finding in findings:
            print(f"- {finding}")
        sys.exit(1)
    print("\nevery check held")


if __name__ == "__main__":
    main()
