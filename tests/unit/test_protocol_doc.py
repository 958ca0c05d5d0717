"""docs/protocol.md describes every phase and reason code the code uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.protocol.bundle import OPERATIONS, Reason
from orchestrator.protocol.report import Phase
from orchestrator.protocol.state import RejectReason

pytestmark = pytest.mark.unit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize("code", [*Phase, *Reason, *RejectReason, *OPERATIONS], ids=str)
def test_every_code_is_documented(code: str) -> None:
    """Each phase, reason, state-rejection reason and operation appears as `code` in the doc."""
    # then
    assert f"`{code}`" in DOC


def test_the_doc_names_no_code_the_protocol_lacks() -> None:
    """Every code in the reason table is one the device can send."""
    # given
    table = DOC.split("| reason | phase | meaning |")[1].split("\n\n")[0]
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    # then
    assert documented == {reason.value for reason in Reason}
