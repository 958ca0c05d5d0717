"""The API's `Authorization` header is parsed strictly: `Bearer`, one space, a token68."""

from __future__ import annotations

import pytest

from orchestrator.api.auth import MalformedAuthorizationError, bearer_token

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer t1", "t1"),
        ("bearer t1", "t1"),
        ("BEARER a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
    ],
)
def test_well_formed_header_gives_its_token(header: str, token: str) -> None:
    """The scheme matches in any case; the token68 comes back unchanged."""
    # when / then
    assert bearer_token([header]) == token


def test_no_header_gives_no_token() -> None:
    """A request without the header carries no token (missing, not malformed)."""
    # when / then
    assert bearer_token([]) is None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer  t1",
        "Bearer t1 ",
        " Bearer t1",
        "Bearer\tt1",
        "Bearer",
        "Bearer ",
        "Bearert1",
        "Bearer t1 t2",
        "Bearer =t1",
        "Bearer t1=x",
        "Bearer t1,",
        'Bearer "t1"',
        "Bearer tøken",
        "Basic dXNlcjpwYXNz",
        "",
    ],
    ids=repr,
)
def test_malformed_header_refused(header: str) -> None:
    """Other spacing, another scheme or characters outside token68 are refused."""
    # when / then
    with pytest.raises(MalformedAuthorizationError):
        bearer_token([header])


def test_two_headers_refused() -> None:
    """Two Authorization headers are refused rather than one of them chosen."""
    # when / then
    with pytest.raises(MalformedAuthorizationError, match="more than one"):
        bearer_token(["Bearer t1", "Bearer t2"])
