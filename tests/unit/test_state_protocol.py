"""The device `state` message and the topic names are validated strictly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType, sha256_hex
from orchestrator.protocol import (
    MAX_MESSAGE_BYTES,
    CredentialEntry,
    RejectedMessageError,
    RejectReason,
    StateMessage,
    Topics,
    parse_state,
)
from orchestrator.protocol.topics import DEVICE_ID_PATTERN
from tests.unit.builders import digest, entry, state_payload

pytestmark = pytest.mark.unit

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
TOPICS = Topics("certfleet")


def _reason(payload: bytes, *, topic_device_id: str = "dev-1") -> RejectReason:
    with pytest.raises(RejectedMessageError) as rejected:
        parse_state(payload, topic_device_id=topic_device_id)
    return rejected.value.reason


def test_valid_message_parses() -> None:
    """A well-formed state message becomes the device state it describes."""
    # given
    payload = state_payload("dev-1", credentials=[entry(42), entry(43, type=2, not_after=None)])
    # when
    message = parse_state(payload, topic_device_id="dev-1")
    # then
    state = message.to_domain()
    assert state.device_id == "dev-1"
    assert state.reported_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert [(c.sec_tag, c.type) for c in state.credentials] == [
        (42, CredentialType.CA_CHAIN),
        (43, CredentialType.CLIENT_KEY),
    ]
    assert state.credentials[0].sha256 == digest("ca-42")


def test_oversized_payload_too_large() -> None:
    """A payload above 16 KB is refused unread, even if it is valid JSON."""
    # given
    payload = state_payload(credentials=[entry(42, subject="x" * MAX_MESSAGE_BYTES)])
    # when / then
    assert _reason(payload) is RejectReason.TOO_LARGE


def test_payload_at_size_limit_is_read() -> None:
    """A payload of exactly 16 KB is read (and judged on its content)."""
    # given
    payload = state_payload().ljust(MAX_MESSAGE_BYTES, b" ")
    # when
    message = parse_state(payload, topic_device_id="dev-1")
    # then
    assert len(payload) == MAX_MESSAGE_BYTES
    assert message.device_id == "dev-1"


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe\xfa", b"not json", b"", b'{"v": 1', b"\x80" + state_payload()]
)
def test_non_json_rejected(payload: bytes) -> None:
    """Bytes that are not UTF-8 JSON are counted as not_json."""
    # when / then
    assert _reason(payload) is RejectReason.NOT_JSON


def _without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


SCHEMA_PROBLEMS = {
    "missing-credentials": _without(json.loads(state_payload()), "credentials"),
    "not-an-object": [1, 2],
    "sec-tag-negative": json.loads(state_payload(credentials=[entry(-1)])),
    "sec-tag-too-high": json.loads(state_payload(credentials=[entry(2_147_483_648)])),
    "sec-tag-string": json.loads(state_payload(credentials=[entry("42")])),
    "sec-tag-bool": json.loads(state_payload(credentials=[entry(True)])),
    "bad-sha256": json.loads(state_payload(credentials=[entry(42, sha256="ab" * 31)])),
    "upper-sha256": json.loads(state_payload(credentials=[entry(42, sha256="AB" * 32)])),
    "unknown-type": json.loads(state_payload(credentials=[entry(42, type=6)])),
    "naive-time": json.loads(state_payload(time="2025-06-01T12:00:00")),
    "numeric-time": {**json.loads(state_payload()), "time": 1e10},
    "integer-time": {**json.loads(state_payload()), "time": 1748779200},
    "numeric-string-time": json.loads(state_payload(time="1748779200")),
    "space-separated-time": json.loads(state_payload(time="2025-06-01 12:00:00Z")),
    "date-only-time": json.loads(state_payload(time="2025-06-01")),
    "null-time": {**json.loads(state_payload()), "time": None},
    "numeric-not-after": json.loads(state_payload(credentials=[entry(42, not_after=1e10)])),
    "naive-not-after": json.loads(
        state_payload(credentials=[entry(42, not_after="2026-01-01T00:00:00")])
    ),
    "unknown-field": json.loads(state_payload(firmware="1.3.5")),
    "unknown-entry-field": json.loads(state_payload(credentials=[entry(42, extra=1)])),
    "wrong-version": json.loads(state_payload(v=3)),
    "bad-device-id": json.loads(state_payload("dev/1")),
    "duplicate-slot": json.loads(state_payload(credentials=[entry(42), entry(42)])),
    "pem-for-key": json.loads(
        state_payload(credentials=[entry(42, type=2, sha256=sha256_hex(PEM.encode()), pem=PEM)])
    ),
    "pem-hash-mismatch": json.loads(
        state_payload(credentials=[entry(42, sha256=digest("other"), pem=PEM)])
    ),
}


@pytest.mark.parametrize("document", SCHEMA_PROBLEMS.values(), ids=SCHEMA_PROBLEMS.keys())
def test_schema_problems_rejected(document: Any) -> None:
    """JSON that is not a valid state message is counted as schema."""
    # given
    payload = json.dumps(document).encode()
    # when / then
    assert _reason(payload) is RejectReason.SCHEMA


def test_same_tag_different_types_accepted() -> None:
    """Two items in one sec_tag are fine when their types differ."""
    # given
    payload = state_payload(credentials=[entry(42), entry(42, type=1)])
    # when
    message = parse_state(payload, topic_device_id="dev-1")
    # then
    assert len(message.credentials) == 2


def test_pem_matching_its_digest_is_kept() -> None:
    """A certificate sent in full is offered to the library under its digest."""
    # given
    payload = state_payload(credentials=[entry(42, sha256=sha256_hex(PEM.encode()), pem=PEM)])
    # when
    message = parse_state(payload, topic_device_id="dev-1")
    # then
    assert message.known_pems() == {sha256_hex(PEM.encode()): PEM}


@pytest.mark.parametrize(
    "time", ["2025-06-01T12:00:00Z", "2025-06-01t12:00:00.5z", "2025-06-01T14:00:00.123456+02:00"]
)
def test_rfc3339_times_accepted(time: str) -> None:
    """Any RFC 3339 date-time with an offset is a valid state time."""
    # when
    message = parse_state(state_payload(time=time), topic_device_id="dev-1")
    # then
    assert message.time.utcoffset() is not None


def test_device_id_differing_from_topic_rejected() -> None:
    """A device may only report for itself."""
    # given
    payload = state_payload("dev-2")
    # when / then
    assert _reason(payload, topic_device_id="dev-1") is RejectReason.TOPIC_MISMATCH


@given(payload=st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_rejected(payload: bytes) -> None:
    """Whatever the bytes, parse_state returns a message or raises RejectedMessageError."""
    # when
    try:
        message = parse_state(payload, topic_device_id="dev-1")
    except RejectedMessageError as exc:
        outcome: object = exc.reason
    else:
        outcome = message
    # then
    assert isinstance(outcome, RejectReason | StateMessage)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(document=json_values)
def test_arbitrary_json_only_ever_rejected(document: Any) -> None:
    """Any JSON document is either a state message or a counted rejection."""
    # given
    payload = json.dumps(document).encode()
    # when / then
    with pytest.raises(RejectedMessageError):
        parse_state(payload, topic_device_id="dev-1")


def test_deeply_nested_json_rejected_as_not_json() -> None:
    """A small payload of nested brackets is a counted rejection, not a crash."""
    # given
    payload = b"[" * 5000
    # when / then
    assert _reason(payload) is RejectReason.NOT_JSON


def test_huge_integer_rejected() -> None:
    """An integer of 5000 digits (5 KB) is a counted rejection, not a crash."""
    # given
    payload = state_payload(credentials=[]).replace(b'"v": 1', b'"v": ' + b"1" * 5000)
    # when / then
    assert _reason(payload) in (RejectReason.NOT_JSON, RejectReason.SCHEMA)


@pytest.mark.parametrize("bad_type", [True, "0", 0.0])
def test_credential_type_must_be_a_json_integer(bad_type: object) -> None:
    """`true`, `"0"` and `0.0` are not credential types, though Python would coerce them."""
    # given
    document = json.loads(state_payload())
    document["credentials"][0]["type"] = bad_type
    # when / then
    assert _reason(json.dumps(document).encode()) is RejectReason.SCHEMA


def test_version_must_be_the_integer_one() -> None:
    """`"v": true` is not protocol version 1."""
    # given
    document = json.loads(state_payload())
    document["v"] = True
    # when / then
    assert _reason(json.dumps(document).encode()) is RejectReason.SCHEMA


device_ids = st.from_regex(DEVICE_ID_PATTERN.removesuffix("$"), fullmatch=True)
entries = st.builds(
    CredentialEntry,
    sec_tag=st.integers(0, 2_147_483_647),
    type=st.sampled_from(CredentialType),
    sha256=st.binary(max_size=8).map(sha256_hex),
    subject=st.none() | st.text(max_size=40),
)


@given(
    device_id=device_ids,
    time=st.datetimes(timezones=st.just(UTC)),
    credentials=st.lists(entries, max_size=6, unique_by=lambda c: (c.sec_tag, c.type)),
)
def test_wire_form_round_trips(
    device_id: str, time: datetime, credentials: list[CredentialEntry]
) -> None:
    """What a device serialises, the orchestrator parses back equal."""
    # given
    message = StateMessage(device_id=device_id, time=time, credentials=credentials)
    # when
    parsed = parse_state(message.to_json(), topic_device_id=device_id)
    # then
    assert parsed == message


@pytest.mark.parametrize("channel", ["state", "report", "bundle"])
def test_topic_parse_good(channel: str) -> None:
    """A device topic gives back its device id and channel."""
    # when
    parsed = TOPICS.parse(f"certfleet/nrf-352656100123456/{channel}")
    # then
    assert parsed == ("nrf-352656100123456", channel)


@pytest.mark.parametrize(
    "topic",
    [
        "other/dev-1/state",
        "certfleet/dev-1/status",
        "certfleet/dev-1",
        "certfleet/dev-1/state/extra",
        "certfleet/+/state",
        "certfleet/#/state",
        "certfleet/dev+1/state",
        "certfleet/dev#1/state",
        "certfleet//state",
        "$share/certfleet/certfleet/dev-1/state",
    ],
)
def test_topic_parse_refuses(topic: str) -> None:
    """Anything but `{prefix}/{valid id}/{known channel}` is not a device topic."""
    # when / then
    assert TOPICS.parse(topic) is None


@given(device_id=device_ids, channel=st.sampled_from(["state", "report", "bundle"]))
def test_topic_names_parse_back(device_id: str, channel: Any) -> None:
    """Every topic Topics builds, Topics parses back to the same id and channel."""
    # when
    parsed = TOPICS.parse(TOPICS.device(device_id, channel))
    # then
    assert parsed == (device_id, channel)


def test_shared_subscription_form() -> None:
    """Listeners share device messages through `$share/{group}/{prefix}/+/{channel}`."""
    # when / then
    assert TOPICS.shared_subscription("state") == "$share/certfleet/certfleet/+/state"
    assert TOPICS.shared_subscription("report", group="ops") == "$share/ops/certfleet/+/report"


@pytest.mark.parametrize("prefix", ["", "a/b", "fleet+", "fleet#", "$SYS"])
def test_invalid_prefix_rejected(prefix: str) -> None:
    """A prefix is one topic level without wildcards or `$`."""
    # when / then
    with pytest.raises(ValueError, match="prefix"):
        Topics(prefix)


@pytest.mark.parametrize("device_id", ["", "-dev", "dev/1", "dev+", "x" * 65])
def test_topic_for_invalid_device_id_refused(device_id: str) -> None:
    """Topics are built only for ids that stand as one level."""
    # when / then
    with pytest.raises(ValueError, match="device id"):
        TOPICS.state(device_id)
