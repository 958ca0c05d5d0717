"""`certfleet keys revoke`'s fleet revocation: the kids named are added, kids no longer
needed are dropped to stay within a device's 8, and `before` never goes back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.cli.keys import next_revocation, parse_before
from orchestrator.ports.stores import IssuedDelegation
from orchestrator.protocol.delegation import Delegation, Revocation, Scope

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
    with pytest.raises(ValueError, match="--before"):
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
