"""Bearer-token authentication of the status and control routes."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.config import ApiToken, Role

__all__ = [
    "MalformedAuthorizationError",
    "Principal",
    "bearer_auth",
    "bearer_token",
    "match_token",
    "require_operator",
    "token_sha256",
]

_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="One of the tokens in CERTFLEET_API_TOKENS.",
)

_CREDENTIALS = re.compile(r"(?i:bearer) ([A-Za-z0-9\-._~+/]+=*)")
"""`Bearer` in any case, exactly one space, a token68 (RFC 7235 §2.1, RFC 6750 §2.1)."""

_USAGE = "send `Authorization: Bearer <token>`"


class MalformedAuthorizationError(ValueError):
    """An `Authorization` header that is not exactly `Bearer <token68>`."""


def bearer_token(values: Sequence[str]) -> str | None:
    """The token of the request's `Authorization` header values, None if there is none.

    Raises:
        MalformedAuthorizationError: several headers, another scheme, other spacing
            than one space, or a token outside the token68 characters.
    """
    if not values:
        return None
    if len(values) > 1:
        raise MalformedAuthorizationError("more than one Authorization header")
    matched = _CREDENTIALS.fullmatch(values[0])
    if matched is None:
        raise MalformedAuthorizationError("Authorization is not `Bearer <token>`")
    return matched.group(1)


def token_sha256(token: str) -> str:
    """The token's SHA-256 in hex: what a console session keeps of the token it signed in
    with (never the token)."""
    return _digest(token).hex()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Principal(NamedTuple):
    """Who a request acts as: the token's name and role."""

    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        """Operators may pause, resume, approve and abort; viewers only read."""
        return self.role == "operator"


def match_token(tokens: Sequence[ApiToken], given: str) -> ApiToken | None:
    """The configured token equal to `given`, or None.

    Compared as SHA-256 digests with `hmac.compare_digest`, every one of them each time,
    so neither the token nor its length leaks through timing.
    """
    digest = _digest(given)
    found: ApiToken | None = None
    for candidate in tokens:
        if hmac.compare_digest(digest, _digest(candidate.token)):
            found = candidate
    return found


def require_operator(principal: Principal) -> None:
    """403 unless `principal` may change rollouts."""
    if not principal.may_act:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"{principal.name} is a viewer; pause, resume, approve and abort need an "
            "operator token",
        )


def bearer_auth(tokens: Sequence[ApiToken]) -> Callable[..., Principal]:
    """A dependency that answers 401 unless the request carries one of `tokens`, and
    gives the request's `Principal`.

    The header is parsed strictly (`bearer_token`), the token compared by `match_token`.
    With no token configured every request is refused.
    """

    def authenticate(
        request: Request,
        # Declares the scheme in the OpenAPI document; the header is parsed below.
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)],
    ) -> Principal:
        try:
            token = bearer_token(request.headers.getlist("authorization"))
        except MalformedAuthorizationError as exc:
            detail = f"malformed bearer token: {exc}; {_USAGE}"
        else:
            if token is None:
                detail = f"missing bearer token: {_USAGE}"
            else:
                matched = match_token(tokens, token)
                if matched is not None:
                    return Principal(matched.name, matched.role)
                detail = "invalid bearer token"
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=detail,
            headers={"WWW-Authenticate": "Bearer"},
        )

    return authenticate
