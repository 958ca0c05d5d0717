"""The one place that wires real adapters to services.

Nothing here runs at import: each process calls `bootstrap()` once at start
(Celery's `worker_process_init`, the listener's `main`, a CLI command).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.celery_queue import CeleryTaskQueue
from orchestrator.adapters.delegated_signer import DelegatedSigner, RootBundleSigner
from orchestrator.adapters.issuers import (
    attestation_keys_from_settings,
    crl_publisher_from_settings,
    crl_signer_from_settings,
    issuer_from_settings,
)
from orchestrator.adapters.mqtt import MqttSession
from orchestrator.adapters.redis_connection import RedisClient, connect
from orchestrator.adapters.redis_crl import RedisCrlPublications
from orchestrator.adapters.redis_delegations import RedisDelegations
from orchestrator.adapters.redis_identity import RedisIdentityStore
from orchestrator.adapters.redis_inventory import RedisCredentialLibrary, RedisInventory
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.adapters.redis_plans import RedisPlans
from orchestrator.adapters.redis_receipts import RedisWebhookReceipts
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.adapters.redis_sequences import RedisSequences
from orchestrator.adapters.redis_sessions import RedisSessions
from orchestrator.adapters.root_signers import (
    RootSigner,
    delegation_scope_from_settings,
    root_signer_from_settings,
)
from orchestrator.adapters.tls_probe import SocketTlsProbe
from orchestrator.clock import utcnow
from orchestrator.config import Settings
from orchestrator.domain.endpoints import parse_endpoint
from orchestrator.domain.errors import CertfleetError
from orchestrator.logs import configure_logging
from orchestrator.ports.identity import AttestationKeys, CrlPublisher, CrlSigner, Issuer
from orchestrator.protocol.topics import Topics
from orchestrator.services.identity.crl import CrlDeps
from orchestrator.services.identity.issue import IdentityDeps
from orchestrator.services.identity.plan import IdentityPlanDeps
from orchestrator.services.renewals import RenewalDeps, RenewalPolicy
from orchestrator.services.rollout import PushDeps, RolloutDeps

__all__ = ["Container", "IssuerNotConfiguredError", "NoAttestationKeys", "bootstrap"]


class IssuerNotConfiguredError(CertfleetError):
    """An identity rotation needs an issuer, and none is configured."""


class NoAttestationKeys:
    """`AttestationKeys` without any key: CSRs are checked without the modem's attestation."""

    def key_for(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """None: no attestation key is configured for any device."""
        return None


@dataclass
class Container:
    """The wired adapters of one process."""

    settings: Settings
    redis: RedisClient

    @cached_property
    def inventory(self) -> RedisInventory:
        """The fleet inventory."""
        return RedisInventory(self.redis)

    @cached_property
    def library(self) -> RedisCredentialLibrary:
        """The credential library."""
        return RedisCredentialLibrary(self.redis)

    @cached_property
    def tasks(self) -> CeleryTaskQueue:
        """A client of the Celery workers (built on first use)."""
        return CeleryTaskQueue.from_settings(self.settings)

    @cached_property
    def root_signer(self) -> RootSigner:
        """The root key: a PKCS#11 token, or the development key file (read on first use).

        It signs delegations and the root-only operations (trust-signer, revoke)."""
        return root_signer_from_settings(self.settings)

    @cached_property
    def delegations(self) -> RedisDelegations:
        """The delegations the root signed for workers, and the fleet's revocation."""
        return RedisDelegations(self.redis)

    @cached_property
    def signer(self) -> DelegatedSigner | RootBundleSigner:
        """The bundle signer: this process's own key under a delegation from the root
        (CERTFLEET_DELEGATION_HOURS), or with 0 hours the root key itself (development).

        The key is made on first use; its delegation on the first bundle (a worker asks
        for it at start)."""
        settings = self.settings
        if settings.delegation_hours <= 0:
            return RootBundleSigner(self.root_signer, metrics=self.metrics)
        return DelegatedSigner(
            self.root_signer,
            scope=delegation_scope_from_settings(settings),
            lifetime_seconds=settings.delegation_hours * 3600,
            clock=utcnow,
            registry=self.delegations,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            metrics=self.metrics,
        )

    @cached_property
    def sequences(self) -> RedisSequences:
        """Per-device bundle sequence numbers."""
        return RedisSequences(self.redis)

    @cached_property
    def plans(self) -> RedisPlans:
        """Renewal plans."""
        return RedisPlans(self.redis)

    @cached_property
    def receipts(self) -> RedisWebhookReceipts:
        """Webhook ids seen lately, with the first answer given to each."""
        return RedisWebhookReceipts(self.redis)

    @cached_property
    def sessions(self) -> RedisSessions:
        """Console sign-ins (`orchestrator.api.console`)."""
        return RedisSessions(self.redis)

    @cached_property
    def tls_probe(self) -> SocketTlsProbe:
        """certfleet's own TLS checks of server endpoints."""
        return SocketTlsProbe()

    @cached_property
    def metrics(self) -> RedisMetrics:
        """Counters and gauges shared by every process."""
        return RedisMetrics(self.redis)

    @cached_property
    def rollouts(self) -> RedisRollouts:
        """Rollout state."""
        return RedisRollouts(self.redis)

    @cached_property
    def publisher(self) -> MqttSession:
        """This process's one persistent MQTT publisher (connected on first use)."""
        return MqttSession(self.settings)

    @cached_property
    def identity(self) -> RedisIdentityStore:
        """What certfleet keeps about identity rotations (CSRs, keys seen, revocations)."""
        return RedisIdentityStore(self.redis)

    @cached_property
    def crl_publications(self) -> RedisCrlPublications:
        """The CRL's last publish and the debounce of refreshes."""
        return RedisCrlPublications(self.redis)

    @cached_property
    def issuer(self) -> Issuer | None:
        """The certificate issuer of identity rotations (None: not configured)."""
        return issuer_from_settings(self.settings)

    @cached_property
    def crl_signer(self) -> CrlSigner | None:
        """Who signs certfleet's CRL (None: the issuer's own CRL, if it makes one)."""
        return crl_signer_from_settings(self.settings)

    @cached_property
    def crl_publisher(self) -> CrlPublisher | None:
        """Where the CRL goes (None: `CERTFLEET_CRL_FILE` unset)."""
        return crl_publisher_from_settings(self.settings)

    @cached_property
    def attestation_keys(self) -> AttestationKeys:
        """The modems' attestation keys (none configured: CSRs are checked without)."""
        return attestation_keys_from_settings(self.settings) or NoAttestationKeys()

    def rollout_deps(self) -> RolloutDeps:
        """What planning, evaluating, rolling back and the rollout commands work with."""
        return RolloutDeps(
            store=self.rollouts,
            inventory=self.inventory,
            tasks=self.tasks,
            metrics=self.metrics,
            identity=self.identity,
        )

    def identity_deps(self) -> IdentityDeps:
        """What issuing and revoking identities work with.

        Raises:
            IssuerNotConfiguredError: no issuer is configured (`CERTFLEET_ISSUER*`).
        """
        issuer = self.issuer
        if issuer is None:
            raise IssuerNotConfiguredError(
                "identity rotation needs an issuer: set CERTFLEET_ISSUER_CA_CERT_FILE and "
                "CERTFLEET_ISSUER_CA_KEY_FILE, or CERTFLEET_ISSUER=cfssl with CERTFLEET_ISSUER_URL"
            )
        return IdentityDeps(
            push=self.push_deps(),
            inventory=self.inventory,
            library=self.library,
            identity=self.identity,
            issuer=issuer,
            attestation=self.attestation_keys,
            publications=self.crl_publications,
        )

    def crl_deps(self) -> CrlDeps:
        """What refreshing the CRL works with.

        Raises:
            IssuerNotConfiguredError: no issuer is configured.
        """
        issuer = self.issuer
        if issuer is None:
            raise IssuerNotConfiguredError("the CRL needs an issuer (CERTFLEET_ISSUER*)")
        return CrlDeps(
            identity=self.identity,
            issuer=issuer,
            signer=self.crl_signer,
            publisher=self.crl_publisher,
            metrics=self.metrics,
            next_update_seconds=self.settings.crl_next_update_seconds,
            publications=self.crl_publications,
        )

    def push_deps(self) -> PushDeps:
        """What pushing bundles works with (reaches the root key and connects MQTT on first
        use)."""
        return PushDeps(
            store=self.rollouts,
            signer=self.signer,
            sequences=self.sequences,
            publisher=self.publisher,
            metrics=self.metrics,
            undo_window_seconds=self.settings.undo_window_seconds,
        )

    def renewal_deps(self) -> RenewalDeps:
        """The renewal use cases' dependencies and the settings they follow."""
        settings = self.settings
        return RenewalDeps(
            plans=self.plans,
            inventory=self.inventory,
            library=self.library,
            tls_probe=self.tls_probe,
            rollouts=self.rollout_deps(),
            policy=RenewalPolicy(
                ca_tag_pair=settings.ca_tag_pair,
                auto_rollout=settings.auto_rollout,
                retire_soak_seconds=settings.retire_soak_seconds,
                rollout_waves=settings.rollout_waves,
                rollout_bake_seconds=settings.rollout_bake_seconds,
                rollout_max_failure=settings.rollout_max_failure,
                rollout_min_sample=settings.rollout_min_sample,
                rollout_device_timeout_seconds=settings.rollout_device_timeout_seconds,
            ),
        )

    def identity_plan_deps(self) -> IdentityPlanDeps:
        """What beat's identity rotation planning works with: the renewal policy's waves and
        gate, the identity tags, the renew days, and the broker's mutual-TLS listener to probe
        (`CERTFLEET_IDENTITY_PROBE`; unset: nothing is planned)."""
        settings = self.settings
        probe_text = settings.identity_probe
        probe = parse_endpoint(probe_text, what="CERTFLEET_IDENTITY_PROBE") if probe_text else None
        return IdentityPlanDeps(
            rollouts=self.rollout_deps(),
            policy=self.renewal_deps().policy,
            identity_tags=settings.identity_tag_pair,
            renew_days=settings.identity_renew_days,
            probe=probe,
        )

    @property
    def topics(self) -> Topics:
        """The MQTT topics under the configured prefix."""
        return Topics(self.settings.topic_prefix)

    def close(self) -> None:
        """Release the connections (after counting the root's last signatures)."""
        signer = self.__dict__.get("signer")
        if isinstance(signer, RootBundleSigner):
            with contextlib.suppress(CertfleetError):
                signer.flush()
        if "publisher" in self.__dict__:
            self.publisher.close()
        self.redis.close()


def bootstrap(settings: Settings | None = None, *, logging: bool = True) -> Container:
    """Read settings (unless given), configure logging, build the clients."""
    settings = settings or Settings()
    if logging:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    return Container(settings=settings, redis=client)
