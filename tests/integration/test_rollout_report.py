"""`rollout report` against a real Redis: an aborted, rolled-back rollout as one HTML page,
checked as text and as the DOM headless Chromium builds from it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.bootstrap import Container
from orchestrator.cli.report import report
from orchestrator.domain.gate import GateInput, GatePolicy, Verdict, evaluate_gate
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec, parse_selector, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import AuditEntry, Change, WaveChange
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    RolloutState,
    WaveState,
    sources_of,
)
from orchestrator.services.report import rollout_report

pytestmark = pytest.mark.integration

RID = "ro-20261125-120000-beef"
T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
DEVICES = [f"dev-{i:02d}" for i in range(30)]
WAVES = [DEVICES[:3], DEVICES[3:12], DEVICES[12:]]
HEALTH_FAILED, COMMITTED_1, STUCK, TIMED_OUT = DEVICES[3:6], DEVICES[6:10], "dev-10", "dev-11"
HOSTILE = '<script>alert("x")</script> & co'
SPEC = RolloutSpec(
    kind="trust.replace",
    ca_pems=("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",),
    tag=42,
    spare_tag=43,
    probe_host="broker.example.net",
    probe_port=8883,
    waves=parse_waves("10%,40%,100%"),
    bake_seconds=30,
    max_failure=0.1,
    min_sample=10,
    device_timeout_seconds=20,
    selector=parse_selector("all"),
    name="<b>q4 rotation</b>",
)
EXPECTED_FAILED = {
    **dict.fromkeys(HEALTH_FAILED, ("1", "health_failed", "unknown_ca")),
    TIMED_OUT: ("1", "timed_out", "no decision before the device timeout"),
    STUCK: ("1", "rollback_sent", "rollback not confirmed"),
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _allowed(new: str) -> frozenset[DeviceRolloutState]:
    return sources_of(DeviceRolloutState(new))


def _move(
    store: RedisRollouts, devices: Sequence[str], new: str, seconds: float, actor: str = "device"
) -> None:
    cause = {
        "sent": "stage bundle issued",
        "rollback_sent": "rollback bundle issued",
        "timed_out": "no decision before the device timeout",
    }.get(new, f"report {new}/ok seq 7")
    moves = [
        DeviceTransition(
            device_id=d, new=DeviceRolloutState(new), allowed=_allowed(new), cause=cause
        )
        for d in devices
    ]
    results = store.transition(RID, moves, now=at(seconds), actor=actor)
    assert all(r.applied for r in results), results


def _meta(
    store: RedisRollouts,
    seconds: float,
    fields: Change,
    *,
    actor: str,
    subject: str,
    change: tuple[str, str],
    cause: str,
) -> None:
    """Update meta with a log entry, as the engine does (a wave's subject is its index)."""
    entry = AuditEntry(
        time=at(seconds),
        actor=actor,
        kind="rollout" if subject == RID else "wave",
        subject=subject,
        old=change[0],
        new=change[1],
        cause=cause,
    )
    assert store.change(RID, replace(fields, entries=(entry,)))


def _report(
    device: str, phase: str, reason: str, seconds: float, rollout: str = RID
) -> DeviceReport:
    detail = f"probe broker.example.net:8883: {HOSTILE}" if reason == "unknown_ca" else ""
    return DeviceReport(
        device_id=device,
        rollout_id=rollout,
        seq=7,
        op="stage",
        phase=phase,
        reason=reason,
        detail=detail,
        time=at(seconds),
    )


def _gate_reason(store: RedisRollouts, wave: int, verdict: Verdict) -> str:
    """The gate's own sentence for the counts in the store now."""
    counts = store.wave_counts(RID, wave + 1)
    total: dict[str, int] = {}
    for c in counts:
        for state, n in c.items():
            total[state] = total.get(state, 0) + n
    decision = evaluate_gate(
        GatePolicy(max_failure=0.1, min_sample=10),
        GateInput(wave_size=len(WAVES[wave]), wave_counts=counts[wave], cumulative_counts=total),
    )
    assert decision.verdict is verdict, decision
    return decision.reason


@pytest.fixture
def aborted(container: Container) -> str:
    """30 devices in 3 waves: wave 0 passes, wave 1 aborts (3 health_failed, 1 timed out),
    one device never confirms the rollback, wave 2 never starts."""
    store = container.rollouts
    store.create(
        Rollout.planned(RID, SPEC, seed="q4", sizes=[len(w) for w in WAVES], now=T0),
        waves=WAVES,
        active={d: [42] for d in DEVICES},
        actor="cli",
    )
    _meta(
        store,
        1,
        Change(state=RolloutState.RUNNING),
        actor="cli",
        subject=RID,
        change=("created", "running"),
        cause="start",
    )
    _meta(
        store,
        2,
        Change(waves={0: WaveChange(state=WaveState.RUNNING)}),
        actor="engine",
        subject="0",
        change=("pending", "running"),
        cause="wave started",
    )
    _move(store, WAVES[0], "sent", 3, actor="worker")
    for seconds, state in ((5, "received"), (8, "staged"), (12, "health_ok"), (15, "committed")):
        _move(store, WAVES[0], state, seconds)
    _meta(
        store,
        16,
        Change(waves={0: WaveChange(state=WaveState.BAKING)}),
        actor="gate",
        subject="0",
        change=("running", "baking"),
        cause=_gate_reason(store, 0, Verdict.PASS),
    )
    _meta(
        store,
        46,
        Change(current=1, waves={0: WaveChange(state=WaveState.PASSED)}),
        actor="tick",
        subject="0",
        change=("baking", "passed"),
        cause="bake time over",
    )
    _meta(
        store,
        47,
        Change(waves={1: WaveChange(state=WaveState.RUNNING)}),
        actor="engine",
        subject="1",
        change=("pending", "running"),
        cause="wave started",
    )
    _move(store, WAVES[1], "sent", 48, actor="worker")
    _move(store, WAVES[1], "received", 52)
    _move(store, WAVES[1], "staged", 56)
    for n, device in enumerate(HEALTH_FAILED):
        _move(store, [device], "health_failed", 60 + 2 * n)
    _move(store, [*COMMITTED_1, STUCK], "health_ok", 66)
    _move(store, COMMITTED_1, "committed", 70)
    _move(store, [TIMED_OUT], "timed_out", 76, actor="tick")
    cause = "gate: " + _gate_reason(store, 1, Verdict.ABORT)
    _meta(
        store,
        77,
        Change(
            state=RolloutState.ROLLING_BACK,
            abort_reason=cause,
            waves={1: WaveChange(state=WaveState.FAILED)},
        ),
        actor="gate",
        subject=RID,
        change=("running", "aborted"),
        cause=cause,
    )
    _meta(
        store,
        77,
        Change(),
        actor="gate",
        subject=RID,
        change=("aborted", "rolling_back"),
        cause="rollback started",
    )
    rollback = [*WAVES[0], *COMMITTED_1, STUCK]
    _move(store, rollback, "rollback_sent", 78, actor="worker")
    for n, device in enumerate(d for d in rollback if d != STUCK):
        _move(store, [device], "rolled_back", 80 + n)
    _meta(
        store,
        98,
        Change(state=RolloutState.ROLLED_BACK, unconfirmed=(STUCK,)),
        actor="tick",
        subject=RID,
        change=("rolling_back", "rolled_back"),
        cause="1 devices did not confirm the rollback in time",
    )
    _meta(
        store,
        98,
        Change(finished_at=at(98)),
        actor="tick",
        subject=RID,
        change=("", "rolled_back"),
        cause="claims released",
    )
    failures = [
        _report(d, "health_failed", "unknown_ca", 60 + 2 * n) for n, d in enumerate(HEALTH_FAILED)
    ]
    container.inventory.record_reports(
        [
            *(_report(d, "staged", "ok", 56) for d in HEALTH_FAILED),
            *failures,
            _report(STUCK, "health_ok", "ok", 66),
            # a later report about another rollout is not this rollout's reason
            _report(HEALTH_FAILED[0], "rejected", "expired", 500, rollout="ro-other"),
        ]
    )
    return RID


# -- reading the page back ----------------------------------------------------------------

VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr"})


@dataclass
class Node:
    """An element of a parsed page: its text and child elements, in order."""

    tag: str
    attrs: dict[str, str]
    items: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for item in self.items:
            if isinstance(item, Node):
                yield from item.walk()

    def by_id(self, element_id: str) -> Node:
        found = [n for n in self.walk() if n.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def all(self, *tags: str) -> list[Node]:
        return [n for n in self.walk() if n.tag in tags and n is not self]

    def content(self) -> str:
        text = (i if isinstance(i, str) else i.content() for i in self.items)
        return " ".join(" ".join(text).split())

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].items.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].items.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].items.append(data)


