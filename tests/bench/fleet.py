"""What the benchmarks' fleets report: one CA chain item in sec_tag 42 per device."""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState

__all__ = ["reported_states"]


def reported_states(prefix: str, devices: int, *, now: datetime) -> list[DeviceState]:
    """`devices` states `{prefix}NNNNNNN`, each holding a CA expiring in 20 days, active [42]."""
    ca = ReportedCredential(
        sec_tag=42,
        type=CredentialType.CA_CHAIN,
        sha256="ab" * 32,
        not_after=now + timedelta(days=20),
        subject="CN=Fleet CA 2025,O=certfleet",
        issuer="CN=Fleet CA 2025,O=certfleet",
    )
    return [
        DeviceState(
            device_id=f"{prefix}{n:07d}", reported_at=now, credentials=(ca,), active_tags=(42,)
        )
        for n in range(devices)
    ]
