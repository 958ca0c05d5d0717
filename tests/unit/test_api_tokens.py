"""`CERTFLEET_API_TOKENS`: names and roles, the older bare-token form, clear refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.config import ApiToken, Settings, parse_api_tokens

pytestmark = pytest.mark.unit


def test_named_tokens_with_roles() -> None:
    assert parse_api_tokens("ops:s3cret:operator, watch:v1ew=:viewer") == [
        ApiToken("ops", "s3cret", "operator"),
        ApiToken("watch", "v1ew=", "viewer"),
    ]


def test_a_bare_token_is_an_operator_named_by_its_place() -> None:
    assert parse_api_tokens("abc,watch:v:viewer,def") == [
        ApiToken("token-1", "abc", "operator"),
        ApiToken("watch", "v", "viewer"),
        ApiToken("token-3", "def", "operator"),
    ]
    assert parse_api_tokens(" , ") == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ops:tok:admin", "neither viewer nor operator"),
        ("ops:tok", "not `name:token:role`"),
        ("a:b:c:d", "not `name:token:role`"),
        ("o ps:tok:viewer", "the name must be"),
        ("ops:to ken:viewer", "token68"),
        ("ops:a:viewer,ops:b:operator", "names 'ops' twice"),
    ],
)
def test_malformed_entries_are_refused_without_the_token(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as raised:
        parse_api_tokens(text)
    assert "tok" not in str(raised.value).replace("token", "")


def test_settings_refuse_a_malformed_list_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTFLEET_API_TOKENS", "ops:secret-value:root")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "secret-value" not in str(raised.value), "a settings error must not print a token"
    assert "neither viewer nor operator" in str(raised.value)
