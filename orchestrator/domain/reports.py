"""What devices report about the bundles they handle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["DeviceReport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceReport:
    """One device report: the bundle it is about, the phase reached, and why."""

    device_id: str
    rollout_id: str
    seq: int
    op: str | None
    phase: str
    reason: str
    detail: str
    time: datetime
    active_tags: tuple[int, ...] | None = None
    csr: str | None = None
    """With phase `csr`: the modem's `%KEYGEN` output, CSR and attestation in base64url."""
