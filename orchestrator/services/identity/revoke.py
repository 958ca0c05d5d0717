"""Revoking the certificates an identity rotation left unused.

Which one by the device's state in the rollout (`identity_steps.REVOKE_OLD` / `REVOKE_NEW`):
the old certificate of a device that retired it (`superseded`), the new one of a device
that rolled back, failed its probe or fell back (`cessation_of_operation`: it was never
used for good). Each is first recorded in certfleet's own list (`IdentityStore.add_revoked`,
the CRL's content, by serial: a repeat changes nothing) and a CRL refresh is asked for when
anything was new (coalesced with the other revocations of the next seconds: `ask_refresh`);
then the issuer is told, where it keeps revocations (CFSSL). An issuer away raises
`IssuerUnavailableError`: the task retries, and the CRL already lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509

from orchestrator.domain.errors import IssuerRefusedError
from orchestrator.domain.identity import RevokedCertificate
from orchestrator.logs import get_logger
from orchestrator.services.identity.crl import ask_refresh
from orchestrator.services.identity.issue import IdentityDeps
from orchestrator.services.rollout.deps import RolloutTasks, count, load
from orchestrator.services.rollout.identity_steps import REVOKE_NEW, REVOKE_OLD

__all__ = ["REVOKED_METRIC", "revoke_identities"]

log = get_logger(__name__)

REVOKED_METRIC: Final = "certfleet_certificates_revoked_total"
SUPERSEDED: Final = "superseded"
UNUSED: Final = "cessation_of_operation"


@dataclass(frozen=True, slots=True)
class _Revocation:
    pem: str
    entry: RevokedCertificate


def _revocation(pem: str, device_id: str, reason: str, now: datetime) -> _Revocation | None:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        log.error("revoke_unreadable_certificate", device_id=device_id)
        return None
    return _Revocation(
        pem=pem,
        entry=RevokedCertificate(
            serial=certificate.serial_number,
            revoked_at=now,
            not_after=certificate.not_valid_after_utc,
            device_id=device_id,
            reason=reason,
        ),
    )


def _revocations(
    deps: IdentityDeps, rollout_id: str, device_ids: Sequence[str], now: datetime
) -> list[_Revocation]:
    states = deps.push.store.device_states(rollout_id, device_ids)
    kept = deps.identity.certificates(rollout_id, device_ids)
    found = []
    for device in device_ids:
        if device not in kept:
            continue
        old, new = kept[device]
        state = states.get(device)
        if state in REVOKE_OLD and old is not None:
            pem, reason = old, SUPERSEDED
        elif state in REVOKE_NEW:
            pem, reason = new, UNUSED
        else:
            continue
        revocation = _revocation(pem, device, reason, now)
        if revocation is not None:
            found.append(revocation)
    return found


def revoke_identities(
    deps: IdentityDeps,
    tasks: RolloutTasks,
    rollout_id: str,
    device_ids: Sequence[str],
    *,
    now: datetime,
) -> int:
    """Revoke the certificates these devices no longer use; return how many were new.

    Raises:
        IssuerUnavailableError: the issuer is away (the task retries; the CRL lists them).
    """
    load(deps.push.store, rollout_id)
    revocations = _revocations(deps, rollout_id, device_ids, now)
    if not revocations:
        return 0
    new = deps.identity.add_revoked([r.entry for r in revocations])
    if new:
        ask_refresh(deps.publications, tasks)
        count(deps.push.metrics, REVOKED_METRIC, {}, new)
    for revocation in revocations:
        try:
            deps.issuer.revoke(revocation.pem, reason=revocation.entry.reason)
        except IssuerRefusedError as exc:  # not the issuer's (a provisioning CA's): CRL only
            log.warning(
                "issuer_refused_revoke",
                device_id=revocation.entry.device_id,
                serial=f"{revocation.entry.serial:x}",
                error=str(exc),
            )
    log.info("identities_revoked", rollout_id=rollout_id, certificates=len(revocations), new=new)
    return new
