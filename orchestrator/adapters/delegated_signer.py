"""A worker's online signing key, under a short-lived delegation from the root key.

Each worker process makes its own P-256 key in memory when it starts; the key is never
written anywhere. The root key (a PKCS#11 token, or the development key file) signs a
delegation over its public half: valid for `lifetime_seconds`, within a scope (which
operations and credential types, optionally which rollouts). Every bundle the worker
signs carries the delegation in its protected header (docs/protocol.md §3).

Renewal: `delegation_for(expires_at)` returns the delegation in use and asks the root
for a new one when less than half of its lifetime is left, when it would expire before
the bundle does, or when the fleet's revocation (read every 30 s) revokes it: revoked by
time, the same key gets a new delegation; revoked by key id, a new key is made. A
renewal that fails is logged (`delegation_renewal_failed`) and tried again at most every
`RENEWAL_RETRY_SECONDS` while the delegation in use still covers the bundle; once none
covers it, `DelegationUnavailableError`: nothing is signed.
The root is asked O(renewals) times, never per bundle.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.errors import DelegationUnavailableError
from orchestrator.logs import get_logger
from orchestrator.ports.stores import DelegationRegistry, Metrics
from orchestrator.protocol.cose import es256_sign, key_id
from orchestrator.protocol.delegation import (
    Delegation,
    RootKey,
    Scope,
    decode_delegation,
    sign_delegation,
)
from orchestrator.services.revocations import ROOT_SIGNATURES_METRIC

__all__ = [
    "NOT_BEFORE_LEEWAY_SECONDS",
    "RENEWAL_RETRY_SECONDS",
    "REVOCATION_CHECK_SECONDS",
    "ROOT_SIGNATURES_METRIC",
    "DelegatedSigner",
    "RootBundleSigner",
]

log = get_logger(__name__)

RENEWAL_RETRY_SECONDS: Final = 30.0
"""After a failed renewal, how long before the root is asked again while the delegation
in use still covers what is signed."""
REVOCATION_CHECK_SECONDS: Final = 30.0
"""How often a signer reads the fleet's revocation (`certfleet keys revoke`), one read of
the store: a delegation in use that it revokes is replaced by a new one."""
NOT_BEFORE_LEEWAY_SECONDS: Final = 300
"""A delegation's `nbf` lies this far before its issue, for devices whose clock is behind."""
EXPIRES_METRIC: Final = "certfleet_delegation_expires_timestamp"


@dataclass(frozen=True, slots=True)
class _Current:
    """The delegation in use: its bytes and what they say."""

    data: bytes
    delegation: Delegation


