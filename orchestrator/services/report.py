"""`rollout report`: one self-contained HTML page about a rollout.

The page holds the spec and outcome, a per-wave timeline of device states replayed
from the audit log (inline SVG drawn here: no scripts, no network), the gate's
decisions and the devices that failed, timed out, never confirmed their rollback or
refused it (`undo_refused`: the device undid nothing and its inventory still shows
the rollout's change).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import DeviceRolloutState, RolloutState, WaveState
from orchestrator.ports import InventoryStore
from orchestrator.services.rollout import RolloutDeps, load, rollout_status

__all__ = ["GROUPS", "rollout_report"]

D = DeviceRolloutState
GROUPS: Mapping[str, tuple[DeviceRolloutState, ...]] = {
    "committed": (D.COMMITTED, D.RETIRED),
    "failed": (D.REJECTED, D.HEALTH_FAILED, D.FALLBACK, D.CSR_REFUSED),
    "timed_out": (D.TIMED_OUT,),
    "rollback": (D.ROLLBACK_SENT, D.ROLLED_BACK, D.UNDO_REFUSED),
    "in flight": (D.SENT, D.RECEIVED, D.CSR, D.ISSUED, D.STAGED, D.HEALTH_OK),
    "pending": (D.PENDING,),
}
"""Device states as the timeline groups them, stacked bottom to top (identity.rotate's
`retired` with the committed, `csr_refused` with the failed, `csr`/`issued` in flight)."""
COLORS = ("#2e9d5b", "#d64545", "#e39b1f", "#8a63c9", "#4a8fd9", "#c9ced6")
GROUP_OF: Mapping[str, int] = {
    state.value: i for i, states in enumerate(GROUPS.values()) for state in states
}
"""The timeline group of each device state, as the audit log spells it."""
PROBLEMS = (D.REJECTED, D.HEALTH_FAILED, D.FALLBACK, D.CSR_REFUSED, D.TIMED_OUT)
NOTES: Mapping[str, str] = {
    D.ROLLBACK_SENT: " (rollback not confirmed)",
    D.UNDO_REFUSED: " (undid nothing; the inventory still shows the change)",
}
"""What the devices table says after a state that needs saying why it is listed."""
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 900, 150, 56, 16, 22, 30
TABLE_LIMIT = 1000
TICKS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
Row = tuple[str, list[str]]
"""A table row: its css class and its cells, already escaped."""
Marker = tuple[datetime, str, str]
"""A gate decision or abort on the timeline: when, verdict, what."""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;
 margin:24px auto;max-width:960px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
 border-bottom:1px solid #d8dee4;padding-bottom:4px}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border:1px solid #d8dee4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
dl.spec{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:6px 0}
dl.spec dt{color:#57606a}dl.spec dd{margin:0}
.state{display:inline-block;padding:0 6px;border-radius:4px;background:#eef1f4}
.failed,tr.failed td{color:#b42318}.state.failed,tr.failed .state{background:#fde8e7}
.abort{color:#b42318;font-weight:600}.pass{color:#1a7f37}.muted{color:#6e7781}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
figure{margin:10px 0}figcaption{font-weight:600}
figure.failed figcaption{color:#b42318}svg{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#444}svg .axis{stroke:#888}
svg .grid{stroke:#e4e7eb}svg .marker{stroke-width:1.5;stroke-dasharray:4 3}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _offset(seconds: float) -> str:
    """`+0s`, `+45s`, `+2m30s`, `+1h5m`: time since the rollout was created."""
    s = round(seconds)
    if s < 60:
        return f"+{s}s"
    if s < 3600:
        return f"+{s // 60}m" + (f"{s % 60}s" if s % 60 else "")
    return f"+{s // 3600}h" + (f"{s % 3600 // 60}m" if s % 3600 // 60 else "")


def _table(table_id: str, head: Sequence[str], rows: Iterable[Row]) -> str:
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for cls, cells in rows
    )
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


class _Timeline:
    """Device transitions replayed per wave into step series of group counts."""

    def __init__(self, sizes: Sequence[int], start: datetime, end: datetime) -> None:
        self.sizes, self.start = sizes, start
        self.span = max((end - start).total_seconds(), 1.0)
        self.series: list[list[tuple[float, list[int]]]] = [
            [(0.0, [size if g == "pending" else 0 for g in GROUPS])] for size in sizes
        ]

    def x(self, when: datetime) -> float:
        seconds = min(max((when - self.start).total_seconds(), 0.0), self.span)
        return round(LEFT + seconds / self.span * (WIDTH - LEFT - RIGHT), 1)

    def move(self, wave: int, old: str, new: str, when: datetime) -> None:
        if not 0 <= wave < len(self.sizes) or old not in GROUP_OF or new not in GROUP_OF:
            return
        points = self.series[wave]
        counts = list(points[-1][1])
        counts[GROUP_OF[old]] -= 1
        counts[GROUP_OF[new]] += 1
        x = float(round(self.x(when) - LEFT))
        if points[-1][0] == x:  # one point per pixel column: the state it ends in
            points[-1] = (x, counts)
        else:
            points.append((x, counts))

    def areas(self, wave: int) -> str:
        """One closed step path per group, stacked."""
        points, size, plot_h = self.series[wave], max(self.sizes[wave], 1), HEIGHT - TOP - BOTTOM
        ends = [p[0] for p in points[1:]] + [float(WIDTH - LEFT - RIGHT)]

        def y(value: int) -> float:
            return round(TOP + plot_h - value / size * plot_h, 1)

        paths = []
        for g, name in enumerate(GROUPS):
            if not any(c[g] for _, c in points):
                continue
            top, bottom = [], []
            for (x0, counts), x1 in zip(points, ends, strict=True):
                low = sum(counts[:g])
                top += [f"{x0 + LEFT},{y(low + counts[g])}", f"{x1 + LEFT},{y(low + counts[g])}"]
                bottom += [f"{x0 + LEFT},{y(low)}", f"{x1 + LEFT},{y(low)}"]
            d = "M" + " L".join(top + bottom[::-1]) + " Z"
            paths.append(
                f'<path class="area area-{name.replace(" ", "-")}" fill="{COLORS[g]}" '
                f'd="{d}"><title>{_e(name)}</title></path>'
            )
        return "".join(paths)

    def svg(self, wave: int, markers: Sequence[Marker]) -> str:
        size, base = self.sizes[wave], HEIGHT - BOTTOM
        parts = [
            f'<svg id="timeline-wave-{wave}" class="wave-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="device states of wave {wave} over time">'
        ]
        step = next((s for s in TICKS if self.span / s <= 8), self.span / 8)
        t = 0.0
        while t <= self.span + 1e-9:
            x = round(LEFT + t / self.span * (WIDTH - LEFT - RIGHT), 1)
            parts.append(
                f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{base}"/>'
                f'<text x="{x}" y="{base + 14}" text-anchor="middle">{_offset(t)}</text>'
            )
            t += step
        parts.append(self.areas(wave))
        for value in sorted({0, size // 2, size}):
            y = round(TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / max(size, 1)), 1)
            parts.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{value}</text>')
        parts.append(
            f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>'
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>'
            f'<text x="14" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + (HEIGHT - TOP - BOTTOM) / 2})">devices</text>'
            f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 2}" text-anchor="end">'
            f"time since created</text>"
        )
        for when, verdict, label in markers:
            x, color = self.x(when), "#1a7f37" if verdict == "pass" else "#b42318"
            parts.append(
                f'<g class="marker-{verdict}"><line class="marker" x1="{x}" y1="{TOP - 4}" '
                f'x2="{x}" y2="{base}" stroke="{color}"/><text x="{x + 3}" y="{TOP - 8}" '
                f'style="fill:{color}">{_e(label.split(":")[0])}</text>'
                f"<title>{_e(label)}</title></g>"
            )
        return "".join(parts) + "</svg>"


def _spec_rows(spec: Mapping[str, Any]) -> str:
    shown: dict[str, Any] = dict(spec)
    cas = shown.pop("ca_pems", [])
    host, port = shown.pop("probe_host", ""), shown.pop("probe_port", 0)
    shown = {
        "kind": shown.pop("kind", None),
        "tag": shown.pop("tag", None),
        "spare tag": shown.pop("spare_tag", None),
        "probe": f"{host}:{port}" if host else "none",
        "CA certificates": len(cas),
        **shown,
    }
    if isinstance(shown.get("max_failure"), int | float):
        shown["max_failure"] = f"{shown['max_failure'] * 100:g}%"
    for key in ("bake_seconds", "device_timeout_seconds"):
        if isinstance(shown.get(key), int | float):
            shown[key] = f"{shown[key]:g}s"
    return "".join(
        f"<dt>{_e(k.replace('_seconds', '').replace('_', ' '))}</dt><dd>"
        f"{_e('-' if v is None else json.dumps(v) if isinstance(v, bool) else v)}</dd>"
        for k, v in shown.items()
    )


def _replay(
    deps: RolloutDeps, rollout: Rollout
) -> tuple[_Timeline, list[Marker], list[Row], dict[str, int], dict[str, str]]:
    """Timeline, markers, gate rows, and each device's wave and last logged cause."""
    entries = sorted(
        (
            (when, i, e)
            for i, e in enumerate(deps.store.log(rollout.id))
            if (when := _when(e.get("time"))) is not None
        ),
        key=lambda item: (item[0], item[1]),
    )
    created = rollout.created_at
    finished = rollout.finished_at or created
    timeline = _Timeline(
        rollout.sizes, created, max([created, finished, *(w for w, _, _ in entries)])
    )
    markers: list[Marker] = []
    gate_rows: list[Row] = []
    device_wave: dict[str, int] = {}
    last_cause: dict[str, str] = {}
    current = "0"
    for when, _, e in entries:
        kind, old, new = e.get("kind", ""), e.get("from", ""), e.get("to", "")
        cause, subject = e.get("cause", ""), e.get("subject", "")
        if kind == "device":
            device_wave[subject] = int(e.get("wave") or -1)
            last_cause[subject] = cause
            timeline.move(device_wave[subject], old, new, when)
            continue
        if kind == "wave" and new == WaveState.RUNNING:
            current = subject
        wave = subject if kind == "wave" else current
        gate = e.get("actor") == "gate"
        verdict = (
            "abort" if new == RolloutState.ABORTED else "pass" if gate and kind == "wave" else ""
        )
        if verdict:
            markers.append((when, verdict, f"{verdict} w{wave}: {old} -> {new}: {cause}"))
        if gate:
            stamp = when.isoformat(sep=" ", timespec="seconds")
            offset = _offset((when - created).total_seconds())
            cells = [f'{_e(stamp)} <span class="muted">{offset}</span>', _e(wave), _e(kind)]
            cells += [f"{_e(old or '-')} &rarr; {_e(new)}", _e(cause)]
            gate_rows.append((verdict, cells))
    return timeline, markers, gate_rows, device_wave, last_cause


