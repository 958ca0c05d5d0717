"""DelegatedSigner: a worker's in-memory key signs bundles under the root's delegation, which
it renews at half its lifetime, keeps through a failed renewal while it still covers, and
without which nothing is signed; the root is asked per renewal, never per bundle."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization

from orchestrator.adapters import delegated_signer
from orchestrator.adapters.delegated_signer import (
    NOT_BEFORE_LEEWAY_SECONDS,
    RENEWAL_RETRY_SECONDS,
    REVOCATION_CHECK_SECONDS,
    ROOT_SIGNATURES_METRIC,
    DelegatedSigner,
    RootBundleSigner,
)
from orchestrator.domain.errors import DelegationUnavailableError, TransientError
from orchestrator.protocol.bundle import open_bundle
from orchestrator.protocol.delegation import Revocation, Scope, decode_delegation, delegation_of
from orchestrator.protocol.payload import Operation
from orchestrator.services.bundles import BundleBody, issue_bundle
from tests.fake_rollouts import FakeDelegationRegistry, FakeMetrics, FakeSequences, FakeSigner
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit

HOUR = 3600
LIFETIME = 48 * HOUR
SCOPE = Scope(ops=("stage", "commit", "rollback", "retire", "keygen"), kinds=(0, 1))


class Events:
    """The signer's log events, whatever level logging was configured at before."""

    def __init__(self) -> None:
        self.logger = structlog.testing.CapturingLogger()

    def __call__(self) -> list[dict[str, Any]]:
        return [
            {"event": call.args[0], "log_level": call.method_name, **call.kwargs}
            for call in self.logger.calls
        ]

    def clear(self) -> None:
        self.logger.calls.clear()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """Capture `orchestrator.adapters.delegated_signer`'s log calls."""
    captured = Events()
    monkeypatch.setattr(delegated_signer, "log", captured.logger)
    return captured


