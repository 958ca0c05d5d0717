"""`make demo` knows a rollout that completed with timeouts and shows its unconfirmed devices;
it opens its console with a fresh operator and viewer token and waits for Enter only on a
terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from orchestrator.config import ApiToken, parse_api_tokens
from orchestrator.domain.rollout_states import RolloutState
from simulator import demo
from simulator.demo import COMPLETED, ConsoleAccess, _outcome, _summary_row, hold_until_enter

pytestmark = pytest.mark.unit

WITH_TIMEOUTS: dict[str, Any] = {
    "id": "r-good",
    "kind": "trust.add",
    "state": "completed_with_timeouts",
    "totals": {
        "pending": 0,
        "committed": 43,
        "timed_out": 2,
        "rejected": 0,
        "health_failed": 0,
        "fallback": 0,
        "rolled_back": 0,
    },
    "unconfirmed": ["legacy-00003", "legacy-00017"],
}


def test_completed_with_timeouts_is_a_completed_rotation_that_says_how_many() -> None:
    """The renewal rotation accepts both completions and names the unconfirmed count."""
    assert set(COMPLETED) == {
        RolloutState.COMPLETED.value,
        RolloutState.COMPLETED_WITH_TIMEOUTS.value,
    }
    assert _outcome(WITH_TIMEOUTS) == "completed_with_timeouts (2 unconfirmed)"
    assert _outcome({"state": "completed", "totals": {}}) == "completed"


def test_the_summary_shows_the_unconfirmed_devices() -> None:
    """The summary line counts the devices that never confirmed beside the failed ones."""
    row = _summary_row(WITH_TIMEOUTS)

    # rollout, kind, state, devices, committed, failed, unconfirmed, rolled back, reason
    assert row == ("r-good", "trust.add", "completed_with_timeouts", "45", "43", "2", "2", "0", "-")


def test_a_status_without_unconfirmed_devices_shows_none() -> None:
    """A rolled-back rollout's line has no unconfirmed devices and its abort reason."""
    status = {
        **WITH_TIMEOUTS,
        "state": "rolled_back",
        "totals": {"committed": 0, "health_failed": 3, "rolled_back": 3},
        "abort_reason": "gate: 3 of 3 failed",
    }
    del status["unconfirmed"]

    row = _summary_row(status)

    assert row[2:] == ("rolled_back", "6", "0", "3", "0", "3", "gate: 3 of 3 failed")


class TerminalInput(io.StringIO):
    """Lines typed on a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the demo prints on its console (stderr)."""
    text = io.StringIO()
    monkeypatch.setattr(demo, "console", Console(file=text, width=200))
    return text


ACCESS = ConsoleAccess(port=18080, operator_token="op-SECRET-1", viewer_token="view-SECRET-2")


def test_the_console_gets_a_fresh_operator_and_viewer_token() -> None:
    """The api's token setting names an operator and a viewer, made new on every run."""
    access = demo.console_access()

    tokens = parse_api_tokens(access.api_tokens)

    assert tokens == [
        ApiToken("demo-operator", access.operator_token, "operator"),
        ApiToken("demo-viewer", access.viewer_token, "viewer"),
    ]
    assert access.url == f"http://127.0.0.1:{access.port}/"
    again = demo.console_access()
    assert {again.operator_token, again.viewer_token}.isdisjoint(
        {access.operator_token, access.viewer_token}
    )


def test_off_a_terminal_the_demo_prints_the_console_and_does_not_wait(
    printed: io.StringIO,
) -> None:
    """In CI or a pipe the demo reads nothing from stdin and stops at once."""
    stdin = io.StringIO("\n")

    waited = hold_until_enter(stdin, ACCESS)

    assert waited is False
    assert stdin.tell() == 0
    shown = printed.getvalue()
    for text in ("http://127.0.0.1:18080/", "op-SECRET-1", "view-SECRET-2"):
        assert text in shown


def test_on_a_terminal_the_demo_waits_for_one_enter(printed: io.StringIO) -> None:
    """On a terminal the demo shows the console again and reads exactly one line."""
    stdin = TerminalInput("\nnot read\n")

    waited = hold_until_enter(stdin, ACCESS)

    assert waited is True
    assert stdin.readline() == "not read\n"
    shown = printed.getvalue()
    assert "Press Enter" in shown
    assert "http://127.0.0.1:18080/" in shown


def test_on_a_terminal_at_end_of_input_the_demo_stops(printed: io.StringIO) -> None:
    """Ctrl-D (an empty read) ends the wait as Enter does."""
    assert hold_until_enter(TerminalInput(""), ACCESS) is True


def test_the_demo_says_what_its_root_key_signs() -> None:
    """The root key's id and its job: delegations only, the workers' keys sign the bundles."""
    story = demo.signing_story("0123456789abcdef", demo.WORKDIR / "signing-key.pem")

    assert "0123456789abcdef" in story
    assert "signing-key.pem" in story
    assert "PKCS#11" in story
    assert "delegation" in story


def test_the_demo_reads_the_root_signatures_from_metrics() -> None:
    """Both purposes from Prometheus text, other metrics and comments ignored."""
    text = (
        "# HELP certfleet_root_signatures_total Signatures made with the root key.\n"
        "# TYPE certfleet_root_signatures_total counter\n"
        'certfleet_root_signatures_total{purpose="delegation"} 2.0\n'
        'certfleet_root_signatures_total{purpose="bundle"} 0.0\n'
        'certfleet_rollouts{state="completed"} 1.0\n'
    )

    assert demo.root_signatures(text) == {"delegation": 2, "bundle": 0}
    assert demo.root_signatures("") == {}
