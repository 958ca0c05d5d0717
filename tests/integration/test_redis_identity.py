"""`RedisIdentityStore` and `FakeIdentityStore` keep the same `IdentityStore` contract,
against a real redis-server."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from orchestrator.adapters.redis_connection import RedisClient, connect
from orchestrator.adapters.redis_identity import (
    CLAIMED_KEYS,
    REVOKED,
    REVOKED_EXPIRY,
    RedisIdentityStore,
)
from orchestrator.adapters.redis_rollout_plan import rollout_key
from orchestrator.domain.errors import StoreUnavailableError
from orchestrator.domain.identity import RevokedCertificate
from orchestrator.ports.identity import IdentityStore
from simulator.services import LocalService, free_port
from tests.conftest import CLUSTER, flush_store
from tests.fakes import FakeIdentityStore

pytestmark = pytest.mark.integration

MakeStore = Callable[[], IdentityStore]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = "9f" * 32


@pytest.fixture
def client(redis_service: LocalService) -> Iterator[RedisClient]:
    """A client of the flushed session store (a Redis or a cluster), as bootstrap builds it
    (text replies)."""
    url = f"redis://{redis_service.host}:{redis_service.port}/0"
    flush_store(url)
    connection = connect(url, cluster=CLUSTER)
    yield connection
    connection.close()


@pytest.fixture(params=["redis", "fake"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Each store, the Redis one over a flushed redis-server."""
    if request.param == "fake":
        return FakeIdentityStore
    connection: RedisClient = request.getfixturevalue("client")
    return lambda: RedisIdentityStore(connection)


def revocation(serial: int, *, days: float = 30, device: str = "dev-1") -> RevokedCertificate:
    return RevokedCertificate(
        serial=serial,
        revoked_at=NOW - timedelta(minutes=5),
        not_after=NOW + timedelta(days=days),
        device_id=device,
    )


def test_the_fake_has_the_port_signatures() -> None:
    """FakeIdentityStore and RedisIdentityStore have every IdentityStore method, same parameters."""
    # given
    members = [name for name in vars(IdentityStore) if not name.startswith("_")]
    # when
    mismatched = [
        (store.__name__, name)
        for store in (FakeIdentityStore, RedisIdentityStore)
        for name in members
        if inspect.signature(getattr(IdentityStore, name)).parameters.keys()
        != inspect.signature(getattr(store, name, lambda: None)).parameters.keys()
    ]
    # then
    assert members
    assert mismatched == []


def test_csr_fields_are_kept_per_rollout(make_store: MakeStore) -> None:
    """A device's csr field reads back from its rollout only; a later one replaces it."""
    # given
    store = make_store()
    store.put_csrs("ro-1", {"dev-1": "AAA.BBB", "dev-2": "CCC.DDD"})
    store.put_csrs("ro-2", {"dev-1": "EEE.FFF"})
    # when
    store.put_csrs("ro-1", {"dev-2": "GGG.HHH"})
    store.put_csrs("ro-1", {})
    # then
    assert store.csrs("ro-1", ["dev-1", "dev-2", "dev-3"]) == {
        "dev-1": "AAA.BBB",
        "dev-2": "GGG.HHH",
    }
    assert store.csrs("ro-2", ["dev-1", "dev-2"]) == {"dev-1": "EEE.FFF"}
    assert store.csrs("ro-3", ["dev-1"]) == {}
    assert store.csrs("ro-1", []) == {}


def test_a_key_is_claimed_once_by_anyone(make_store: MakeStore) -> None:
    """The first claim of a key wins; the same (device, rollout) may claim it again (a retried
    task), any other device or rollout is told it was seen."""
    # given
    store = make_store()
    # when
    first = store.claim_key(KEY, "dev-1", "ro-1")
    retried = store.claim_key(KEY.upper(), "dev-1", "ro-1")
    others = [
        store.claim_key(KEY, "dev-1", "ro-2"),
        store.claim_key(KEY, "dev-2", "ro-1"),
        store.claim_key(KEY, "ro-1", "dev-1"),
    ]
    other = store.claim_key("ab" * 32, "dev-2", "ro-2")
    # then
    assert (first, retried) == (True, True)
    assert others == [False, False, False]
    assert other is True