class DelegatedSigner:
    """`BundleSigner` with an in-memory key, its bundles carrying the root's delegation.

    Thread-safe; a forked child makes its own key and delegation on first use. The
    private key never leaves this object (its repr shows the key id only).
    """

    def __init__(
        self,
        root: RootKey,
        *,
        scope: Scope,
        lifetime_seconds: float,
        clock: Callable[[], datetime],
        registry: DelegationRegistry,
        worker: str,
        metrics: Metrics | None = None,
    ) -> None:
        if lifetime_seconds < 1:
            raise ValueError("a delegation lives at least one second")
        self._root = root
        self._scope = scope
        self._lifetime = float(lifetime_seconds)
        self._clock = clock
        self._registry = registry
        self._worker = worker
        self._metrics = metrics
        self._lock = threading.Lock()
        self._new_key()

    def _new_key(self) -> None:
        self._pid = os.getpid()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._kid = key_id(self._key.public_key())
        self._current: _Current | None = None
        self._failed_at: float | None = None
        """When the last renewal failed, epoch seconds (None: the last one succeeded)."""
        self._checked_at: float | None = None
        """When the fleet's revocation was last read, epoch seconds."""
        self._delegated = False
        """Whether the root delegated this key before (the next one is a renewal)."""

    def _forked(self) -> bool:
        return os.getpid() != self._pid

    @property
    def key_id(self) -> bytes:
        """The online key's id: the bundles' kid, the delegation's "kid"."""
        if self._forked():
            with self._lock:
                if self._forked():
                    self._new_key()
        return self._kid

    @property
    def delegation(self) -> Delegation | None:
        """The delegation in use, if any (public data only)."""
        current = self._current
        return current.delegation if current is not None and not self._forked() else None

    def delegation_for(self, expires_at: int) -> bytes:
        """The delegation covering a bundle that expires at `expires_at` (epoch seconds).

        Renews it first when less than half its lifetime is left or it expires before
        `expires_at`.

        Raises:
            DelegationUnavailableError: no delegation covers `expires_at`: the root did
                not sign one (logged), or a bundle that lives longer than any delegation.
        """
        current = self._current
        if current is not None and not self._forked():
            # The path of nearly every bundle: no lock, one clock reading.
            now = self._clock().timestamp()
            checked_at = self._checked_at
            if (
                expires_at <= current.delegation.expires_at
                and current.delegation.expires_at - now >= self._lifetime / 2
                and checked_at is not None
                and now - checked_at < REVOCATION_CHECK_SECONDS
            ):
                return current.data
        with self._lock:
            if self._forked():
                self._new_key()
            now = self._clock().timestamp()
            self._follow_revocation(now)
            current = self._current
            covers = current is not None and _covers(current.delegation, now, expires_at)
            if covers and current is not None:
                if current.delegation.expires_at - now >= self._lifetime / 2:
                    return current.data
                if self._failed_at is not None and now - self._failed_at < RENEWAL_RETRY_SECONDS:
                    return current.data
            if expires_at > now + self._lifetime:
                raise DelegationUnavailableError(
                    f"a bundle valid until {int(expires_at)} outlives any delegation of "
                    f"{self._lifetime / 3600:g} hours: shorten the rollout's device timeout "
                    "(or CERTFLEET_BUNDLE_TTL_SECONDS), or raise CERTFLEET_DELEGATION_HOURS"
                )
            renewed = self._renew(now)
            if renewed is not None:
                return renewed.data
            if covers and current is not None:
                return current.data
            raise DelegationUnavailableError(
                f"worker key {self._kid.hex()} has no delegation from the root key "
                f"{self._root_kid_hex()}: the root did not sign one (see "
                "delegation_renewal_failed in this worker's log); nothing was signed, the "
                "push is retried later"
            )

    def _follow_revocation(self, now: float) -> None:
        """At most every `REVOCATION_CHECK_SECONDS`, read the fleet's revocation: a
        delegation in use that it revokes is dropped, so the next bundle gets a new one;
        revoked by key id, the key is dropped too and a new one made."""
        current = self._current
        if current is None or (
            self._checked_at is not None and now - self._checked_at < REVOCATION_CHECK_SECONDS
        ):
            return
        self._checked_at = now
        try:
            revocation = self._registry.revocation()
        except Exception as exc:  # the store away: the push itself will say so
            log.warning("revocation_unreadable", worker=self._worker, error=type(exc).__name__)
            return
        if not revocation.revokes(current.delegation):
            return
        by_kid = current.delegation.kid in revocation.kids
        log.warning(
            "delegation_revoked_in_use",
            kid=self._kid.hex(),
            worker=self._worker,
            by="kid" if by_kid else "time",
        )
        if by_kid:
            # A bundle signed by another thread right across this switch may carry the old
            # delegation with the new key (refused: bad_delegation, and re-sent); workers
            # run prefork, one task at a time per process.
            self._new_key()
            self._checked_at = now
        else:
            self._current = None
            self._failed_at = None

    def _root_kid_hex(self) -> str:
        try:
            return self._root.key_id.hex()
        except Exception:  # only for the message: the token may be away
            return "(unreachable)"

    def _renew(self, now: float) -> _Current | None:
        """Ask the root for a new delegation; None (logged) when that fails."""
        issued_at = int(now)
        renewal = self._delegated
        try:
            data = sign_delegation(
                root=self._root,
                public_key=self._key.public_key(),
                not_before=max(0, issued_at - NOT_BEFORE_LEEWAY_SECONDS),
                expires_at=issued_at + int(self._lifetime),
                issued_at=issued_at,
                scope=self._scope,
            )
            if self._metrics is not None:
                self._metrics.incr(ROOT_SIGNATURES_METRIC, {"purpose": "delegation"})
            delegation = decode_delegation(data)[1]
            # Listed before it is used: every delegation in use can be found and revoked.
            self._registry.record(delegation, self._worker)
            if self._metrics is not None:
                self._metrics.set(EXPIRES_METRIC, delegation.expires_at)
        except Exception as exc:  # whatever the token or the store raised: logged, retried
            self._failed_at = now
            log.warning(
                "delegation_renewal_failed",
                kid=self._kid.hex(),
                worker=self._worker,
                error=type(exc).__name__,
                detail=str(exc)[:300],
                current_expires_at=(
                    self._current.delegation.expires_at if self._current is not None else None
                ),
            )
            return None
        self._failed_at = None
        self._delegated = True
        self._current = _Current(data=data, delegation=delegation)
        log.info(
            "delegation_renewed" if renewal else "delegation_issued",
            kid=self._kid.hex(),
            root_kid=delegation.root_kid.hex(),
            worker=self._worker,
            nbf=delegation.not_before,
            exp=delegation.expires_at,
            ops=",".join(delegation.scope.ops),
        )
        return self._current

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256 with the online key, raw r||s.

        Raises:
            DelegationUnavailableError: no delegation is valid now (never a bundle its
                delegation does not cover).
        """
        current = self._current
        if (
            current is None
            or self._forked()
            or self._clock().timestamp() >= current.delegation.expires_at
        ):
            raise DelegationUnavailableError(
                f"worker key {self._kid.hex()} has no valid delegation; nothing was signed"
            )
        return es256_sign(self._key, to_be_signed)

    def __repr__(self) -> str:
        return f"DelegatedSigner(kid={self._kid.hex()}, worker={self._worker!r})"


def _covers(delegation: Delegation, now: float, expires_at: int) -> bool:
    """Whether a bundle valid until `expires_at` may be signed under `delegation` now."""
    return now < delegation.expires_at and expires_at <= delegation.expires_at


class RootBundleSigner:
    """`BundleSigner` that signs with the root key itself (no delegation): development
    with CERTFLEET_DELEGATION_HOURS=0. Counts its signatures (`purpose="bundle"`) a batch
    at a time, so the count costs no store round trip per bundle."""

    FLUSH_EVERY: Final = 200
    FLUSH_SECONDS: Final = 1.0

    def __init__(self, root: RootKey, *, metrics: Metrics) -> None:
        self._root = root
        self._metrics = metrics
        self._lock = threading.Lock()
        self._unflushed = 0
        self._flushed_at = time.monotonic()

    @property
    def key_id(self) -> bytes:
        """The root key's id."""
        return self._root.key_id

    def delegation_for(self, expires_at: int) -> bytes | None:
        """None: a root key needs no delegation."""
        return None

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256 with the root key, raw r||s."""
        signature = self._root.sign(to_be_signed)
        with self._lock:
            self._unflushed += 1
            due = (
                self._unflushed >= self.FLUSH_EVERY
                or time.monotonic() - self._flushed_at >= self.FLUSH_SECONDS
            )
        if due:
            self.flush()
        return signature

    def flush(self) -> None:
        """Add the signatures not counted yet to the metric."""
        with self._lock:
            amount, self._unflushed = self._unflushed, 0
            self._flushed_at = time.monotonic()
        if amount:
            self._metrics.incr(ROOT_SIGNATURES_METRIC, {"purpose": "bundle"}, amount)

    def __repr__(self) -> str:
        return f"RootBundleSigner(kid={self.key_id.hex()})"
