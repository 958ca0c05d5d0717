"""Delivery confirmed, not assumed, against in-memory ports: a device is `sent` only once
the broker acknowledged its bundle, a device that does not answer is sent a fresh stage
a bounded number of times before it times out, a rollout with devices that never
confirmed says so, and the renewal keeps the old CA on them (scenarios:
tests/delivery_fleet.py)."""

from __future__ import annotations

import pytest

from orchestrator.api.models import RolloutStatusBody
from orchestrator.domain.renewal import PlanState, RenewalPlan
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.services.report import rollout_report
from orchestrator.services.rollout import rollout_status
from tests.delivery_fleet import (
    SCENARIOS,
    TIMEOUT,
    Fleet,
    Scenario,
    a_rollout_with_a_timed_out_device_ends_completed_with_timeouts,
    spec,
)
from tests.unit.plans import plan

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


def test_a_renewal_whose_add_left_devices_unconfirmed_keeps_them_and_says_how_many() -> None:
    """add_completed with unconfirmed devices records them and a reason naming their count."""
    # given a plan whose trust.add ended completed_with_timeouts for two devices
    adding = plan()
    # when the add is seen completed
    after = adding.add_completed(unconfirmed=["dev-7", "dev-3"])
    # then the plan goes on, keeps the devices out of the retire, and says why
    assert after.state is PlanState.AWAITING_SWITCH
    assert after.unconfirmed == ("dev-3", "dev-7")
    assert after.reason is not None
    assert after.reason.startswith("2 devices did not confirm the new CA")
    assert RenewalPlan.from_json(after.to_json()) == after
    assert "unconfirmed" not in adding.add_completed().to_json()


def test_status_api_and_report_show_a_rollout_completed_with_timeouts() -> None:
    """The state and the unconfirmed devices show in status, its API body and the HTML report."""
    # given a rollout that ended completed_with_timeouts, d4 never confirming
    fleet = Fleet()
    a_rollout_with_a_timed_out_device_ends_completed_with_timeouts(fleet)
    # when its status, API body and report are made
    status = rollout_status(fleet.deps, fleet.rid)
    body = RolloutStatusBody.model_validate(status)
    page = rollout_report(fleet.deps, fleet.inventory, fleet.rid)
    # then each says so, and names the device
    assert (status["state"], status["unconfirmed"]) == ("completed_with_timeouts", ["d4"])
    assert "unconfirmed_rollback" not in status
    assert (body.state, body.unconfirmed) == ("completed_with_timeouts", ["d4"])
    assert "1 device(s) did not confirm the new trust" in page
    assert "completed_with_timeouts" in page
    assert ">d4<" in page
