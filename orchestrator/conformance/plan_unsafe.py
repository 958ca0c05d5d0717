"""The five ways issue 12 found to leave a device without working trust, replayed on spare tags.

Each sequence must end with the device trusting a working CA, the unsafe request
answered with a v2 reason (`nothing_to_undo`, `superseded`, `unsafe_active`) and
nothing changed by it. The state check after every step (its active list never
empty, every active tag holding a CA item) is what "a working trust set" means here.
"""

from __future__ import annotations

from orchestrator.conformance.model import Expect, rejected
from orchestrator.conformance.plan import (
    COMMITTED,
    RETIRED,
    ROLLED_BACK,
    STAGED,
    Script,
    health_failed,
    sha256_text,
)

__all__ = ["unsafe_sequences"]


def unsafe_sequences(s: Script) -> None:
    """Cases 1 to 5 of issue 12, each ending where it began."""
    _failed_stage_then_manual_rollback(s)
    _rollback_after_undo_by(s)
    _two_rollouts(s)
    _several_cas_for_one_tag(s)
    _unsafe_active(s)


def _failed_stage_then_manual_rollback(s: Script) -> None:
    """Case 1: a failed stage into the tag an old commit left behind, then a manual rollback."""
    initial = s.trust
    s1, s2 = s.inputs.spare[:2]
    ra, rb = s.rid(), s.rid()
    with_s1 = initial.with_ca(s1, s.good_sha)
    s.add("case 1: stage A", "a healthy stage", s.stage(ra, s1), STAGED, trust=with_s1)
    s.add(
        "case 1: commit A",
        "active list + A",
        s.commit(ra, s1),
        COMMITTED,
        trust=with_s1.activating((*initial.active, s1)),
    )
    both = s.trust.with_ca(s2, s.good_sha)
    s.add(
        "case 1: stage B",
        "a second change, leaving A's tag a spare once committed",
        s.stage(rb, s2, active=(*initial.active, s2)),
        STAGED,
        trust=both,
    )
    s.add(
        "case 1: commit B",
        "active list + B; A's tag still holds its CA",
        s.commit(rb, s2),
        COMMITTED,
        trust=both.activating((*initial.active, s2)),
    )
    s.add(
        "case 1: failing stage into A's tag",
        "the failed probe deletes what A's tag held, and drops the undo record",
        s.stage(s.rid(), s1, s.inputs.ca_bad, active=(*initial.active, s2)),
        health_failed("unknown_ca"),
        trust=s.trust.without(s1),
    )
    s.add(
        "case 1: manual rollback",
        "no undo record is left: nothing_to_undo (a v1 device made [.., A] live with A empty)",
        s.rollback(""),
        rejected("nothing_to_undo"),
    )
    s.add(
        "case 1: clean up",
        "a retire of B restores the first active list",
        s.retire(s.rid(), (s2,), initial.active),
        RETIRED,
        trust=initial,
    )


def _rollback_after_undo_by(s: Script) -> None:
    """Case 2: rollbacks of a commit by another rollout id, and after its undo_by."""
    initial = s.trust
    s1 = s.inputs.spare[0]
    rid = s.rid()
    with_s1 = initial.with_ca(s1, s.good_sha)
    window = s.inputs.undo_window
    s.add("case 2: stage", "a healthy stage", s.stage(rid, s1), STAGED, trust=with_s1)
    s.add(
        "case 2: commit with undo_by",
        f"a commit undoable for {window:g} s (--undo-window)",
        s.commit(rid, s1, undo_in=window),
        COMMITTED,
        trust=with_s1.activating((*initial.active, s1)),
    )
    s.add(
        "case 2: manual rollback of a rollout's commit",
        "an empty rid undoes only a manual change: superseded, nothing changed",
        s.rollback(""),
        rejected("superseded"),
    )
    s.add(
        "case 2: rollback after undo_by",
        "past undo_by the commit is permanent: nothing_to_undo",
        s.rollback(rid),
        rejected("nothing_to_undo"),
        pause=window + 2,
    )
    s.add(
        "case 2: clean up",
        "retire the committed tag",
        s.retire(s.rid(), (s1,), initial.active),
        RETIRED,
        trust=initial,
    )


