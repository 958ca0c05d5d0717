"""What the device said, as the suite heard it: its state and report messages, validated.

Every message is kept with the problem the contract finds in it (schema, topic,
size), so a step fails on a malformed message instead of the suite crashing on it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.conformance.model import Trust
from orchestrator.protocol.limits import TAG_LIST_MAX
from orchestrator.protocol.report import parse_report
from orchestrator.protocol.state import RejectedMessageError, parse_state

__all__ = ["Heard", "Inbox", "trust_of", "trust_problems"]


@dataclass(frozen=True, slots=True)
class Heard:
    """One message: its JSON document (None if unreadable) and what is wrong with it."""

    document: dict[str, Any] | None
    problem: str = ""

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the document."""
        return default if self.document is None else self.document.get(key, default)


def trust_of(state: dict[str, Any]) -> Trust:
    """The trust a state message reports."""
    items: dict[tuple[int, int], str] = {}
    for entry in state.get("credentials") or ():
        items[(int(entry["sec_tag"]), int(entry["type"]))] = str(entry["sha256"])
    identity = state.get("identity_tag")
    return Trust(
        items=items,
        active=tuple(state.get("active_tags") or ()),
        identity=identity if isinstance(identity, int) and not isinstance(identity, bool) else None,
    )


def trust_problems(trust: Trust) -> list[str]:
    """How this trust set could leave the device dark: the invariants of contract v2."""
    problems = []
    if not trust.active:
        problems.append("the active list is empty")
    if len(trust.active) > TAG_LIST_MAX or len(set(trust.active)) != len(trust.active):
        problems.append(f"the active list {list(trust.active)} is not {TAG_LIST_MAX} distinct tags")
    empty = [tag for tag in trust.active if (tag, 0) not in trust.items]
    if empty:
        problems.append(f"active tags {empty} hold no CA chain item")
    if trust.identity is not None:
        problems.extend(_identity_problems(trust, trust.identity))
    return problems


def _identity_problems(trust: Trust, identity: int) -> list[str]:
    """The identity invariants: a tag of its own, holding a certificate and its key."""
    problems = []
    if identity in trust.active:
        problems.append(f"the identity tag {identity} is in the active list")
    if len(trust.active) > TAG_LIST_MAX - 1:
        problems.append(
            f"the active list {list(trust.active)} with the identity tag is over "
            f"{TAG_LIST_MAX} tags"
        )
    missing = [kind for kind in (1, 2) if (identity, kind) not in trust.items]
    if missing:
        problems.append(f"the identity tag {identity} holds no item of type {missing}")
    return problems


@dataclass
class Inbox:
    """The device's messages in arrival order; `wait` sleeps until one more comes."""

    device_id: str
    states: list[Heard] = field(default_factory=list)
    reports: list[Heard] = field(default_factory=list)
    _news: asyncio.Event = field(default_factory=asyncio.Event)

    def hear(self, channel: str, payload: bytes) -> None:
        """Record one message of `channel` (`state` or `report`)."""
        parse = parse_state if channel == "state" else parse_report
        problem = ""
        try:
            parse(payload, topic_device_id=self.device_id)
        except RejectedMessageError as exc:
            problem = f"{channel} message refused by the contract: {exc}"
        try:
            document = json.loads(payload)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            document = None
        heard = Heard(document, problem)
        (self.states if channel == "state" else self.reports).append(heard)
        self._news.set()

    def latest_state(self) -> Heard | None:
        """The last state message whose document could be read."""
        for heard in reversed(self.states):
            if heard.document is not None and not heard.problem:
                return heard
        return None

    async def wait(self, until: Callable[[], bool], timeout: float) -> bool:
        """Wait until `until()` holds (checked on every message) or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._news.clear()
            try:
                await asyncio.wait_for(self._news.wait(), timeout=remaining)
            except TimeoutError:
                return until()
        return True
