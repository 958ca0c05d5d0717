"""Revoking delegations: the fleet's list gets the kids named, drops those no longer needed
to stay within a device's 8, `before` never goes back; every device gets one root-signed
revoke with the whole list, in its own bundle version, and a broken publish stops and counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.cli.keys import parse_before
from orchestrator.domain.inventory import DeviceState
from orchestrator.ports.stores import IssuedDelegation
from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.protocol.delegation import (
    Delegation,
    DelegationError,
    Revocation,
    Scope,
    delegation_of,
)
from orchestrator.services.revocations import (
    REVOKE_BATCH,
    RevocationDeps,
    next_revocation,
    record_revocation,
    send_revocation,
)
from tests.fake_rollouts import (
    FakeDelegationRegistry,
    FakeMetrics,
    FakePublisher,
    FakeSequences,
    FakeSigner,
)
from tests.fakes import FakeInventory

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())


def kid(n: int) -> bytes:
    """An 8-byte key id."""
    return n.to_bytes(8, "big")


def issued(n: int, *, iat: int) -> IssuedDelegation:
    """A delegation of kid(n), issued at `iat`, valid for a day."""
    return IssuedDelegation(
        Delegation(
            kid=kid(n),
            public_point=b"\x04" + bytes(64),
            not_before=iat - 300,
            expires_at=iat + 86400,
            issued_at=iat,
            scope=Scope(("stage",), (0,)),
            root_kid=kid(999),
        ),
        worker=f"host:{n}",
    )


def test_named_kids_join_the_ones_still_needed() -> None:
    """Revoking kid 2 keeps kid 1 (still active) and adds 2."""
    current = Revocation(frozenset({kid(1)}), 0)
    active = [issued(1, iat=T - 100), issued(2, iat=T - 50)]
    assert next_revocation(current, kids=[kid(2)], before=0, active=active) == Revocation(
        frozenset({kid(1), kid(2)}), 0
    )


def test_kids_of_expired_or_time_revoked_delegations_are_dropped() -> None:
    """A kid no longer active, or issued before the new `before`, leaves the list."""
    current = Revocation(frozenset({kid(1), kid(2), kid(3)}), 0)
    active = [issued(2, iat=T - 100), issued(3, iat=T - 10)]  # kid 1 expired
    result = next_revocation(current, kids=[], before=T - 50, active=active)
    assert result == Revocation(frozenset({kid(3)}), T - 50)


def test_before_never_goes_back() -> None:
    """An earlier `before` than the fleet's keeps the fleet's."""
    current = Revocation(frozenset(), T)
    assert next_revocation(current, kids=[kid(1)], before=T - 999, active=[]).before == T


def test_a_kid_named_now_is_kept_even_if_unknown() -> None:
    """The operator's kid is revoked even when the registry does not know it."""
    result = next_revocation(Revocation(), kids=[kid(7)], before=0, active=[])
    assert result.kids == {kid(7)}


def test_more_than_eight_needed_kids_asks_for_revocation_by_time() -> None:
    """Nine kids still needed: refused with the --before hint."""
    active = [issued(n, iat=T - n) for n in range(9)]
    current = Revocation(frozenset(kid(n) for n in range(8)), 0)
    with pytest.raises(DelegationError, match="--before"):
        next_revocation(current, kids=[kid(8)], before=0, active=active)


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("now", T),
        ("NOW", T),
        (str(T - 5), T - 5),
        ("2026-12-02T11:00:00Z", T - 3600),
        ("2026-12-02T11:00:00", T - 3600),
        ("2026-12-02T12:00:00+01:00", T - 3600),
    ],
)
def test_before_takes_now_epoch_seconds_or_iso_8601(text: str, epoch: int) -> None:
    """--before parses now, epoch seconds and ISO 8601 (UTC without a zone)."""
    assert parse_before(text, now=NOW) == epoch


def test_before_refuses_other_text() -> None:
    """Anything else names the accepted forms."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_before("last tuesday", now=NOW)


def test_record_revocation_keeps_the_result_in_the_registry() -> None:
    """What record_revocation returns is what the registry holds afterwards."""
    registry = FakeDelegationRegistry()
    registry.record(issued(1, iat=T - 10).delegation, "host:1")
    result = record_revocation(registry, kids=[kid(1)], before=T - 100, now=NOW)
    assert result == Revocation(frozenset({kid(1)}), T - 100)
    assert registry.revocation() == result


def deps(inventory: FakeInventory | None = None, **publisher: int) -> RevocationDeps:
    """Fakes around a fresh root."""
    return RevocationDeps(
        root=FakeSigner(),
        inventory=inventory or FakeInventory(),
        sequences=FakeSequences(),
        publisher=FakePublisher(**publisher),  # type: ignore[arg-type]
        metrics=FakeMetrics(),
    )


def test_every_device_gets_a_root_signed_revoke_in_its_version() -> None:
    """One bundle per device, signed by the root with no delegation, the whole list in it,
    v1 for a v1 device; each counted as a root signature of purpose bundle."""
    inventory = FakeInventory()
    inventory.record_states(
        [DeviceState(device_id="d-2", reported_at=NOW, credentials=(), protocol_version=2)],
        received_at=NOW,
    )
    wired = deps(inventory)
    revocation = Revocation(frozenset({kid(1), kid(2)}), T - 60)

    result = send_revocation(wired, revocation, ["d-1", "d-2"], now=NOW, ttl_seconds=3600)

    assert (result.sent, result.not_sent, result.error) == (2, 0, "")
    publisher = wired.publisher
    assert isinstance(publisher, FakePublisher)
    root = wired.root
    assert isinstance(root, FakeSigner)
    versions = {}
    for device_id, data in publisher.sent:
        message = Sign1Message.decode(data)
        message.verify(root.public_key)
        assert delegation_of(data) is None
        bundle = decode_payload(message.payload)
        assert (bundle.op, bundle.device_id, bundle.rollout_id) == ("revoke", device_id, "")
        assert bundle.revoke_kids == (kid(1), kid(2))
        assert bundle.revoke_before == T - 60
        versions[device_id] = bundle.version
    assert versions == {"d-1": 1, "d-2": 2}
    metrics = wired.metrics
    assert isinstance(metrics, FakeMetrics)
    assert metrics.counters[("certfleet_root_signatures_total", (("purpose", "bundle"),))] == 2


def test_a_failed_publish_stops_and_counts_the_devices_left() -> None:
    """The broker failing after some bundles: the rest is counted as not sent, with why."""
    wired = deps(fail_after=7)
    devices = [f"d-{n}" for n in range(2 * REVOKE_BATCH)]

    result = send_revocation(wired, Revocation(), devices, now=NOW, ttl_seconds=3600)

    assert result.sent == 7  # acknowledged before the broker failed
    assert result.not_sent == 2 * REVOKE_BATCH - 7
    assert "no PUBACK" in result.error


def test_devices_are_sent_in_batches() -> None:
    """More devices than a batch: every one gets its revoke, each with its own seq."""
    wired = deps()
    devices = [f"d-{n}" for n in range(REVOKE_BATCH + 5)]

    result = send_revocation(wired, Revocation(), devices, now=NOW, ttl_seconds=3600)

    assert (result.sent, result.not_sent) == (REVOKE_BATCH + 5, 0)
    publisher = wired.publisher
    assert isinstance(publisher, FakePublisher)
    assert [d for d, _ in publisher.sent] == devices