@dataclass
class Clock:
    """A clock the test moves."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class CountingRoot:
    """A root key that counts its signatures and can be made to fail (a token away)."""

    key: FakeSigner = field(default_factory=FakeSigner)
    signatures: int = 0
    fail: bool = False

    @property
    def key_id(self) -> bytes:
        return self.key.key_id

    def sign(self, to_be_signed: bytes) -> bytes:
        if self.fail:
            raise TransientError("CKR_DEVICE_REMOVED: the token is away")
        self.signatures += 1
        return self.key.sign(to_be_signed)


@dataclass
class Rig:
    root: CountingRoot
    clock: Clock
    registry: FakeDelegationRegistry
    metrics: FakeMetrics
    signer: DelegatedSigner


def rig(lifetime: float = LIFETIME, scope: Scope = SCOPE) -> Rig:
    root, clock = CountingRoot(), Clock()
    registry, metrics = FakeDelegationRegistry(), FakeMetrics()
    signer = DelegatedSigner(
        root,
        scope=scope,
        lifetime_seconds=lifetime,
        clock=clock,
        registry=registry,
        worker="host-a:101",
        metrics=metrics,
    )
    return Rig(root, clock, registry, metrics, signer)


def at(clock: Clock, seconds: float) -> int:
    """Epoch seconds `seconds` after the clock's now (a bundle's expiry)."""
    return int(clock.now.timestamp() + seconds)


def body(op: Operation = "rollback") -> BundleBody:
    return BundleBody(op=op, tag=43)


def test_first_delegation_names_the_worker_key_its_times_and_scope() -> None:
    """One root signature makes a delegation of the worker's key, backdated 5 minutes,
    valid for its lifetime, listed in the registry and counted before it is used."""
    # given
    r = rig()
    # when
    data = r.signer.delegation_for(at(r.clock, HOUR))
    # then
    _, delegation = decode_delegation(data)
    issued = int(NOW.timestamp())
    assert delegation.kid == r.signer.key_id
    assert delegation.root_kid == r.root.key_id
    assert delegation.issued_at == issued
    assert delegation.not_before == issued - NOT_BEFORE_LEEWAY_SECONDS
    assert delegation.expires_at == issued + LIFETIME
    assert delegation.scope == SCOPE
    assert r.root.signatures == 1
    assert [i.delegation for i in r.registry.issued.values()] == [delegation]
    assert r.registry.issued[delegation.kid].worker == "host-a:101"
    assert r.metrics.counters[(ROOT_SIGNATURES_METRIC, (("purpose", "delegation"),))] == 1
    assert r.metrics.gauges[("certfleet_delegation_expires_timestamp", ())] == issued + LIFETIME


def test_bundles_reuse_the_delegation_until_half_its_lifetime() -> None:
    """Thousands of bundles within the first half of its lifetime: one root signature."""
    # given
    r = rig()
    first = r.signer.delegation_for(at(r.clock, HOUR))
    # when
    seen = set()
    for _ in range(2000):
        r.clock.advance(LIFETIME / 2 / 2000 - 0.001)
        seen.add(r.signer.delegation_for(at(r.clock, HOUR)))
    # then
    assert seen == {first}
    assert r.root.signatures == 1


def test_renewed_past_half_its_lifetime_same_key(events: Events) -> None:
    """Past half its lifetime the next bundle gets a new delegation of the same key."""
    # given
    r = rig()
    first = decode_delegation(r.signer.delegation_for(at(r.clock, HOUR)))[1]
    r.clock.advance(LIFETIME / 2 + 1)
    events.clear()
    # when
    second = decode_delegation(r.signer.delegation_for(at(r.clock, HOUR)))[1]
    logs = events()
    # then
    assert second.issued_at > first.issued_at
    assert second.expires_at == second.issued_at + LIFETIME
    assert second.kid == first.kid == r.signer.key_id
    assert r.root.signatures == 2
    assert [e["event"] for e in logs] == ["delegation_renewed"]


def test_renewed_when_the_bundle_outlives_the_delegation() -> None:
    """A bundle expiring after the delegation in use gets a new delegation that covers it."""
    # given
    r = rig(lifetime=10 * HOUR)
    r.signer.delegation_for(at(r.clock, HOUR))
    r.clock.advance(2 * HOUR)  # 8 h left: more than half
    # when
    data = r.signer.delegation_for(at(r.clock, 9 * HOUR))
    # then
    assert decode_delegation(data)[1].expires_at >= at(r.clock, 9 * HOUR)
    assert r.root.signatures == 2


def test_a_bundle_longer_than_any_delegation_is_refused_without_asking_the_root() -> None:
    """A bundle valid for longer than the lifetime: DelegationUnavailableError saying what to
    change, and the root is not asked for a delegation that could not cover it."""
    # given
    r = rig(lifetime=2 * HOUR)
    # when
    with pytest.raises(DelegationUnavailableError, match="CERTFLEET_DELEGATION_HOURS"):
        r.signer.delegation_for(at(r.clock, 3 * HOUR))
    # then
    assert r.root.signatures == 0


def test_a_failed_renewal_keeps_the_covering_delegation_and_retries_every_30_s(
    events: Events,
) -> None:
    """The token away past half-life: bundles keep the current delegation, the failure is
    logged once per retry period (no key material), and the root is asked again only after
    30 s; once it answers, the delegation is renewed."""
    # given
    r = rig()
    first = r.signer.delegation_for(at(r.clock, HOUR))
    r.clock.advance(LIFETIME / 2 + 1)
    r.root.fail = True
    events.clear()
    # when
    for _ in range(10):
        assert r.signer.delegation_for(at(r.clock, HOUR)) == first
        r.clock.advance(RENEWAL_RETRY_SECONDS / 5)
    r.root.fail = False
    r.clock.advance(RENEWAL_RETRY_SECONDS)
    renewed = r.signer.delegation_for(at(r.clock, HOUR))
    logs = events()
    # then
    failures = [e for e in logs if e["event"] == "delegation_renewal_failed"]
    assert len(failures) == 2  # at 0 s and 30 s of the 10 x 6 s
    assert failures[0]["kid"] == r.signer.key_id.hex()
    assert failures[0]["error"] == "TransientError"
    assert renewed != first
    assert logs[-1]["event"] == "delegation_renewed"
    _no_key_material(r.signer, repr(logs))


def test_no_covering_delegation_refuses_and_signs_nothing() -> None:
    """The token away when no delegation covers: DelegationUnavailableError every time (the
    root asked each time: a push stops at its first), and `sign` refuses."""
    # given
    r = rig(lifetime=2 * HOUR)
    r.root.fail = True
    # when / then
    for _ in range(3):
        with pytest.raises(DelegationUnavailableError, match="no delegation"):
            r.signer.delegation_for(at(r.clock, HOUR))
    with pytest.raises(DelegationUnavailableError):
        r.signer.sign(b"to be signed")
    assert r.registry.issued == {}


def test_an_expired_delegation_signs_nothing() -> None:
    """Past its delegation's expiry the key signs nothing, even if asked directly."""
    # given
    r = rig(lifetime=2 * HOUR)
    r.signer.delegation_for(at(r.clock, HOUR))
    r.root.fail = True
    r.clock.advance(2 * HOUR)
    # when / then
    with pytest.raises(DelegationUnavailableError):
        r.signer.sign(b"to be signed")
    with pytest.raises(DelegationUnavailableError):
        r.signer.delegation_for(at(r.clock, 60))


def test_a_delegation_the_registry_could_not_list_is_not_used() -> None:
    """The registry away: the root's delegation is dropped (it could not be found to revoke)
    and nothing is signed."""
    # given
    r = rig()
    r.registry.fail = True
    # when / then
    with pytest.raises(DelegationUnavailableError):
        r.signer.delegation_for(at(r.clock, HOUR))
    with pytest.raises(DelegationUnavailableError):
        r.signer.sign(b"to be signed")


