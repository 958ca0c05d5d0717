"""Issuing new identities: check each device's CSR, have the issuer sign it, stage the certificate.

`issue_identities` runs for a batch of an identity.rotate rollout's devices that
reported their CSR (state `csr`). Per device:

1. the CSR is checked (`check_csr`): a refusal moves the device to `csr_refused`, the
   reason in the audit cause and in `certfleet_csr_refused_total{reason}`; the device
   dropped nothing and keeps its identity;
2. the issuer signs it (`Issuer.issue`). `IssuerUnavailableError` goes up, so the task
   retries with backoff; the devices handled before it stay handled (their certificate is
   stored, staged and sent first). A device whose issuance never succeeds stays `csr`
   until its deadline and times out. `IssuerRefusedError`: `csr_refused`;
3. the old certificate (the device's inventory item (tag, type 1) and the credential
   library's PEM of it) and the new one are kept (`IdentityStore.put_certificates`) to be
   revoked later: the old when the device retires it, the new if it rolls back;
4. the identity stage bundle is signed with a fresh seq and stored with the device's
   move `csr` -> `issued` (stored under the stage step, like a re-sent stage), then
   published.

A run again (Celery's retry, a redelivered task) re-publishes the stored stage of the
devices already `issued` instead of issuing again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from orchestrator.domain.credentials import CredentialType
from orchestrator.domain.errors import (
    InvalidCredentialError,
    IssuerRefusedError,
    IssuerUnavailableError,
)
from orchestrator.domain.identity import CsrRefusal, IssuedCertificate
from orchestrator.domain.identity_keys import certificate_matches_key
from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
)
from orchestrator.logs import get_logger
from orchestrator.ports import CredentialLibrary, InventoryStore
from orchestrator.ports.identity import AttestationKeys, CrlPublications, IdentityStore, Issuer
from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.bundles import BundleBody, identity_stage_body, issue_bundle
from orchestrator.services.identity.csr import CheckedCsr, RefusedCsr, check_csr
from orchestrator.services.rollout.deps import PushDeps, count, load
from orchestrator.services.rollout.reports import split_kept_csr

__all__ = ["CSR_REFUSED_METRIC", "IdentityDeps", "issue_identities", "old_certificates"]

log = get_logger(__name__)

D = DeviceRolloutState
CSR_REFUSED_METRIC: Final = "certfleet_csr_refused_total"
ISSUING: Final = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})
"""A pause stops new keygens, not the certificates of devices that already made a key."""
LOCK_MS: Final = 600_000
"""One issuing task per rollout at a time (as long as a task may run): two would have the
issuer sign two certificates for one key."""


@dataclass(frozen=True, slots=True)
class IdentityDeps:
    """What issuing and revoking identities work with."""

    push: PushDeps
    inventory: InventoryStore
    library: CredentialLibrary
    identity: IdentityStore
    issuer: Issuer
    attestation: AttestationKeys
    publications: CrlPublications | None = None
    """The CRL's last publish and refresh debounce (None: each revocation asks a refresh)."""


@dataclass(frozen=True, slots=True)
class _Keygen:
    """What the device's keygen bundle said: its seq (the attestation binds it) and tag."""

    seq: int
    tag: int


def _keygens(deps: IdentityDeps, rollout_id: str, devices: Sequence[str]) -> dict[str, _Keygen]:
    """The keygen bundle stored for each device (its latest; the seq answered is kept with
    the CSR, this one's tag is every keygen's of the rollout)."""
    found = {}
    for device, data in deps.push.store.bundles(rollout_id, devices, PushStep.STAGE).items():
        bundle = decode_payload(Sign1Message.decode(data).payload)
        if bundle.op == "keygen" and bundle.tag is not None:
            found[device] = _Keygen(seq=bundle.seq, tag=bundle.tag)
    return found


def old_certificates(
    inventory: InventoryStore, library: CredentialLibrary, tag: int, devices: Sequence[str]
) -> dict[str, str | None]:
    """Each device's certificate in `tag` as its inventory names it (None: unknown PEM)."""
    found: dict[str, str | None] = {}
    for device in devices:
        state = inventory.device_credentials(device)
        digest = next(
            (
                c.sha256
                for c in (state.credentials if state is not None else ())
                if c.sec_tag == tag and c.type is CredentialType.CLIENT_CERT
            ),
            None,
        )
        found[device] = library.get(digest) if digest is not None else None
    return found


