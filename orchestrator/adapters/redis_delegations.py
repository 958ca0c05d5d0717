"""The delegations the root key signed for workers, and the fleet's revocation, on Redis.

Public data only: a delegation's key id, its root's key id, the worker it was made for,
its times and scope, and the delegated public key; never a private key or the PIN.

Keys:
- `certfleet:delegations` (hash): delegated key id (hex) -> JSON `{"root_kid", "worker",
  "iat", "nbf", "exp", "ops", "kinds", "rids", "pub"}` (bytes as hex). An entry whose
  `exp` has passed is deleted by the next `record` or `active`.
- `certfleet:delegations:revocation` (string): JSON `{"kids": [hex, ...], "before": int}`,
  what every device is sent by `certfleet keys revoke` (absent: nothing revoked).

One key per command: on a cluster each lies in whatever slot its name has.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.ports.stores import IssuedDelegation
from orchestrator.protocol.delegation import Delegation, Revocation, Scope

__all__ = ["DELEGATIONS_KEY", "REVOCATION_KEY", "RedisDelegations"]

DELEGATIONS_KEY = "certfleet:delegations"
REVOCATION_KEY = "certfleet:delegations:revocation"


def _encode(delegation: Delegation, worker: str) -> str:
    scope = delegation.scope
    return json.dumps(
        {
            "root_kid": delegation.root_kid.hex(),
            "worker": worker,
            "iat": delegation.issued_at,
            "nbf": delegation.not_before,
            "exp": delegation.expires_at,
            "ops": list(scope.ops),
            "kinds": list(scope.kinds),
            "rids": list(scope.rollouts),
            "pub": delegation.public_point.hex(),
        },
        separators=(",", ":"),
    )


def _decode(kid_hex: str, value: str) -> IssuedDelegation:
    fields = json.loads(value)
    return IssuedDelegation(
        delegation=Delegation(
            kid=bytes.fromhex(kid_hex),
            public_point=bytes.fromhex(fields["pub"]),
            not_before=int(fields["nbf"]),
            expires_at=int(fields["exp"]),
            issued_at=int(fields["iat"]),
            scope=Scope(
                ops=tuple(fields["ops"]),
                kinds=tuple(int(k) for k in fields["kinds"]),
                rollouts=tuple(fields["rids"]),
            ),
            root_kid=bytes.fromhex(fields["root_kid"]),
        ),
        worker=str(fields["worker"]),
    )


class RedisDelegations:
    """`DelegationRegistry` on the hash `certfleet:delegations` and the revocation's key."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    @store_errors()
    def record(self, delegation: Delegation, worker: str) -> None:
        """List a delegation the root signed (and drop the expired ones)."""
        self._redis.hset(DELEGATIONS_KEY, delegation.kid.hex(), _encode(delegation, worker))
        self._prune(delegation.issued_at)

    @store_errors()
    def active(self, now: datetime) -> list[IssuedDelegation]:
        """The delegations not expired at `now`, oldest issue first."""
        return self._prune(int(now.timestamp()))

    def _prune(self, now: int) -> list[IssuedDelegation]:
        raw: dict[str, str] = self._redis.hgetall(DELEGATIONS_KEY)
        entries = [_decode(kid, value) for kid, value in raw.items()]
        expired = [e.delegation.kid.hex() for e in entries if e.delegation.expires_at <= now]
        if expired:
            self._redis.hdel(DELEGATIONS_KEY, *expired)
        return sorted(
            (e for e in entries if e.delegation.expires_at > now),
            key=lambda e: (e.delegation.issued_at, e.delegation.kid),
        )

    @store_errors()
    def revocation(self) -> Revocation:
        """What devices are to refuse (nothing until `set_revocation`)."""
        stored: str | None = self._redis.get(REVOCATION_KEY)
        if stored is None:
            return Revocation()
        fields = json.loads(stored)
        return Revocation(
            kids=frozenset(bytes.fromhex(k) for k in fields["kids"]),
            before=int(fields["before"]),
        )

    @store_errors()
    def set_revocation(self, revocation: Revocation) -> None:
        """Replace the fleet's revocation (the whole list: a device replaces its own)."""
        value = json.dumps(
            {"kids": sorted(k.hex() for k in revocation.kids), "before": revocation.before},
            separators=(",", ":"),
        )
        self._redis.set(REVOCATION_KEY, value)
