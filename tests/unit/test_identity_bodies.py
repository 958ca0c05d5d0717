"""The bundle bodies of an identity rotation, signed as certfleet signs them.

keygen -> identity stage -> commit -> retire (docs/protocol.md §11): each body becomes a
bundle a device accepts, and a certificate the modem could not store is refused before
anything is signed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.errors import InvalidCredentialError
from orchestrator.protocol.bundle import decode_payload, open_bundle
from orchestrator.protocol.cose import Sign1Message
from orchestrator.protocol.limits import CERT_ITEM_MAX_BYTES
from orchestrator.services.bundles import (
    BundleBody,
    IssuedBundle,
    identity_commit_body,
    identity_retire_body,
    identity_stage_body,
    issue_bundle,
    keygen_body,
)
from tests.fake_rollouts import FakeSequences, FakeSigner

pytestmark = pytest.mark.unit

NOW: Final = datetime(2026, 12, 1, tzinfo=UTC)
SIGNER: Final = FakeSigner()


def _client_certificate(device_id: str = "nrf-1") -> str:
    """A certificate for a fresh P-256 key, CN = device id, signed by a throwaway CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Device CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _issue(body: BundleBody, *, version: int = 2) -> IssuedBundle:
    return issue_bundle(
        signer=SIGNER,
        sequences=FakeSequences(),
        device_id="nrf-1",
        rollout_id="ro-1",
        body=body,
        now=NOW,
        ttl_seconds=3600,
        version=version,
    )


def _opened(issued: IssuedBundle) -> dict[str, object]:
    """What a device reads: opened with every check of §4 up to 12, as a map."""
    bundle = open_bundle(
        issued.data,
        signers={SIGNER.key_id: SIGNER.public_key},
        device_id="nrf-1",
        last_seq=0,
        now=NOW,
    )
    assert bundle == issued.bundle
    payload: dict[str, object] = cbor2.loads(Sign1Message.decode(issued.data).payload)
    return payload


def test_a_keygen_asks_for_a_key_in_the_spare_tag_for_the_device_id() -> None:
    """The keygen bundle names the spare tag, the CSR's subject and the deadline."""
    # when
    issued = _issue(keygen_body(tag=45, subject="nrf-1", commit_by=NOW + timedelta(hours=1)))
    # then
    payload = _opened(issued)
    assert {k: payload[k] for k in ("op", "tag", "subject", "commit_by")} == {
        "op": "keygen",
        "tag": 45,
        "subject": "nrf-1",
        "commit_by": int(NOW.timestamp()) + 3600,
    }
    assert "creds" not in payload


def test_an_identity_stage_carries_the_certificate_alone_and_keeps_the_active_list() -> None:
    """One type-1 item into the tag, a probe with the CA tags, the active list unchanged."""
    # given
    pem = _client_certificate()
    # when
    issued = _issue(
        identity_stage_body(
            cert_pem=pem,
            tag=45,
            probe_host="broker.example",
            probe_port=8884,
            probe_tags=[42],
            active=[42],
            commit_by=NOW + timedelta(hours=1),
        )
    )
    # then
    payload = _opened(issued)
    assert payload["creds"] == [{"type": int(CredentialType.CLIENT_CERT), "pem": pem}]
    assert payload["probe"] == {"host": "broker.example", "port": 8884, "tags": [42]}
    assert payload["active"] == [42]
    assert issued.bundle.is_identity_stage


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        ("-----BEGIN CERTIFICATE-----\n" + "A" * CERT_ITEM_MAX_BYTES, "over the 4096-byte item"),
        ("not a certificate", "not PEM certificates"),
        ("-----BEGIN CERTIFICATE-----\né\n-----END CERTIFICATE-----\n", "ASCII"),
    ],
    ids=["too large", "not pem", "not ascii"],
)
def test_a_certificate_the_modem_cannot_store_is_refused_before_signing(
    pem: str, match: str
) -> None:
    """Too large, not a certificate, not ASCII: InvalidCredentialError, no bundle."""
    with pytest.raises(InvalidCredentialError, match=match):
        identity_stage_body(
            cert_pem=pem,
            tag=45,
            probe_host="broker.example",
            probe_port=8884,
            probe_tags=[42],
            active=[42],
            commit_by=NOW,
        )


def test_an_identity_probe_over_seven_sec_tags_is_refused_before_signing() -> None:
    """Seven CA tags and the identity tag would not fit the probe's socket: refused."""
    with pytest.raises(InvalidCredentialError, match="over the 7 sec_tags"):
        identity_stage_body(
            cert_pem=_client_certificate(),
            tag=45,
            probe_host="broker.example",
            probe_port=8884,
            probe_tags=list(range(50, 57)),
            active=list(range(50, 57)),
            commit_by=NOW,
        )


def test_an_identity_commit_names_the_tag_and_no_active_list() -> None:
    """The commit switches the identity, not the CA list; undo_by only for v2 devices."""
    # given
    body = identity_commit_body(tag=45, undo_by=int(NOW.timestamp()) + 86400)
    # when
    v2, v1 = _issue(body), _issue(body, version=1)
    # then
    assert {k: v for k, v in _opened(v2).items() if k in ("op", "tag", "active", "undo_by")} == {
        "op": "commit",
        "tag": 45,
        "undo_by": int(NOW.timestamp()) + 86400,
    }
    assert decode_payload(Sign1Message.decode(v1.data).payload, versions=(1,)).undo_by is None


def test_an_identity_retire_deletes_the_old_tag_and_keeps_the_active_list() -> None:
    """retire: tags = [old identity tag], active = the device's CA tags as they are."""
    # when
    payload = _opened(_issue(identity_retire_body(old_tag=44, active=[42, 43])))
    # then
    assert (payload["op"], payload["tags"], payload["active"]) == ("retire", [44], [42, 43])
