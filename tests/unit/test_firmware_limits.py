"""Every size limit of the device contract at its boundary (docs/protocol.md §3, Limits).

For each limit: a bundle at the limit is taken, one past it is refused with its reason
before `received`, and the device changed nothing (key store, active list, last seq).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import (
    CA_CHAIN_MAX_BYTES,
    CREDS_MAX,
    DETAIL_MAX_BYTES,
    DEVICE_ID_MAX_CHARS,
    MAX_BUNDLE_BYTES,
    PROBE_HOST_MAX_BYTES,
    RID_MAX_BYTES,
    SIGNERS_MAX,
    STATE_CREDENTIALS_MAX,
    TAG_LIST_MAX,
    CredentialType,
    RejectedMessageError,
    StateMessage,
    Topics,
    parse_state,
)
from orchestrator.protocol.bundle import Bundle, BundleRejectedError, Credential, Probe, Reason
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.report import Phase, ReportMessage, truncate_detail
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.pki import make_ca

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)
CA = make_ca("Live", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=90))
KEY = ec.generate_private_key(ec.SECP256R1())
SPARE_TAGS = range(43, 43 + TAG_LIST_MAX)
"""Seven sec_tags, 43..49: the spare first, the others holding a CA in `_device(full=True)`."""


class Link:
    """Keeps the reports the device publishes."""

    def __init__(self) -> None:
        self.reports: list[ReportMessage] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        if topic.endswith("/report"):
            self.reports.append(ReportMessage.model_validate(json.loads(payload)))


def _device(device_id: str = "dev-1", *, full: bool = False) -> Firmware:
    """CA in 42 (active [42]); with `full`, a CA in 44..49 as well, for long active lists."""
    modem = Modem()
    for tag in (42, *(SPARE_TAGS[1:] if full else ())):
        modem.write(tag, CredentialType.CA_CHAIN, CA.pem)
    return Firmware(
        device_id,
        modem,
        topics=Topics("certfleet"),
        signers={key_id(KEY.public_key()): KEY.public_key()},
        active_tags=[42],
    )


def _stage(seq: int = 1, **overrides: Any) -> dict[str, Any]:
    """A stage payload map, as the wire carries it (no `Bundle` checks on the way)."""
    now = int(NOW.timestamp())
    document: dict[str, Any] = {
        "v": 2,
        "dev": "dev-1",
        "rid": "r-1",
        "seq": seq,
        "op": "stage",
        "iat": now,
        "exp": now + 3600,
        "tag": 43,
        "creds": [{"type": 0, "pem": CA.pem.decode()}],
        "probe": {"host": "broker.example.net", "port": 8883, "tags": [43]},
        "active": [42, 43],
        "commit_by": now + 600,
    }
    document.update(overrides)
    return document


def _sign(document: dict[str, Any]) -> bytes:
    payload = cbor2.dumps(document, canonical=True)
    return sign1(payload, private_key=KEY, kid=key_id(KEY.public_key()))


def _outcome(device: Firmware, data: bytes) -> tuple[Phase, Reason]:
    """The first report about `data`, having checked a refusal changed nothing."""
    before = (device.modem.items(), device.active_tags, device.last_seq)
    link = Link()
    asyncio.run(device.handle(link, data))
    first = link.reports[0]
    if first.phase is Phase.REJECTED:
        assert (device.modem.items(), device.active_tags, device.last_seq) == before
        assert not device.needs_offline
    return first.phase, first.reason


def _padded_pem(size: int) -> str:
    """The CA's PEM with newlines after it: `size` bytes as written to the modem."""
    pem = CA.pem.decode()
    return pem + "\n" * (size - len(pem))


def _psk_to_fill(size: int) -> dict[str, Any]:
    """The stage whose whole COSE_Sign1 is `size` bytes (a PSK item takes up the room)."""
    creds = [{"type": 0, "pem": CA.pem.decode()}, {"type": 3, "pem": ""}]
    document = _stage(creds=creds)
    for _ in range(3):  # the lengths' own CBOR headers grow with them
        creds[1]["pem"] = "a" * (len(creds[1]["pem"]) + size - len(_sign(document)))
    assert len(_sign(document)) == size
    return document


