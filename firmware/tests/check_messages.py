"""Parse the JSON messages the C tests wrote with the orchestrator's own models.

`make -C firmware test` runs it after `test_message`, which writes a device's reports
and a state message into a folder: each report must parse as `ReportMessage` and the
state as `StateMessage`, for the device id the bundles were addressed to, so what the C
library publishes is what the listener accepts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.protocol.report import parse_report
from orchestrator.protocol.state import parse_state

CONTEXT = Path(__file__).resolve().parent / "vectors" / "bundles" / "CONTEXT"


def main(folder: Path) -> None:
    device = CONTEXT.read_text().split("\n")[0].split()[1]
    reports = sorted(folder.glob("report-*.json"))
    if len(reports) < 10:
        raise SystemExit(f"{folder} holds {len(reports)} reports, expected at least 10")
    phases = [parse_report(path.read_bytes(), topic_device_id=device).phase for path in reports]
    state = parse_state((folder / "state.json").read_bytes(), topic_device_id=device)
    if state.v != 2 or not state.active_tags:
        raise SystemExit(f"state message {state!r} is not a v2 state with an active list")
    print(f"{len(reports)} reports ({', '.join(phases)}) and 1 state parse as the listener's")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