def test_a_delegated_bundle_opens_on_a_device_that_trusts_the_root() -> None:
    """issue_bundle with the signer: the bundle carries the delegation, is signed by the
    worker key, and a device trusting only the root key accepts it."""
    # given
    r = rig()
    # when
    issued = issue_bundle(
        signer=r.signer,
        sequences=FakeSequences(),
        device_id="dev-1",
        rollout_id="r-1",
        body=body(),
        now=r.clock.now,
        ttl_seconds=HOUR,
    )
    # then
    delegation = delegation_of(issued.data)
    assert delegation is not None
    assert delegation.kid == r.signer.key_id != r.root.key_id
    bundle = open_bundle(
        issued.data,
        signers={r.root.key_id: r.root.key.public_key},
        device_id="dev-1",
        last_seq=0,
        now=r.clock.now,
    )
    assert bundle.op == "rollback"
    assert r.root.signatures == 1


def test_a_delegation_revoked_by_time_is_replaced_for_the_same_key(events: Events) -> None:
    """`keys revoke --before`: within 30 s the signer reads the revocation, and the next
    bundle gets a new delegation of the same key, issued after the revocation's time; the
    revocation is read at most every 30 s."""
    # given
    r = rig()
    first = decode_delegation(r.signer.delegation_for(at(r.clock, HOUR)))[1]
    r.registry.set_revocation(Revocation(before=first.issued_at + 1))
    events.clear()
    # when
    for _ in range(10):
        r.clock.advance(REVOCATION_CHECK_SECONDS / 10)
        data = r.signer.delegation_for(at(r.clock, HOUR))
    logs = events()
    # then
    second = decode_delegation(data)[1]
    assert second.kid == first.kid
    assert not r.registry.revoked.revokes(second)
    assert r.root.signatures == 2
    assert r.registry.revocation_reads == 1
    assert [e["event"] for e in logs] == ["delegation_revoked_in_use", "delegation_renewed"]


def test_a_key_revoked_by_id_is_replaced_by_a_new_key() -> None:
    """`keys revoke --kid`: the signer makes a new key and gets it a delegation."""
    # given
    r = rig()
    old_kid = r.signer.key_id
    r.signer.delegation_for(at(r.clock, HOUR))
    r.registry.set_revocation(Revocation(kids=frozenset({old_kid})))
    r.clock.advance(REVOCATION_CHECK_SECONDS)
    # when
    second = decode_delegation(r.signer.delegation_for(at(r.clock, HOUR)))[1]
    # then
    assert second.kid == r.signer.key_id != old_kid
    assert r.root.signatures == 2


def test_concurrent_renewal_asks_the_root_once() -> None:
    """Eight threads needing a renewal at once: one root signature, one delegation for all."""
    # given
    r = rig()
    r.signer.delegation_for(at(r.clock, HOUR))
    r.clock.advance(LIFETIME * 0.75)
    barrier = threading.Barrier(8)
    got: list[bytes] = []

    def take() -> None:
        barrier.wait()
        got.append(r.signer.delegation_for(at(r.clock, HOUR)))

    # when
    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then
    assert len(set(got)) == 1
    assert r.root.signatures == 2


def test_a_forked_child_makes_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a fork (another pid) the signer makes a new key and a new delegation for it."""
    # given
    r = rig()
    parent_kid = r.signer.key_id
    r.signer.delegation_for(at(r.clock, HOUR))
    # when
    monkeypatch.setattr("os.getpid", lambda: 999_999)
    child = decode_delegation(r.signer.delegation_for(at(r.clock, HOUR)))[1]
    # then
    assert child.kid == r.signer.key_id != parent_kid
    assert r.root.signatures == 2


def test_repr_shows_the_key_id_only() -> None:
    """The signer's repr names its key id; no private or public key bytes."""
    # given
    r = rig()
    r.signer.delegation_for(at(r.clock, HOUR))
    # when
    text = repr(r.signer)
    # then
    assert r.signer.key_id.hex() in text
    _no_key_material(r.signer, text)


def _no_key_material(signer: DelegatedSigner, text: str) -> None:
    key = signer._key
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert scalar.hex() not in text
    assert der.hex() not in text
    assert "PRIVATE KEY" not in text
    assert str(key.private_numbers().private_value) not in text


def test_root_bundle_signer_counts_a_batch_at_a_time() -> None:
    """Signing with the root itself (delegations off): no delegation, the root's kid, and
    the signatures counted under purpose="bundle" in batches, the rest on flush."""
    # given
    root, metrics = CountingRoot(), FakeMetrics()
    signer = RootBundleSigner(root, metrics=metrics)
    key = (ROOT_SIGNATURES_METRIC, (("purpose", "bundle"),))
    # when
    for _ in range(RootBundleSigner.FLUSH_EVERY + 5):
        signer.sign(b"tbs")
    counted = metrics.counters[key]
    signer.flush()
    # then
    assert signer.delegation_for(0) is None
    assert signer.key_id == root.key_id
    assert RootBundleSigner.FLUSH_EVERY <= counted <= RootBundleSigner.FLUSH_EVERY + 5
    assert metrics.counters[key] == RootBundleSigner.FLUSH_EVERY + 5
