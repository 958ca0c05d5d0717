"""A console sign-in: who, with which role, until when, and its CSRF token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ConsoleSession"]


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """What a signed-in browser acts as.

    `name` and `role` are the API token's it signed in with (`CERTFLEET_API_TOKENS`),
    `token_sha256` that token's SHA-256 (hex), so a token given a new value ends the
    sessions of the old one; `csrf` is the token every state-changing request of this
    session must carry; `expires_at` ends it whatever the cookie says.
    """

    name: str
    role: str
    csrf: str
    expires_at: datetime
    token_sha256: str = ""

    def expired(self, now: datetime) -> bool:
        """True from `expires_at` on."""
        return now >= self.expires_at