@dataclass
class _Run:
    """One task's work on a batch: what it refused, issued and still has to send."""

    deps: IdentityDeps
    rollout: Rollout
    now: datetime
    active: Mapping[str, Sequence[int]]
    versions: Mapping[str, int]
    old: Mapping[str, str | None]
    refused: dict[str, tuple[CsrRefusal, str]]
    issued: dict[str, tuple[IssuedCertificate, BundleBody]]

    @property
    def spec(self) -> RolloutSpec:
        return self.rollout.spec

    def body(self, device_id: str, certificate: IssuedCertificate) -> BundleBody:
        """The device's identity stage: the certificate into the spare tag, probed with its
        CA tags (its active list, which stays as it is).

        Raises:
            InvalidCredentialError: the certificate does not fit a modem item.
        """
        spec = self.spec
        active = list(self.active.get(device_id, ()))
        return identity_stage_body(
            cert_pem=certificate.pem,
            tag=spec.spare_tag,
            probe_host=spec.probe_host,
            probe_port=spec.probe_port,
            probe_tags=active,
            active=active,
            commit_by=self.now + timedelta(seconds=spec.device_timeout_seconds),
        )

    def stage(self, device_id: str, body: BundleBody, seq: int) -> bytes:
        """The device's identity stage bundle, signed with `seq`."""
        push = self.deps.push
        return issue_bundle(
            signer=push.signer,
            sequences=push.sequences,
            device_id=device_id,
            rollout_id=self.rollout.id,
            body=body,
            now=self.now,
            ttl_seconds=self.ttl,
            seq=seq,
            version=self.versions.get(device_id, 1),
        ).data

    @property
    def ttl(self) -> int:
        return max(1, int(self.spec.device_timeout_seconds))

    def flush(self) -> list[tuple[str, bytes]]:
        """Store and move what this run decided; return the stage bundles to publish."""
        store, rid = self.deps.push.store, self.rollout.id
        if self.refused:
            results = store.transition(
                rid,
                [
                    DeviceTransition(
                        device_id=d,
                        new=D.CSR_REFUSED,
                        allowed=frozenset({D.CSR}),
                        cause=f"csr refused: {reason.value}: {detail}",
                        clear_deadline=True,
                    )
                    for d, (reason, detail) in self.refused.items()
                ],
                now=self.now,
                actor="issuer",
            )
            applied = {r.device_id for r in results if r.applied}
            for reason in sorted({self.refused[d][0] for d in applied}):
                n = sum(1 for d in applied if self.refused[d][0] is reason)
                count(self.deps.push.metrics, CSR_REFUSED_METRIC, {"reason": reason.value}, n)
            self.refused = {}
        if not self.issued:
            return []
        issued, self.issued = self.issued, {}
        self.deps.identity.put_certificates(
            rid, {d: (self.old.get(d), c.pem) for d, (c, _) in issued.items()}
        )
        seqs = self.deps.push.sequences.next_sequences(sorted(issued))
        bundles = {d: self.stage(d, body, seqs[d]) for d, (_, body) in issued.items()}
        results = store.transition(
            rid,
            [
                DeviceTransition(
                    device_id=d,
                    new=D.ISSUED,
                    allowed=frozenset({D.CSR}),
                    cause=f"certificate serial {issued[d][0].serial:x} issued and staged",
                    deadline=self.now.timestamp() + self.spec.device_timeout_seconds,
                    step=PushStep.STAGE,
                    bundle=data,
                    seq=seqs[d],
                )
                for d, data in bundles.items()
            ],
            now=self.now,
            actor="issuer",
        )
        outgoing = []
        for result in results:
            if result.applied:
                outgoing.append((result.device_id, bundles[result.device_id]))
            else:  # it left `csr` meanwhile (timed out, rolled back): the certificate goes unused
                log.warning("identity_not_staged", device_id=result.device_id)
        count(self.deps.push.metrics, "certfleet_identities_issued_total", {}, len(outgoing))
        return outgoing


def _check(
    run: _Run, device_id: str, kept: str | None, keygen: _Keygen | None
) -> CheckedCsr | RefusedCsr:
    """Check the kept CSR against the keygen it answered (its seq kept with it); a CSR for
    the key of the certificate the device presents now, or of any client certificate a
    device ever reported (the inventory's key index), is a reused key."""
    deps = run.deps
    if kept is None or keygen is None:
        return RefusedCsr(reason=CsrRefusal.MALFORMED, detail="no CSR or keygen kept for it")
    seq, csr_field = split_kept_csr(kept)
    return check_csr(
        csr_field,
        device_id=device_id,
        keygen_seq=seq if seq is not None else keygen.seq,
        keygen_tag=keygen.tag,
        attestation_keys=deps.attestation,
        identity_store=deps.identity,
        rollout_id=run.rollout.id,
        current_certificate_pem=run.old.get(device_id),
        key_holders=deps.inventory.key_holders,
    )


