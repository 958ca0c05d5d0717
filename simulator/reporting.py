"""What a simulated device tells: its reports, those waiting for a connection, and publishing.

The firmware decides; this module words and sends. Each publish is a step of the
device's `Fuse`, so a power cut can fall between a report and the flash write after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal, Protocol

from orchestrator.protocol import Topics
from orchestrator.protocol.bundle import Bundle, Reason
from orchestrator.protocol.report import Phase, ReportMessage, truncate_detail

__all__ = ["Link", "Reporter"]


class Link(Protocol):
    """What the firmware publishes through: an MQTT connection (QoS 1, PUBACK awaited)."""

    async def publish(self, topic: str, payload: bytes, qos: int = ...) -> None:
        """Publish and return once the broker acknowledged."""


class Reporter:
    """One device's reports: every one made (`reports`), and those queued for a connection."""

    def __init__(
        self,
        device_id: str,
        *,
        topics: Topics,
        clock: Callable[[], datetime],
        version: int,
        step: Callable[[str], None],
    ) -> None:
        self.device_id = device_id
        self.topics = topics
        self.version = version
        self.reports: list[ReportMessage] = []
        """Every report the device made, in order."""
        self.outbox: list[ReportMessage] = []
        """Reports made while offline, published on the next connect."""
        self._clock = clock
        self._step = step

    def report(
        self,
        bundle: Bundle | None,
        phase: Phase,
        reason: Reason = Reason.OK,
        detail: str = "",
        *,
        active: Sequence[int],
        seq: int = 0,
        rollout_id: str = "",
        op: str | None = None,
        csr: str | None = None,
    ) -> ReportMessage:
        """A report about `bundle` (or, refused unread, about the ids given), kept in order."""
        report = ReportMessage(
            v=1 if self.version == 1 else 2,
            device_id=self.device_id,
            rollout_id=bundle.rollout_id if bundle else rollout_id,
            seq=bundle.seq if bundle else seq,
            op=bundle.op if bundle else op,
            phase=phase,
            reason=reason,
            detail=truncate_detail(detail),
            time=self._clock(),
            active_tags=list(active),
            csr=csr,
        )
        self.reports.append(report)
        return report

    async def publish(
        self, link: Link, payload: bytes, channel: Literal["state", "report"]
    ) -> None:
        """Publish on the device's `channel` topic, QoS 1."""
        topic = (
            self.topics.report(self.device_id)
            if channel == "report"
            else self.topics.state(self.device_id)
        )
        self._step(f"publish {channel}")
        await link.publish(topic, payload, qos=1)

    async def send(self, link: Link, report: ReportMessage) -> None:
        """Publish one report now."""
        await self.publish(link, report.to_json(), "report")

    async def flush(self, link: Link) -> None:
        """Publish the queued reports, in order; one that fails stays queued."""
        while self.outbox:
            await self.send(link, self.outbox[0])
            self.outbox.pop(0)