def parse(page: str) -> Node:
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root


def failed_rows(page: Node) -> dict[str, list[str]]:
    """device -> the cells of its row in the failed-devices table."""
    rows = page.by_id("failed-devices").all("tbody")[0].all("tr")
    cells = [[td.content() for td in row.all("td")] for row in rows]
    return {c[0]: c for c in cells}


def check_failed_rows(page: Node) -> None:
    rows = failed_rows(page)
    assert sorted(rows) == sorted(EXPECTED_FAILED)
    for device, (wave, state, reason) in EXPECTED_FAILED.items():
        _, shown_wave, shown_state, *rest = rows[device]
        assert (shown_wave, shown_state.split()[0]) == (wave, state), rows[device]
        assert reason in " ".join([shown_state, *rest]), rows[device]


def check_timeline(page: Node) -> None:
    timeline = page.by_id("timeline")
    for index in range(len(WAVES)):
        svg = timeline.by_id(f"timeline-wave-{index}")
        assert svg.tag == "svg"
        assert svg.all("path", "polygon", "rect"), f"wave {index} draws nothing"


# -- the tests ----------------------------------------------------------------------------


def test_report_names_the_failing_wave_and_every_failed_device_with_its_reason(
    container: Container, aborted: str
) -> None:
    """The failed wave is marked, and each failed, timed-out or unconfirmed device has a row."""
    # given an aborted, rolled-back rollout
    # when it is rendered
    page = parse(rollout_report(container.rollout_deps(), container.inventory, aborted))
    # then wave 1 is the one marked failed, with the gate's reason for the abort
    waves = page.by_id("waves").all("tbody")[0].all("tr")
    assert ["failed" in row.classes() for row in waves] == [False, True, False]
    assert "failed" in waves[1].content()
    assert "3 failures over a budget of 1.2" in page.content()
    # and every device that failed, timed out or kept the rollback unconfirmed is listed
    check_failed_rows(page)
    assert "expired" not in page.by_id("failed-devices").content()


