"""The identity operations, for a device whose state names an identity tag.

A device with an identity makes keys with `keygen` and takes client certificates in
identity stages (docs/protocol.md §5). Without a CA to issue with, the suite proves
what needs none: a keygen answers with a CSR as §7 says, a keygen into a live tag and
a retire of the identity in use are refused, a certificate for another key is
`key_mismatch`, and every keygen is undone (by a rollback, or by the device itself at
`commit_by`). Given an identity CA and a server that requires its certificates, it
also rotates the identity (keygen, the issued certificate staged and probed with
mutual TLS, commit) and rolls it back, so the device's identity and its spare tags
end as they were.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.conformance.material import foreign_identity
from orchestrator.conformance.model import rejected
from orchestrator.conformance.plan import (
    COMMITTED,
    CSR,
    KEYGEN_FALLBACK,
    ROLLED_BACK,
    STAGED,
    Script,
)
from orchestrator.protocol.limits import SUBJECT_MAX_BYTES

__all__ = ["identity", "rotation"]


def identity(s: Script) -> None:
    """Keygen refusals, a keygen and its rollback, key_mismatch, the keygen's deadline."""
    in_use = s.trust.identity
    if in_use is None:
        return
    initial = s.trust
    s1 = s.inputs.spare[0]
    stranger = foreign_identity(s.inputs.device_id)
    s.add(
        "keygen into an active tag",
        "a keygen deletes what its tag holds, so into a live CA tag it is refused: tag_in_use",
        s.keygen(s.rid(), s.anchor),
        rejected("tag_in_use"),
    )
    s.add(
        "keygen into the identity in use",
        "the identity the device presents is never replaced in place: tag_in_use",
        s.keygen(s.rid(), in_use),
        rejected("tag_in_use"),
    )
    s.add(
        f"keygen subject one over {SUBJECT_MAX_BYTES} bytes",
        f"a subject over {SUBJECT_MAX_BYTES} bytes is bad_payload",
        s.keygen(s.rid(), s1, subject="s" * (SUBJECT_MAX_BYTES + 1)),
        rejected("bad_payload"),
    )
    s.add(
        "client certificate next to a CA item",
        "a client certificate travels alone: next to another item it is bad_payload",
        replace(
            s.stage(s.rid(), s1),
            fields={
                **s.stage(s.rid(), s1).fields,
                "creds": [{"type": 0, "pem": s.inputs.ca_good}, {"type": 1, "pem": stranger}],
            },
        ),
        rejected("bad_payload"),
    )
    s.add(
        "identity stage without a keygen",
        "an identity stage needs the keygen of its rid and tag: nothing_staged",
        s.identity_stage(s.rid(), s1, stranger),
        rejected("nothing_staged"),
    )
    s.add(
        "retire of the identity in use",
        "the identity in use is never deleted: tag_in_use",
        s.retire(s.rid(), (in_use,), initial.active),
        rejected("tag_in_use"),
    )
    r1 = s.rid()
    s.add(
        "keygen and its rollback",
        "a keygen makes a key in a spare tag and reports its CSR (§7: the subject, a P-256 "
        "key, the attestation's claims); a rollback deletes the key",
        (s.keygen(r1, s1), s.rollback(r1)),
        (CSR, ROLLED_BACK),
        trust=initial,
    )
    r2 = s.rid()
    s.add(
        "identity stage for another key",
        "a certificate whose key is not the one the keygen made is key_mismatch, nothing "
        "written; the keygen stays open and its rollback deletes the key",
        (s.keygen(r2, s1), s.identity_stage(r2, s1, stranger), s.rollback(r2)),
        (CSR, rejected("key_mismatch"), ROLLED_BACK),
        trust=initial,
    )
    s.add(
        "keygen fallback at commit_by",
        "with no identity stage by commit_by the device deletes the key by itself: fallback",
        s.keygen(s.rid(), s1, commit_in=s.inputs.fallback_after),
        KEYGEN_FALLBACK,
        trust=initial,
    )


def rotation(s: Script) -> None:
    """A whole rotation to a new key, proven by mutual TLS, then its rollback."""
    in_use, probe = s.trust.identity, s.inputs.probe_identity
    if in_use is None or probe is None:
        return
    initial = s.trust
    s1 = s.inputs.spare[0]
    r = s.rid()
    placeholder = foreign_identity(s.inputs.device_id)
    s.add(
        "identity rotation: keygen, stage, commit",
        "a keygen's key, certified by the suite's identity CA, is staged next to it, proven "
        "by a mutual-TLS probe presenting it, and committed: the device presents it",
        (
            s.keygen(r, s1),
            s.identity_stage(r, s1, placeholder, probe=probe, certify=True),
            s.commit(r, s1),
        ),
        (CSR, STAGED, COMMITTED),
        trust=initial.holding(s1, 1, 2).presenting(s1),
    )
    s.add(
        "identity rotation: rollback",
        "a rollback of the identity commit presents the previous identity again and "
        "deletes the new key and certificate",
        s.rollback(r),
        ROLLED_BACK,
        trust=initial,
    )
