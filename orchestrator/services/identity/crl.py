"""The CRL the broker reads: every certificate certfleet revoked that has not expired yet.

`refresh_crl` signs it (`CrlSigner`, with the key of the CA that issued the devices'
certificates) and hands it to a `CrlPublisher`, which writes it atomically where the
broker's `crlfile` points and tells the broker to reload. Without a signer of its own,
certfleet publishes the issuer's CRL if the issuer makes one (`Issuer.crl`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from orchestrator.logs import get_logger
from orchestrator.ports import Metrics
from orchestrator.ports.identity import CrlPublisher, CrlSigner, IdentityStore, Issuer

__all__ = ["CRL_ENTRIES_METRIC", "CrlDeps", "refresh_crl"]

log = get_logger(__name__)

CRL_ENTRIES_METRIC: Final = "certfleet_crl_entries"


@dataclass(frozen=True, slots=True)
class CrlDeps:
    """What refreshing the CRL works with; `publisher` None: no CRL is configured."""

    identity: IdentityStore
    issuer: Issuer
    signer: CrlSigner | None
    publisher: CrlPublisher | None
    metrics: Metrics
    next_update_seconds: int = 86_400


def refresh_crl(deps: CrlDeps, *, now: datetime) -> int:
    """Sign and publish the CRL; return how many certificates it lists (-1: none published).

    Raises:
        IssuerUnavailableError: certfleet has no signer and the issuer is away (retried).
        OSError: the publisher could not write it (the previous CRL stays in place).
    """
    if deps.publisher is None:
        log.info("crl_not_configured")
        return -1
    revoked = deps.identity.revoked(now=now)
    if deps.signer is not None:
        pem = deps.signer.sign_crl(
            revoked, now=now, next_update=now + timedelta(seconds=deps.next_update_seconds)
        )
    else:
        issuer_crl = deps.issuer.crl()
        if issuer_crl is None:
            log.error("crl_without_signer", issuer=deps.issuer.name)
            return -1
        pem = issuer_crl
    deps.publisher.publish(pem)
    deps.metrics.set(CRL_ENTRIES_METRIC, float(len(revoked)))
    log.info("crl_published", entries=len(revoked), bytes=len(pem))
    return len(revoked)
