"""A bundle template gives, per device, the bundle `issue_bundle` gives: the same payload
bytes, an envelope a device opens, and the same refusals of a bad device id or seq."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

import pytest

from orchestrator.protocol.bundle import (
    UINT64_MAX,
    Bundle,
    BundleRejectedError,
    PayloadTemplate,
    Reason,
    SignerKey,
    encode_payload,
    open_bundle,
)
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.bundles import (
    BundleBody,
    bundle_template,
    identity_commit_body,
    identity_retire_body,
    issue_bundle,
    keygen_body,
    stage_body,
)
from simulator.pki import make_ca
from tests.fake_rollouts import FakeSigner

NOW: Final = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
CA_PEM: Final = make_ca("Template Root", not_before=NOW, not_after=NOW + timedelta(days=9)).pem
SIGNER: Final = FakeSigner()
SEQS: Final = (1, 23, 24, 255, 256, 65535, 65536, 2**32, UINT64_MAX)
DEVICES: Final = ("d", "dev-000001", "x" * 64, "Dev_9.z-")


def _bodies() -> dict[str, BundleBody]:
    return {
        "stage": stage_body(
            ca_pems=[CA_PEM.decode()],
            tag=43,
            probe_host="probe.example",
            probe_port=8443,
            probe_tags=[43],
            active_after=[42, 43],
            commit_by=NOW + timedelta(hours=1),
        ),
        "commit": BundleBody(op="commit", tag=43, active=(42, 43), undo_by=1_800_000_000),
        "retire": BundleBody(op="retire", tags=(42,), active=(43,)),
        "rollback": BundleBody(op="rollback", tag=43),
        "trust-signer": BundleBody(
            op="trust-signer",
            signer=SignerKey(kid=b"\x01" * 8, public_point=b"\x04" + b"\x02" * 64),
            retire_kid=b"\x03" * 8,
        ),
        "keygen": keygen_body(tag=50, subject="dev-000001", commit_by=NOW + timedelta(hours=1)),
        "identity commit": identity_commit_body(tag=50, undo_by=1_800_000_000),
        "identity retire": identity_retire_body(old_tag=49, active=[42]),
    }


BODIES: Final = _bodies()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_template_encodes_what_each_devices_own_bundle_encodes_to(
    name: str, version: int
) -> None:
    """Every device id and seq (around each CBOR length boundary) in every body: the bytes
    `encode_payload` gives for that device's `Bundle`."""
    # given
    template = bundle_template(
        signer=SIGNER,
        rollout_id="ro-template",
        body=BODIES[name],
        now=NOW,
        ttl_seconds=3600,
        version=version,
        device_id="dev-000001",
    )
    model = template.payload.bundle
    # when / then
    for device_id in DEVICES:
        for seq in SEQS:
            expected = encode_payload(replace(model, device_id=device_id, seq=seq))
            assert template.payload.encode(device_id, seq) == expected, (device_id, seq)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_templates_bundle_is_the_one_issue_bundle_makes_and_a_device_opens_it(name: str) -> None:
    """Same payload as `issue_bundle`'s, a valid ES256 envelope, and the device's checks pass."""
    # given
    body = BODIES[name]
    template = bundle_template(
        signer=SIGNER, rollout_id="ro-template", body=body, now=NOW, ttl_seconds=600, device_id="d"
    )
    issued = issue_bundle(
        signer=SIGNER,
        sequences=_NoSequences(),
        device_id="dev-000001",
        rollout_id="ro-template",
        body=body,
        now=NOW,
        ttl_seconds=600,
        seq=77,
    )
    # when
    data = template.issue("dev-000001", 77)
    # then
    assert Sign1Message.decode(data).payload == Sign1Message.decode(issued.data).payload
    opened = open_bundle(
        data,
        signers={SIGNER.key_id: SIGNER.public_key},
        device_id="dev-000001",
        last_seq=76,
        now=NOW,
    )
    assert opened == issued.bundle


@pytest.mark.parametrize(
    ("device_id", "seq"),
    [("", 1), ("a/b", 1), ("a+b", 1), ("x" * 65, 1), ("dev", 0), ("dev", UINT64_MAX + 1)],
)
def test_a_template_refuses_what_a_bundle_refuses(device_id: str, seq: int) -> None:
    """A device id that is no topic level, a seq out of range: bad_payload, as `Bundle` says."""
    # given
    template = PayloadTemplate.of(
        Bundle(device_id="dev", rollout_id="r", seq=1, op="rollback", issued_at=1, expires_at=2)
    )
    # when
    with pytest.raises(BundleRejectedError) as refused:
        template.encode(device_id, seq)
    # then
    assert refused.value.reason is Reason.BAD_PAYLOAD
    with pytest.raises(BundleRejectedError):
        replace(template.bundle, device_id=device_id, seq=seq)


class _NoSequences:
    """`SequenceStore` for bundles issued with their seq given."""

    def next_sequence(self, device_id: str) -> int:
        raise AssertionError(f"a sequence was taken for {device_id}")

    def next_sequences(self, device_ids: object) -> dict[str, int]:
        raise AssertionError("sequences were taken")
