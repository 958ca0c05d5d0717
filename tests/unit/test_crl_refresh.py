"""The CRL is published (and the broker reloaded) only when it changed or is half through its
lifetime, and a burst of revocations asks for one refresh."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.domain.identity import RevokedCertificate
from orchestrator.domain.rollout_states import DeviceRolloutState, DeviceTransition, sources_of
from orchestrator.services.identity.crl import (
    CRL_SKIPPED_METRIC,
    REFRESH_DEBOUNCE_SECONDS,
    CrlDeps,
    ask_refresh,
    refresh_crl,
)
from orchestrator.services.identity.revoke import revoke_identities
from tests.identity_rig import FakeCrl, FakeCrlPublications, IdentityEngine, make_identity_engine
from tests.rollout_rig import DEVICES
from tests.unit.builders import NOW
from tests.unit.test_identity_engine import _issued

pytestmark = pytest.mark.unit

D = DeviceRolloutState
LIFETIME = 3600


@pytest.fixture
def ie() -> IdentityEngine:
    return make_identity_engine()


def _deps(ie: IdentityEngine, crl: FakeCrl, publications: FakeCrlPublications) -> CrlDeps:
    return CrlDeps(
        identity=ie.identity,
        issuer=ie.issuer,
        signer=crl,
        publisher=crl,
        metrics=ie.engine.metrics,
        next_update_seconds=LIFETIME,
        publications=publications,
    )


def _revoke_serial(ie: IdentityEngine, serial: int) -> None:
    ie.identity.add_revoked(
        [
            RevokedCertificate(
                serial=serial,
                revoked_at=NOW,
                not_after=NOW + timedelta(days=30),
                device_id="dev-00",
            )
        ]
    )


def test_an_unchanged_crl_is_not_published_again_until_half_its_lifetime(
    ie: IdentityEngine,
) -> None:
    """Same serials: the second refresh publishes nothing (counted); after half the lifetime,
    or with `force`, it is published again."""
    crl, publications = FakeCrl(), FakeCrlPublications()
    deps = _deps(ie, crl, publications)
    _revoke_serial(ie, 1)

    assert refresh_crl(deps, now=NOW) == 1
    assert refresh_crl(deps, now=NOW + timedelta(seconds=60)) == 1
    assert len(crl.published) == 1
    assert ie.engine.metrics.counters[(CRL_SKIPPED_METRIC, ())] == 1

    refresh_crl(deps, now=NOW + timedelta(seconds=LIFETIME / 2))
    assert len(crl.published) == 2
    refresh_crl(deps, now=NOW + timedelta(seconds=LIFETIME / 2 + 1), force=True)
    assert len(crl.published) == 3


def test_a_changed_set_of_serials_is_published_at_once(ie: IdentityEngine) -> None:
    """A new revocation changes the digest: the next refresh publishes."""
    crl, publications = FakeCrl(), FakeCrlPublications()
    deps = _deps(ie, crl, publications)
    _revoke_serial(ie, 1)
    refresh_crl(deps, now=NOW)
    _revoke_serial(ie, 2)
    refresh_crl(deps, now=NOW + timedelta(seconds=1))
    assert [[r.serial for r in signed] for signed in crl.signed] == [[1], [1, 2]]


def test_without_a_publication_record_every_refresh_publishes(ie: IdentityEngine) -> None:
    """No `CrlPublications` (older wiring): each refresh writes, as before."""
    crl = FakeCrl()
    deps = replace(_deps(ie, crl, FakeCrlPublications()), publications=None)
    refresh_crl(deps, now=NOW)
    refresh_crl(deps, now=NOW)
    assert len(crl.published) == 2


def test_four_revocation_runs_in_a_row_ask_for_one_refresh(ie: IdentityEngine) -> None:
    """The revocations of a wave, four tasks within the window, enqueue one refresh, which
    runs after the window (so it reads them all); once the window is over one may ask again."""
    publications = FakeCrlPublications()
    rid = _issued(ie, DEVICES[:4])
    for device in DEVICES[:4]:
        for new in (D.STAGED, D.HEALTH_OK, D.COMMITTED, D.RETIRED):
            ie.engine.store.transition(
                rid,
                [DeviceTransition(device_id=device, new=new, allowed=sources_of(new), cause="t")],
                now=NOW,
                actor="test",
            )
    deps = replace(ie.deps, publications=publications)

    for device in DEVICES[:4]:
        assert revoke_identities(deps, ie.engine.tasks, rid, [device], now=NOW) == 1
    assert ie.engine.tasks.named("refresh_crl") == [()]
    assert ie.engine.tasks.refresh_countdowns == [REFRESH_DEBOUNCE_SECONDS + 1]

    publications.clock = REFRESH_DEBOUNCE_SECONDS + 0.1
    assert ask_refresh(publications, ie.engine.tasks)
    assert len(ie.engine.tasks.named("refresh_crl")) == 2
