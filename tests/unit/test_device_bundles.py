"""The simulated device's bundle checks, driven directly (no broker): tampering, rotation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import count

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import Bundle, Probe, Reason, SignerKey, encode_payload
from orchestrator.protocol.bundle import Credential as BundleCredential
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.report import Phase
from simulator.firmware import Firmware
from simulator.flash import UndoRecord
from simulator.modem import Modem
from simulator.pki import make_ca
from tests.properties import examples

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)
OLD_CA = make_ca("Old", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=10))
NEW_CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900))
KEY = ec.generate_private_key(ec.SECP256R1())
SEQ = count(1)


class FakeClient:
    """Stands in for the MQTT connection: records what the device publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload))


def _device(signers: dict[bytes, ec.EllipticCurvePublicKey] | None = None) -> Firmware:
    modem = Modem()
    modem.write(42, CredentialType.CA_CHAIN, OLD_CA.pem)
    return Firmware(
        "dev-1",
        modem,
        topics=Topics("certfleet"),
        signers=signers or {key_id(KEY.public_key()): KEY.public_key()},
        active_tags=[42],
    )


def _signed(bundle: Bundle, key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return sign1(encode_payload(bundle), private_key=key, kid=key_id(key.public_key()))


def _stage(**overrides: object) -> Bundle:
    fields: dict[str, object] = {
        "device_id": "dev-1",
        "rollout_id": "r-1",
        "seq": next(SEQ),
        "op": "stage",
        "issued_at": int(NOW.timestamp()),
        "expires_at": int(NOW.timestamp()) + 3600,
        "tag": 43,
        "credentials": (BundleCredential(CredentialType.CA_CHAIN, NEW_CA.pem.decode()),),
        "probe": Probe(host="127.0.0.1", port=8883, tags=(43,)),
        "active": (42, 43),
        "commit_by": int(NOW.timestamp()) + 600,
    }
    fields.update(overrides)
    return Bundle(**fields)  # type: ignore[arg-type]


def _handle(agent: Firmware, payload: bytes) -> FakeClient:
    client = FakeClient()
    asyncio.run(agent._handle(client, payload))  # type: ignore[arg-type]
    return client


GENUINE = _signed(_stage(seq=10_000))


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    position=st.integers(min_value=0, max_value=len(GENUINE) - 1),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_flipped_byte_is_rejected_and_the_key_store_is_untouched(
    position: int, mask: int
) -> None:
    """Flip one byte anywhere in a valid bundle: the device reports rejected and writes nothing."""
    # given
    agent = _device()
    before = agent.modem.items()
    tampered = bytearray(GENUINE)
    tampered[position] ^= mask
    # when
    _handle(agent, bytes(tampered))
    # then
    assert [r.phase for r in agent.reports] == [Phase.REJECTED]
    assert agent.reports[0].reason is not Reason.OK
    assert agent.modem.items() == before
    assert agent.last_seq == 0
    assert not agent.needs_offline


@pytest.mark.parametrize("seq", [True, False, -1, 2**64, "7"])
def test_an_odd_seq_in_a_refused_bundle_still_gives_a_valid_rejection(seq: object) -> None:
    """A signed payload whose seq is not a uint64 (CBOR true, negative, too big, text) is refused.

    The rejection report correlates by the unverified seq only when it is a real uint64;
    otherwise it says 0. Found by the property above: a flipped byte turned seq into CBOR true.
    """
    # given
    agent = _device()
    before = agent.modem.items()
    # when
    document = cbor2.loads(encode_payload(_stage()))
    document["seq"] = seq
    _handle(agent, sign1(cbor2.dumps(document), private_key=KEY, kid=key_id(KEY.public_key())))
    # then
    assert [(r.phase, r.reason, r.seq) for r in agent.reports] == [
        (Phase.REJECTED, Reason.BAD_PAYLOAD, 0)
    ]
    assert agent.modem.items() == before
    assert agent.last_seq == 0


def test_the_untampered_bundle_is_accepted() -> None:
    """The control for the property above: the genuine bundle is received and scheduled."""
    # given
    agent = _device()
    # when
    _handle(agent, GENUINE)
    # then
    assert [r.phase for r in agent.reports] == [Phase.RECEIVED]
    assert agent.last_seq == 10_000


def test_a_stage_into_an_active_tag_is_refused() -> None:
    """A stage never writes over the live sec_tag."""
    # given
    agent = _device()
    # when
    _handle(agent, _signed(_stage(tag=42, probe=Probe(host="h", port=1, tags=(42,)))))
    # then
    assert (agent.reports[0].phase, agent.reports[0].reason) == (Phase.REJECTED, Reason.TAG_IN_USE)
    assert agent.last_seq == 0


def test_trust_signer_rotates_the_bundle_key() -> None:
    """Signed by the old key, trust-signer adds the new key and retires the old one."""
    # given
    agent = _device()
    new_key = ec.generate_private_key(ec.SECP256R1())
    point = new_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    rotation = Bundle(
        device_id="dev-1",
        rollout_id="",
        seq=next(SEQ),
        op="trust-signer",
        issued_at=int(NOW.timestamp()),
        expires_at=int(NOW.timestamp()) + 3600,
        signer=SignerKey(kid=key_id(new_key.public_key()), public_point=point),
        retire_kid=key_id(KEY.public_key()),
    )
    # when
    _handle(agent, _signed(rotation))
    _handle(agent, _signed(_stage(), key=KEY))
    _handle(agent, _signed(_stage(), key=new_key))
    # then
    phases = [(r.phase, r.reason) for r in agent.reports]
    assert phases == [
        (Phase.RECEIVED, Reason.OK),
        (Phase.COMMITTED, Reason.OK),
        (Phase.REJECTED, Reason.UNKNOWN_KEY),
        (Phase.RECEIVED, Reason.OK),
    ]
    assert set(agent.signers) == {key_id(new_key.public_key())}


def test_trust_signer_cannot_leave_the_device_trusting_nobody() -> None:
    """Retiring the only key without adding another is refused."""
    # given
    agent = _device()
    kid = key_id(KEY.public_key())
    point = KEY.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    bundle = Bundle(
        device_id="dev-1",
        rollout_id="",
        seq=next(SEQ),
        op="trust-signer",
        issued_at=int(NOW.timestamp()),
        expires_at=int(NOW.timestamp()) + 3600,
        signer=SignerKey(kid=kid, public_point=point),
        retire_kid=kid,
    )
    # when
    _handle(agent, _signed(bundle))
    # then
    assert (agent.reports[0].phase, agent.reports[0].reason) == (
        Phase.REJECTED,
        Reason.INVALID_OPERATION,
    )
    assert set(agent.signers) == {kid}


def test_a_rejection_report_names_the_unverified_sequence_for_correlation() -> None:
    """A bundle for another device is refused, and the report carries its seq and rollout."""
    # given
    agent = _device()
    other = _stage(device_id="dev-2", seq=77, rollout_id="r-9")
    # when
    client = _handle(agent, _signed(other))
    # then
    report = agent.reports[0]
    assert (report.phase, report.reason, report.seq, report.rollout_id) == (
        Phase.REJECTED,
        Reason.WRONG_DEVICE,
        77,
        "r-9",
    )
    assert client.published == [("certfleet/dev-1/report", report.to_json())]


def test_a_rollback_undoes_only_its_own_rollout() -> None:
    """Rollout B's rollback must not undo rollout A's committed CA: superseded, no change."""
    # given: A committed 43 (active [42, 43]), the device's undo record
    agent = _device()
    agent.modem.write(43, CredentialType.CA_CHAIN, NEW_CA.pem)
    record = UndoRecord(rid="r-A", kind="commit", tag=43, previous=(42,))
    agent.flash.provision(active=(42, 43), undo=record)
    before = agent.modem.items()
    b_rollback = Bundle(
        device_id="dev-1",
        rollout_id="r-B",
        seq=next(SEQ),
        op="rollback",
        issued_at=int(NOW.timestamp()),
        expires_at=int(NOW.timestamp()) + 3600,
    )
    # when
    _handle(agent, _signed(b_rollback))
    # then
    assert [(r.phase, r.reason) for r in agent.reports] == [(Phase.REJECTED, Reason.SUPERSEDED)]
    assert agent.active_tags == [42, 43]
    assert agent.modem.items() == before
    assert agent.record.undo == record
    assert not agent.needs_offline
