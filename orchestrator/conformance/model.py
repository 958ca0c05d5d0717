"""The suite as data: what a step sends, what the device must answer, and its trust after.

A step is plain data so that the plan reads as the contract does (docs/conformance.md
lists each step with what it proves) and the runner stays one loop over them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from orchestrator.protocol.delegation import DELEGABLE_OPS

__all__ = [
    "ANY_DIGEST",
    "FINAL_PHASES",
    "RESTING_PHASES",
    "Delegate",
    "Expect",
    "In",
    "Send",
    "Step",
    "Tamper",
    "Trust",
    "rejected",
]

FINAL_PHASES: Final = frozenset(
    {"rejected", "health_failed", "fallback", "committed", "rolled_back", "retired"}
)
"""Phases after which a device says nothing more about a bundle (health_ok may be followed
by a fallback, so it ends a bundle only when the step expects it last)."""
RESTING_PHASES: Final = frozenset({"health_ok", "csr"})
"""Phases after which a device waits for the next bundle, or falls back at its deadline:
they end a bundle's reports when the step expects them last."""

ANY_DIGEST: Final = "*"
"""An expected item whose digest the suite cannot know (a key the device made, the
certificate issued for it): present, whatever its bytes."""

Tamper = Literal["signature", "payload", "algorithm", "no-kid", "trailing", "pad", "list"]
"""How a signed bundle is spoiled: after signing; `pad`: grown to exactly `Send.size` bytes
by an unknown payload key; `list`: its payload signed as a CBOR array, not a map."""


@dataclass(frozen=True, slots=True)
class In:
    """A payload time `seconds` after the moment the bundle is signed (commit_by, undo_by)."""

    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegate:
    """The delegation a bundle carries (docs/protocol.md §3), made when the bundle is signed.

    Args:
        key: the suite key delegated: its point and key id go in the delegation, and the
            bundle is signed by `Send.signer` (the same key, unless a step spoils it).
        root: the suite key that signs the delegation (`main`: the key the device trusts).
        nbf, exp: not-before and expiry, seconds after the moment of signing.
        iat: issued-at, epoch seconds; None: the moment of signing.
        ops, kinds, rids: the scope; `rids` None leaves the key out (any rollout).
        fields: delegation payload keys set over the defaults (a `None` value leaves a key
            out): a delegation that breaks its rules.
        tamper: `signature`: a bit of the root's signature flipped; `untagged`: the
            COSE_Sign1 without its tag 18; `algorithm`: its protected alg ES384.
        raw: these bytes stand in the header in place of a delegation.
    """

    key: str = "online1"
    root: str = "main"
    nbf: int = -60
    exp: int = 7200
    iat: int | None = None
    ops: tuple[str, ...] = DELEGABLE_OPS
    kinds: tuple[int, ...] = (0, 1)
    rids: tuple[str, ...] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    tamper: Literal["signature", "untagged", "algorithm"] | None = None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """One bundle a step publishes.

    Args:
        fields: payload keys besides v, dev, rid, seq, op, iat, exp; an `In` value is a
            time relative to signing; a key set here overrides the default of that name
            (`dev`, `v`, `op`, ...), and a `None` value leaves the key out.
        signer: the suite key that signs it (`main` is the deployment's signing key).
        iat_offset, ttl: issued-at relative to now, and exp - iat.
        raw: these bytes are sent as they are (a malformed bundle).
        resend: the bytes sent by the step of this name are sent again (a replay).
        tamper, size: spoil the signed bundle; with `pad`, grow it to exactly `size` bytes.
        skip_seq: leave out the sequence number before this bundle's; the next bundle
            sent gets it, lower than this one's, and must be accepted if this one was
            refused (a refusal consumes no sequence number).
        certify: `creds` becomes the client certificate the suite issues for the CSR the
            device reported for this bundle's rid (an identity stage of its keygen).
        delegation: the bundle carries this delegation (protected header label -65537),
            and `signer` names the delegated key that signs it.
    """

    op: str
    rid: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    signer: str = "main"
    iat_offset: int = 0
    ttl: int = 3600
    raw: bytes | None = None
    resend: str | None = None
    tamper: Tamper | None = None
    size: int | None = None
    skip_seq: bool = False
    certify: bool = False
    delegation: Delegate | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """The reports a device must publish about one bundle, in order.

    Args:
        phases: every phase, in order; all but the last with reason `ok`.
        reasons: the reasons accepted for the last phase.
        named: the reports carry the bundle's seq, rid and op; False: a refusal before the
            signature verified (or of an unreadable payload), naming no bundle (seq 0).
    """

    phases: tuple[str, ...]
    reasons: frozenset[str] = frozenset({"ok"})
    named: bool = True

    @property
    def last(self) -> str:
        """The phase the device ends this bundle with."""
        return self.phases[-1]

    def describe(self) -> str:
        """`received, staged, health_ok` or `rejected/replay` as the table shows it."""
        head = list(self.phases[:-1])
        reasons = "|".join(sorted(self.reasons))
        tail = self.last if reasons == "ok" else f"{self.last}/{reasons}"
        return ", ".join([*head, tail])


