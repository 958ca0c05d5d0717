"""Delivery confirmed, not assumed, against in-memory ports: a device is `sent` only once
the broker acknowledged its bundle, a device that does not answer is sent a fresh stage
a bounded number of times before it times out (scenarios: tests/delivery_fleet.py)."""

from __future__ import annotations

import pytest

from orchestrator.domain.rollout import RolloutSpec
from tests.delivery_fleet import SCENARIOS, TIMEOUT, Fleet, Scenario, spec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_delivery_is_confirmed_and_re_sent_within_its_budget(scenario: Scenario) -> None:
    """Each scenario of tests/delivery_fleet.py holds in memory (its docstring says what)."""
    scenario(Fleet())


def test_the_re_send_settings_are_validated_and_round_trip() -> None:
    """resend_after and max_resends default sensibly, are checked and survive storage."""
    # given the defaults and explicit settings
    default = spec(resend_after_seconds=None)
    explicit = spec(resend_after_seconds=30, max_resends=5)
    # then the default interval is a third of the device timeout, and both round-trip
    assert (default.resend_interval, default.max_resends) == (TIMEOUT / 3, 2)
    assert RolloutSpec.from_json(default.to_json()) == default
    assert RolloutSpec.from_json(explicit.to_json()) == explicit
    # and bad values are refused with a reason
    with pytest.raises(ValueError, match="re-send interval"):
        spec(resend_after_seconds=0)
    with pytest.raises(ValueError, match="max_resends"):
        spec(max_resends=-1)
