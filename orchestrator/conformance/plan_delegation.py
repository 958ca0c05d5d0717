"""Delegations and their revocation: bundles signed by an online key the trusted key delegated.

The suite's trusted key (`main`, the root the device trusts) delegates the suite's own
online keys, and each step sends a bundle signed by one of them, carrying its
delegation (docs/protocol.md §3, "Delegations"): a whole change under a valid
delegation is accepted as a root-signed one is; every delegation the device must not
accept is refused with its reason (checks 4 to 5d name no bundle, the scope's 7a
does), nothing written. Then the root-only `revoke`: by key id (the list replaced each
time), by time (never lowered), its limits, and last the revocation the device held
before the suite (certfleet's fleet-wide one) sent back.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Final

from orchestrator.conformance.model import Delegate, Send, rejected
from orchestrator.conformance.plan import COMMITTED, ROLLED_BACK, STAGED, Script
from orchestrator.protocol.delegation import DELEGATION_RIDS_MAX
from orchestrator.protocol.limits import REVOKED_KIDS_MAX, RID_MAX_BYTES

__all__ = ["ONLINE_KEYS", "REVOKED_BEFORE", "delegations", "revocations"]

ONLINE_KEYS: Final = ("online1", "online2")
"""The suite's online keys, delegated by `main` (never trusted by the device itself)."""
REVOKED_BEFORE: Final = 1_600_000_000
"""The revocation time the suite sends (2020-09-13): no delegation certfleet issued is
older, so the device keeps it (it never lowers it) without harm. The delegations the
suite revokes by time are issued before it."""
OFF_CURVE: Final = b"\x04" + (1).to_bytes(32, "big") * 2
"""An uncompressed point (1, 1): 65 bytes of the right form, not on P-256."""
P256_SPKI_PREFIX: Final = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
"""The SubjectPublicKeyInfo DER of a P-256 point is this prefix and the point."""
NOTHING_TO_UNDO: Final = rejected("nothing_to_undo")
"""A delegated rollback the device accepted up to its operation check (check 13)."""


def _under(send: Send, delegate: Delegate | None = None, *, signer: str | None = None) -> Send:
    """`send` signed by the delegated key (or by `signer`), carrying the delegation."""
    delegate = delegate or Delegate()
    return replace(send, signer=signer or delegate.key, delegation=delegate)


