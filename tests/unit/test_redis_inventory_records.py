"""A device's inventory record: what it stores reads back, and it stays short."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.adapters.redis_inventory_records import (
    BUCKETS,
    bucket_of,
    decode_record,
    encode_record,
    item_from_json,
    item_json,
    item_ref,
    record_active_tags,
)
from orchestrator.domain.credentials import CredentialType, ReportedCredential

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 30, 15, 250000, tzinfo=UTC)
LISTPACK_VALUE = 64
"""Redis's default hash-max-listpack-value: a longer record turns its bucket into a table."""


def _ca(tag: int) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256="ab" * 32,
        not_after=NOW + timedelta(days=700),
        subject="CN=Fleet CA 2026,O=A rather long organisation name,C=DE",
        issuer="CN=Root",
    )


@pytest.mark.parametrize("active", [None, (), (42,), (42, 43, 44)])
@pytest.mark.parametrize("identity", [None, 44])
def test_a_record_reads_back_as_written(
    active: tuple[int, ...] | None, identity: int | None
) -> None:
    """Time to the microsecond, version, identity tag, active tags (none vs empty) and items."""
    ref = item_ref(item_json(_ca(42)))
    raw = encode_record(NOW.timestamp(), 2, identity, active, f"42:0:{ref} 44:1:{ref}")

    record = decode_record(raw)

    assert datetime.fromtimestamp(record.reported_at, UTC) == NOW
    assert (record.protocol_version, record.identity_tag, record.active_tags) == (
        2,
        identity,
        active,
    )
    assert record.items == ((42, 0, ref), (44, 1, ref))
    assert record_active_tags(raw) == active


def test_a_device_with_a_ca_and_a_certificate_fits_the_compact_encoding() -> None:
    """Two items, an identity tag and three active tags stay within 64 bytes."""
    ref = item_ref(item_json(_ca(42)))
    raw = encode_record(NOW.timestamp(), 2, 44, (42, 43, 44), f"42:0:{ref} 44:1:{ref}")

    assert len(raw.encode()) <= LISTPACK_VALUE


def test_an_item_entry_names_what_the_device_reported() -> None:
    """The entry reads back as the credential; the same certificate in any tag shares one
    ref, another certificate (or the same digest reported with another notAfter) does not."""
    item = _ca(42)
    later = replace(item, not_after=NOW + timedelta(days=701))
    other = replace(item, sha256="cd" * 32)

    assert item_from_json(42, 0, item_json(item)) == item
    assert item_ref(item_json(item)) == item_ref(item_json(_ca(43)))
    assert len({item_ref(item_json(c)) for c in (item, later, other)}) == 3


def test_buckets_spread_a_fleet_evenly() -> None:
    """4,096 devices of one shard's worth land in every bucket, none crowded."""
    counts = [0] * BUCKETS
    for n in range(16 * BUCKETS):
        counts[bucket_of(f"dev-{n:06d}")] += 1

    assert min(counts) > 0
    assert max(counts) < 40
