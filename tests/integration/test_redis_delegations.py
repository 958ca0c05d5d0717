"""RedisDelegations against a real Redis or a Redis Cluster: the delegations the root
signed are listed with their worker until they expire (then pruned), a key's renewal
replaces its entry, the fleet's revocation round-trips, and nothing stored is private."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.redis_delegations import (
    DELEGATIONS_KEY,
    REVOCATION_KEY,
    RedisDelegations,
)
from orchestrator.bootstrap import Container
from orchestrator.protocol.cose import key_id
from orchestrator.protocol.delegation import Delegation, Revocation, Scope
from tests.unit.builders import NOW

pytestmark = pytest.mark.integration

ROOT_KID = bytes.fromhex("0102030405060708")
T0 = int(NOW.timestamp())


def delegation(
    key: ec.EllipticCurvePrivateKey,
    *,
    issued_at: int,
    lifetime: int,
    rollouts: tuple[str, ...] = (),
) -> Delegation:
    public = key.public_key()
    return Delegation(
        kid=key_id(public),
        public_point=public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        not_before=issued_at - 300,
        expires_at=issued_at + lifetime,
        issued_at=issued_at,
        scope=Scope(ops=("stage", "commit"), kinds=(0,), rollouts=rollouts),
        root_kid=ROOT_KID,
    )


def test_active_lists_each_key_with_its_worker_until_it_expires(container: Container) -> None:
    """Two workers' delegations listed oldest first, read back field for field; once one
    expired it is gone from the list and from Redis."""
    # given
    registry = RedisDelegations(container.redis)
    short = delegation(ec.generate_private_key(ec.SECP256R1()), issued_at=T0, lifetime=3600)
    long = delegation(
        ec.generate_private_key(ec.SECP256R1()),
        issued_at=T0 + 10,
        lifetime=48 * 3600,
        rollouts=("r-1", "r-2"),
    )
    # when
    registry.record(long, "host-b:202")
    registry.record(short, "host-a:101")
    listed = registry.active(NOW)
    later = registry.active(NOW + timedelta(hours=2))
    # then
    assert [(i.delegation, i.worker) for i in listed] == [
        (short, "host-a:101"),
        (long, "host-b:202"),
    ]
    assert [i.delegation for i in later] == [long]
    assert container.redis.hkeys(DELEGATIONS_KEY) == [long.kid.hex()]


def test_a_renewal_of_the_same_key_replaces_its_entry(container: Container) -> None:
    """The same worker key delegated again: one entry, the latest delegation."""
    # given
    registry = RedisDelegations(container.redis)
    key = ec.generate_private_key(ec.SECP256R1())
    first = delegation(key, issued_at=T0, lifetime=48 * 3600)
    second = delegation(key, issued_at=T0 + 24 * 3600, lifetime=48 * 3600)
    # when
    registry.record(first, "host-a:101")
    registry.record(second, "host-a:101")
    # then
    assert [i.delegation for i in registry.active(NOW)] == [second]


def test_revocation_round_trips_and_defaults_to_nothing(container: Container) -> None:
    """No revocation set: nothing revoked; set: the same kids and time read back; set
    again: replaced."""
    # given
    registry = RedisDelegations(container.redis)
    kids = frozenset({bytes.fromhex("aa" * 8), bytes.fromhex("bb" * 8)})
    # when
    before = registry.revocation()
    registry.set_revocation(Revocation(kids=kids, before=T0))
    set_once = registry.revocation()
    registry.set_revocation(Revocation(kids=frozenset(), before=T0 + 60))
    # then
    assert before == Revocation()
    assert set_once == Revocation(kids=kids, before=T0)
    assert registry.revocation() == Revocation(kids=frozenset(), before=T0 + 60)


def test_nothing_private_is_stored(container: Container) -> None:
    """Every value written holds public data only: no private scalar, no private key DER/PEM."""
    # given
    registry = RedisDelegations(container.redis)
    key = ec.generate_private_key(ec.SECP256R1())
    # when
    registry.record(delegation(key, issued_at=T0, lifetime=3600), "host-a:101")
    registry.set_revocation(Revocation(kids=frozenset({key_id(key.public_key())}), before=T0))
    # then
    client = container.redis
    stored = repr(client.hgetall(DELEGATIONS_KEY)) + repr(client.get(REVOCATION_KEY))
    scalar = key.private_numbers().private_value
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert scalar.to_bytes(32, "big").hex() not in stored
    assert str(scalar) not in stored
    assert der.hex() not in stored
    assert "PRIVATE" not in stored
    assert key_id(key.public_key()).hex() in stored
