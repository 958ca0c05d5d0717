"""How `certfleet rollout` shows rollouts: tables of the status document, live progress bars."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from orchestrator.cli.common import err
from orchestrator.domain.rollout import IDENTITY_KIND
from orchestrator.domain.rollout_states import (
    FAILURES,
    DeviceRolloutState,
    RolloutState,
)
from orchestrator.services.rollout import RolloutDeps, rollout_status

__all__ = ["rollouts_table", "status_table", "watch_status"]

D = DeviceRolloutState
ENDED: Final = frozenset(
    {RolloutState.COMPLETED, RolloutState.COMPLETED_WITH_TIMEOUTS, RolloutState.ROLLED_BACK}
)
DONE: Final = (
    D.COMMITTED,
    D.REJECTED,
    D.HEALTH_FAILED,
    D.TIMED_OUT,
    D.FALLBACK,
    D.ROLLED_BACK,
    D.UNDO_REFUSED,
)
"""Device states a wave's progress bar counts as done, in the status table's column order."""
IDENTITY_DONE: Final = (
    D.RETIRED,
    D.CSR_REFUSED,
    D.REJECTED,
    D.HEALTH_FAILED,
    D.TIMED_OUT,
    D.FALLBACK,
    D.ROLLED_BACK,
    D.UNDO_REFUSED,
)
"""identity.rotate: a device is done once it retired its old identity (or failed)."""
IDENTITY_UNDER_WAY: Final = (D.CSR, D.ISSUED, D.COMMITTED)
"""identity.rotate: the states shown beside the done ones: issuing, staged, waiting to retire."""
FAILED: Final = (*sorted(FAILURES), D.TIMED_OUT)
"""What the tables count as failed: the failures and the timeouts."""


def rollouts_table(rows: Sequence[dict[str, Any]]) -> Table:
    """One line per rollout status document: devices, committed (or retired), failed."""
    table = Table("id", "kind", "state", "created", "devices", "committed", "failed")
    for r in rows:
        totals = r["totals"]
        failed = sum(totals.get(s, 0) for s in FAILED)
        table.add_row(
            r["id"],
            r["kind"],
            r["state"],
            r["created_at"][:19],
            str(sum(totals.values())),
            str(totals[D.COMMITTED] + totals.get(D.RETIRED, 0)),
            str(failed),
        )
    return table


def _columns(status: dict[str, Any]) -> tuple[tuple[DeviceRolloutState, ...], tuple[D, ...]]:
    """(states shown under way, states counted done) for the rollout's kind."""
    if status["kind"] == IDENTITY_KIND:
        return IDENTITY_UNDER_WAY, IDENTITY_DONE
    return (), DONE


def status_table(status: dict[str, Any]) -> Table:
    """A rollout's waves: size, state, the done states' counts, and what is in flight.

    identity.rotate shows `csr`, `issued` and `committed` (waiting for the retire) too,
    and counts `retired` and `csr_refused` among the done states.
    """
    shown, done = _columns(status)
    table = Table(
        "wave",
        "size",
        "state",
        *(s.value for s in (*shown, *done)),
        "in flight",
        title=f"{status['id']} · {status['kind']} · {status['state']}",
    )
    for wave in status["waves"]:
        counts = wave["counts"]
        in_flight = wave["size"] - counts[D.PENDING] - sum(counts[s] for s in done)
        table.add_row(
            str(wave["index"]),
            str(wave["size"]),
            wave["state"],
            *(str(counts[s]) for s in (*shown, *done)),
            str(in_flight),
        )
    return table


def watch_status(deps: RolloutDeps, rollout_id: str, interval: float) -> dict[str, Any]:
    """Progress bars per wave (on stderr) until the rollout ends; its last status document."""
    current = rollout_status(deps, rollout_id)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
    )
    bars = [
        progress.add_task(f"wave {w['index']}", total=w["size"], info="") for w in current["waves"]
    ]
    with Live(progress, console=err, refresh_per_second=4):
        while True:
            _, done_states = _columns(current)
            for bar, wave in zip(bars, current["waves"], strict=True):
                counts = wave["counts"]
                done = sum(counts[s] for s in done_states)
                failed = sum(counts[s] for s in FAILED)
                progress.update(bar, completed=done, info=f"{wave['state']} · {failed} failed")
            if current["state"] in ENDED:
                return current
            time.sleep(interval)
            current = rollout_status(deps, rollout_id)
