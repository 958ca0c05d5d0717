"""What a device keeps in flash, and the power supply that can fail between any two steps.

The firmware's state lives in one `FlashRecord`, replaced whole by each write (as one
NVS entry is): the last accepted seq, the active tag list, the identity tag, the
trusted signers and the revoked delegations, the undo record, and the work it decided
but has not done yet (`Intent`, `Pending`). The order is MCUboot's swap state: the
intent is written before the key store is touched, the outcome after, so
`Firmware.reboot` finds in flash and the modem's key store everything it needs to
finish an interrupted operation (docs/protocol.md §13).

`Fuse` counts the firmware's steps (flash writes, key store writes and deletes,
publishes); armed, it raises `PowerCut` before one of them, and the firmware stops there
as a device that lost power would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol.bundle import Bundle, Credential
from orchestrator.protocol.delegation import Revocation
from orchestrator.protocol.report import ReportMessage

__all__ = [
    "Flash",
    "FlashRecord",
    "Fuse",
    "Intent",
    "Pending",
    "PowerCut",
    "UndoKind",
    "UndoRecord",
]

UndoKind = Literal["stage", "commit", "keygen"]


class PowerCut(Exception):
    """The device lost power before the step named in the message."""


class Fuse:
    """Counts steps; once armed, cuts the power before a chosen one."""

    def __init__(self) -> None:
        self.steps = 0
        """Steps taken so far (a cut step is not taken)."""
        self._cut_at: int | None = None

    def arm(self, after: int) -> None:
        """Cut the power before the step `after` steps from now (0: the very next one)."""
        self._cut_at = self.steps + after

    def disarm(self) -> None:
        """No power cut."""
        self._cut_at = None

    @property
    def armed(self) -> bool:
        """Whether a power cut is still to come."""
        return self._cut_at is not None

    def step(self, what: str) -> None:
        """Called before each step: raises `PowerCut` at the armed one."""
        if self._cut_at is not None and self.steps >= self._cut_at:
            self._cut_at = None
            raise PowerCut(f"power lost before: {what}")
        self.steps += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class UndoRecord:
    """The one change a rollback can undo (docs/protocol.md §5, the undo record).

    A stage record carries its stage bundle (probe, active list after commit,
    commit_by) and how far the stage got; a commit record the commit's `undo_by`.
    An identity change (`identity`) starts as a keygen record (its bundle in `stage`,
    `written` once the key is made and the CSR reported), becomes a stage record with
    the certificate's stage, then a commit record; each keeps the identity tag in use
    before it (`previous_identity`).
    """

    rid: str
    kind: UndoKind
    tag: int
    previous: tuple[int, ...]
    """The active list before the change."""
    undo_by: int | None = None
    stage: Bundle | None = None
    written: bool = False
    health_ok: bool = False
    identity: bool = False
    previous_identity: int | None = None

    @property
    def open(self) -> bool:
        """A stage or keygen not committed: its tag is live nowhere, deleting it is safe."""
        return self.kind != "commit"

    def expired(self, now: float) -> bool:
        """A commit record past its `undo_by`: the commit is permanent."""
        return self.kind == "commit" and self.undo_by is not None and now >= self.undo_by


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """Key store work decided and persisted, not yet done: wipe, then write, then report.

    Carrying it out again after a power cut gives the same result: a wipe deletes
    what is there, and a stage's intent wipes the tag it writes. A write into the
    tag of the stage record marks the record written and reports `staged`. A write
    replaces an item of its type the tag holds (an identity stage's certificate goes
    next to the key, which stays). A `keygen` (the keygen bundle) runs `%KEYGEN` in its
    tag after the wipe, and reports `csr`.
    """

    wipe: tuple[int, ...] = ()
    write_tag: int | None = None
    items: tuple[Credential, ...] = ()
    reports: tuple[ReportMessage, ...] = ()
    keygen: Bundle | None = None

    @property
    def touches_store(self) -> bool:
        """Whether it needs the modem offline."""
        return bool(self.wipe or self.items or self.keygen)

    def then(self, later: Intent) -> Intent:
        """This intent followed by `later`, as one (a write that `later` wipes is dropped)."""
        write_tag, items = later.write_tag, later.items
        if write_tag is None and self.write_tag is not None and self.write_tag not in later.wipe:
            write_tag, items = self.write_tag, self.items
        keygen = later.keygen
        if keygen is None and self.keygen is not None and self.keygen.tag not in later.wipe:
            keygen = self.keygen
        return Intent(
            wipe=tuple(dict.fromkeys((*self.wipe, *later.wipe))),
            write_tag=write_tag,
            items=items,
            reports=(*self.reports, *later.reports),
            keygen=keygen,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """An active list change the broker connection must prove first (a TLS broker only).

    `bundle` is the commit or retire that made it. Until the device reconnected with
    the new list, `previous` stays in flash: a connection that works wipes `then_wipe`
    and reports the bundle done; one that fails restores `previous`, wipes
    `otherwise_wipe` and reports `fallback` (`broker_unreachable`). An identity commit
    changes the identity tag instead; a failed connection restores `previous_identity`.
    """

    previous: tuple[int, ...]
    bundle: Bundle
    previous_identity: int | None
    """The identity tag before the change (the same as now, unless it changes the identity)."""
    then_wipe: tuple[int, ...] = ()
    otherwise_wipe: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class FlashRecord:
    """Everything the firmware persists, as one entry."""

    last_seq: int = 0
    active: tuple[int, ...] = ()
    identity: int | None = None
    """The sec_tag whose client certificate and key the broker connection presents."""
    signers: tuple[tuple[bytes, ec.EllipticCurvePublicKey], ...] = ()
    revocation: Revocation = field(default_factory=Revocation)
    """The revoked delegations: key ids and the issued-before time (a `revoke` sets them,
    in the same write as its seq)."""
    undo: UndoRecord | None = None
    intent: Intent | None = None
    pending: Pending | None = None
    outbox: tuple[ReportMessage, ...] = ()
    """Reports decided while offline, published on the next connect."""


class Flash:
    """The device's settings partition: one record, replaced whole by each write."""

    def __init__(self, record: FlashRecord, *, fuse: Fuse | None = None) -> None:
        self._record = record
        self.fuse = fuse or Fuse()
        self.writes = 0

    @property
    def record(self) -> FlashRecord:
        """What flash holds now."""
        return self._record

    def write(self, what: str, **changes: object) -> FlashRecord:
        """Replace the record with `changes` applied, in one step (which may lose power)."""
        self.fuse.step(f"flash write ({what})")
        self._record = dataclasses.replace(self._record, **changes)  # type: ignore[arg-type]  # field names checked by replace
        self.writes += 1
        return self._record

    def provision(self, **changes: object) -> None:
        """Set fields outside the firmware's steps (the factory, or a test's setup)."""
        self._record = dataclasses.replace(self._record, **changes)  # type: ignore[arg-type]  # as above
