"""The renewal flow against Redis keeps the old CA on devices its trust.add did not
confirm: a trust.add `completed_with_timeouts` leaves them out of the trust.retire."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import RolloutState
from orchestrator.services.rollout import rollout_status
from tests.integration.renewal_calls import accept_event, plan_view, watch_renewals
from tests.integration.test_renewals import NOW, Certs, certs, renewal
from tests.tlsserver import tls_server

pytestmark = pytest.mark.integration

__all__ = ["certs", "renewal"]  # the fixtures of tests/integration/test_renewals.py

UNCONFIRMED = ("dev-3", "dev-7")


def test_the_retire_leaves_out_the_devices_the_add_did_not_confirm(
    renewal: Container, certs: Certs
) -> None:
    """Two devices never confirmed the trust.add: the plan says so and retires on eight only."""
    # given a renewal whose trust.add ended completed_with_timeouts for two devices
    with tls_server(certs.server2.pem + certs.ca2.pem, certs.server2.key_pem) as (_, port):
        event = {
            "endpoints": ["127.0.0.1:8883"],
            "chain_pem": (certs.server2.pem + certs.ca2.pem).decode(),
            "staging_endpoint": f"127.0.0.1:{port}",
        }
        plan_id = accept_event(renewal, "certificate.renewed", event, now=NOW)["plan_id"]
    both = (
        ReportedCredential(
            sec_tag=42, type=CredentialType.CA_CHAIN, sha256=sha256_hex(certs.ca1.pem)
        ),
        ReportedCredential(
            sec_tag=43, type=CredentialType.CA_CHAIN, sha256=sha256_hex(certs.ca2.pem)
        ),
    )
    later = NOW + timedelta(minutes=5)
    # every device reports both CAs, the unconfirmed ones too: the rollout's word counts
    renewal.inventory.record_states(
        [
            DeviceState(
                device_id=f"dev-{n}", reported_at=later, credentials=both, active_tags=(42, 43)
            )
            for n in range(10)
        ],
        received_at=later,
    )
    accept_event(renewal, "certificate.activated", {"endpoints": ["127.0.0.1:8883"]}, now=later)
    add_rollout = plan_view(renewal, plan_id)["add_rollout"]  # type: ignore[index]
    renewal.rollouts.change(
        add_rollout,
        Change(state=RolloutState.COMPLETED_WITH_TIMEOUTS, unconfirmed=UNCONFIRMED),
    )
    renewal.rollouts.release(add_rollout, [42, 43], [f"dev-{n}" for n in range(10)])
    # when the watch sees the add end, then the soak pass
    after_add = watch_renewals(renewal, now=later)
    states = watch_renewals(renewal, now=later + timedelta(seconds=1))
    # then the plan retires the old CA on the eight confirmed devices only, and says why
    assert after_add[plan_id] == "soaking"
    assert states[plan_id] == "retiring"
    plan = plan_view(renewal, plan_id)
    assert plan is not None
    assert plan["reason"].startswith("2 devices did not confirm the new CA")
    assert plan["unconfirmed"] == list(UNCONFIRMED)
    retire = rollout_status(renewal.rollout_deps(), plan["retire_rollout"])
    assert sum(w["size"] for w in retire["waves"]) == 8
    retired = renewal.rollouts.device_states(plan["retire_rollout"])
    assert not set(UNCONFIRMED) & set(retired)
