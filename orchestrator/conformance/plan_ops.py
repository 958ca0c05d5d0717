"""The valid operations: stage, commit, health_failed, fallback, rollback, retire, trust-signer.

Each change stages into the suite's spare tags and is undone or retired before the
next group, so the device's own tags and active list are what they were.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.conformance.model import rejected
from orchestrator.conformance.plan import (
    COMMITTED,
    FALLBACK,
    RETIRED,
    ROLLED_BACK,
    STAGED,
    Script,
    health_failed,
)
from orchestrator.protocol.limits import SIGNERS_MAX

__all__ = ["lifecycle", "signers"]


def lifecycle(s: Script) -> None:
    """Stage, commit and undo; a failing probe; the commit deadline; retire."""
    initial = s.trust
    s1 = s.inputs.spare[0]
    with_s1 = initial.with_ca(s1, s.good_sha)

    r1 = s.rid()
    s.add(
        "stage",
        "a stage writes the CA into a spare tag, proves it with the probe, keeps the active list",
        s.stage(r1, s1),
        STAGED,
        trust=with_s1,
    )
    s.add(
        "commit",
        "a commit of a healthy stage makes its active list live",
        s.commit(r1, s1),
        COMMITTED,
        trust=with_s1.activating((*initial.active, s1)),
    )
    s.add(
        "rollback of a commit",
        "a rollback of the latest commit restores the previous active list, deletes the tag",
        s.rollback(r1),
        ROLLED_BACK,
        trust=initial,
    )
    s.add(
        "rollback repeated",
        "a second rollback finds no undo record: nothing_to_undo, nothing changed, its seq "
        "not consumed (the next step's is lower)",
        replace(s.rollback(r1), skip_seq=True),
        rejected("nothing_to_undo"),
    )
    s.add(
        "stage with the bad CA",
        "a CA that does not validate the probe server fails health and is deleted",
        s.stage(s.rid(), s1, s.inputs.ca_bad),
        health_failed("unknown_ca"),
        trust=initial,
    )
    s.add(
        "stage probing the bad server",
        "a probe server the staged CA does not validate fails health with its reason",
        s.stage(s.rid(), s1, probe=s.inputs.probe_bad),
        health_failed(s.inputs.probe_bad_reason),
        trust=initial,
    )
    r4 = s.rid()
    s.add("stage to roll back", "a healthy stage", s.stage(r4, s1), STAGED, trust=with_s1)
    s.add(
        "rollback of a stage",
        "a rollback of an open stage deletes the staged tag",
        s.rollback(r4),
        ROLLED_BACK,
        trust=initial,
    )
    r5 = s.rid()
    s.add(
        "fallback at commit_by",
        "with no commit by commit_by the device deletes the stage by itself: fallback",
        s.stage(r5, s1, commit_in=s.inputs.fallback_after),
        FALLBACK,
        trust=initial,
    )
    s.add(
        "commit after fallback",
        "a commit of a stage that fell back is refused: nothing_staged, its seq not consumed",
        replace(s.commit(r5, s1), skip_seq=True),
        rejected("nothing_staged"),
    )
    r6 = s.rid()
    s.add("stage to retire", "a healthy stage", s.stage(r6, s1), STAGED, trust=with_s1)
    s.add(
        "commit to retire",
        "a commit adding the tag to the active list",
        s.commit(r6, s1),
        COMMITTED,
        trust=with_s1.activating((*initial.active, s1)),
    )
    s.add(
        "retire",
        "a retire deletes the tags and makes its active list live",
        s.retire(r6, (s1,), initial.active),
        RETIRED,
        trust=initial,
    )
    s.add(
        "rollback after retire",
        "a retire drops the undo record: a rollback answers nothing_to_undo",
        s.rollback(r6),
        rejected("nothing_to_undo"),
    )


def signers(s: Script) -> None:
    """Add a signer key, sign with it, retire the old one, fill up to the limit, restore."""
    s.add(
        "trust-signer: add a key",
        "a trust-signer signed by the trusted key adds a new signer key",
        s.trust_signer("temp1", signer="main"),
        COMMITTED,
    )
    s.add(
        "trust-signer: use it, retire the old",
        "a bundle signed by the new key is accepted and retires the old key",
        s.trust_signer("temp1", retire="main", signer="temp1"),
        COMMITTED,
    )
    s.add(
        "retired key refused",
        "a bundle signed by the retired key is unknown_key",
        s.rollback("", signer="main"),
        rejected("unknown_key", named=False),
    )
    # the device trusts temp1 and its other keys: trusted_keys in all
    extra = [f"temp{n}" for n in range(2, 2 + SIGNERS_MAX - s.inputs.trusted_keys)]
    for name in extra:
        s.add(
            f"trust-signer: add {name}",
            f"signer keys up to the limit of {SIGNERS_MAX} are accepted",
            s.trust_signer(name, signer="temp1"),
            COMMITTED,
        )
    s.add(
        f"signer keys limit ({SIGNERS_MAX} + 1)",
        f"a trust-signer that would make {SIGNERS_MAX + 1} keys is invalid_operation",
        s.trust_signer("temp9", signer="temp1"),
        rejected("invalid_operation"),
    )
    for name in extra:
        s.add(
            f"trust-signer: restore main, retire {name}",
            "a trust-signer adds one key and retires another in one bundle",
            s.trust_signer("main", retire=name, signer="temp1"),
            COMMITTED,
        )
    s.add(
        "trust-signer: retire the temporary key",
        "the original key, trusted again, retires the suite's key",
        s.trust_signer("main", retire="temp1", signer="main" if extra else "temp1"),
        COMMITTED,
    )
    s.add(
        "temporary key refused",
        "after the restore the suite's key is unknown_key",
        s.rollback("", signer="temp1"),
        rejected("unknown_key", named=False),
    )
    s.add(
        "original key accepted",
        "the original key signs again (answered at the operation check)",
        s.rollback(""),
        rejected("nothing_to_undo"),
    )