def _sign(run: _Run, device_id: str, checked: CheckedCsr) -> None:
    """Have the issuer sign the checked CSR; a refusal or a wrong certificate refuses it.

    Raises:
        IssuerUnavailableError: the issuer is away for now (the task retries).
    """
    try:
        certificate = run.deps.issuer.issue(checked.csr_pem, device_id=device_id)
    except IssuerRefusedError as exc:
        run.refused[device_id] = (CsrRefusal.ISSUER_REFUSED, str(exc))
        return
    if not certificate_matches_key(certificate.pem, checked.spki_sha256):
        detail = f"{run.deps.issuer.name} returned a certificate for another key"
        run.refused[device_id] = (CsrRefusal.ISSUER_REFUSED, detail)
        return
    try:
        body = run.body(device_id, certificate)
    except InvalidCredentialError as exc:
        run.refused[device_id] = (CsrRefusal.ISSUER_REFUSED, str(exc))
        return
    run.issued[device_id] = (certificate, body)


def issue_identities(
    deps: IdentityDeps,
    rollout_id: str,
    wave: int,
    device_ids: Sequence[str],
    *,
    now: datetime,
) -> int:
    """Check, issue and stage the certificates of the batch's devices in `csr`; how many sent.

    `wave` names the batch's wave for the logs. Devices already `issued` get their
    stored stage again; devices in any other state are left alone.

    Raises:
        IssuerUnavailableError: the issuer is away; what was done before is kept.
    """
    store = deps.push.store
    rollout = load(store, rollout_id)
    if rollout.state not in ISSUING or not rollout.spec.is_identity:
        log.info("issue_skipped", rollout_id=rollout_id, state=rollout.state.value)
        return 0
    lock = f"{rollout_id}:issue"
    owner = f"issue-{wave}-{now.timestamp()}"
    if not store.lock(lock, owner, ttl_ms=LOCK_MS):
        log.info("issue_busy", rollout_id=rollout_id, wave=wave)
        return 0
    try:
        return _issue(deps, rollout, device_ids, now=now)
    finally:
        store.unlock(lock, owner)


def _issue(
    deps: IdentityDeps, rollout: Rollout, device_ids: Sequence[str], *, now: datetime
) -> int:
    store, rid = deps.push.store, rollout.id
    states = store.device_states(rid, device_ids)
    waiting = [d for d in device_ids if states.get(d) is D.CSR]
    again = [d for d in device_ids if states.get(d) is D.ISSUED]
    csrs = deps.identity.csrs(rid, waiting)
    keygens = _keygens(deps, rid, waiting)
    run = _Run(
        deps=deps,
        rollout=rollout,
        now=now,
        active=store.active_tags(rid, waiting),
        versions=store.protocol_versions(rid, waiting),
        old=old_certificates(deps.inventory, deps.library, rollout.spec.tag, waiting),
        refused={},
        issued={},
    )
    outgoing: list[tuple[str, bytes]] = list(store.bundles(rid, again, PushStep.STAGE).items())
    try:
        for device in waiting:
            checked = _check(run, device, csrs.get(device), keygens.get(device))
            if isinstance(checked, RefusedCsr):
                run.refused[device] = (checked.reason, checked.detail)
            else:
                _sign(run, device, checked)
    except IssuerUnavailableError as exc:
        log.warning("issuer_unavailable", rollout_id=rid, issuer=deps.issuer.name, error=str(exc))
        outgoing.extend(run.flush())
        _publish(deps, run, outgoing)
        raise
    outgoing.extend(run.flush())
    return _publish(deps, run, outgoing)


def _publish(deps: IdentityDeps, run: _Run, outgoing: list[tuple[str, bytes]]) -> int:
    if not outgoing:
        return 0
    sent = deps.push.publisher.publish_bundles(outgoing, expiry_seconds=run.ttl)
    count(deps.push.metrics, "certfleet_bundles_pushed_total", {"step": "identity_stage"}, sent)
    log.info("identities_staged", rollout_id=run.rollout.id, sent=sent)
    return sent