def test_report_lists_the_gate_decisions_with_their_numbers(
    container: Container, aborted: str
) -> None:
    """The gate's pass of wave 0 and its abort in wave 1 are listed with their reasons."""
    # given an aborted rollout
    # when it is rendered
    page = parse(rollout_report(container.rollout_deps(), container.inventory, aborted))
    # then the gate's transitions are there in time order, with their waves and numbers
    rows = [
        [td.content() for td in row.all("td")]
        for row in page.by_id("gate-decisions").all("tbody")[0].all("tr")
    ]
    assert [(r[1], r[3]) for r in rows] == [
        ("0", "running → baking"),
        ("1", "running → aborted"),
        ("1", "aborted → rolling_back"),
    ]
    assert "3 of 3 decided" in rows[0][4]
    assert "3 failures over a budget of 1.2 (10% of max(12 started, min sample 10))" in rows[1][4]


def test_timeline_replays_each_wave_from_the_audit_log(container: Container, aborted: str) -> None:
    """Each wave gets a chart whose areas are the state groups its devices went through."""
    # given an aborted rollout whose wave 2 never started
    # when it is rendered
    page = parse(rollout_report(container.rollout_deps(), container.inventory, aborted))
    # then each wave's chart draws the groups its devices passed through, plus the markers
    check_timeline(page)

    def areas(index: int) -> set[str]:
        svg = page.by_id(f"timeline-wave-{index}")
        return {c for p in svg.all("path") for c in p.classes()} - {"area"}

    assert areas(0) == {"area-pending", "area-in-flight", "area-committed", "area-rollback"}
    assert areas(1) >= {"area-failed", "area-timed_out", "area-rollback", "area-committed"}
    assert areas(2) == {"area-pending"}
    markers = page.by_id("timeline-wave-1").all("g")
    assert [m.attrs["class"] for m in markers] == ["marker-pass", "marker-abort"]


def test_report_escapes_what_devices_and_specs_send(container: Container, aborted: str) -> None:
    """Markup in a device's report detail or in the spec stays text."""
    # given reports whose detail holds a script tag, and a spec name with markup
    # when the rollout is rendered
    html = rollout_report(container.rollout_deps(), container.inventory, aborted)
    # then neither is markup in the page, and both read back as the text they were
    assert "<script" not in html
    assert "<b>" not in html
    page = parse(html)
    assert HOSTILE in page.by_id("failed-devices").content()
    assert "<b>q4 rotation</b>" in page.content()
    assert not page.all("script", "b", "link", "img", "iframe")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_cli_writes_the_report_and_prints_its_path(
    container: Container, aborted: str, tmp_path: Path
) -> None:
    """`rollout report ID --html FILE` writes the page and prints where; unknown ids fail."""
    # given the command, as `certfleet rollout report`
    app = typer.Typer()
    app.command()(report)
    target = tmp_path / "report.html"
    # when it runs for the rollout and for an unknown one
    done = CliRunner().invoke(app, [aborted, "--html", str(target)])
    unknown = CliRunner().invoke(app, ["ro-nope", "--html", str(tmp_path / "x.html")])
    missing = CliRunner().invoke(app, [aborted])
    # then the page is written and its path printed; the others fail without a file
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(target)
    check_failed_rows(parse(target.read_text(encoding="utf-8")))
    assert unknown.exit_code == 1
    assert "no rollout 'ro-nope'" in unknown.stderr
    assert not (tmp_path / "x.html").exists()
    assert missing.exit_code == 2


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium; CI has it)"
)
def test_chromium_renders_the_timeline_and_the_failed_devices(
    container: Container, aborted: str, tmp_path: Path
) -> None:
    """Headless Chromium, offline, builds a DOM with a chart per wave and the failed rows."""
    # given the report as a file
    page = tmp_path / "report.html"
    page.write_text(
        rollout_report(container.rollout_deps(), container.inventory, aborted), encoding="utf-8"
    )
    shot = tmp_path / "report.png"
    # when headless Chromium loads it, dumping its DOM and taking a screenshot
    flags = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    subprocess.run(
        [*flags, "--window-size=1000,1800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    # then its DOM has the timeline with drawn areas for every wave and the failed rows
    built = parse(dom)
    check_timeline(built)
    check_failed_rows(built)
    assert built.by_id("timeline-wave-1").all("g"), "the gate markers"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
