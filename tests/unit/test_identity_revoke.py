"""Revoking the certificates an identity rotation left unused, and the CRL the broker reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509

from orchestrator.domain.errors import IssuerUnavailableError
from orchestrator.domain.identity import RevokedCertificate
from orchestrator.domain.rollout_states import DeviceRolloutState, DeviceTransition, sources_of
from orchestrator.services.identity.crl import CRL_ENTRIES_METRIC, CrlDeps, refresh_crl
from orchestrator.services.identity.revoke import REVOKED_METRIC
from orchestrator.services.rollout import (
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    start_rollout,
)
from tests.identity_rig import (
    FakeCrl,
    FakeIssuer,
    IdentityEngine,
    identity_spec,
    make_identity_engine,
)
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit

D = DeviceRolloutState


@pytest.fixture
def ie() -> IdentityEngine:
    return make_identity_engine()


def _issued(ie: IdentityEngine, devices: list[str]) -> str:
    """An identity rollout whose `devices` answered their keygen and were issued a certificate
    (the old and new PEMs kept in the identity store)."""
    engine = ie.engine
    rid = create_rollout(engine.deps, identity_spec(), now=NOW, actor="test", start=True)
    assert start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    assert engine.run_pushes() > 0
    ie.keygen(rid, *devices)
    evaluate_rollout(engine.deps, rid, now=NOW)
    assert ie.run_issues() == len(devices)
    return rid


def _to(ie: IdentityEngine, rid: str, states: dict[str, DeviceRolloutState]) -> None:
    """Move devices straight to `states` (as their reports would, through rollback_sent)."""
    for device, state in states.items():
        path = [D.ROLLBACK_SENT, state] if state is D.ROLLED_BACK else [state]
        for new in path:
            [result] = ie.engine.store.transition(
                rid,
                [DeviceTransition(device_id=device, new=new, allowed=sources_of(new), cause="t")],
                now=NOW,
                actor="test",
            )
            assert result.applied, (device, new, result)


def _serial(pem: str | None) -> int:
    assert pem is not None
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def _revoke(ie: IdentityEngine, rid: str, devices: list[str]) -> int:
    ie.engine.tasks.revoke_identities(rid, devices)
    return ie.run_revokes()


def test_retired_devices_get_their_old_certificate_revoked_once(ie: IdentityEngine) -> None:
    """The old certificate of each retired device is revoked as superseded, at the issuer and in
    certfleet's list, with one CRL refresh; the same task again adds nothing, refreshes nothing."""
    # given
    devices = ["dev-00", "dev-01"]
    rid = _issued(ie, devices)
    _to(ie, rid, dict.fromkeys(devices, D.RETIRED))
    # when
    new = _revoke(ie, rid, devices)
    again = _revoke(ie, rid, devices)
    # then
    olds = {_serial(ie.old_pems[d]) for d in devices}
    assert (new, again) == (2, 0)
    assert {(r.serial, r.reason) for r in ie.identity.revoked(now=NOW)} == {
        (serial, "superseded") for serial in olds
    }
    assert {serial for serial, _ in ie.issuer.revoked} == olds
    assert ie.engine.tasks.named("refresh_crl") == [()]
    assert ie.engine.metrics.counters[(REVOKED_METRIC, ())] == 2


def test_the_new_certificate_of_a_device_that_never_used_it_is_revoked(
    ie: IdentityEngine,
) -> None:
    """Rolled back, failed probe, fell back: the new certificate goes (cessation_of_operation);
    timed out, committed or still issued: nothing is revoked (the device may use it)."""
    # given
    states = {
        "dev-00": D.ROLLED_BACK,
        "dev-01": D.HEALTH_FAILED,
        "dev-02": D.FALLBACK,
        "dev-03": D.TIMED_OUT,
        "dev-04": D.COMMITTED,
        "dev-05": D.ISSUED,
    }
    devices = list(states)
    rid = _issued(ie, devices)
    _to(ie, rid, {d: s for d, s in states.items() if s is not D.ISSUED})
    # when
    new = _revoke(ie, rid, devices)
    # then
    kept = ie.identity.certificates(rid, devices)
    unused = {_serial(kept[d][1]) for d in ("dev-00", "dev-01", "dev-02")}
    assert new == 3
    assert {(r.serial, r.reason) for r in ie.identity.revoked(now=NOW)} == {
        (serial, "cessation_of_operation") for serial in unused
    }
    assert {r.device_id for r in ie.identity.revoked(now=NOW)} == {"dev-00", "dev-01", "dev-02"}