def _two_rollouts(s: Script) -> None:
    """Case 3: a second rollout's stage replaces the first one's undo record."""
    initial = s.trust
    s1, s2 = s.inputs.spare[:2]
    ra, rb = s.rid(), s.rid()
    with_s1 = initial.with_ca(s1, s.good_sha)
    s.add("case 3: rollout A stages", "a healthy stage", s.stage(ra, s1), STAGED, trust=with_s1)
    committed = with_s1.activating((*initial.active, s1))
    s.add("case 3: rollout A commits", "A is live", s.commit(ra, s1), COMMITTED, trust=committed)
    s.add(
        "case 3: rollout B stages",
        "B's stage replaces A's undo record",
        s.stage(rb, s2),
        STAGED,
        trust=committed.with_ca(s2, s.good_sha),
    )
    s.add(
        "case 3: abort of A",
        "A's change is no longer the latest: superseded, nothing changed",
        s.rollback(ra),
        rejected("superseded"),
    )
    s.add(
        "case 3: abort of B",
        "B's rollback deletes B's stage, A stays live",
        s.rollback(rb),
        ROLLED_BACK,
        trust=committed,
    )
    s.add(
        "case 3: clean up",
        "retire A's tag",
        s.retire(s.rid(), (s1,), initial.active),
        RETIRED,
        trust=initial,
    )


def _several_cas_for_one_tag(s: Script) -> None:
    """Case 4: several CAs for one tag travel as one item, never as two."""
    s1 = s.inputs.spare[0]
    good, bad = s.inputs.ca_good, s.inputs.ca_bad
    two = [{"type": 0, "pem": good}, {"type": 0, "pem": bad}]
    s.add(
        "case 4: two CA items for one tag",
        "two items of one type in creds: bad_payload (a modem holds one chain per tag)",
        s.stage(s.rid(), s1, creds=two),
        rejected("bad_payload"),
    )
    rid = s.rid()
    s.add(
        "case 4: two CAs as one item",
        "the PEMs concatenated are one item; its digest covers exactly the stored bytes",
        s.stage(rid, s1, good + bad),
        STAGED,
        trust=s.trust.with_ca(s1, sha256_text(good + bad)),
    )
    s.add(
        "case 4: clean up",
        "roll the stage back",
        s.rollback(rid),
        ROLLED_BACK,
        trust=s.inputs.initial,
    )


def _unsafe_active(s: Script) -> None:
    """Case 5: operations that would name an empty tag live are refused before any write."""
    initial = s.trust
    s1, _, s3 = s.inputs.spare
    s.add(
        "case 5: retire to an empty tag",
        "a retire whose active list names a tag without a CA item: unsafe_active",
        s.retire(s.rid(), (s1,), (s3,)),
        rejected("unsafe_active"),
    )
    rid = s.rid()
    s.add(
        "case 5: stage",
        "a healthy stage",
        s.stage(rid, s1),
        STAGED,
        trust=initial.with_ca(s1, s.good_sha),
    )
    s.add(
        "case 5: commit naming an empty tag",
        "a commit whose active list names a tag without a CA item: unsafe_active",
        s.commit(rid, s1, active=[s1, s3]),
        rejected("unsafe_active"),
    )
    s.add(
        "case 5: manual rollback of a rollout's stage",
        "an empty rid undoes only a manual change: superseded",
        s.rollback(""),
        rejected("superseded"),
    )
    s.add(
        "case 5: clean up",
        "the rollout's own rollback deletes the stage",
        s.rollback(rid),
        Expect(phases=("received", "rolled_back")),
        trust=initial,
    )
