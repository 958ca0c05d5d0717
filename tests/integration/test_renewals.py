"""Renewal planning against real Redis and real TLS endpoints (no workers: rollouts are held)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import RolloutState
from orchestrator.services.renewals import InvalidEventError
from orchestrator.services.rollout import rollout_status
from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from tests.integration.renewal_calls import accept_event, plan_view, watch_renewals
from tests.tlsserver import tls_server

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Certs:
    ca1: IssuedCA
    ca2: IssuedCA
    server1: IssuedCert
    server2: IssuedCert


@pytest.fixture(scope="module")
def certs() -> Certs:
    """The live CA1, the renewed CA2, and a server certificate under each."""
    ca1 = make_ca(
        "CA 2025", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=30)
    )
    ca2 = make_ca(
        "CA 2026", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=700)
    )
    window = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=90)}
    return Certs(ca1, ca2, issue_server_cert(ca1, **window), issue_server_cert(ca2, **window))


@pytest.fixture
def renewal(
    service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> Iterator[Container]:
    """Ten devices with CA1 in tag 42 (active), CA1 in the library, a held rollout policy."""
    key = tmp_path / "signing.pem"
    generate_key_file(key)
    monkeypatch.setenv("CERTFLEET_SIGNING_KEY_FILE", str(key))
    monkeypatch.setenv("CERTFLEET_RETIRE_SOAK_SECONDS", "0")
    container = bootstrap(Settings(), logging=False)
    digest = sha256_hex(certs.ca1.pem)
    container.library.add({digest: certs.ca1.pem.decode()})
    item = ReportedCredential(
        sec_tag=42,
        type=CredentialType.CA_CHAIN,
        sha256=digest,
        not_after=certs.ca1.certificate.not_valid_after_utc,
        subject="CN=CA 2025",
    )
    container.inventory.record_states(
        [
            DeviceState(
                device_id=f"dev-{n}", reported_at=NOW, credentials=(item,), active_tags=(42,)
            )
            for n in range(10)
        ],
        received_at=NOW,
    )
    yield container
    container.close()


def _renewed(certs: Certs, staging_port: int) -> dict[str, object]:
    return {
        "endpoints": ["127.0.0.1:8883"],
        "chain_pem": (certs.server2.pem + certs.ca2.pem).decode(),
        "staging_endpoint": f"127.0.0.1:{staging_port}",
    }


def _devices_hold_both(renewal: Container, certs: Certs, *, at: datetime) -> None:
    """Every device reports CA1 in 42 and CA2 in 43, both active."""
    both = (
        ReportedCredential(
            sec_tag=42, type=CredentialType.CA_CHAIN, sha256=sha256_hex(certs.ca1.pem)
        ),
        ReportedCredential(
            sec_tag=43, type=CredentialType.CA_CHAIN, sha256=sha256_hex(certs.ca2.pem)
        ),
    )
    renewal.inventory.record_states(
        [
            DeviceState(
                device_id=f"dev-{n}", reported_at=at, credentials=both, active_tags=(42, 43)
            )
            for n in range(10)
        ],
        received_at=at,
    )


def test_a_renewal_plans_trust_add_for_the_devices_at_risk(
    renewal: Container, certs: Certs
) -> None:
    """Every device trusts only CA1: all at risk, a held trust.add of CA2 into tag 43."""
    with tls_server(certs.server2.pem + certs.ca2.pem, certs.server2.key_pem) as (_, port):
        answer = accept_event(renewal, "certificate.renewed", _renewed(certs, port), now=NOW)

    assert answer["status"] == "planned"
    assert answer["impact"] == {"safe": 0, "at_risk": 10, "unknown": 0}
    plan = plan_view(renewal, answer["plan_id"])
    assert plan is not None
    assert (plan["state"], plan["old_tag"], plan["new_tag"]) == ("adding", 42, 43)
    status = rollout_status(renewal.rollout_deps(), plan["add_rollout"])
    assert (status["kind"], status["state"]) == ("trust.add", "created")
    assert sum(w["size"] for w in status["waves"]) == 10


def test_certfleet_refuses_to_plan_when_the_staging_endpoint_does_not_validate(
    renewal: Container, certs: Certs
) -> None:
    """A staging endpoint still serving the old chain fails certfleet's own preflight."""
    with tls_server(certs.server1.pem, certs.server1.key_pem) as (_, port):
        answer = accept_event(renewal, "certificate.renewed", _renewed(certs, port), now=NOW)

    assert answer["status"] == "refused"
    assert "preflight" in answer["reason"]
    assert renewal.rollouts.list_ids() == []


def test_devices_with_unknown_digests_are_unknown_not_at_risk(
    renewal: Container, certs: Certs
) -> None:
    """A device whose CA certfleet has no PEM for cannot be judged."""
    stranger = ReportedCredential(sec_tag=42, type=CredentialType.CA_CHAIN, sha256="e" * 64)
    renewal.inventory.record_states(
        [
            DeviceState(
                device_id="dev-x", reported_at=NOW, credentials=(stranger,), active_tags=(42,)
            )
        ],
        received_at=NOW,
    )
    with tls_server(certs.server2.pem + certs.ca2.pem, certs.server2.key_pem) as (_, port):
        answer = accept_event(renewal, "certificate.renewed", _renewed(certs, port), now=NOW)

    assert answer["impact"] == {"safe": 0, "at_risk": 10, "unknown": 1}