def _failed_rows(
    deps: RolloutDeps,
    inventory: InventoryStore,
    rollout_id: str,
    *,
    devices: Sequence[str],
    device_wave: Mapping[str, int],
    last_cause: Mapping[str, str],
) -> list[Row]:
    """Device, wave, state, the last report's reason for this rollout (or the log's cause)."""
    states = deps.store.device_states(rollout_id, devices)
    rows = []
    for device in devices:
        state = states.get(device, "?")
        ours = [r for r in inventory.recent_reports(device, limit=20) if r.rollout_id == rollout_id]
        report = ours[-1] if ours else None
        reason = f"{report.phase}: {report.reason}" if report else last_cause.get(device, "")
        note = NOTES.get(str(state), "")
        cells = [f'<span class="mono">{_e(device)}</span>', _e(device_wave.get(device, "?"))]
        cells += [f'<span class="state">{_e(state)}</span>{note}', _e(reason)]
        cells += [_e(report.detail if report else ""), _e(last_cause.get(device, ""))]
        rows.append(("failed" if state in PROBLEMS[:3] else state, cells))
    return rows


def rollout_report(deps: RolloutDeps, inventory: InventoryStore, rollout_id: str) -> str:
    """The HTML document; raises `RolloutError` for an unknown rollout."""
    status = rollout_status(deps, rollout_id)
    rollout = load(deps.store, rollout_id)
    spec: dict[str, Any] = rollout.spec.to_json()
    timeline, markers, gate_rows, device_wave, last_cause = _replay(deps, rollout)
    wave_rows, figures = [], []
    for w in status["waves"]:
        cls = "failed" if w["state"] == WaveState.FAILED else ""
        badge = f'<span class="state {cls}">{_e(w["state"])}</span>'
        counts = [sum(w["counts"].get(s, 0) for s in states) for states in GROUPS.values()]
        wave_rows.append((cls, [str(w["index"]), str(w["size"]), badge, *map(str, counts)]))
        figures.append(
            f'<figure class="{cls}"><figcaption>Wave {w["index"]} &middot; {w["size"]} devices '
            f"&middot; {badge}</figcaption>{timeline.svg(w['index'], markers)}</figure>"
        )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{_e(g)}</span>'
        for g, c in zip(GROUPS, COLORS, strict=True)
    )
    unconfirmed = list(rollout.unconfirmed or ())
    what = "new trust" if rollout.state is RolloutState.COMPLETED_WITH_TIMEOUTS else "rollback"
    ended = rollout.finished_at is not None or rollout.ended
    stuck = [D.ROLLBACK_SENT] if ended else []
    refused = status["undo_refused"]["devices"]
    devices = sorted(
        set(deps.store.devices_in(rollout_id, [*PROBLEMS, *stuck]))
        | set(unconfirmed)
        | set(refused)
    )
    rows = _failed_rows(
        deps,
        inventory,
        rollout_id,
        devices=devices[:TABLE_LIMIT],
        device_wave=device_wave,
        last_cause=last_cause,
    )
    abort = rollout.abort_reason
    finished_at = rollout.finished_at.isoformat() if rollout.finished_at else "-"
    title = _e(f"Rollout {rollout_id}")
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title><style>{CSS}</style></head><body><h1>{title}</h1>",
            f'<p>{_e(rollout.spec.kind)} &middot; <span class="state">{_e(status["state"])}</span>',
            f" &middot; created {_e(rollout.created_at.isoformat())}",
            f" &middot; finished {_e(finished_at)}</p>",
            f'<p class="abort">aborted: {_e(abort)}</p>' if abort else "",
            f'<p class="failed">{len(unconfirmed)} device(s) did not confirm the {what}</p>'
            if unconfirmed
            else "",
            f'<p class="failed" id="undo-refused">{status["undo_refused"]["count"]} device(s) '
            "refused the rollback (nothing to undo, or superseded) and still show the change"
            "</p>"
            if refused
            else "",
            f'<h2>Spec</h2><dl class="spec">{_spec_rows(spec)}</dl><h2>Waves</h2>',
            _table("waves", ["wave", "size", "state", *GROUPS], wave_rows),
            f'<h2>Timeline</h2><div id="timeline"><div class="legend">{legend}',
            '<span class="pass">&#9482; gate pass</span><span class="abort">&#9482; abort</span>',
            f"</div>{''.join(figures)}</div><h2>Gate decisions</h2>",
            _table("gate-decisions", ["time", "wave", "kind", "transition", "reason"], gate_rows),
            "" if gate_rows else '<p class="muted">no gate decision yet</p>',
            "<h2>Failed, timed out, unconfirmed and undo-refused devices</h2>",
            _table(
                "failed-devices",
                ["device", "wave", "state", "reason", "detail", "last logged cause"],
                rows,
            ),
            f'<p class="muted">and {len(devices) - TABLE_LIMIT} more</p>'
            if len(devices) > TABLE_LIMIT
            else "",
            "" if devices else '<p class="muted">none</p>',
            "</body></html>\n",
        ]
    )
