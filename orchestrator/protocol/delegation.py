"""Delegations: a root key lets a short-lived online key sign bundles, within a scope.

A root key (in a PKCS#11 token, or a development key file) signs only delegations and
the root-only operations (`trust-signer`, `revoke`). A worker makes its own P-256 key,
and the root signs a delegation for it: a COSE_Sign1 whose payload names the key, its
validity window and its scope (docs/protocol.md §3, "Delegations"). The worker's bundles
carry the delegation in their protected header (label -65537), signed by the worker's
key; a device checks the delegation, its revocation, its validity, the bundle's signature
and the scope, in that order (docs/protocol.md §4, checks 4 to 5d and 7a).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.cose import (
    ALG_ES256,
    COSE_SIGN1_TAG,
    HEADER_ALG,
    HEADER_DELEGATION,
    HEADER_KID,
    CoseError,
    Sign1Message,
    SignatureMismatchError,
    UnsupportedAlgorithmError,
    key_id,
    sign1,
)
from orchestrator.protocol.limits import CLOCK_SKEW_SECONDS, REVOKED_KIDS_MAX, RID_MAX_BYTES
from orchestrator.protocol.payload import KID_BYTES, UINT64_MAX, Bundle
from orchestrator.protocol.reasons import BundleRejectedError, Reason

__all__ = [
    "CREDENTIAL_KINDS",
    "DELEGABLE_OPS",
    "DELEGATION_LABEL",
    "DELEGATION_MAX_BYTES",
    "DELEGATION_RIDS_MAX",
    "DELEGATION_VERSION",
    "REVOKED_KIDS_MAX",
    "ROOT_OPS",
    "Delegation",
    "DelegationError",
    "Revocation",
    "RootKey",
    "Scope",
    "accept_delegation",
    "decode_delegation",
    "delegation_of",
    "sign_delegation",
]

DELEGATION_LABEL: Final = HEADER_DELEGATION
"""The protected header label of a delegated bundle's delegation (a private-use label)."""
DELEGATION_MAX_BYTES: Final = 640
"""The whole delegation, its COSE_Sign1 bytes; about 200 without `rids`."""
DELEGATION_VERSION: Final = 1
"""The delegation payload's `v`."""
DELEGABLE_OPS: Final = ("stage", "commit", "rollback", "retire", "keygen")
"""The operations a delegation may name; the others are root-only."""
ROOT_OPS: Final = ("trust-signer", "revoke")
"""Operations only a root key signs, never under a delegation (`out_of_scope`)."""
DELEGATION_RIDS_MAX: Final = 4
"""Rollout ids a delegation may name (`rids`); without any it covers every rollout."""
CREDENTIAL_KINDS: Final = range(6)
"""Credential types a delegation's `kinds` may name (docs/protocol.md §3: 0 CA chain,
1 client certificate, 2 client key, 3 PSK, 4 PSK identity, 5 public key)."""

POINT_BYTES: Final = 65
"""An uncompressed P-256 point: 04 || x || y."""
_PAYLOAD_KEYS: Final = ("v", "exp", "iat", "kid", "nbf", "ops", "pub", "rids", "kinds")
"""The payload map's keys in their deterministic order (shorter first, then bytewise)."""
_REQUIRED_KEYS: Final = tuple(key for key in _PAYLOAD_KEYS if key != "rids")


class DelegationError(CertfleetError, ValueError):
    """A scope, revocation or delegation certfleet refuses to build."""


class RootKey(Protocol):
    """A root signing key: its key id and ES256 over the to-be-signed bytes (raw r||s)."""

    @property
    def key_id(self) -> bytes:
        """The root key's COSE key id, as devices trust it."""
        ...

    def sign(self, to_be_signed: bytes, /) -> bytes:
        """ES256 over the Sig_structure: the raw 64-byte r||s."""
        ...


