"""Renewal plans as the renewal service stores them, shared by the plan tests."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from orchestrator.domain.renewal import RenewalPlan
from tests.unit.builders import NOW

__all__ = ["ADDING_DOCUMENT", "plan"]

ADDING_DOCUMENT = (
    '{"id": "plan-20250601-120000-ab12", "event": "certificate.renewed", '
    '"created_at": "2025-06-01T12:00:00+00:00", "endpoints": ["mqtt.example.com:8883"], '
    '"staging_endpoint": "127.0.0.1:9443", "cutover_at": "2025-06-03T00:00:00+02:00", '
    '"chain": {"anchor_subject": "CN=CA 2026", "anchor_not_after": "2027-06-01T12:00:00+00:00", '
    '"hosts": ["mqtt.example.com"], "chain_bytes": 1876, "leaf_sha256": "' + "ab" * 32 + '", '
    '"not_yet_valid_until": null}, "anchor_pem": "-----BEGIN CERTIFICATE-----\\nMIIB\\n'
    '-----END CERTIFICATE-----\\n", "impact": {"counts": {"safe": 1, "at_risk": 2, '
    '"unknown": 0}, "safe": ["dev-0"], "at_risk": ["dev-1", "dev-2"], "unknown": [], '
    '"truncated": false}, "add_rollout": "r-20250601-1", "retire_rollout": null, '
    '"state": "adding", "old_tag": 42, "new_tag": 43}'
)
"""A trust.add plan exactly as the renewal service wrote it before plans were typed."""


def plan(plan_id: str = "plan-1", *, minutes: int = 0, **fields: Any) -> RenewalPlan:
    """The adding plan above under another id, made `minutes` later, with `fields` changed."""
    document: dict[str, Any] = json.loads(ADDING_DOCUMENT)
    created = NOW + timedelta(minutes=minutes)
    document.update(id=plan_id, created_at=created.isoformat())
    return replace(RenewalPlan.from_json(document), **fields)
