"""The scripted sequence, built from the device's first state message.

`Script` holds what the plan needs (the device's tags, the CAs, the probe servers)
and the trust the device must hold after each step so far; the step groups in
`plan_ops`, `plan_refusals`, `plan_unsafe`, `plan_delegation` and `plan_identity`
append to it. Spare sec_tags are tags the device holds nothing in, so the suite never
touches the device's own trust.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from orchestrator.conformance.model import Expect, In, Send, Step, Trust
from orchestrator.protocol.delegation import Revocation

__all__ = [
    "COMMITTED",
    "CSR",
    "FALLBACK",
    "KEYGEN_FALLBACK",
    "RETIRED",
    "ROLLED_BACK",
    "STAGED",
    "PlanInputs",
    "Script",
    "health_failed",
    "sha256_text",
]

STAGED: Final = Expect(phases=("received", "staged", "health_ok"))
FALLBACK: Final = Expect(
    phases=("received", "staged", "health_ok", "fallback"), reasons=frozenset({"commit_timeout"})
)
COMMITTED: Final = Expect(phases=("received", "committed"))
ROLLED_BACK: Final = Expect(phases=("received", "rolled_back"))
RETIRED: Final = Expect(phases=("received", "retired"))
CSR: Final = Expect(phases=("received", "csr"))
"""A keygen: the key made, the CSR and attestation reported; the device waits for its stage."""
KEYGEN_FALLBACK: Final = Expect(
    phases=("received", "csr", "fallback"), reasons=frozenset({"commit_timeout"})
)


def health_failed(*reasons: str) -> Expect:
    """A stage whose probe failed with one of `reasons`: the staged items deleted."""
    return Expect(phases=("received", "staged", "health_failed"), reasons=frozenset(reasons))


def sha256_text(pem: str) -> str:
    """The digest a device reports for an item holding exactly this text."""
    return hashlib.sha256(pem.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanInputs:
    """What the plan is built from.

    Args:
        initial: the trust of the device's first state message.
        spare: three sec_tags the device holds nothing in (the suite stages there).
        signers: suite key name -> (kid, uncompressed point), for trust-signer bundles.
        trusted_keys: how many signer keys the device trusts at the start (1 to 3).
        stage_window: seconds a stage that will be committed gives its commit (commit_by).
        fallback_after: seconds the fallback step gives a commit that never comes.
        undo_window: seconds a commit stays undoable in the undo_by step.
        probe_identity: a TLS server that requires a client certificate of the suite's
            identity CA; with it (and a device with an identity) the plan rotates the
            device's identity and rolls it back.
        revocation: the revoked delegations the device holds (certfleet's fleet-wide
            revocation); the delegation steps replace the device's list and end by
            sending this one back.
    """

    device_id: str
    initial: Trust
    spare: tuple[int, int, int]
    ca_good: str
    ca_bad: str
    probe_good: tuple[str, int]
    probe_bad: tuple[str, int]
    probe_bad_reason: str
    signers: Mapping[str, tuple[bytes, bytes]]
    run_id: str
    trusted_keys: int = 1
    stage_window: float = 900.0
    fallback_after: float = 5.0
    undo_window: float = 60.0
    undo_default: float = 7 * 24 * 3600.0
    probe_identity: tuple[str, int] | None = None
    revocation: Revocation = field(default_factory=Revocation)

    def __post_init__(self) -> None:
        if not 1 <= self.trusted_keys <= 3:
            raise ValueError("the suite needs room for one more signer key: trusted_keys 1 to 3")
        if not self.initial.active:
            raise ValueError("the device reports no active tag list")
        if len(self.initial.active) > 5:
            raise ValueError("the suite adds two tags to the active list: at most 5 at the start")
        if self.initial.identity is not None and len(self.initial.active) > 4:
            raise ValueError(
                "the suite adds two tags to the active list, and with the identity tag a "
                "socket takes 7: at most 4 active tags at the start on a device with an identity"
            )


@dataclass
class Script:
    """The steps so far and the trust the device must hold after the last of them."""

    inputs: PlanInputs
    steps: list[Step] = field(default_factory=list)
    trust: Trust = field(init=False)
    _rids: int = 0

    def __post_init__(self) -> None:
        self.trust = self.inputs.initial

    # -- names ---------------------------------------------------------------------------

    def rid(self) -> str:
        """A fresh rollout id for the next change (the device binds undo records to it)."""
        self._rids += 1
        return f"conformance-{self.inputs.run_id}-{self._rids}"

    @property
    def anchor(self) -> int:
        """The device's first active tag: stages into it must be refused (`tag_in_use`)."""
        return self.inputs.initial.active[0]

    @property
    def good_sha(self) -> str:
        """The digest of the good CA as one item."""
        return sha256_text(self.inputs.ca_good)

    # -- steps ---------------------------------------------------------------------------

    def add(
        self,
        name: str,
        proves: str,
        sends: tuple[Send, ...] | Send,
        expects: tuple[Expect, ...] | Expect,
        *,
        trust: Trust | None = None,
        pause: float = 0.0,
        burst: bool = False,
    ) -> None:
        """Append a step; `trust` (if given) becomes what the device must hold from now on."""
        sends = sends if isinstance(sends, tuple) else (sends,)
        expects = expects if isinstance(expects, tuple) else (expects,)
        self.steps.append(
            Step(
                name=name,
                proves=proves,
                sends=sends,
                expects=expects,
                trust=trust if trust is not None else self.trust,
                pause=pause,
                burst=burst,
            )
        )
        if trust is not None:
            self.trust = trust

    # -- bundles -------------------------------------------------------------------------

    def stage(
        self,
        rid: str,
        tag: int,
        pem: str | None = None,
        *,
        probe: tuple[str, int] | None = None,
        active: tuple[int, ...] | None = None,
        commit_in: float | None = None,
        **extra: Any,
    ) -> Send:
        """Stage `pem` (default: the good CA) into `tag`, probing `probe` with `tag` alone."""
        host, port = probe or self.inputs.probe_good
        if active is None:
            active = tuple(dict.fromkeys((*self.trust.active, tag)))
        fields: dict[str, Any] = {
            "tag": tag,
            "creds": [{"type": 0, "pem": self.inputs.ca_good if pem is None else pem}],
            "probe": {"host": host, "port": port, "tags": [tag]},
            "active": list(active),
            "commit_by": In(commit_in if commit_in is not None else self.inputs.stage_window),
        }
        fields.update(extra)
        return Send(op="stage", rid=rid, fields=fields)

    def commit(self, rid: str, tag: int, *, undo_in: float | None = None, **extra: Any) -> Send:
        """Commit the stage of `tag`, undoable for `undo_in` seconds (default: seven days)."""
        undo = self.inputs.undo_default if undo_in is None else undo_in
        return Send(op="commit", rid=rid, fields={"tag": tag, "undo_by": In(undo), **extra})

    def rollback(self, rid: str, *, signer: str = "main", **extra: Any) -> Send:
        """Undo the change of rollout `rid` ('' for a manual change)."""
        return Send(op="rollback", rid=rid, signer=signer, fields=extra)

    def retire(self, rid: str, tags: tuple[int, ...], active: tuple[int, ...]) -> Send:
        """Delete `tags`, `active` becoming the active list."""
        return Send(op="retire", rid=rid, fields={"tags": list(tags), "active": list(active)})

    def keygen(self, rid: str, tag: int, *, commit_in: float | None = None, **extra: Any) -> Send:
        """Make a key in `tag` and report its CSR for the device id; `commit_in`: the deadline."""
        fields: dict[str, Any] = {
            "tag": tag,
            "subject": self.inputs.device_id,
            "commit_by": In(commit_in if commit_in is not None else self.inputs.stage_window),
        }
        fields.update(extra)
        return Send(op="keygen", rid=rid, fields=fields)

    def identity_stage(
        self,
        rid: str,
        tag: int,
        certificate: str,
        *,
        probe: tuple[str, int] | None = None,
        certify: bool = False,
        **extra: Any,
    ) -> Send:
        """Write a client certificate into `tag`, probing `probe` (default: the good server)
        with the device's CA tags; `certify`: the runner puts in the certificate it issues
        for the keygen's CSR, `certificate` going only if there is none."""
        host, port = probe or self.inputs.probe_good
        fields: dict[str, Any] = {
            "tag": tag,
            "creds": [{"type": 1, "pem": certificate}],
            "probe": {"host": host, "port": port, "tags": list(self.trust.active)},
            "active": list(self.trust.active),
            "commit_by": In(self.inputs.stage_window),
        }
        fields.update(extra)
        return Send(op="stage", rid=rid, fields=fields, certify=certify)

    def revoke(self, kids: tuple[bytes, ...], before: int, **extra: Any) -> Send:
        """Revoke delegations (root-signed): `kids` the device's whole list, `before` a time."""
        return Send(op="revoke", fields={"kids": list(kids), "before": before, **extra})

    def trust_signer(self, add: str, *, retire: str | None = None, signer: str) -> Send:
        """Trust the suite key `add` (and stop trusting `retire`), signed by `signer`."""
        kid, point = self.inputs.signers[add]
        fields: dict[str, Any] = {"signer": {"kid": kid, "pub": point}}
        if retire is not None:
            fields["retire_kid"] = self.inputs.signers[retire][0]
        return Send(op="trust-signer", signer=signer, fields=fields)