@pytest.mark.parametrize(
    ("event_type", "data", "message"),
    [
        ("certificate.renewed", {"endpoints": ["h:1"]}, "chain_pem"),
        ("certificate.renewed", {"endpoints": ["h:1"], "chain_pem": "not pem"}, "not_pem"),
        ("certificate.renewed", {"endpoints": "h:1", "chain_pem": "x"}, ""),
        ("ca.renewed", {"ca_pem": "x", "endpoints": []}, "not_pem"),
        ("certificate.expired", {}, "unknown event type"),
        ("certificate.activated", {"endpoints": ["nowhere:1"]}, "no renewal plan"),
    ],
)
def test_bad_events_are_refused_with_a_reason(
    renewal: Container, event_type: str, data: dict[str, object], message: str
) -> None:
    """Each bad event raises InvalidEventError whose message says what is wrong."""
    with pytest.raises(InvalidEventError) as refused:
        accept_event(renewal, event_type, data, now=NOW)
    assert message in refused.value.message


def test_an_expired_chain_is_refused_as_expired(renewal: Container, certs: Certs) -> None:
    """A renewed chain already past its notAfter never becomes a plan."""
    old = make_ca("Old CA", not_before=NOW - timedelta(days=900), not_after=NOW - timedelta(days=1))
    leaf = issue_server_cert(
        old, not_before=NOW - timedelta(days=800), not_after=NOW + timedelta(days=9)
    )
    data = {"endpoints": ["h:1"], "chain_pem": (leaf.pem + old.pem).decode()}
    with pytest.raises(InvalidEventError) as refused:
        accept_event(renewal, "certificate.renewed", data, now=NOW)
    assert refused.value.message.startswith("expired:")


def test_activation_then_soak_plans_trust_retire_for_devices_holding_both(
    renewal: Container, certs: Certs
) -> None:
    """certificate.activated starts the soak; then devices with 42 and 43 get trust.retire."""
    with tls_server(certs.server2.pem + certs.ca2.pem, certs.server2.key_pem) as (_, port):
        plan_id = accept_event(renewal, "certificate.renewed", _renewed(certs, port), now=NOW)[
            "plan_id"
        ]
    # the devices took the add: they now hold both CAs, active [42, 43]
    later = NOW + timedelta(minutes=5)
    _devices_hold_both(renewal, certs, at=later)

    answer = accept_event(
        renewal, "certificate.activated", {"endpoints": ["127.0.0.1:8883"]}, now=later
    )
    while_adding = watch_renewals(renewal, now=later)
    # the workers finish the trust.add (stood in for here: no workers in this test)
    add_rollout = plan_view(renewal, plan_id)["add_rollout"]  # type: ignore[index]
    renewal.rollouts.change(add_rollout, Change(state=RolloutState.COMPLETED))
    renewal.rollouts.release(add_rollout, [42, 43], [f"dev-{n}" for n in range(10)])
    after_add = watch_renewals(renewal, now=later)
    states = watch_renewals(renewal, now=later + timedelta(seconds=1))

    assert while_adding[plan_id] == "adding", "the switch waits for the add to finish"
    assert after_add[plan_id] == "soaking"
    assert answer["plan_id"] == plan_id
    assert states[plan_id] == "retiring"
    plan = plan_view(renewal, plan_id)
    assert plan is not None
    retire = rollout_status(renewal.rollout_deps(), plan["retire_rollout"])
    assert retire["kind"] == "trust.retire"
    assert sum(w["size"] for w in retire["waves"]) == 10


def test_the_retire_leaves_out_the_devices_the_add_did_not_confirm(
    renewal: Container, certs: Certs
) -> None:
    """Two devices never confirmed the trust.add: the plan says so and retires on eight only."""
    unconfirmed = ("dev-3", "dev-7")
    # given a renewal whose trust.add ended completed_with_timeouts for two devices
    with tls_server(certs.server2.pem + certs.ca2.pem, certs.server2.key_pem) as (_, port):
        plan_id = accept_event(renewal, "certificate.renewed", _renewed(certs, port), now=NOW)[
            "plan_id"
        ]
    # every device reports both CAs, the unconfirmed ones too: the rollout's word counts
    later = NOW + timedelta(minutes=5)
    _devices_hold_both(renewal, certs, at=later)
    accept_event(renewal, "certificate.activated", {"endpoints": ["127.0.0.1:8883"]}, now=later)
    add_rollout = plan_view(renewal, plan_id)["add_rollout"]  # type: ignore[index]
    renewal.rollouts.change(
        add_rollout,
        Change(state=RolloutState.COMPLETED_WITH_TIMEOUTS, unconfirmed=unconfirmed),
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
    assert plan["unconfirmed"] == list(unconfirmed)
    retire = rollout_status(renewal.rollout_deps(), plan["retire_rollout"])
    assert sum(w["size"] for w in retire["waves"]) == 8
    retired = renewal.rollouts.device_states(plan["retire_rollout"])
    assert not set(unconfirmed) & set(retired)
