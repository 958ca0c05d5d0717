"""Small builders of device reports shared by the unit tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState

__all__ = ["NOW", "credential", "digest", "entry", "state", "state_payload"]

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
"""The instant the unit tests treat as now."""


def digest(label: str) -> str:
    """A valid sha256 hex digest derived from a readable label."""
    return sha256_hex(label.encode())


def credential(
    sec_tag: int,
    *,
    cred_type: CredentialType = CredentialType.CA_CHAIN,
    sha256: str | None = None,
    not_after: datetime | None = None,
    subject: str | None = None,
) -> ReportedCredential:
    """A reported credential; certificates get a subject and digest unless given."""
    return ReportedCredential(
        sec_tag=sec_tag,
        type=cred_type,
        sha256=sha256 or digest(f"{sec_tag}:{int(cred_type)}:{not_after}"),
        not_after=not_after,
        subject=subject,
    )


def state(
    device_id: str, *credentials: ReportedCredential, reported_at: datetime = NOW
) -> DeviceState:
    """One device's report."""
    return DeviceState(device_id=device_id, reported_at=reported_at, credentials=credentials)


def entry(sec_tag: object = 42, **fields: Any) -> dict[str, Any]:
    """A state-message credential entry as JSON; `fields` override the defaults."""
    document: dict[str, Any] = {
        "sec_tag": sec_tag,
        "type": 0,
        "sha256": digest(f"ca-{sec_tag}"),
        "not_after": "2026-01-01T00:00:00+00:00",
        "subject": "CN=Root",
        "issuer": "CN=Root",
    }
    document.update(fields)
    return document


def state_payload(
    device_id: str = "dev-1",
    *,
    time: str = "2025-06-01T12:00:00+00:00",
    credentials: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> bytes:
    """A state message's wire bytes; `fields` add or override top-level keys."""
    document: dict[str, Any] = {
        "v": 1,
        "device_id": device_id,
        "time": time,
        "credentials": [entry()] if credentials is None else credentials,
    }
    document.update(fields)
    return json.dumps(document).encode()
