"""An identity.rotate rollout's ports in memory: the rollout rig plus an issuer that can be
away or refuse, the identity store, and devices that answer a keygen with a real CSR."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from orchestrator.domain.credentials import CredentialType, sha256_hex
from orchestrator.domain.errors import IssuerRefusedError, IssuerUnavailableError
from orchestrator.domain.identity import IssuedCertificate, RevokedCertificate
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message
from orchestrator.services.identity.issue import IdentityDeps, issue_identities
from orchestrator.services.identity.revoke import revoke_identities
from orchestrator.services.rollout import apply_reports
from simulator.pki import IssuedCA, make_ca
from tests.csr_fields import FixedAttestationKeys, keygen_field
from tests.fake_rollouts import (
    DEVICE_TIMEOUT,
    FakeMetrics,
    FakePublisher,
    FakeRollouts,
    FakeSigner,
    RecordingTasks,
)
from tests.fakes import FakeIdentityStore, FakeInventory, FakeLibrary
from tests.rollout_rig import DEVICES, Engine
from tests.unit.builders import NOW, credential

__all__ = [
    "CA_TAG",
    "IDENTITY_TAG",
    "SPARE_TAG",
    "FakeCrl",
    "FakeCrlPublications",
    "FakeIssuer",
    "IdentityEngine",
    "identity_spec",
    "make_identity_engine",
]

CA_TAG = 42
IDENTITY_TAG = 44
SPARE_TAG = 45


def identity_spec(**overrides: object) -> RolloutSpec:
    """An identity.rotate from sec_tag 44 to 45, probing the broker's mTLS port, one wave."""
    values: dict[str, object] = {
        "kind": "identity.rotate",
        "ca_pems": (),
        "tag": IDENTITY_TAG,
        "spare_tag": SPARE_TAG,
        "probe_host": "broker.example.net",
        "probe_port": 8884,
        "waves": parse_waves("100%"),
        "min_sample": 1,
        "device_timeout_seconds": DEVICE_TIMEOUT,
        **overrides,
    }
    return RolloutSpec(**values)  # type: ignore[arg-type]


def _certificate(
    ca: IssuedCA, csr: x509.CertificateSigningRequest, now: datetime
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .sign(ca.key, hashes.SHA256())
    )


@dataclass
class FakeIssuer:
    """`Issuer` signing with an in-memory CA; `down` makes it unavailable, `refuse` refuse.

    `down_after` lets that many issuances through before it goes away.
    """

    ca: IssuedCA = field(
        default_factory=lambda: make_ca(
            "Device CA", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900)
        )
    )
    name: str = "fake"
    down: bool = False
    down_after: int | None = None
    refuse: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    revoked: list[tuple[int, str]] = field(default_factory=list)

    def issue(self, csr_pem: str, *, device_id: str) -> IssuedCertificate:
        if self.down or (self.down_after is not None and len(self.issued) >= self.down_after):
            raise IssuerUnavailableError("the fake issuer is away")
        if device_id in self.refuse:
            raise IssuerRefusedError(f"policy refuses {device_id}")
        certificate = _certificate(self.ca, x509.load_pem_x509_csr(csr_pem.encode()), NOW)
        self.issued.append(device_id)
        return IssuedCertificate(
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            serial=certificate.serial_number,
            not_after=certificate.not_valid_after_utc,
        )

    def revoke(self, certificate_pem: str, *, reason: str) -> bool:
        if self.down:
            raise IssuerUnavailableError("the fake issuer is away")
        serial = x509.load_pem_x509_certificate(certificate_pem.encode()).serial_number
        self.revoked.append((serial, reason))
        return True

    def crl(self) -> bytes | None:
        return None


@dataclass
class FakeCrl:
    """`CrlSigner` and `CrlPublisher` at once: keeps what it signed and published."""

    signed: list[list[RevokedCertificate]] = field(default_factory=list)
    published: list[bytes] = field(default_factory=list)

    def sign_crl(
        self, revoked: Sequence[RevokedCertificate], *, now: datetime, next_update: datetime
    ) -> bytes:
        self.signed.append(list(revoked))
        serials = ",".join(f"{r.serial:x}" for r in revoked)
        return f"-----BEGIN X509 CRL-----\n{serials}\n-----END X509 CRL-----\n".encode()

    def publish(self, pem: bytes) -> None:
        self.published.append(pem)


@dataclass
class FakeCrlPublications:
    """`CrlPublications` in memory; `claim_refresh` holds for `ttl_ms` of `clock` seconds."""

    published: tuple[str, float] | None = None
    clock: float = 0.0
    claimed_until: float = -1.0

    def last_published(self) -> tuple[str, float] | None:
        return self.published

    def record_published(self, digest: str, at: float) -> None:
        self.published = (digest, at)

    def claim_refresh(self, ttl_ms: int) -> bool:
        if self.clock < self.claimed_until:
            return False
        self.claimed_until = self.clock + ttl_ms / 1000
        return True