def _distinct(values: Collection[object]) -> bool:
    return len(set(values)) == len(values)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a delegated key may sign: operations, credential types of a stage, rollouts.

    `rollouts` empty: any rollout. A `Scope` checks itself (`DelegationError`).
    """

    ops: tuple[str, ...]
    kinds: tuple[int, ...]
    rollouts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        root_only = sorted(set(self.ops) & set(ROOT_OPS))
        if root_only:
            raise DelegationError(
                f"{', '.join(root_only)} is signed by the root key only and cannot be "
                f"delegated; delegate some of {', '.join(DELEGABLE_OPS)}"
            )
        unknown = sorted(set(map(str, self.ops)) - set(DELEGABLE_OPS))
        if unknown or not 1 <= len(self.ops) <= len(DELEGABLE_OPS) or not _distinct(self.ops):
            raise DelegationError(
                f"a delegation names 1 to {len(DELEGABLE_OPS)} distinct operations of "
                f"{', '.join(DELEGABLE_OPS)}, not {list(self.ops)}"
            )
        if (
            not 1 <= len(self.kinds) <= len(CREDENTIAL_KINDS)
            or not _distinct(self.kinds)
            or any(type(k) is not int or k not in CREDENTIAL_KINDS for k in self.kinds)
        ):
            raise DelegationError(
                f"a delegation names 1 to {len(CREDENTIAL_KINDS)} distinct credential types "
                f"from 0 to {CREDENTIAL_KINDS[-1]}, not {list(self.kinds)}"
            )
        if (
            len(self.rollouts) > DELEGATION_RIDS_MAX
            or not _distinct(self.rollouts)
            or not all(_is_rid(rid) for rid in self.rollouts)
        ):
            raise DelegationError(
                f"a delegation names at most {DELEGATION_RIDS_MAX} distinct rollout ids of "
                f"at most {RID_MAX_BYTES} bytes each (none: any rollout), not "
                f"{list(self.rollouts)}"
            )

    def refusal(self, bundle: Bundle) -> str | None:
        """Why `bundle` is out of this scope (check 7a), or None if the scope covers it."""
        if bundle.op in ROOT_OPS:
            return f"{bundle.op} is signed by a root key only, never under a delegation"
        if bundle.op not in self.ops:
            return f"the delegation does not cover {bundle.op} (only {', '.join(self.ops)})"
        for credential in bundle.credentials:
            if int(credential.type) not in self.kinds:
                return f"the delegation does not cover credential type {int(credential.type)}"
        if self.rollouts and bundle.rollout_id not in self.rollouts:
            return f"the delegation does not cover rollout {bundle.rollout_id!r}"
        return None


def _is_rid(rid: object) -> bool:
    if type(rid) is not str:
        return False
    try:
        return len(rid.encode()) <= RID_MAX_BYTES
    except UnicodeEncodeError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegation:
    """A delegation's payload: the delegated key, when it is valid, what it may sign.

    `root_kid` is the key id of the root key that signed it (its protected header).
    """

    kid: bytes
    public_point: bytes
    not_before: int
    expires_at: int
    issued_at: int
    scope: Scope
    root_kid: bytes

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The delegated key (raises ValueError if `public_point` is not a P-256 point)."""
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.public_point)


@dataclass(frozen=True, slots=True)
class Revocation:
    """The delegations a device refuses: by delegated key id, and issued before a time.

    `before` 0: none by time. A device keeps at most 8 kids (`REVOKED_KIDS_MAX`).
    """

    kids: frozenset[bytes] = field(default_factory=frozenset)
    before: int = 0

    def __post_init__(self) -> None:
        if len(self.kids) > REVOKED_KIDS_MAX:
            raise DelegationError(
                f"a device keeps at most {REVOKED_KIDS_MAX} revoked key ids, not "
                f"{len(self.kids)}; revoke by time (before) instead, it covers every "
                "delegation issued earlier"
            )
        if any(type(kid) is not bytes or len(kid) != KID_BYTES for kid in self.kids):
            raise DelegationError(f"a revoked key id is {KID_BYTES} bytes")
        if type(self.before) is not int or not 0 <= self.before <= UINT64_MAX:
            raise DelegationError("before is epoch seconds, 0 for none")

    def revokes(self, delegation: Delegation) -> bool:
        """Whether a device with this revocation refuses `delegation` (check 5b)."""
        return delegation.kid in self.kids or delegation.issued_at < self.before

    def applied(self, kids: Iterable[bytes], before: int) -> Revocation:
        """The device's revocation after a `revoke` op: its list replaced, and `before`
        never lowered."""
        return Revocation(frozenset(kids), max(self.before, before))


def _refused(detail: str) -> BundleRejectedError:
    return BundleRejectedError(Reason.BAD_DELEGATION, detail)


def _payload_document(delegation: Delegation) -> dict[str, Any]:
    document: dict[str, Any] = {
        "v": DELEGATION_VERSION,
        "exp": delegation.expires_at,
        "iat": delegation.issued_at,
        "kid": delegation.kid,
        "nbf": delegation.not_before,
        "ops": list(delegation.scope.ops),
        "pub": delegation.public_point,
    }
    if delegation.scope.rollouts:
        document["rids"] = list(delegation.scope.rollouts)
    document["kinds"] = list(delegation.scope.kinds)
    return document


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= UINT64_MAX


