"""Console sessions on Redis: one hash per session, expiring with it.

Key: `certfleet:session:{sha256(session id)}` (hash `name`, `role`, `token_sha256`, `csrf`,
`expires_at`)
with a PEXPIREAT at the session's end. The key names a digest of the id, so a key
listing (or a replica's dump) gives nobody a cookie that signs in. One key per command:
on a cluster it lies in whatever slot its name has.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.domain.sessions import ConsoleSession

__all__ = ["SESSION_PREFIX", "RedisSessions"]

SESSION_PREFIX = "certfleet:session:"


def _key(session_id: str) -> str:
    return (
        SESSION_PREFIX + hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()
    )


class RedisSessions:
    """`SessionStore` on Redis hashes `certfleet:session:{sha256(id)}`."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    @store_errors()
    def create(self, session_id: str, session: ConsoleSession) -> None:
        """Write the session and its expiry in one transaction."""
        key = _key(session_id)
        fields = {
            "name": session.name,
            "role": session.role,
            "token_sha256": session.token_sha256,
            "csrf": session.csrf,
            "expires_at": session.expires_at.isoformat(),
        }
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpireat(key, int(session.expires_at.timestamp() * 1000))
            pipe.execute()

    @store_errors()
    def get(self, session_id: str) -> ConsoleSession | None:
        """The session, or None when unknown, deleted or past its expiry."""
        fields: dict[str, str] = self._redis.hgetall(_key(session_id))
        try:
            return ConsoleSession(
                name=fields["name"],
                role=fields["role"],
                csrf=fields["csrf"],
                expires_at=datetime.fromisoformat(fields["expires_at"]),
                token_sha256=fields.get("token_sha256", ""),
            )
        except (KeyError, ValueError):
            return None

    @store_errors()
    def delete(self, session_id: str) -> None:
        """Remove the session."""
        self._redis.delete(_key(session_id))
