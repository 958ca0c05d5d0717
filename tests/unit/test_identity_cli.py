"""`certfleet rollout` for identity.rotate: the tags from CERTFLEET_IDENTITY_TAGS, the probe
required, and the status table's identity columns."""

from __future__ import annotations

import pytest
import typer
from rich.console import Console

from orchestrator.cli.rollout import _spec
from orchestrator.cli.rollout_view import status_table
from orchestrator.domain.rollout_states import DeviceRolloutState

pytestmark = pytest.mark.unit


def test_the_identity_tags_default_to_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --tag/--spare-tag: A -> B of CERTFLEET_IDENTITY_TAGS; --tag B alone: B -> A."""
    monkeypatch.setenv("CERTFLEET_IDENTITY_TAGS", "50,51")
    spec = _spec(None, kind="identity.rotate", probe="broker:8884")
    assert (spec.tag, spec.spare_tag, spec.ca_pems) == (50, 51, ())
    back = _spec(None, kind="identity.rotate", probe="broker:8884", tag=51)
    assert (back.tag, back.spare_tag) == (51, 50)


def test_an_identity_rollout_needs_its_probe() -> None:
    """The broker's mutual-TLS listener is the probe: without it the spec is refused."""
    with pytest.raises(typer.Exit):
        _spec(None, kind="identity.rotate")


def _counts(**given: int) -> dict[str, int]:
    return {s.value: given.get(s.value, 0) for s in DeviceRolloutState}


def test_the_status_table_of_an_identity_rollout_shows_its_states() -> None:
    """csr, issued, committed (waiting to retire), retired and csr_refused are columns; a
    committed device is still in flight until it retired."""
    status = {
        "id": "ro-2",
        "kind": "identity.rotate",
        "state": "running",
        "waves": [
            {
                "index": 0,
                "size": 10,
                "state": "baking",
                "counts": _counts(csr=1, issued=2, committed=3, retired=3, csr_refused=1),
            }
        ],
    }
    console = Console(width=240, record=True)
    console.print(status_table(status))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "wave" in line and "size" in line)
    for column in ("csr", "issued", "committed", "retired", "csr_refused"):
        assert f" {column} " in header
    row = next(line for line in text.splitlines() if line.strip().startswith("│ 0"))
    assert row.split("│")[-2].strip() == "6"


def test_an_identity_rollout_does_not_select_by_ca_digest() -> None:
    """digest:SHA256 names a CA chain; an identity rotation selects by its identity tag."""
    with pytest.raises(typer.Exit):
        _spec(None, kind="identity.rotate", probe="broker:8884", select="digest:" + "ab" * 32)