def sign_delegation(
    *,
    root: RootKey,
    public_key: ec.EllipticCurvePublicKey,
    not_before: int,
    expires_at: int,
    issued_at: int,
    scope: Scope,
) -> bytes:
    """The delegation of `public_key` by `root`: COSE_Sign1 bytes, tagged 18.

    Raises:
        DelegationError: the key is not P-256, the times are not epoch seconds with
            `not_before` < `expires_at`, or the delegation is over 640 bytes.
    """
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise DelegationError("a delegated key is a P-256 key")
    if not all(_is_uint(t) for t in (not_before, expires_at, issued_at)):
        raise DelegationError("not_before, expires_at and issued_at are epoch seconds")
    if not not_before < expires_at:
        raise DelegationError("a delegation's not_before must be before its expires_at")
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    delegation = Delegation(
        kid=key_id(public_key),
        public_point=point,
        not_before=not_before,
        expires_at=expires_at,
        issued_at=issued_at,
        scope=scope,
        root_kid=root.key_id,
    )
    payload = cbor2.dumps(_payload_document(delegation), canonical=True)
    data = sign1(payload, sign=root.sign, kid=root.key_id)
    if len(data) > DELEGATION_MAX_BYTES:  # unreachable within the limits Scope checks
        raise DelegationError(
            f"the delegation is {len(data)} bytes, over {DELEGATION_MAX_BYTES}; name fewer rollouts"
        )
    return data


def _message(value: object) -> Sign1Message:
    """The delegation's COSE_Sign1 (check 4: its form; `bad_delegation`)."""
    if type(value) is not bytes:
        raise _refused("the delegation (label -65537) is not a byte string")
    if len(value) > DELEGATION_MAX_BYTES:
        raise _refused(f"a delegation of {len(value)} bytes, limit {DELEGATION_MAX_BYTES}")
    if not value.startswith(bytes([0xC0 | COSE_SIGN1_TAG])):
        raise _refused("the delegation is not a COSE_Sign1 tagged 18")
    try:
        message = Sign1Message.decode(value, max_bytes=DELEGATION_MAX_BYTES)
    except CoseError as exc:
        raise _refused(f"the delegation is not a well-formed COSE_Sign1: {exc}") from None
    if message.unprotected:
        raise _refused("the delegation's unprotected header must be empty")
    labels = set(message.protected) - {HEADER_ALG, HEADER_KID}
    if labels:
        shown = sorted(map(str, labels))
        raise _refused(f"the delegation's protected header carries labels {shown}")
    if message.protected.get(HEADER_ALG) != ALG_ES256:
        raise BundleRejectedError(
            Reason.UNSUPPORTED_ALGORITHM,
            "the delegation's protected header must carry alg ES256 (-7)",
        )
    return message


def _list(document: Mapping[str, Any], key: str, kind: type) -> tuple[Any, ...]:
    value = document[key]
    if not isinstance(value, list) or not all(type(v) is kind for v in value):
        raise _refused(f"the delegation's {key!r} must be an array of {kind.__name__}")
    return tuple(value)


def _document(payload: bytes) -> dict[str, Any]:
    """The delegation payload map: strict, deterministic, its keys in order."""
    try:
        document = cbor2.loads(payload)
        canonical = cbor2.dumps(document, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError, EOFError) as exc:
        raise _refused(f"the delegation payload is not CBOR: {exc}") from None
    if not isinstance(document, dict):
        raise _refused("the delegation payload must be a CBOR map")
    keys = tuple(document)
    if keys not in (_PAYLOAD_KEYS, _REQUIRED_KEYS):
        raise _refused(
            f"the delegation payload has keys {list(map(str, keys))}: it takes exactly "
            f"{', '.join(_PAYLOAD_KEYS)} (rids optional), in this order"
        )
    if canonical != payload:
        raise _refused("the delegation payload is not deterministically encoded")
    return document