def test_an_issuer_away_still_leaves_the_revocation_in_the_crl(ie: IdentityEngine) -> None:
    """The issuer unreachable: the task raises (and is retried), but the revocation is already
    recorded and a CRL refresh asked for, so the broker refuses the old certificate anyway."""
    # given
    rid = _issued(ie, ["dev-00"])
    _to(ie, rid, {"dev-00": D.RETIRED})
    ie.issuer.down = True
    # when
    with pytest.raises(IssuerUnavailableError):
        _revoke(ie, rid, ["dev-00"])
    # then
    assert [r.serial for r in ie.identity.revoked(now=NOW)] == [_serial(ie.old_pems["dev-00"])]
    assert ie.engine.tasks.named("refresh_crl") == [()]
    assert ie.issuer.revoked == []


def test_an_unknown_old_certificate_revokes_nothing(ie: IdentityEngine) -> None:
    """A retired device whose old certificate's PEM certfleet never had: nothing to revoke."""
    # given
    rid = _issued(ie, ["dev-00"])
    new_pem = ie.identity.certificates(rid, ["dev-00"])["dev-00"][1]
    ie.identity.put_certificates(rid, {"dev-00": (None, new_pem)})
    _to(ie, rid, {"dev-00": D.RETIRED})
    # when
    new = _revoke(ie, rid, ["dev-00"])
    # then
    assert new == 0
    assert ie.identity.revoked(now=NOW) == []
    assert ie.engine.tasks.named("refresh_crl") == []
    assert ie.issuer.revoked == []


# -- the CRL -----------------------------------------------------------------------------------


def _revoked(serial: int, *, days: float) -> RevokedCertificate:
    return RevokedCertificate(
        serial=serial, revoked_at=NOW, not_after=NOW + timedelta(days=days), device_id="dev-00"
    )


def _crl_deps(ie: IdentityEngine, *, signer: FakeCrl | None, publisher: FakeCrl | None) -> CrlDeps:
    return CrlDeps(
        identity=ie.identity,
        issuer=ie.issuer,
        signer=signer,
        publisher=publisher,
        metrics=ie.engine.metrics,
        next_update_seconds=3600,
    )


def test_the_crl_lists_every_unexpired_revocation(ie: IdentityEngine) -> None:
    """The CRL is signed over the revocations whose certificates have not expired, and
    published; its size is a gauge."""
    # given
    ie.identity.add_revoked([_revoked(1, days=30), _revoked(2, days=-1), _revoked(3, days=1)])
    crl = FakeCrl()
    # when
    listed = refresh_crl(_crl_deps(ie, signer=crl, publisher=crl), now=NOW)
    # then
    assert listed == 2
    assert [[r.serial for r in entries] for entries in crl.signed] == [[1, 3]]
    assert len(crl.published) == 1
    assert b"BEGIN X509 CRL" in crl.published[0]
    assert ie.engine.metrics.gauges[(CRL_ENTRIES_METRIC, ())] == 2


def test_no_publisher_means_no_crl(ie: IdentityEngine) -> None:
    """Without a CRL file configured nothing is signed or published (-1)."""
    crl = FakeCrl()
    assert refresh_crl(_crl_deps(ie, signer=crl, publisher=None), now=NOW) == -1
    assert crl.signed == []


def test_without_a_signer_the_issuers_own_crl_is_published(ie: IdentityEngine) -> None:
    """No signer of certfleet's own: the issuer's CRL goes out as it is; an issuer that makes
    none leaves the previous CRL in place (-1, nothing published)."""
    # given
    ie.identity.add_revoked([_revoked(7, days=30)])
    publisher = FakeCrl()
    issuer_crl = b"-----BEGIN X509 CRL-----\nissuer\n-----END X509 CRL-----\n"

    class CrlIssuer(FakeIssuer):
        def crl(self) -> bytes | None:
            return issuer_crl

    # when
    none = refresh_crl(_crl_deps(ie, signer=None, publisher=publisher), now=NOW)
    deps = replace(_crl_deps(ie, signer=None, publisher=publisher), issuer=CrlIssuer())
    listed = refresh_crl(deps, now=NOW)
    # then
    assert none == -1
    assert listed == 1
    assert publisher.published == [issuer_crl]
