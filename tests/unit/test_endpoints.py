"""HOST:PORT parsing, shared by the CLI, rollout specs and CA webhooks."""

from __future__ import annotations

import pytest

from orchestrator.domain.endpoints import InvalidEndpointError, parse_endpoint

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8883", ("127.0.0.1", 8883)),
        ("mqtt.example.com:1", ("mqtt.example.com", 1)),
        ("[::1]:65535", ("::1", 65535)),
    ],
)
def test_good_endpoints_parse(text: str, expected: tuple[str, int]) -> None:
    """Host and port come back, IPv6 brackets removed."""
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["host", ":8883", "host:", "host:0", "host:65536", "host:x", 8883])
def test_bad_endpoints_say_what_was_wrong(text: object) -> None:
    """Anything but HOST:PORT with a port in 1..65535 is refused, naming the field."""
    with pytest.raises(InvalidEndpointError, match="--probe must be"):
        parse_endpoint(text, what="--probe")