def delegations(s: Script) -> None:
    """A change under a delegation; every delegation refused, and every scope refusal."""
    initial = s.trust
    s1 = s.inputs.spare[0]
    with_s1 = initial.with_ca(s1, s.good_sha)
    r = s.rid()
    s.add(
        "delegated stage",
        "a stage signed by an online key under a delegation from the trusted key is "
        "accepted as a bundle signed by the trusted key is",
        _under(s.stage(r, s1)),
        STAGED,
        trust=with_s1,
    )
    s.add(
        "delegated commit",
        "a commit under the delegation makes its active list live",
        _under(s.commit(r, s1)),
        COMMITTED,
        trust=with_s1.activating((*initial.active, s1)),
    )
    s.add(
        "delegated rollback",
        "a rollback under the delegation restores the previous active list",
        _under(s.rollback(r)),
        ROLLED_BACK,
        trust=initial,
    )
    refused: list[tuple[str, str, Send, str]] = [
        (
            "online key without a delegation",
            "a bundle signed by an online key that carries no delegation",
            replace(s.rollback(""), signer="online1"),
            "unknown_key",
        ),
        (
            "delegation by an unknown root",
            "a delegation signed by a key the device does not trust",
            _under(s.rollback(""), Delegate(root="foreign")),
            "unknown_key",
        ),
        (
            "delegation with a bad signature",
            "a delegation whose root signature has a flipped bit",
            _under(s.rollback(""), Delegate(tamper="signature")),
            "bad_signature",
        ),
        (
            "delegated bundle with a bad signature",
            "a valid delegation, and a bundle whose signature by the delegated key has a "
            "flipped bit",
            replace(_under(s.rollback("")), tamper="signature"),
            "bad_signature",
        ),
        (
            "delegation not a COSE_Sign1",
            "bytes that are no COSE_Sign1 in the delegation's header label",
            _under(s.rollback(""), Delegate(raw=b"\x00certfleet conformance: no delegation")),
            "bad_delegation",
        ),
        (
            "delegation untagged",
            "a delegation COSE_Sign1 without its tag 18",
            _under(s.rollback(""), Delegate(tamper="untagged")),
            "bad_delegation",
        ),
        (
            "delegation of another algorithm",
            "a delegation whose protected alg is ES384",
            _under(s.rollback(""), Delegate(tamper="algorithm")),
            "unsupported_algorithm",
        ),
        (
            "delegation of another key",
            "a bundle signed by another key than the one delegated (its kid is not the "
            "delegation's)",
            _under(s.rollback(""), Delegate(key="online2"), signer="online1"),
            "bad_delegation",
        ),
        (
            "delegation kid not of its key",
            "a delegation whose kid is not the key id of its pub",
            _under(s.rollback(""), Delegate(fields={"kid": s.inputs.signers["online2"][0]})),
            "bad_delegation",
        ),
        (
            "delegation of a point off the curve",
            "a delegation whose pub is no P-256 point, its kid the key id of those bytes",
            _under(s.rollback(""), Delegate(fields={"pub": OFF_CURVE, "kid": _kid(OFF_CURVE)})),
            "bad_delegation",
        ),
        (
            "delegation of version 2",
            "a delegation payload of a version the contract does not name",
            _under(s.rollback(""), Delegate(fields={"v": 2})),
            "bad_delegation",
        ),
        (
            "delegation with an unknown key",
            "a delegation payload key the contract does not name",
            _under(s.rollback(""), Delegate(fields={"colour": "blue"})),
            "bad_delegation",
        ),
        (
            "delegation naming a root-only op",
            "a delegation whose ops name trust-signer",
            _under(s.rollback(""), Delegate(ops=("rollback", "trust-signer"))),
            "bad_delegation",
        ),
        (
            "delegation with nbf after exp",
            "a delegation whose nbf is not before its exp (its rules come before its time)",
            _under(s.rollback(""), Delegate(nbf=-60, exp=-120)),
            "bad_delegation",
        ),
        (
            f"delegation of {DELEGATION_RIDS_MAX + 1} rollouts",
            f"a delegation naming more than {DELEGATION_RIDS_MAX} rollout ids",
            _under(s.rollback(""), Delegate(rids=_rids(DELEGATION_RIDS_MAX + 1))),
            "bad_delegation",
        ),
        (
            "expired delegation",
            "a delegation past its exp, the bundle itself valid",
            _under(s.rollback(""), Delegate(nbf=-7200, exp=-3600)),
            "delegation_expired",
        ),
        (
            "delegation not yet valid",
            "a delegation whose nbf is more than 300 s ahead",
            _under(s.rollback(""), Delegate(nbf=3600, exp=7200)),
            "delegation_expired",
        ),
    ]
    for name, what, send, reason in refused:
        s.add(
            name,
            f"{what}: {reason}, the report names no bundle, nothing changed",
            send,
            rejected(reason, named=False),
        )
    rids = _rids(DELEGATION_RIDS_MAX)
    s.add(
        f"delegation of {DELEGATION_RIDS_MAX} rollouts",
        f"a delegation naming {DELEGATION_RIDS_MAX} rollout ids of {RID_MAX_BYTES} bytes "
        "covers a bundle of one of them (answered at the operation check)",
        _under(s.rollback(rids[-1]), Delegate(rids=rids)),
        NOTHING_TO_UNDO,
    )
    scope: list[tuple[str, str, Send]] = [
        (
            "out of scope: op",
            "a rollback under a delegation of stage and commit only",
            _under(s.rollback(""), Delegate(ops=("stage", "commit"))),
        ),
        (
            "out of scope: credential type",
            "a stage of a CA chain (type 0) under a delegation of client certificates only",
            _under(s.stage(s.rid(), s1), Delegate(kinds=(1,))),
        ),
        (
            "out of scope: rollout",
            "a bundle of a rollout the delegation does not name",
            _under(s.rollback(s.rid()), Delegate(rids=(s.rid(),))),
        ),
        (
            "trust-signer under a delegation",
            "a root-only op signed under a delegation",
            _under(s.trust_signer("main", signer="main")),
        ),
        (
            "revoke under a delegation",
            "a root-only op signed under a delegation",
            _under(s.revoke((), 0)),
        ),
    ]
    for name, what, send in scope:
        s.add(name, f"{what}: out_of_scope, nothing changed", send, rejected("out_of_scope"))


