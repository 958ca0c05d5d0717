"""The largest bundle certfleet builds fits contract v2's bundle limit with margin.

Contract v2 lowered the bundle limit to 6144 bytes so a device's RAM fits 8 KB (issue
13). certfleet's largest bundle is a stage: one CA chain item at the modem's 4096
bytes, every other field at its longest. docs/protocol.md §3 gives its byte budget.
An identity rotation adds two bodies: a keygen, small, and an identity stage, whose one
client certificate item has the CA item's limit and the same encoded size, and whose
probe has room for one tag less.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.credentials import SEC_TAG_MAX, CredentialType
from orchestrator.domain.errors import BundleTooLargeError
from orchestrator.protocol.bundle import UINT64_MAX, Credential, encode_payload
from orchestrator.protocol.cose import es256_sign, key_id
from orchestrator.protocol.delegation import (
    DELEGABLE_OPS,
    DELEGATION_LABEL,
    DELEGATION_MAX_BYTES,
    Scope,
    sign_delegation,
)
from orchestrator.protocol.limits import (
    CA_CHAIN_MAX_BYTES,
    CERT_ITEM_MAX_BYTES,
    DEVICE_ID_MAX_CHARS,
    MAX_BUNDLE_BYTES,
    PROBE_HOST_MAX_BYTES,
    RID_MAX_BYTES,
    SUBJECT_MAX_BYTES,
    TAG_LIST_MAX,
)
from orchestrator.services.bundles import (
    BundleBody,
    IssuedBundle,
    issue_bundle,
    keygen_body,
    stage_body,
)
from tests.fake_rollouts import FakeSequences, FakeSigner

pytestmark = pytest.mark.unit

PROTOCOL_MD: Final = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
WORST_CASE_BYTES: Final = 4770
"""The figure docs/protocol.md §3 gives for the largest bundle certfleet builds."""
KEYGEN_WORST_CASE_BYTES: Final = 369
"""The figure docs/protocol.md §3 gives for the largest keygen bundle."""
IDENTITY_STAGE_WORST_CASE_BYTES: Final = 4765
"""The figure docs/protocol.md §3 gives for the largest identity stage."""
DELEGATED_WORST_CASE_BYTES: Final = 5317
"""The figure docs/protocol.md §3 gives for the largest stage under the largest delegation."""
LARGEST_DELEGATION_BYTES: Final = 537
"""The figure docs/protocol.md §3 gives for the largest delegation."""
NOW: Final = datetime(2026, 12, 1, tzinfo=UTC)


def _pem_of(size: int) -> str:
    """PEM-shaped ASCII of exactly `size` bytes (only its length matters here)."""
    head, tail = "-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"
    body = size - len(head) - len(tail)
    return head + "".join("\n" if (i + 1) % 65 == 0 else "A" for i in range(body)) + tail


def _issued_at_the_limits(body: BundleBody) -> IssuedBundle:
    """`body` signed for the longest dev and rid, with the largest seq."""
    return issue_bundle(
        signer=FakeSigner(),
        sequences=FakeSequences(),
        device_id="d" * DEVICE_ID_MAX_CHARS,
        rollout_id="r" * RID_MAX_BYTES,
        body=body,
        now=NOW,
        ttl_seconds=86400,
        seq=UINT64_MAX,
    )


def _largest_stage_body() -> BundleBody:
    """A stage body at every limit: a 4096-byte CA item, the longest host, 7 tags twice."""
    tags = [SEC_TAG_MAX - i for i in range(TAG_LIST_MAX)]
    return stage_body(
        ca_pems=[_pem_of(CA_CHAIN_MAX_BYTES)],
        tag=tags[0],
        probe_host="h" * PROBE_HOST_MAX_BYTES,
        probe_port=65535,
        probe_tags=tags,
        active_after=tags,
        commit_by=NOW,
    )


def _largest_stage() -> IssuedBundle:
    """A stage at every limit: a 4096-byte CA item, longest dev, rid and host, 7 tags."""
    return _issued_at_the_limits(_largest_stage_body())


def test_the_largest_stage_fits_the_bundle_limit_with_a_kilobyte_to_spare() -> None:
    """The worst case is the documented 4770 bytes, over 1 KB under the 6144-byte limit."""
    issued = _largest_stage()

    assert len(issued.bundle.credentials[0].pem.encode()) == CA_CHAIN_MAX_BYTES
    assert len(issued.data) == WORST_CASE_BYTES
    assert MAX_BUNDLE_BYTES - len(issued.data) > 1024


def test_the_largest_identity_stage_is_five_bytes_under_the_largest_stage() -> None:
    """A 4096-byte client certificate in place of the CA item, and 6 probe tags, not 7.

    The probe presents the staged identity tag besides its CA tags, and a socket takes 7
    sec_tags at most. (The body is `_largest_stage_body` with its item and probe swapped:
    `identity_stage_body` would want a parseable certificate; only lengths count here.)
    """
    # given
    largest = _largest_stage_body()
    assert largest.probe is not None
    item = Credential(CredentialType.CLIENT_CERT, _pem_of(CERT_ITEM_MAX_BYTES))
    probe = replace(largest.probe, tags=largest.probe.tags[: TAG_LIST_MAX - 1])
    # when
    issued = _issued_at_the_limits(replace(largest, credentials=(item,), probe=probe))
    # then
    assert issued.bundle.is_identity_stage
    assert len(issued.data) == IDENTITY_STAGE_WORST_CASE_BYTES == WORST_CASE_BYTES - 5


def test_the_largest_keygen_is_small() -> None:
    """A keygen at every limit (64-byte subject, longest dev and rid) is 369 bytes."""
    # when
    issued = _issued_at_the_limits(
        keygen_body(tag=SEC_TAG_MAX, subject="s" * SUBJECT_MAX_BYTES, commit_by=NOW)
    )
    # then
    assert len(issued.data) == KEYGEN_WORST_CASE_BYTES
    doc = PROTOCOL_MD.read_text()
    assert f"| keygen | {KEYGEN_WORST_CASE_BYTES} |" in doc
    assert f"| identity stage | {IDENTITY_STAGE_WORST_CASE_BYTES} |" in doc


def test_the_protocol_doc_gives_the_worst_case_field_by_field() -> None:
    """docs/protocol.md states the worst case and its payload's size as measured here."""
    issued = _largest_stage()
    payload = encode_payload(issued.bundle)
    doc = PROTOCOL_MD.read_text()

    assert f"| **bundle** | **{len(issued.data)}** |" in doc
    assert f"| payload map | {len(payload)} |" in doc
    for key, value in cbor2.loads(payload).items():
        pair = len(cbor2.dumps(key)) + len(cbor2.dumps(value, canonical=True))
        assert f"| `{key}` | {pair} |" in doc


