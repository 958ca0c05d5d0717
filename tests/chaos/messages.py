"""Hostile device messages, and the outcome the listener must give each one.

A seeded generator makes malformed, oversized, forged and replayed messages on the
state and report topics of a small fleet that a pending `trust.replace` rollout
targets. Each message has the outcome the listener must give it:

- `rejected:<reason>`: refused unread, counted under its reason in
  `certfleet:inv:rejected` (`too_large`, `not_json`, `schema`, `topic_mismatch`,
  `bad_topic`, `clock_skew`; a stale state with a bad pem: `pem_invalid`,
  `pem_too_large`);
- `unmatched:<reason>`: a well-formed report that answers no bundle issued to its
  device (a forged `committed` for a pending device among them): recorded in the
  device's report log, counted in `certfleet_reports_unmatched_total`, never applied;
- `stale`: a replayed state older than the recorded one, which changes nothing;
- `duplicate`: a replayed report already recorded, which is recorded once.

`tests.chaos.listener_run` sends them to a real listener and judges what it did.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from simulator.fleet import device_id, provisioned_modem

__all__ = [
    "FLEET",
    "OUTSIDER",
    "TOPIC",
    "Generator",
    "MessageOutcome",
    "as_bytes",
    "seed_report",
    "seed_state",
]

TOPIC = "certfleet"
FLEET = 20
"""Genuine devices, all in the rollout."""
OUTSIDER = "dev-outsider"
"""A valid device id in no rollout."""


@dataclass
class MessageOutcome:
    """What a run of hostile messages did."""

    expected: Counter[str] = field(default_factory=Counter)
    """Outcome ('rejected:schema', 'unmatched:no_bundle', 'stale', ...) -> messages."""
    counted: Counter[str] = field(default_factory=Counter)
    """The same outcomes as Redis counted them."""
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.expected.values())


BEGIN, END = "-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _state(device: str, moment: datetime, ca_pem: bytes, **changes: Any) -> dict[str, Any]:
    """A device's state as the simulated firmware would send it, with fields changed."""
    modem = provisioned_modem(ca_pem, 42)
    entries = [
        json.loads(item.to_entry().model_dump_json(exclude_none=True)) for item in modem.items()
    ]
    document: dict[str, Any] = {
        "v": 1,
        "device_id": device,
        "time": _time(moment),
        "credentials": entries,
        "active_tags": [42],
    }
    document.update(changes)
    return document


def _report(  # noqa: PLR0917 -- a report's fields, in their wire order
    device: str, rollout: str, seq: int, op: str | None, phase: str, reason: str, moment: datetime
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "v": 1,
        "device_id": device,
        "rollout_id": rollout,
        "seq": seq,
        "phase": phase,
        "reason": reason,
        "detail": "",
        "time": _time(moment),
        "active_tags": [42],
    }
    if op is not None:
        document["op"] = op
    return document


def seed_state(device: str, now: datetime, ca_pem: bytes) -> dict[str, Any]:
    """The genuine state each device of the fleet sends before the run."""
    return _state(device, now - timedelta(seconds=10), ca_pem)


def seed_report(device: str, now: datetime) -> dict[str, Any]:
    """The genuine report each device sends before the run: it refused a stranger's bundle."""
    return _report(device, "", 0, None, "rejected", "unknown_key", now - timedelta(seconds=10))