def _delegation(payload: bytes, root_kid: bytes) -> Delegation:
    """The delegation payload, checked against every rule of its table (5a)."""
    document = _document(payload)
    if document["v"] != DELEGATION_VERSION or type(document["v"]) is not int:
        raise _refused(f"delegation version {document['v']!r} is not {DELEGATION_VERSION}")
    for key in ("exp", "iat", "nbf"):
        if not _is_uint(document[key]):
            raise _refused(f"the delegation's {key!r} must be an unsigned integer")
    kid, point = document["kid"], document["pub"]
    if type(kid) is not bytes or len(kid) != KID_BYTES:
        raise _refused(f"the delegation's 'kid' must be {KID_BYTES} bytes")
    if type(point) is not bytes or len(point) != POINT_BYTES or point[0] != 0x04:
        raise _refused("the delegation's 'pub' must be an uncompressed P-256 point (65 bytes)")
    try:
        scope = Scope(
            ops=_list(document, "ops", str),
            kinds=_list(document, "kinds", int),
            rollouts=_list(document, "rids", str) if "rids" in document else (),
        )
    except DelegationError as exc:
        raise _refused(str(exc)) from None
    if "rids" in document and not scope.rollouts:
        raise _refused("the delegation's 'rids', when present, names 1 to 4 rollout ids")
    delegation = Delegation(
        kid=kid,
        public_point=point,
        not_before=document["nbf"],
        expires_at=document["exp"],
        issued_at=document["iat"],
        scope=scope,
        root_kid=root_kid,
    )
    try:
        public_key = delegation.public_key()
    except ValueError:
        raise _refused("the delegation's 'pub' is not a point on P-256") from None
    if key_id(public_key) != kid:
        raise _refused("the delegation's 'kid' is not the key id of its 'pub'")
    if not delegation.not_before < delegation.expires_at:
        raise _refused("the delegation's 'nbf' must be before its 'exp'")
    return delegation


def decode_delegation(data: bytes) -> tuple[Sign1Message, Delegation]:
    """A delegation's message and payload, checked strictly but not verified.

    Raises:
        BundleRejectedError: `bad_delegation` (`unsupported_algorithm` for another alg
            than ES256).
    """
    message = _message(data)
    root_kid = message.protected.get(HEADER_KID)
    if type(root_kid) is not bytes:
        raise _refused("the delegation's protected header carries no key id")
    return message, _delegation(message.payload, root_kid)


def accept_delegation(
    value: object,
    *,
    bundle_kid: object,
    roots: Mapping[bytes, ec.EllipticCurvePublicKey],
    revocation: Revocation,
    now: int,
) -> Delegation:
    """Checks 4 to 5c of a delegated bundle's delegation (the value of label -65537).

    Check 5d, the bundle's signature with the delegated key, is the caller's.

    Raises:
        BundleRejectedError: `bad_delegation`, `unsupported_algorithm`, `unknown_key`,
            `bad_signature`, `delegation_revoked` or `delegation_expired`.
    """
    message = _message(value)
    root_kid = message.protected.get(HEADER_KID)
    root = roots.get(root_kid) if type(root_kid) is bytes else None
    if root is None or type(root_kid) is not bytes:
        shown = root_kid.hex() if type(root_kid) is bytes else "none"
        raise BundleRejectedError(
            Reason.UNKNOWN_KEY, f"the delegation's root key {shown} is not trusted"
        )
    try:
        message.verify(root)
    except UnsupportedAlgorithmError as exc:
        raise BundleRejectedError(Reason.UNSUPPORTED_ALGORITHM, str(exc)) from None
    except (SignatureMismatchError, CoseError) as exc:
        raise BundleRejectedError(
            Reason.BAD_SIGNATURE, f"the delegation's signature: {exc}"
        ) from None
    delegation = _delegation(message.payload, root_kid)
    if bundle_kid != delegation.kid:
        raise _refused("the bundle's kid is not the delegated key's")
    if revocation.revokes(delegation):
        raise BundleRejectedError(
            Reason.DELEGATION_REVOKED,
            f"the delegation of key {delegation.kid.hex()} is revoked",
        )
    if delegation.not_before > now + CLOCK_SKEW_SECONDS:
        raise BundleRejectedError(Reason.DELEGATION_EXPIRED, "the delegation is not valid yet")
    if now >= delegation.expires_at:
        raise BundleRejectedError(Reason.DELEGATION_EXPIRED, "the delegation has expired")
    return delegation


def delegation_of(bundle_data: bytes) -> Delegation | None:
    """The delegation a bundle carries, not verified (for tests and tools).

    None: the bundle is not a COSE_Sign1, or carries no delegation (a root signed it).

    Raises:
        BundleRejectedError: the delegation is malformed (as `decode_delegation`).
    """
    try:
        message = Sign1Message.decode(bundle_data)
    except CoseError:
        return None
    if DELEGATION_LABEL not in message.protected:
        return None
    return decode_delegation(message.protected[DELEGATION_LABEL])[1]
