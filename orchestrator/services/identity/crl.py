"""The CRL the broker reads: every certificate certfleet revoked that has not expired yet.

`refresh_crl` signs it (`CrlSigner`, with the key of the CA that issued the devices'
certificates) and hands it to a `CrlPublisher`, which writes it atomically where the
broker's `crlfile` points and tells the broker to reload. Without a signer of its own,
certfleet publishes the issuer's CRL if the issuer makes one (`Issuer.crl`).

Each publish makes the broker reload, and Mosquitto 2.0 has been seen to crash when
reloads come in a burst while clients reconnect. So a CRL is published only when the set
of revoked serials changed since the last publish, or the last one is half through its
lifetime (`CrlPublications`; beat asks every quarter lifetime); and the revocations of a
wave ask for one refresh between them (`ask_refresh`: the first asks, with a countdown,
the rest within the window find it asked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from orchestrator.domain.identity import RevokedCertificate
from orchestrator.logs import get_logger
from orchestrator.ports import Metrics
from orchestrator.ports.identity import (
    CrlPublications,
    CrlPublisher,
    CrlSigner,
    IdentityStore,
    Issuer,
)

__all__ = [
    "CRL_ENTRIES_METRIC",
    "CRL_SKIPPED_METRIC",
    "REFRESH_DEBOUNCE_SECONDS",
    "CrlDeps",
    "ask_refresh",
    "refresh_crl",
    "serials_digest",
]

log = get_logger(__name__)

CRL_ENTRIES_METRIC: Final = "certfleet_crl_entries"
CRL_SKIPPED_METRIC: Final = "certfleet_crl_publishes_skipped_total"
REFRESH_DEBOUNCE_SECONDS: Final = 5.0
"""Revocations this close together share one CRL refresh (and one broker reload)."""


class RefreshQueue(Protocol):
    """Where a refresh is enqueued (the Celery task queue)."""

    def refresh_crl(self, *, countdown: float = 0) -> None: ...


def serials_digest(revoked: Sequence[RevokedCertificate]) -> str:
    """SHA-256 over the sorted serials (hex): equal exactly when a CRL would list the same."""
    listed = ",".join(sorted(f"{r.serial:x}" for r in revoked))
    return hashlib.sha256(listed.encode()).hexdigest()


def ask_refresh(publications: CrlPublications | None, tasks: RefreshQueue) -> bool:
    """Ask for a CRL refresh, coalesced with the others of the next few seconds; whether this
    call enqueued it.

    The refresh runs after the window, so it reads every revocation recorded before a
    call that found it already asked (each records its revocation before it asks).
    """
    if publications is None:
        tasks.refresh_crl()
        return True
    window = REFRESH_DEBOUNCE_SECONDS
    if not publications.claim_refresh(int(window * 1000)):
        return False
    tasks.refresh_crl(countdown=window + 1)
    return True


@dataclass(frozen=True, slots=True)
class CrlDeps:
    """What refreshing the CRL works with; `publisher` None: no CRL is configured;
    `publications` None: every refresh publishes."""

    identity: IdentityStore
    issuer: Issuer
    signer: CrlSigner | None
    publisher: CrlPublisher | None
    metrics: Metrics
    next_update_seconds: int = 86_400
    publications: CrlPublications | None = None


def _current(deps: CrlDeps, digest: str, now: datetime) -> bool:
    """Whether the last published CRL lists these serials and is less than half its age."""
    last = deps.publications.last_published() if deps.publications is not None else None
    if last is None:
        return False
    published_digest, at = last
    return published_digest == digest and now.timestamp() - at < deps.next_update_seconds / 2


def refresh_crl(deps: CrlDeps, *, now: datetime, force: bool = False) -> int:
    """Sign and publish the CRL if it changed or is half through its lifetime (always with
    `force`); return how many certificates it lists (-1: none published, or could be).

    Raises:
        IssuerUnavailableError: certfleet has no signer and the issuer is away (retried).
        OSError: the publisher could not write it (the previous CRL stays in place).
    """
    if deps.publisher is None:
        log.info("crl_not_configured")
        return -1
    revoked = deps.identity.revoked(now=now)
    digest = serials_digest(revoked)
    if not force and _current(deps, digest, now):
        deps.metrics.incr(CRL_SKIPPED_METRIC)
        log.info("crl_unchanged", entries=len(revoked))
        return len(revoked)
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
    if deps.publications is not None:
        deps.publications.record_published(digest, now.timestamp())
    deps.metrics.set(CRL_ENTRIES_METRIC, float(len(revoked)))
    log.info("crl_published", entries=len(revoked), bytes=len(pem))
    return len(revoked)
