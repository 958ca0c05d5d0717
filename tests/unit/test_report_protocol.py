"""The report message's wire rules: its `time` is an RFC 3339 string, as the state's is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.protocol.report import parse_report
from orchestrator.protocol.state import RejectedMessageError, RejectReason

pytestmark = pytest.mark.unit


def _report(**fields: Any) -> bytes:
    document: dict[str, Any] = {
        "v": 1,
        "device_id": "dev-1",
        "rollout_id": "ro-1",
        "seq": 3,
        "op": "stage",
        "phase": "received",
        "reason": "ok",
        "time": "2026-12-01T12:00:00Z",
    }
    document.update(fields)
    return json.dumps(document).encode()


def test_a_report_with_an_rfc3339_time_parses() -> None:
    """The valid form: an RFC 3339 date-time with its offset."""
    report = parse_report(_report(), topic_device_id="dev-1")
    assert report.time.isoformat() == "2026-12-01T12:00:00+00:00"


@pytest.mark.parametrize(
    "time",
    [1e10, 1764590400, "1764590400", "2026-12-01 12:00:00Z", "2026-12-01", "2026-12-01T12:00:00"],
    ids=["float", "int", "numeric-string", "space", "date-only", "no-offset"],
)
def test_a_report_time_that_is_not_rfc3339_is_refused(time: object) -> None:
    """A numeric or offset-less `time` is a schema refusal, as for the state message."""
    with pytest.raises(RejectedMessageError) as refused:
        parse_report(_report(time=time), topic_device_id="dev-1")
    assert refused.value.reason is RejectReason.SCHEMA