class _DelegatedSigner:
    """A `BundleSigner` whose key signs under the largest delegation a root can give it."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        root = FakeSigner()
        self.delegation = sign_delegation(
            root=root,
            public_key=self._key.public_key(),
            not_before=UINT64_MAX - 1,
            expires_at=UINT64_MAX,
            issued_at=UINT64_MAX,
            scope=Scope(
                ops=DELEGABLE_OPS,
                kinds=tuple(range(6)),
                rollouts=tuple(c * RID_MAX_BYTES for c in "abcd"),
            ),
        )

    @property
    def key_id(self) -> bytes:
        return key_id(self._key.public_key())

    def sign(self, to_be_signed: bytes) -> bytes:
        return es256_sign(self._key, to_be_signed)

    def delegation_for(self, expires_at: int) -> bytes | None:
        return self.delegation


def test_the_largest_delegated_stage_fits_the_bundle_limit() -> None:
    """The largest stage under the largest delegation (every op and kind, four 64-byte
    rids, 64-bit times): the delegation adds its label, a byte-string head and itself."""
    # given
    signer = _DelegatedSigner()
    # when
    issued = issue_bundle(
        signer=signer,
        sequences=FakeSequences(),
        device_id="d" * DEVICE_ID_MAX_CHARS,
        rollout_id="r" * RID_MAX_BYTES,
        body=_largest_stage_body(),
        now=NOW,
        ttl_seconds=86400,
        seq=UINT64_MAX,
    )
    # then
    assert len(signer.delegation) == LARGEST_DELEGATION_BYTES <= DELEGATION_MAX_BYTES
    label_and_head = len(cbor2.dumps(DELEGATION_LABEL)) + 3
    grown_protected_head = 2  # the protected bstr's head: 1 byte for 13, 3 for 558
    assert (
        len(issued.data)
        == DELEGATED_WORST_CASE_BYTES
        == (WORST_CASE_BYTES + label_and_head + LARGEST_DELEGATION_BYTES + grown_protected_head)
    )
    assert len(issued.data) <= MAX_BUNDLE_BYTES
    assert WORST_CASE_BYTES + 5 + 3 + DELEGATION_MAX_BYTES + 2 <= MAX_BUNDLE_BYTES
    doc = PROTOCOL_MD.read_text()
    assert f"| delegated stage | {DELEGATED_WORST_CASE_BYTES} |" in doc
    assert f"{LARGEST_DELEGATION_BYTES} bytes" in doc


def test_a_bundle_over_the_limit_is_never_issued() -> None:
    """A body no kind builds today (CA item and PSK identity, 4 KB each) is refused."""
    # given a stage body carrying two 4096-byte items: well-formed, but over 6144 bytes signed
    two_items = replace(
        stage_body(
            ca_pems=[_pem_of(CA_CHAIN_MAX_BYTES)],
            tag=43,
            probe_host="probe.example",
            probe_port=443,
            probe_tags=[43],
            active_after=[43],
            commit_by=NOW,
        ),
        credentials=(
            Credential(CredentialType.CA_CHAIN, _pem_of(CA_CHAIN_MAX_BYTES)),
            Credential(CredentialType.PSK_IDENTITY, _pem_of(CA_CHAIN_MAX_BYTES)),
        ),
    )

    # when certfleet signs it, then it refuses, naming the limit
    with pytest.raises(BundleTooLargeError, match=str(MAX_BUNDLE_BYTES)):
        issue_bundle(
            signer=FakeSigner(),
            sequences=FakeSequences(),
            device_id="nrf-1",
            rollout_id="ro-1",
            body=two_items,
            now=NOW,
            ttl_seconds=86400,
        )