def test_the_redis_claim_remembers_who_had_the_key(client: RedisClient) -> None:
    """In Redis the claimed key names the rollout and device that claimed it first."""
    # given
    store = RedisIdentityStore(client)
    # when
    store.claim_key(KEY, "dev-1", "ro-1")
    store.claim_key(KEY, "dev-2", "ro-1")
    # then
    assert client.hgetall(CLAIMED_KEYS) == {KEY: "ro-1/dev-1"}


def test_certificates_are_kept_per_rollout(make_store: MakeStore) -> None:
    """Old (maybe unknown) and new PEMs read back per device and rollout."""
    # given
    store = make_store()
    old, new = "-----BEGIN CERTIFICATE-----\nold\n", "-----BEGIN CERTIFICATE-----\nnew\n"
    # when
    store.put_certificates("ro-1", {"dev-1": (old, new), "dev-2": (None, new)})
    store.put_certificates("ro-1", {})
    # then
    assert store.certificates("ro-1", ["dev-1", "dev-2", "dev-3"]) == {
        "dev-1": (old, new),
        "dev-2": (None, new),
    }
    assert store.certificates("ro-2", ["dev-1"]) == {}
    assert store.certificates("ro-1", []) == {}


def test_revocations_are_kept_once_per_serial(make_store: MakeStore) -> None:
    """add_revoked counts only new serials; revoked lists each once, by serial, in UTC."""
    # given
    store = make_store()
    big = 2**159 + 12345
    # when
    first = store.add_revoked([revocation(big), revocation(7), revocation(7, device="dev-9")])
    repeat = store.add_revoked([revocation(7, device="dev-2"), revocation(8)])
    none = store.add_revoked([])
    # then
    assert (first, repeat, none) == (2, 1, 0)
    listed = store.revoked(now=NOW)
    assert [entry.serial for entry in listed] == [7, 8, big]
    assert listed[0] == revocation(7)
    assert listed[0].not_after.tzinfo is not None
    assert listed[2].reason == "superseded"


def test_expired_revocations_drop_out(make_store: MakeStore) -> None:
    """A revocation whose certificate expired is no longer listed (nor kept)."""
    # given
    store = make_store()
    store.add_revoked([revocation(1, days=1), revocation(2, days=10), revocation(3, days=0)])
    # when
    today = store.revoked(now=NOW)
    later = store.revoked(now=NOW + timedelta(days=2))
    # then
    assert [entry.serial for entry in today] == [1, 2, 3]
    assert [entry.serial for entry in later] == [2]
    assert store.add_revoked([revocation(1, days=1)]) == 1


def test_the_redis_layout_drops_expired_serials_from_both_keys(client: RedisClient) -> None:
    """Reading the revocations removes the expired ones from the hash and the expiry zset."""
    # given
    store = RedisIdentityStore(client)
    store.add_revoked([revocation(1, days=1), revocation(2, days=10)])
    store.put_csrs("ro-1", {"dev-1": "AAA.BBB"})
    # when
    store.revoked(now=NOW + timedelta(days=2))
    # then
    assert client.hkeys(REVOKED) == ["2"]
    assert client.zrange(REVOKED_EXPIRY, 0, -1) == ["2"]
    assert client.hgetall(rollout_key("ro-1", "csr")) == {"dev-1": "AAA.BBB"}


def test_a_revocation_left_without_its_expiry_is_indexed_by_the_retry(
    client: RedisClient,
) -> None:
    """A crash between the revocation and its expiry entry: the retry indexes it and counts it
    new (so the CRL is refreshed), keeping the first revocation recorded."""
    # given
    store = RedisIdentityStore(client)
    first = revocation(5, days=1)
    store.add_revoked([first])
    client.zrem(REVOKED_EXPIRY, "5")
    # when
    retried = store.add_revoked([revocation(5, days=1, device="dev-2")])
    # then
    assert retried == 1
    assert client.zrange(REVOKED_EXPIRY, 0, -1) == ["5"]
    assert store.revoked(now=NOW) == [first]
    assert store.revoked(now=NOW + timedelta(days=2)) == []


def test_an_unreachable_redis_is_store_unavailable() -> None:
    """Every Redis error surfaces as StoreUnavailableError (a transient error, retried)."""
    # given
    dead = redis.Redis(
        host="127.0.0.1",
        port=free_port(),
        decode_responses=True,
        socket_connect_timeout=0.5,
    )
    store = RedisIdentityStore(dead)
    # when / then
    with pytest.raises(StoreUnavailableError):
        store.claim_key(KEY, "dev-1", "ro-1")
    with pytest.raises(StoreUnavailableError):
        store.revoked(now=NOW)