def as_bytes(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class Generator:
    """Hostile (topic, payload, outcome) triples from a seeded generator."""

    def __init__(self, rng: random.Random, rollout: str, now: datetime, ca_pem: bytes) -> None:
        self.rng = rng
        self.rollout = rollout
        self.now = now
        self.ca_pem = ca_pem
        self.seq = 10**6

    def device(self) -> str:
        return device_id("dev-", self.rng.randrange(FLEET))

    def topic(self, device: str, channel: str) -> str:
        return f"{TOPIC}/{device}/{channel}"

    def genuine(self, channel: str) -> tuple[str, dict[str, Any]]:
        """A well-formed message of `channel` for one of the fleet, to mutate."""
        device = self.device()
        earlier = self.now - timedelta(days=1 + self.rng.randrange(300))
        if channel == "state":
            return device, _state(device, earlier, self.ca_pem)
        return device, _report(device, "", 0, None, "rejected", "unknown_key", earlier)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def oversized(self, channel: str) -> tuple[str, bytes, str]:
        device, document = self.genuine(channel)
        document["detail" if channel == "report" else "pad"] = "x" * (
            16 * 1024 + self.rng.randrange(50_000)
        )
        return self.topic(device, channel), as_bytes(document), "rejected:too_large"

    def not_json(self, channel: str) -> tuple[str, bytes, str]:
        device, document = self.genuine(channel)
        raw = as_bytes(document)
        payload = [
            raw[: self.rng.randrange(len(raw) - 1)],
            b"\xff" + bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(64))),
            b"[" * (2000 + self.rng.randrange(10_000)) + b"{",
            raw.replace(b'"', b"'", 1 + self.rng.randrange(3)),
        ][self.rng.randrange(4)]
        return self.topic(device, channel), payload, "rejected:not_json"

    def schema(self, channel: str) -> tuple[str, bytes, str]:
        device, document = self.genuine(channel)
        if channel == "state":
            changes: list[dict[str, Any]] = [
                {"time": 1e10},
                {"time": "2026-06-01 12:00:00"},
                {"credentials": None},
                {"active_tags": list(range(42, 50))},
                {"active_tags": [-1]},
                {"device_id": "bad id!"},
                {"extra": True},
                {"credentials": [dict(document["credentials"][0], sha256="A" * 64)]},
                {"credentials": [dict(document["credentials"][0], type=9)]},
                {"credentials": [dict(document["credentials"][0], pem="not the item")]},
            ]
        else:
            changes = [
                {"seq": -1},
                {"seq": "7"},
                {"phase": "exploded"},
                {"reason": "because"},
                {"time": 1e10},
                {"rollout_id": "r" * 200},
                {"extra": 1},
                {"phase": None},
                {"active_tags": [True]},
            ]
        for name, value in self.rng.choice(changes).items():
            if value is None:
                document.pop(name, None)
            else:
                document[name] = value
        if self.rng.random() < 0.2:
            document = [document]  # JSON, but not an object
        return self.topic(device, channel), as_bytes(document), "rejected:schema"

    def topic_mismatch(self, channel: str) -> tuple[str, bytes, str]:
        device, document = self.genuine(channel)
        other = device_id("dev-", (int(device[-5:]) + 1) % FLEET)
        return self.topic(other, channel), as_bytes(document), "rejected:topic_mismatch"

    def bad_topic(self, channel: str) -> tuple[str, bytes, str]:
        _, document = self.genuine(channel)
        name = self.rng.choice(["-lead", "a" * 65, "dev!x", "d\u00e9v", "_x", "dev x"])
        return self.topic(name, channel), as_bytes(document), "rejected:bad_topic"

    def clock_skew(self) -> tuple[str, bytes, str]:
        device = self.device()
        ahead = self.now + timedelta(seconds=400 + self.rng.randrange(10**9))
        return (
            self.topic(device, "state"),
            as_bytes(_state(device, ahead, self.ca_pem)),
            "rejected:clock_skew",
        )

    def bad_pem(self) -> tuple[str, bytes, str]:
        """A stale state whose item carries a pem the library must refuse."""
        device, document = self.genuine("state")
        too_large = self.rng.random() < 0.5
        pem = (
            "-----BEGIN CERTIFICATE-----\n"
            + "QUJD" * (1100 + self.rng.randrange(800))
            + "\n-----END CERTIFICATE-----\n"
            if too_large
            else f"{BEGIN}{self.rng.randrange(10**9)}!{END}"
        )
        item = dict(
            document["credentials"][0], sha256=hashlib.sha256(pem.encode()).hexdigest(), pem=pem
        )
        document["credentials"] = [item]
        outcome = "rejected:pem_too_large" if too_large else "rejected:pem_invalid"
        return self.topic(device, "state"), as_bytes(document), outcome

    def forged(self) -> tuple[str, bytes, str]:
        """A well-formed report that answers no bundle issued to its device."""
        device, moment = self.device(), self.now - timedelta(seconds=self.rng.randrange(60))
        kind = self.rng.randrange(5)
        phase, op = self.rng.choice(
            [
                ("committed", "commit"),
                ("staged", "stage"),
                ("health_ok", "stage"),
                ("received", "stage"),
                ("fallback", "stage"),
            ]
        )
        rollout, outcome = self.rollout, "unmatched:no_bundle"
        if kind == 1:
            rollout, outcome = f"forged-{self.rng.randrange(10**6)}", "unmatched:unknown_rollout"
        elif kind == 2:
            phase, op, outcome = "committed", "stage", "unmatched:op"
        elif kind == 3:
            device, outcome = OUTSIDER, "unmatched:unknown_device"
        reason = "ok" if phase != "fallback" else "commit_timeout"
        document = _report(device, rollout, self.next_seq(), op, phase, reason, moment)
        return self.topic(device, "report"), as_bytes(document), outcome

    def stale(self) -> tuple[str, bytes, str]:
        device, document = self.genuine("state")
        return self.topic(device, "state"), as_bytes(document), "stale"

    def duplicate(self) -> tuple[str, bytes, str]:
        """A report the device already sent (the seed's), sent again."""
        device = self.device()
        return self.topic(device, "report"), as_bytes(seed_report(device, self.now)), "duplicate"

    def make(self) -> tuple[str, bytes, str]:
        channel = self.rng.choice(("state", "report"))
        pick = self.rng.randrange(10)
        makers = [
            lambda: self.oversized(channel),
            lambda: self.not_json(channel),
            lambda: self.schema(channel),
            lambda: self.topic_mismatch(channel),
            lambda: self.bad_topic(channel),
            self.clock_skew,
            self.bad_pem,
            self.forged,
            self.stale,
            self.duplicate,
        ]
        return makers[pick]()