@dataclass
class IdentityEngine:
    """The rollout rig with an identity store, an issuer, and the devices' old certificates."""

    engine: Engine
    identity: FakeIdentityStore
    issuer: FakeIssuer
    library: FakeLibrary
    old_pems: dict[str, str]
    keys: dict[str, object] = field(default_factory=dict)

    @property
    def deps(self) -> IdentityDeps:
        return IdentityDeps(
            push=self.engine.push,
            inventory=self.engine.inventory,
            library=self.library,
            identity=self.identity,
            issuer=self.issuer,
            attestation=FixedAttestationKeys(),
        )

    def last_bundle(self, device_id: str, op: str) -> tuple[int, dict[str, object]]:
        """seq and payload of the last `op` bundle sent to the device."""
        for sent_to, data in reversed(self.engine.publisher.sent):
            bundle = decode_payload(Sign1Message.decode(data).payload)
            if sent_to == device_id and bundle.op == op:
                return bundle.seq, {"tag": bundle.tag, "subject": bundle.subject, "bundle": bundle}
        raise AssertionError(f"no {op} bundle was sent to {device_id}")

    def keygen(self, rollout_id: str, *devices: str, field_for: object = None) -> set[str]:
        """Each device answers its last keygen: `received`, then `csr` with a real CSR."""
        reports = []
        for d in devices:
            seq, body = self.last_bundle(d, "keygen")
            assert body["subject"] == d
            made = keygen_field(d, seq=seq, tag=int(str(body["tag"])))
            self.keys[d] = made.key
            csr = made.field if field_for is None else field_for(d, seq)  # type: ignore[operator]
            for phase in ("received", "csr"):
                reports.append(
                    DeviceReport(
                        device_id=d,
                        rollout_id=rollout_id,
                        seq=seq,
                        op="keygen",
                        phase=phase,
                        reason="ok",
                        detail="",
                        time=NOW,
                        csr=csr if phase == "csr" else None,
                    )
                )
        return apply_reports(self.engine.deps, reports, now=NOW)

    def run_issues(self, *, now: datetime = NOW) -> int:
        """Carry out the issue_identities tasks enqueued so far; how many stages went out."""
        calls = self.engine.tasks.named("issue_identities")
        self.engine.tasks.calls = [c for c in self.engine.tasks.calls if c[0] != "issue_identities"]
        sent = 0
        for rid, wave, ids in calls:
            sent += issue_identities(self.deps, str(rid), int(str(wave)), list(ids), now=now)  # type: ignore[call-overload]
        return sent

    def run_revokes(self, *, now: datetime = NOW) -> int:
        """Carry out the revoke_identities tasks enqueued so far; how many were new."""
        calls = self.engine.tasks.named("revoke_identities")
        self.engine.tasks.calls = [
            c for c in self.engine.tasks.calls if c[0] != "revoke_identities"
        ]
        new = 0
        for rid, ids in calls:
            new += revoke_identities(self.deps, self.engine.tasks, str(rid), list(ids), now=now)  # type: ignore[call-overload]
        return new


def _old_certificate(ca: IssuedCA, device_id: str) -> str:
    key = make_ca(device_id, not_before=NOW - timedelta(days=1), not_after=NOW).key
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    certificate = _certificate(ca, csr, NOW - timedelta(days=355))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def make_identity_engine() -> IdentityEngine:
    """Ten devices presenting a client certificate in sec_tag 44, trusting the CA in 42."""
    issuer = FakeIssuer()
    library = FakeLibrary()
    old = {d: _old_certificate(issuer.ca, d) for d in DEVICES}
    library.add({sha256_hex(pem.encode()): pem for pem in old.values()})
    inventory = FakeInventory()
    inventory.record_states(
        [
            DeviceState(
                device_id=d,
                reported_at=NOW,
                credentials=(
                    credential(CA_TAG),
                    credential(
                        IDENTITY_TAG,
                        cred_type=CredentialType.CLIENT_CERT,
                        sha256=sha256_hex(old[d].encode()),
                        not_after=NOW + timedelta(days=10),
                    ),
                ),
                active_tags=(CA_TAG,),
                protocol_version=2,
                identity_tag=IDENTITY_TAG,
            )
            for d in DEVICES
        ],
        received_at=NOW,
    )
    identity = FakeIdentityStore()
    engine = Engine(
        FakeRollouts(),
        RecordingTasks(),
        inventory,
        FakePublisher(),
        FakeMetrics(),
        FakeSigner(),
        identity=identity,
    )
    return IdentityEngine(
        engine=engine, identity=identity, issuer=issuer, library=library, old_pems=old
    )
