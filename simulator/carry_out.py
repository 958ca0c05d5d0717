"""Key store work a device decided and persisted (an `Intent`), carried out while offline.

The firmware calls `carry_out` once the modem is offline (`CFUN=4`): it deletes the
tags to wipe, runs `%KEYGEN` for a keygen, writes a stage's items, and says what the
flash record and the reports become. The firmware persists that in one write; a power
cut before it finds the intent still in flash, and doing it again from the start gives
the same result (a wipe deletes what is there, a write replaces an item of its type,
a keygen deletes its tag first and makes a new key whose CSR was never reported).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.protocol import CredentialType
from orchestrator.protocol.bundle import Bundle, Reason
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.flash import Intent, UndoRecord
from simulator.modem import Modem, ModemError
from simulator.operations import MakeReport

__all__ = ["Outcome", "carry_out", "wipe"]

Step = Callable[[str], None]
"""The device's fuse: called before each AT command, it may cut the power."""


@dataclass(slots=True)
class Outcome:
    """What the work leaves: the reports it queues, the flash record fields it changes."""

    reports: list[ReportMessage]
    changes: dict[str, object] = field(default_factory=dict)


def wipe(modem: Modem, step: Step, tag: int) -> None:
    """`AT%CMNG=3` every item `tag` holds."""
    for cred_type in CredentialType:
        if modem.exists(tag, cred_type):
            step(f"AT%CMNG=3 sec_tag {tag} type {int(cred_type)}")
            modem.delete(tag, cred_type)


def carry_out(
    intent: Intent, undo: UndoRecord | None, modem: Modem, step: Step, report: MakeReport
) -> Outcome:
    """Do `intent` on the offline modem; `undo` is the device's undo record."""
    for tag in intent.wipe:
        wipe(modem, step, tag)
    work = _Work(modem, step, report, Outcome(reports=list(intent.reports)))
    if intent.keygen is not None:
        work.keygen(intent.keygen, undo)
    if intent.write_tag is not None:
        work.write(intent.write_tag, intent, undo)
    return work.outcome


@dataclass(slots=True)
class _Work:
    """One intent's work on the modem, and what it comes to."""

    modem: Modem
    step: Step
    report: MakeReport
    outcome: Outcome

    def _refused(self, tag: int, bundle: Bundle | None, exc: ModemError, ours: bool) -> None:
        """The modem refused: what was written goes, the record too, `rejected`/modem_error."""
        wipe(self.modem, self.step, tag)
        detail = f"{exc} (errno {exc.errno})"
        self.outcome.reports.append(self.report(bundle, Phase.REJECTED, Reason.MODEM_ERROR, detail))
        if ours:
            self.outcome.changes["undo"] = None

    def write(self, tag: int, intent: Intent, undo: UndoRecord | None) -> None:
        """Write the stage's items; written into the stage record's tag: `staged`."""
        staging = undo if undo is not None and undo.kind == "stage" and undo.tag == tag else None
        stage = staging.stage if staging is not None else None
        try:
            for item in intent.items:
                if self.modem.exists(tag, item.type):  # written before a power cut
                    self.step(f"AT%CMNG=3 sec_tag {tag}")
                    self.modem.delete(tag, item.type)
                self.step(f"AT%CMNG=0 sec_tag {tag}")
                self.modem.write(tag, item.type, item.pem.encode())
        except ModemError as exc:
            self._refused(tag, stage, exc, staging is not None)
            return
        if staging is not None:
            self.outcome.changes["undo"] = dataclasses.replace(staging, written=True)
            self.outcome.reports.append(self.report(stage, Phase.STAGED))

    def keygen(self, bundle: Bundle, undo: UndoRecord | None) -> None:
        """`%KEYGEN` in the keygen's (just emptied) tag; the CSR is reported once back online."""
        tag = bundle.tag
        assert tag is not None  # noqa: S101 -- required by the payload rules
        ours = undo is not None and undo.kind == "keygen" and undo.stage == bundle
        try:
            self.step(f"AT%KEYGEN={tag},2,0")
            csr = self.modem.keygen(tag, subject=bundle.subject or "", seq=bundle.seq)
        except ModemError as exc:
            self._refused(tag, bundle, exc, ours)
            return
        if ours and undo is not None:
            self.outcome.changes["undo"] = dataclasses.replace(undo, written=True)
            detail = f"key in sec_tag {tag}"
            self.outcome.reports.append(self.report(bundle, Phase.CSR, detail=detail, csr=csr))