def revocations(s: Script) -> None:
    """Revoke by key id and by time, the revoke's limits, then the device's first list back."""
    fleet = s.inputs.revocation
    held = tuple(sorted(fleet.kids))
    before = max(fleet.before, REVOKED_BEFORE)
    revoked = s.inputs.signers["online2"][0]
    s.add(
        "revoke by key id",
        "a revoke signed by the trusted key makes the device refuse the delegations of "
        "the key ids it lists",
        s.revoke((*held[: REVOKED_KIDS_MAX - 1], revoked), fleet.before),
        COMMITTED,
    )
    s.add(
        "revoked key refused",
        "a bundle under a delegation of a revoked key id: delegation_revoked, naming no bundle",
        _under(s.rollback(""), Delegate(key="online2")),
        rejected("delegation_revoked", named=False),
    )
    s.add(
        "other key still accepted",
        "a delegation of a key id not listed is accepted (answered at the operation check)",
        _under(s.rollback("")),
        NOTHING_TO_UNDO,
    )
    s.add(
        "revoke by time",
        "a revoke whose before is a time: delegations issued before it are revoked",
        s.revoke(held, before),
        COMMITTED,
    )
    s.add(
        "issued before the revocation time",
        "a delegation whose iat is one second before the revocation time: delegation_revoked",
        _under(s.rollback(""), Delegate(iat=before - 1)),
        rejected("delegation_revoked", named=False),
    )
    s.add(
        "issued at the revocation time",
        "a delegation issued at the revocation time is accepted, of a key the previous "
        "revoke listed: each revoke replaces the whole list",
        _under(s.rollback(""), Delegate(key="online2", iat=before)),
        NOTHING_TO_UNDO,
    )
    s.add(
        "revocation time never lowers",
        "a revoke with before 0 is accepted and leaves the revocation time as it was",
        s.revoke(held, 0),
        COMMITTED,
    )
    s.add(
        "still revoked by time",
        "after it, a delegation issued before the revocation time is still delegation_revoked",
        _under(s.rollback(""), Delegate(iat=before - 1)),
        rejected("delegation_revoked", named=False),
    )
    fill = _kids(s, REVOKED_KIDS_MAX + 1, held)
    s.add(
        f"revoke of {REVOKED_KIDS_MAX} key ids",
        f"a revoke listing {REVOKED_KIDS_MAX} key ids, the most a device keeps, is accepted",
        s.revoke(fill[:REVOKED_KIDS_MAX], fleet.before),
        COMMITTED,
    )
    s.add(
        f"revoke one over {REVOKED_KIDS_MAX} key ids",
        f"a revoke listing {REVOKED_KIDS_MAX + 1} key ids: bad_payload",
        s.revoke(fill, fleet.before),
        rejected("bad_payload"),
    )
    s.add(
        "revoke of a 7-byte key id",
        "a key id is 8 bytes: bad_payload",
        s.revoke((fill[0][:7],), fleet.before),
        rejected("bad_payload"),
    )
    s.add(
        "revoke repeating a key id",
        "the key ids of a revoke are distinct: bad_payload",
        s.revoke((fill[0], fill[0]), fleet.before),
        rejected("bad_payload"),
    )
    s.add(
        "revoke without before",
        "a revoke carries before (0: none by time): without it, bad_payload",
        replace(s.revoke(held, 0), fields={"kids": list(held)}),
        rejected("bad_payload"),
    )
    s.add(
        "revocation restored",
        "the revocation the device held before the suite is sent back (its time stays at "
        "least the suite's, which revokes no delegation certfleet issued)",
        s.revoke(held, fleet.before),
        COMMITTED,
    )


def _kid(point: bytes) -> bytes:
    """The key id of an uncompressed P-256 point: SHA-256 of its SPKI DER, 8 bytes."""
    return hashlib.sha256(P256_SPKI_PREFIX + point).digest()[:8]


def _rids(count: int) -> tuple[str, ...]:
    """`count` distinct rollout ids of the longest length."""
    return tuple(f"conformance-delegated-{n}".ljust(RID_MAX_BYTES, "r") for n in range(count))


def _kids(s: Script, count: int, held: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """`held` followed by key ids of no key, `count` in all."""
    extra = (
        hashlib.sha256(f"conformance-{s.inputs.run_id}-{n}".encode()).digest()[:8]
        for n in range(count)
    )
    return (*held, *extra)[:count]
