"""Two device rules of docs/protocol.md, driven directly (no broker): what a rejection may
name, and when a bundle's seq becomes the last accepted."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import MAX_BUNDLE_BYTES, Bundle, Probe, Reason, encode_payload
from orchestrator.protocol.bundle import Credential as BundleCredential
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.pki import make_ca

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC)
OLD_CA = make_ca("Old", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=10))
NEW_CA = make_ca("New", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900))
KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())
SEQ = count(100)


class Link:
    """Stands in for the MQTT connection: refuses the first `failures` publishes, keeps the rest."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.reports: list[ReportMessage] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("no PUBACK: the connection dropped")
        if topic.endswith("/report"):
            self.reports.append(ReportMessage.model_validate(json.loads(payload)))


def _device() -> Firmware:
    modem = Modem()
    modem.write(42, CredentialType.CA_CHAIN, OLD_CA.pem)
    return Firmware(
        "dev-1",
        modem,
        topics=Topics("certfleet"),
        signers={key_id(KEY.public_key()): KEY.public_key()},
        active_tags=[42],
    )


def _stage(**overrides: object) -> Bundle:
    now = int(NOW.timestamp())
    fields: dict[str, object] = {
        "device_id": "dev-1",
        "rollout_id": "r-1",
        "seq": next(SEQ),
        "op": "stage",
        "issued_at": now,
        "expires_at": now + 3600,
        "tag": 43,
        "credentials": (BundleCredential(CredentialType.CA_CHAIN, NEW_CA.pem.decode()),),
        "probe": Probe(host="127.0.0.1", port=8883, tags=(43,)),
        "active": (42, 43),
        "commit_by": now + 600,
    }
    fields.update(overrides)
    return Bundle(**fields)  # type: ignore[arg-type]


def _signed(bundle: Bundle, key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return sign1(encode_payload(bundle), private_key=key, kid=key_id(key.public_key()))


def _reason_id(value: object) -> str:
    """A case's id: its reason (the payload is too long to name it)."""
    return str(value) if isinstance(value, Reason) else "bundle"


def _rejection(payload: bytes) -> ReportMessage:
    """The one report the device publishes about `payload`."""
    link = Link()
    asyncio.run(_device().handle(link, payload))
    [report] = link.reports
    assert report.phase is Phase.REJECTED
    return report


def _padded(payload: bytes) -> bytes:
    """The envelope with bytes after it, over the bundle size limit."""
    return payload + b"\0" * (MAX_BUNDLE_BYTES + 1 - len(payload))


def _forged_signature(payload: bytes) -> bytes:
    """The envelope with its signature's last byte changed (the signature ends the message)."""
    return payload[:-1] + bytes([payload[-1] ^ 1])


@pytest.mark.parametrize(
    ("reason", "payload"),
    [
        (Reason.UNKNOWN_KEY, _signed(_stage(), key=STRANGER)),
        (Reason.BAD_SIGNATURE, _forged_signature(_signed(_stage()))),
        (Reason.BAD_ENVELOPE, _signed(_stage())[:-3]),
        (Reason.TOO_LARGE, _padded(_signed(_stage()))),
    ],
    ids=_reason_id,
)
def test_a_rejection_of_an_unverified_bundle_names_no_rollout(
    reason: Reason, payload: bytes
) -> None:
    """Refused before its signature verified: rollout id '', seq 0, no op, whatever it carried."""
    # when the device refuses a bundle that carries rollout r-1 and a seq, unverified
    report = _rejection(payload)
    # then its report names no rollout and no bundle
    assert report.reason is reason
    assert (report.rollout_id, report.seq, report.op) == ("", 0, None)


@pytest.mark.parametrize(
    ("reason", "bundle"),
    [
        (Reason.WRONG_DEVICE, _stage(device_id="dev-2")),
        (
            Reason.BUNDLE_EXPIRED,
            _stage(issued_at=int(NOW.timestamp()) - 60, expires_at=int(NOW.timestamp()) - 1),
        ),
        (
            Reason.TOO_LARGE,
            _stage(credentials=(BundleCredential(CredentialType.CA_CHAIN, "x" * 5000),)),
        ),
        (Reason.TAG_IN_USE, _stage(tag=42)),
    ],
    ids=_reason_id,
)
def test_a_rejection_of_a_verified_bundle_names_its_rollout_and_seq(
    reason: Reason, bundle: Bundle
) -> None:
    """Refused after its signature verified: the report carries the bundle's rollout, seq, op."""
    # when the device refuses a bundle it verified
    report = _rejection(_signed(bundle))
    # then its report says which bundle it refused
    assert report.reason is reason
    assert (report.rollout_id, report.seq, report.op) == ("r-1", bundle.seq, "stage")


def test_a_bundle_whose_received_report_failed_is_taken_again_when_redelivered() -> None:
    """A failed `received` leaves the seq unaccepted: the redelivery is acted on, not a replay."""
    # given a device whose first report does not reach the broker
    device, bundle = _device(), _stage()
    payload = _signed(bundle)
    with pytest.raises(ConnectionError):
        asyncio.run(device.handle(Link(failures=1), payload))
    after_failure = (device.last_seq, device.needs_offline)
    # when the broker delivers the same bundle again
    link = Link()
    asyncio.run(device.handle(link, payload))
    # then the device had done nothing, and now accepts and stages it
    assert after_failure == (0, False)
    assert [(r.phase, r.seq) for r in link.reports] == [(Phase.RECEIVED, bundle.seq)]
    assert (device.last_seq, device.needs_offline) == (bundle.seq, True)


def test_a_bundle_whose_received_report_went_out_is_a_replay_the_second_time() -> None:
    """Once `received` is acknowledged the seq is the last accepted: the same bundle is refused."""
    # given a device that accepted a bundle
    device, bundle = _device(), _stage()
    asyncio.run(device.handle(Link(), _signed(bundle)))
    # when the same bundle comes again
    link = Link()
    asyncio.run(device.handle(link, _signed(bundle)))
    # then it is refused as a replay, naming the bundle
    assert [(r.phase, r.reason, r.seq) for r in link.reports] == [
        (Phase.REJECTED, Reason.REPLAY, bundle.seq)
    ]
