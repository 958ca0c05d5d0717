"""Bearer-token authentication of the status and control routes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["bearer_auth"]

_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="One of the tokens in CERTFLEET_API_TOKENS.",
)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def bearer_auth(tokens: Sequence[str]) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A dependency that answers 401 unless the request carries one of `tokens`.

    Tokens are compared as SHA-256 digests with `hmac.compare_digest`, every one of
    them each time, so neither the token nor its length leaks through timing. With no
    token configured every request is refused.
    """
    expected = [_digest(t) for t in tokens]

    def authenticate(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)],
    ) -> None:
        if credentials is None:
            detail = "missing bearer token: send `Authorization: Bearer <token>`"
        else:
            given = _digest(credentials.credentials)
            matched = False
            for candidate in expected:
                matched |= hmac.compare_digest(given, candidate)
            if matched:
                return
            detail = "invalid bearer token"
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=detail,
            headers={"WWW-Authenticate": "Bearer"},
        )

    return authenticate
