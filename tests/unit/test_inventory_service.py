"""Ingesting device state batches and importing PEMs into the library."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from orchestrator.domain.credentials import sha256_hex
from orchestrator.domain.errors import InvalidCredentialError
from orchestrator.protocol import MAX_MESSAGE_BYTES, Topics
from orchestrator.services.inventory import import_pems, ingest_batch
from orchestrator.services.scan import scan_fleet
from simulator.pki import IssuedCA, make_ca
from tests.fakes import FakeInventory, FakeLibrary
from tests.unit.builders import NOW, entry, state_payload

pytestmark = pytest.mark.unit

TOPICS = Topics("certfleet")
DAY = timedelta(days=1)
SKEW = timedelta(minutes=5)


@pytest.fixture(scope="module")
def root() -> IssuedCA:
    """A CA valid for a year."""
    return make_ca("Root", not_before=NOW - DAY, not_after=NOW + 365 * DAY)


@pytest.fixture(scope="module")
def other_root() -> IssuedCA:
    """A second CA, expiring sooner."""
    return make_ca("Other Root", not_before=NOW - DAY, not_after=NOW + 60 * DAY)


def test_mixed_batch_records_good_and_counts_each_bad() -> None:
    """Bad messages are counted under their reason and never stop the good ones."""
    # given
    store = FakeInventory()
    batch = [
        (TOPICS.state("dev-good"), state_payload("dev-good")),
        (TOPICS.state("dev-1"), b"\xff not json"),
        (TOPICS.state("dev-2"), state_payload("dev-2", credentials=[entry(-1)])),
        (TOPICS.state("dev-3"), state_payload("dev-3").ljust(MAX_MESSAGE_BYTES + 1, b" ")),
        (TOPICS.state("dev-4"), state_payload("dev-someone-else")),
        (TOPICS.report("dev-5"), state_payload("dev-5")),
        (TOPICS.bundle("dev-7"), b"a device never publishes here"),
        (TOPICS.state("dev-6"), b"[" * 5000),
    ]
    # when
    result = ingest_batch(store, TOPICS, batch, received_at=NOW, clock_skew=SKEW)
    # then
    assert (result.applied, result.stale, result.rejected) == (1, 0, 7)
    assert store.rejection_counts() == {
        "bad_topic": 1,
        "not_json": 2,
        "schema": 2,
        "too_large": 1,
        "topic_mismatch": 1,
    }
    assert store.device_count() == 1
    assert store.device_credentials("dev-good") is not None


@pytest.mark.parametrize(
    "topic",
    ["other/dev-1/state", "certfleet/dev+1/state", "certfleet", "certfleet/dev-1/bundle"],
)
def test_foreign_topic_is_bad_topic(topic: str) -> None:
    """A message off the `{prefix}/{id}/state|report` patterns is counted as bad_topic."""
    # given
    store = FakeInventory()
    # when
    result = ingest_batch(
        store, TOPICS, [(topic, state_payload())], received_at=NOW, clock_skew=SKEW
    )
    # then
    assert result.rejected == 1
    assert store.rejection_counts() == {"bad_topic": 1}


def test_stale_report_does_not_overwrite_newer() -> None:
    """A report older than the stored one is counted stale and changes nothing."""
    # given
    store = FakeInventory()
    newer = state_payload(time="2025-06-01T00:00:00+00:00", credentials=[entry(7)])
    older = state_payload(time="2025-05-31T00:00:00+00:00", credentials=[entry(8)])
    ingest_batch(store, TOPICS, [(TOPICS.state("dev-1"), newer)], received_at=NOW, clock_skew=SKEW)
    # when
    result = ingest_batch(
        store, TOPICS, [(TOPICS.state("dev-1"), older)], received_at=NOW, clock_skew=SKEW
    )
    # then
    assert (result.applied, result.stale, result.rejected) == (0, 1, 0)
    held = store.device_credentials("dev-1")
    assert held is not None
    assert [c.sec_tag for c in held.credentials] == [7]
    assert store.sec_tags() == [7]


def test_empty_batch_does_nothing() -> None:
    """An empty batch records and counts nothing."""
    # given
    store = FakeInventory()
    # when
    result = ingest_batch(store, TOPICS, [], received_at=NOW, clock_skew=SKEW)
    # then
    assert (result.applied, result.stale, result.rejected) == (0, 0, 0)
    assert store.rejection_counts() == {}


def test_pem_in_a_message_joins_the_library(root: IssuedCA) -> None:
    """A CA chain a device sends in full is added to the library and is no longer unknown."""
    # given
    library = FakeLibrary()
    store = FakeInventory(library)
    pem = root.pem.decode()
    sent = entry(7, sha256=sha256_hex(root.pem), pem=pem)
    payload = state_payload("dev-1", credentials=[sent])
    # when
    ingest_batch(
        store, TOPICS, [(TOPICS.state("dev-1"), payload)], received_at=NOW, clock_skew=SKEW
    )
    # then
    assert library.get(sha256_hex(root.pem)) == pem
    summary = scan_fleet(store, library, now=NOW, warning_days=30, list_limit=10)
    assert summary.by_tag[7].unknown == 0
    assert summary.unknown_digests == ()


def test_import_rejects_non_pem() -> None:
    """A file that is not a PEM certificate chain is refused and nothing is added."""
    # given
    library = FakeLibrary()
    # when
    with pytest.raises(InvalidCredentialError, match=r"notes\.txt"):
        import_pems(library, [("notes.txt", b"not a certificate")])
    # then
    assert library.pems == {}


def test_import_is_all_or_nothing(root: IssuedCA) -> None:
    """One bad file in an import keeps the good ones out too."""
    # given
    library = FakeLibrary()
    # when
    with pytest.raises(InvalidCredentialError):
        import_pems(library, [("root.pem", root.pem), ("bad.pem", b"")])
    # then
    assert library.pems == {}


def test_reimport_reports_known(root: IssuedCA, other_root: IssuedCA) -> None:
    """Importing again marks known files as not new and adds only the new ones."""
    # given
    library = FakeLibrary()
    first = import_pems(library, [("root.pem", root.pem)])
    # when
    second = import_pems(library, [("root.pem", root.pem), ("other.pem", other_root.pem)])
    # then
    assert [i.new for i in first] == [True]
    assert [(i.sha256, i.new) for i in second] == [
        (sha256_hex(root.pem), False),
        (sha256_hex(other_root.pem), True),
    ]
    assert library.get(sha256_hex(other_root.pem)) == other_root.pem.decode()


def test_import_describes_a_chain(root: IssuedCA, other_root: IssuedCA) -> None:
    """An imported chain lists its subjects and the earliest notAfter, keyed by its bytes."""
    # given
    chain = root.pem + other_root.pem
    # when
    (imported,) = import_pems(FakeLibrary(), [("chain.pem", chain)])
    # then
    assert imported.sha256 == sha256_hex(chain)
    assert imported.subjects == (
        root.certificate.subject.rfc4514_string(),
        other_root.certificate.subject.rfc4514_string(),
    )
    assert imported.not_after == other_root.certificate.not_valid_after_utc


def test_import_rejects_non_ascii(root: IssuedCA) -> None:
    """A PEM file carrying non-ASCII bytes around its blocks is refused."""
    # given
    content = "Émetteur: Root\n".encode() + root.pem
    # when / then
    with pytest.raises(InvalidCredentialError, match="ASCII"):
        import_pems(FakeLibrary(), [("root.pem", content)])


def _report(device_id: str, **fields: object) -> bytes:
    document: dict[str, object] = {
        "v": 1,
        "device_id": device_id,
        "rollout_id": "r-1",
        "seq": 3,
        "op": "stage",
        "phase": "health_failed",
        "reason": "unknown_ca",
        "detail": "certificate verify failed",
        "time": "2026-11-25T10:00:00+00:00",
        "active_tags": [42],
    }
    document.update(fields)
    return json.dumps(document).encode()


def test_reports_are_logged_per_device_and_forged_ones_refused() -> None:
    """A valid report joins its device's log; one naming another device or phase is refused."""
    # given
    store = FakeInventory()
    batch = [
        (TOPICS.report("dev-1"), _report("dev-1")),
        (TOPICS.report("dev-2"), _report("dev-1")),
        (TOPICS.report("dev-3"), _report("dev-3", phase="exploded")),
        (TOPICS.report("dev-4"), _report("dev-4", reason="because")),
    ]
    # when
    result = ingest_batch(store, TOPICS, batch, received_at=NOW, clock_skew=SKEW)
    # then
    assert (len(result.reports), result.rejected) == (1, 3)
    assert store.rejection_counts() == {"schema": 2, "topic_mismatch": 1}
    [logged] = store.recent_reports("dev-1", limit=10)
    assert (logged.seq, logged.phase, logged.reason, logged.active_tags) == (
        3,
        "health_failed",
        "unknown_ca",
        (42,),
    )
    assert store.recent_reports("dev-2", limit=10) == []