LIMITS: dict[str, tuple[Callable[[int], dict[str, Any]], int, Reason]] = {
    "bundle bytes": (_psk_to_fill, MAX_BUNDLE_BYTES, Reason.TOO_LARGE),
    "CA chain item bytes": (
        lambda n: _stage(creds=[{"type": 0, "pem": _padded_pem(n)}]),
        CA_CHAIN_MAX_BYTES,
        Reason.TOO_LARGE,
    ),
    "rid UTF-8 bytes": (
        lambda n: _stage(rid="é" * (n // 2) + "r" * (n % 2)),
        RID_MAX_BYTES,
        Reason.BAD_PAYLOAD,
    ),
    "creds entries": (
        # every type but the client certificate, which travels alone (an identity stage)
        lambda n: _stage(creds=[{"type": t, "pem": CA.pem.decode()} for t in (0, 2, 3, 4, 5)[:n]]),
        CREDS_MAX,
        Reason.BAD_PAYLOAD,
    ),
    "probe.host bytes": (
        lambda n: _stage(probe={"host": "h" * n, "port": 8883, "tags": [43]}),
        PROBE_HOST_MAX_BYTES,
        Reason.BAD_PAYLOAD,
    ),
    "probe.tags entries": (
        lambda n: _stage(probe={"host": "b", "port": 8883, "tags": list(range(43, 43 + n))}),
        TAG_LIST_MAX,
        Reason.BAD_PAYLOAD,
    ),
    "active entries": (
        lambda n: _stage(active=[42, *SPARE_TAGS][:n]),
        TAG_LIST_MAX,
        Reason.BAD_PAYLOAD,
    ),
}


@pytest.mark.parametrize("name", LIMITS)
def test_a_bundle_at_the_limit_is_taken_and_one_past_it_is_refused(name: str) -> None:
    """At the limit: received. One past it: rejected with its reason, nothing changed."""
    build, limit, reason = LIMITS[name]
    # when / then
    assert _outcome(_device(full=True), _sign(build(limit))) == (Phase.RECEIVED, Reason.OK)
    assert _outcome(_device(full=True), _sign(build(limit + 1))) == (Phase.REJECTED, reason)


def test_active_past_the_limit_counts_the_tags_not_the_bytes() -> None:
    """The active list at 7 tags is the device's whole TLS socket list: 8 is refused."""
    # given
    assert len([42, *SPARE_TAGS]) == TAG_LIST_MAX + 1
    # then
    assert _outcome(_device(full=True), _sign(_stage(active=[42, *SPARE_TAGS]))) == (
        Phase.REJECTED,
        Reason.BAD_PAYLOAD,
    )


@pytest.mark.parametrize(
    ("count", "phase"), [(TAG_LIST_MAX, Phase.RECEIVED), (TAG_LIST_MAX + 1, Phase.REJECTED)]
)
def test_retire_tags_at_the_limit(count: int, phase: Phase) -> None:
    """`tags` of a retire: 7 sec_tags are taken, 8 are bad_payload."""
    # given
    document = _stage(op="retire", tags=list(range(100, 100 + count)), active=[42])
    for key in ("tag", "creds", "probe", "commit_by"):
        del document[key]
    # when / then
    assert _outcome(_device(), _sign(document))[0] is phase


def test_two_items_of_one_type_are_refused() -> None:
    """Several CAs for one tag travel as ONE type-0 item: two type-0 items are bad_payload."""
    # given
    creds = [{"type": 0, "pem": CA.pem.decode()}, {"type": 0, "pem": CA.pem.decode()}]
    # when / then
    assert _outcome(_device(), _sign(_stage(creds=creds))) == (Phase.REJECTED, Reason.BAD_PAYLOAD)


@pytest.mark.parametrize(
    ("length", "phase"),
    [(DEVICE_ID_MAX_CHARS, Phase.RECEIVED), (DEVICE_ID_MAX_CHARS + 1, Phase.REJECTED)],
)
def test_device_id_at_the_limit(length: int, phase: Phase) -> None:
    """`dev` of 64 characters names a device; 65 is bad_payload (on a device with a 64-char id)."""
    # given
    device = _device("d" * DEVICE_ID_MAX_CHARS)
    # when
    outcome = _outcome(device, _sign(_stage(dev="d" * length)))
    # then
    assert outcome == (
        (phase, Reason.OK) if phase is Phase.RECEIVED else (phase, Reason.BAD_PAYLOAD)
    )


def _signer(seq: int, key: ec.EllipticCurvePrivateKey) -> bytes:
    now = int(NOW.timestamp())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    document = {
        "v": 2,
        "dev": "dev-1",
        "rid": "",
        "seq": seq,
        "op": "trust-signer",
        "iat": now,
        "exp": now + 3600,
        "signer": {"kid": key_id(key.public_key()), "pub": point},
    }
    return _sign(document)


def test_a_device_trusts_at_most_four_signers() -> None:
    """Trust-signer up to 4 keys is committed; a fifth is invalid_operation, keys unchanged."""
    # given a device that trusts one key
    device = _device()
    # when three more are added, then a fifth
    added = [
        _outcome(device, _signer(seq, ec.generate_private_key(ec.SECP256R1())))
        for seq in range(1, SIGNERS_MAX)
    ]
    trusted = set(device.signers)
    fifth = _outcome(device, _signer(SIGNERS_MAX, ec.generate_private_key(ec.SECP256R1())))
    # then
    assert added == [(Phase.RECEIVED, Reason.OK)] * (SIGNERS_MAX - 1)
    assert len(trusted) == SIGNERS_MAX
    assert fifth == (Phase.REJECTED, Reason.INVALID_OPERATION)
    assert set(device.signers) == trusted


def test_a_report_detail_is_cut_to_1024_bytes_on_a_character_boundary() -> None:
    """The device truncates `detail` to 1024 UTF-8 bytes; a longer one is not a valid report."""
    # given
    text = "é" * DETAIL_MAX_BYTES  # 2048 bytes
    # when
    cut = truncate_detail(text)
    # then
    assert len(cut.encode()) == DETAIL_MAX_BYTES
    assert cut == "é" * (DETAIL_MAX_BYTES // 2)
    assert truncate_detail("x" * DETAIL_MAX_BYTES) == "x" * DETAIL_MAX_BYTES
    report = {
        "device_id": "dev-1",
        "rollout_id": "",
        "seq": 0,
        "phase": "rejected",
        "reason": "bad_payload",
        "time": "2026-01-01T00:00:00Z",
    }
    ReportMessage.model_validate({**report, "detail": cut})
    with pytest.raises(ValueError, match="1024 bytes"):
        ReportMessage.model_validate({**report, "detail": cut + "x"})


@pytest.mark.parametrize("count", [STATE_CREDENTIALS_MAX, STATE_CREDENTIALS_MAX + 1])
def test_a_state_names_at_most_256_credentials(count: int) -> None:
    """256 credential entries are a valid state; 257 are refused.

    256 entries do not fit the 16384-byte message (an entry is at least 98 bytes of
    JSON), so on the wire the byte limit binds first; the count is checked all the same.
    """
    # given
    entries = [{"sec_tag": tag, "type": 0, "sha256": "0" * 64} for tag in range(1000, 1000 + count)]
    document = {"v": 2, "device_id": "dev-1", "time": "2026-01-01T00:00:00Z"}
    # when / then
    if count <= STATE_CREDENTIALS_MAX:
        state = StateMessage.model_validate({**document, "credentials": entries})
        assert len(state.credentials) == count
    else:
        with pytest.raises(ValueError, match="at most 256"):
            StateMessage.model_validate({**document, "credentials": entries})
    wire = json.dumps({**document, "credentials": entries}).encode()
    with pytest.raises(RejectedMessageError):
        parse_state(wire, topic_device_id="dev-1")  # over MAX_MESSAGE_BYTES either way


def _bundle(**overrides: Any) -> Bundle:
    now = int(NOW.timestamp())
    fields: dict[str, Any] = {
        "device_id": "dev-1",
        "rollout_id": "r-1",
        "seq": 1,
        "op": "stage",
        "issued_at": now,
        "expires_at": now + 3600,
        "tag": 43,
        "credentials": (Credential(CredentialType.CA_CHAIN, CA.pem.decode()),),
        "probe": Probe(host="broker.example.net", port=8883, tags=(43,)),
        "active": (42, 43),
        "commit_by": now + 600,
    }
    fields.update(overrides)
    return Bundle(**fields)


def _creds(count: int) -> tuple[Credential, ...]:
    types = (0, 2, 3, 4, 5)[:count]  # not the client certificate, which travels alone
    return tuple(Credential(CredentialType(t), CA.pem.decode()) for t in types)


BUILT: dict[str, tuple[Callable[[int], dict[str, Any]], int]] = {
    "rid": (lambda n: {"rollout_id": "r" * n}, RID_MAX_BYTES),
    "creds": (lambda n: {"credentials": _creds(n)}, CREDS_MAX),
    "probe.host": (
        lambda n: {"probe": Probe(host="h" * n, port=8883, tags=(43,))},
        PROBE_HOST_MAX_BYTES,
    ),
    "probe.tags": (
        lambda n: {"probe": Probe(host="b", port=1, tags=tuple(range(43, 43 + n)))},
        TAG_LIST_MAX,
    ),
    "active": (lambda n: {"active": tuple(range(42, 42 + n))}, TAG_LIST_MAX),
    "tags": (
        lambda n: {"op": "retire", "tags": tuple(range(100, 100 + n)), "active": (42,)},
        TAG_LIST_MAX,
    ),
}


@pytest.mark.parametrize("name", BUILT)
def test_certfleet_cannot_build_a_bundle_past_a_limit(name: str) -> None:
    """The orchestrator's side: `Bundle` takes the limit and refuses limit + 1 as bad_payload."""
    build, limit = BUILT[name]
    # when / then
    assert _bundle(**build(limit))
    with pytest.raises(BundleRejectedError) as refused:
        _bundle(**build(limit + 1))
    assert refused.value.reason is Reason.BAD_PAYLOAD


@pytest.mark.parametrize(
    "overrides",
    [
        {"credentials": _creds(1) * 2},
        {"undo_by": 1},
        {"op": "commit", "undo_by": 1, "version": 1},
        {"credentials": (Credential(CredentialType.CA_CHAIN, "é"),)},
        {"credentials": (Credential(CredentialType.CA_CHAIN, "a\0b"),)},
    ],
    ids=["two-items-one-type", "undo_by-on-a-stage", "undo_by-in-v1", "non-ascii-ca", "nul-in-ca"],
)
def test_certfleet_cannot_build_what_the_payload_rules_forbid(overrides: dict[str, Any]) -> None:
    """Two items of one type, undo_by off a v2 commit, a CA that is not ASCII text: bad_payload."""
    with pytest.raises(BundleRejectedError) as refused:
        _bundle(**overrides)
    assert refused.value.reason is Reason.BAD_PAYLOAD
