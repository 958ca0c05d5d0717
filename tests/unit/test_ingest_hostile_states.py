"""States that must not freeze a device's inventory or grow the library: refused and counted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator.domain.credentials import CA_CHAIN_MAX_BYTES, sha256_hex
from orchestrator.protocol import Topics
from orchestrator.services.inventory import IngestResult, ingest_batch
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


@pytest.fixture
def library() -> FakeLibrary:
    """An empty credential library."""
    return FakeLibrary()


@pytest.fixture
def store(library: FakeLibrary) -> FakeInventory:
    """An empty inventory writing pems to `library`."""
    return FakeInventory(library)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """The log events emitted during the test."""
    with capture_logs() as captured:
        yield captured


def _ingest(store: FakeInventory, *payloads: bytes, device_id: str = "dev-1") -> IngestResult:
    batch = [(TOPICS.state(device_id), payload) for payload in payloads]
    return ingest_batch(store, TOPICS, batch, received_at=NOW, clock_skew=SKEW)


def _at(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


def _with_pem(sec_tag: int, pem: str, **fields: Any) -> dict[str, Any]:
    return entry(sec_tag, sha256=sha256_hex(pem.encode()), pem=pem, **fields)


def test_future_state_refused_and_a_later_true_one_applies(
    store: FakeInventory, library: FakeLibrary, root: IssuedCA, logs: list[dict[str, Any]]
) -> None:
    """A state dated past the skew is refused (clock_skew); the next true state applies."""
    # given
    future = state_payload(
        time="2099-01-01T00:00:00Z", credentials=[_with_pem(7, root.pem.decode())]
    )
    true = state_payload(time=_at(-timedelta(seconds=1)), credentials=[entry(8)])
    # when
    refused = _ingest(store, future)
    # then
    assert (refused.applied, refused.rejected) == (0, 1)
    assert store.rejection_counts() == {"clock_skew": 1}
    assert store.device_credentials("dev-1") is None
    assert library.pems == {}
    [event] = [e for e in logs if e["event"] == "device_message_rejected"]
    assert (event["reason"], event["device_id"]) == ("clock_skew", "dev-1")
    # when
    applied = _ingest(store, true)
    # then
    assert applied.applied == 1
    held = store.device_credentials("dev-1")
    assert held is not None
    assert [c.sec_tag for c in held.credentials] == [8]


def test_future_state_leaves_the_stored_one(store: FakeInventory) -> None:
    """A future-dated state for a known device changes nothing of what is stored."""
    # given
    _ingest(store, state_payload(time=_at(-DAY), credentials=[entry(7)]))
    before = store.device_credentials("dev-1")
    # when
    result = _ingest(store, state_payload(time=_at(SKEW + timedelta(seconds=1))))
    # then
    assert result.rejected == 1
    assert store.device_credentials("dev-1") == before


def test_state_within_the_skew_applies(store: FakeInventory) -> None:
    """A device clock ahead by at most the skew is accepted."""
    # when
    result = _ingest(store, state_payload(time=_at(SKEW)))
    # then
    assert (result.applied, result.rejected) == (1, 0)
    assert store.rejection_counts() == {}


@pytest.mark.parametrize("time", [1e10, 10_000_000_000, "10000000000", "2025-06-01 11:00:00Z"])
def test_time_not_an_rfc3339_string_refused(store: FakeInventory, time: object) -> None:
    """A numeric or non-RFC 3339 `time` is refused as schema and records nothing."""
    # when
    result = _ingest(store, state_payload(time=time))  # type: ignore[arg-type]  # the hostile value
    # then
    assert result.rejected == 1
    assert store.rejection_counts() == {"schema": 1}
    assert store.device_count() == 0


def test_stale_states_add_nothing_to_the_library(
    store: FakeInventory, library: FakeLibrary
) -> None:
    """200 states older than the stored one, each with a new pem, leave the library as it was."""
    # given
    _ingest(store, state_payload(time=_at(-timedelta(hours=1)), credentials=[entry(7)]))
    stale = [
        state_payload(
            time=f"2001-01-01T00:00:{i % 60:02d}Z",
            credentials=[
                _with_pem(7, make_ca(f"Junk {i}", not_before=NOW, not_after=NOW + DAY).pem.decode())
            ],
        )
        for i in range(200)
    ]
    # when
    result = _ingest(store, *stale)
    # then
    assert (result.applied, result.stale, result.rejected) == (0, 200, 0)
    assert library.pems == {}
    held = store.device_credentials("dev-1")
    assert held is not None
    assert [c.sha256 for c in held.credentials] == [entry(7)["sha256"]]


def test_unparseable_pem_refused_and_the_rest_recorded(
    store: FakeInventory, library: FakeLibrary, root: IssuedCA, logs: list[dict[str, Any]]
) -> None:
    """A pem that is no certificate is counted as pem_invalid; its item and the good pem stay."""
    # given
    junk = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    payload = state_payload(credentials=[_with_pem(7, junk), _with_pem(8, root.pem.decode())])
    # when
    result = _ingest(store, payload)
    # then
    assert (result.applied, result.rejected) == (1, 0)
    assert store.rejection_counts() == {"pem_invalid": 1}
    assert library.pems == {sha256_hex(root.pem): root.pem.decode()}
    held = store.device_credentials("dev-1")
    assert held is not None
    assert [c.sec_tag for c in held.credentials] == [7, 8]
    [event] = [e for e in logs if e["event"] == "device_message_rejected"]
    assert (event["reason"], event["device_id"]) == ("pem_invalid", "dev-1")


def test_non_ascii_pem_refused(store: FakeInventory, library: FakeLibrary, root: IssuedCA) -> None:
    """A pem with non-ASCII text around a valid certificate is not a library entry."""
    # given
    pem = "Émetteur: Root\n" + root.pem.decode()
    # when
    result = _ingest(store, state_payload(credentials=[_with_pem(7, pem)]))
    # then
    assert result.applied == 1
    assert store.rejection_counts() == {"pem_invalid": 1}
    assert library.pems == {}


def test_pem_over_the_modem_limit_refused(
    store: FakeInventory, library: FakeLibrary, root: IssuedCA
) -> None:
    """A certificate chain over the modem's 4 KB CA chain limit stays out of the library."""
    # given
    pem = root.pem.decode() * (CA_CHAIN_MAX_BYTES // len(root.pem) + 1)
    assert CA_CHAIN_MAX_BYTES < len(pem) <= 8192
    # when
    result = _ingest(store, state_payload(credentials=[_with_pem(7, pem)]))
    # then
    assert result.applied == 1
    assert store.rejection_counts() == {"pem_too_large": 1}
    assert library.pems == {}


def test_pem_at_the_modem_limit_accepted(
    store: FakeInventory, library: FakeLibrary, root: IssuedCA
) -> None:
    """A chain of exactly 4 KB joins the library."""
    # given
    pem = root.pem.decode()
    pem = pem + "\n" * (CA_CHAIN_MAX_BYTES - len(pem))
    # when
    _ingest(store, state_payload(credentials=[_with_pem(7, pem)]))
    # then
    assert store.rejection_counts() == {}
    assert library.pems == {sha256_hex(pem.encode()): pem}