def rejected(*reasons: str, named: bool = True) -> Expect:
    """A refusal with one of `reasons`: nothing written, the seq not consumed."""
    return Expect(phases=("rejected",), reasons=frozenset(reasons), named=named)


@dataclass(frozen=True, slots=True)
class Trust:
    """A device's key store digests and active tag list, as its state message says."""

    items: Mapping[tuple[int, int], str]
    """(sec_tag, type) -> SHA-256 of the stored bytes."""
    active: tuple[int, ...]
    identity: int | None = None
    """The identity tag the device presents (its state's `identity_tag`), if it has one."""

    def with_ca(self, tag: int, sha256: str) -> Trust:
        """`tag` holds a CA chain item with this digest."""
        return replace(self, items={**self.items, (tag, 0): sha256})

    def without(self, *tags: int) -> Trust:
        """Every item of `tags` deleted."""
        return replace(self, items={k: v for k, v in self.items.items() if k[0] not in tags})

    def activating(self, tags: Sequence[int]) -> Trust:
        """The active list is `tags`."""
        return replace(self, active=tuple(tags))

    def holding(self, tag: int, *kinds: int) -> Trust:
        """`tag` holds items of `kinds` whose digests the suite cannot know (`ANY_DIGEST`)."""
        return replace(self, items={**self.items, **{(tag, kind): ANY_DIGEST for kind in kinds}})

    def presenting(self, identity: int | None) -> Trust:
        """The identity tag is `identity`."""
        return replace(self, identity=identity)

    def same_as(self, other: Trust) -> bool:
        """The same items (`ANY_DIGEST` on either side matching any digest), the same set of
        active tags (the order carries no meaning), the same identity tag."""
        mine, theirs = dict(self.items), dict(other.items)
        return (
            mine.keys() == theirs.keys()
            and all(mine[k] == theirs[k] or ANY_DIGEST in (mine[k], theirs[k]) for k in mine)
            and sorted(self.active) == sorted(other.active)
            and self.identity == other.identity
        )

    def describe(self) -> str:
        """`active [42]; 42:0=9f2c1a0b, 43:0=...` with digests shortened (and the identity)."""
        items = ", ".join(f"{t}:{k}={d[:8]}" for (t, k), d in sorted(self.items.items()))
        identity = "" if self.identity is None else f"; identity {self.identity}"
        return f"active {sorted(self.active)}{identity}; {items}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One scripted step: send, check every report, then check the device's trust.

    Args:
        proves: one line on what the step shows of the device (the table and the docs).
        trust: the trust the device must report after the step (None: unchanged).
        pause: seconds to wait before sending (a deadline must pass first).
        burst: publish every bundle at once (the device queues them), then read the reports.
    """

    name: str
    proves: str
    sends: tuple[Send, ...]
    expects: tuple[Expect, ...]
    trust: Trust | None = None
    pause: float = 0.0
    burst: bool = False

    def __post_init__(self) -> None:
        if len(self.sends) != len(self.expects):
            raise ValueError(f"step {self.name}: one expectation per bundle sent")
