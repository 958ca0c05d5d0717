"""A simulated device's surroundings for firmware tests: CAs, signer keys, a broker, a link.

The broker's chain validates with CA A or CA B (think cross-signed); CA C is unrelated.
`World` carries one `Firmware` as `simulator.agent` does (offline for key store work,
a reconnect to prove a list change), with a fake prober and power cuts on demand.
With `identity`, the device holds a client certificate from the device CA and key in
sec_tag 44, and the broker (mutual TLS) accepts only a certificate of the device CA
that it has not been told to refuse (`World.refused`: revoked serials).
Bundles are signed by a root key the device trusts (`World.sign`), or by one of the
`ONLINE` keys under a delegation that root key signed (`World.sign_delegated`).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CredentialType, Topics
from orchestrator.protocol.bundle import Bundle, Credential, Probe, encode_payload
from orchestrator.protocol.cose import es256_sign, key_id, sign1
from orchestrator.protocol.delegation import DELEGABLE_OPS, Scope, sign_delegation
from orchestrator.protocol.keygen import parse_keygen_output
from orchestrator.protocol.report import ReportMessage
from simulator.firmware import Firmware
from simulator.flash import PowerCut
from simulator.modem import Modem
from simulator.pki import IssuedCA, make_ca
from simulator.probe import ProbeResult
from simulator.tls_identity import ClientIdentity

__all__ = [
    "BROKER_CAS",
    "CAS",
    "DEVICE_CA",
    "IDENTITY_TAG",
    "KEYS",
    "ONLINE",
    "START",
    "Link",
    "World",
    "broker_accepts",
    "certificate_for",
    "run",
]

START = datetime.now(UTC).replace(microsecond=0)
_VALID = {"not_before": START - timedelta(days=10), "not_after": START + timedelta(days=900)}
CAS = {name: make_ca(f"CA {name}", **_VALID) for name in "ABC"}
BROKER_CAS = (CAS["A"].pem, CAS["B"].pem)
"""The broker's chain validates with CA A or CA B (cross-signed); CA C is unrelated."""
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(6)]
ONLINE = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
"""Online (worker) keys: the device never trusts them, a root key delegates them."""
FULL_SCOPE = Scope(ops=DELEGABLE_OPS, kinds=(0, 1))
DEVICE_CA = make_ca("Device CA", **_VALID)
"""Issues the client certificates the broker accepts."""
IDENTITY_TAG = 44
"""Where a device with an identity holds its first one."""


def certificate_for(
    public_key: ec.EllipticCurvePublicKey, subject: str, *, ca: IssuedCA = DEVICE_CA
) -> str:
    """A client certificate of `public_key` for `CN=<subject>`, signed by `ca` (PEM)."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(START - timedelta(days=1))
        .not_valid_after(START + timedelta(days=10))
        .sign(ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a firmware coroutine whose fakes never wait (no event loop needed)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the firmware awaited something the fakes never deliver")


def broker_accepts(chains: Sequence[bytes]) -> bool:
    """Whether a TLS connection validating with `chains` reaches the broker."""
    return any(ca in chain for chain in chains for ca in BROKER_CAS)


class _Root:
    """A root key as `sign_delegation` takes it: its key id and ES256."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self.key_id = key_id(key.public_key())

    def sign(self, to_be_signed: bytes) -> bytes:
        return es256_sign(self.key, to_be_signed)


class Link:
    """The MQTT connection: takes every publish."""

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Acknowledged at once."""


class World:
    """One device (CA A in sec_tag 42, active [42]) and what it talks to."""

    def __init__(self, *, tls_broker: bool = True, identity: bool = False, **options: Any) -> None:
        self.clock = START
        self.outcome = "truth"
        self.identity_outcome = "truth"
        self.mutual_tls = identity
        """The broker requires a client certificate of the device CA."""
        self.refused: set[int] = set()
        """Serials of client certificates the broker refuses (revoked)."""
        modem = Modem(
            device_id="dev-1",
            faults=frozenset(options.pop("modem_faults", ())),
            foreign_key=options.pop("modem_foreign_key", None),
        )
        modem.write(42, CredentialType.CA_CHAIN, CAS["A"].pem)
        if identity:
            key = ec.generate_private_key(ec.SECP256R1())
            modem.write(
                IDENTITY_TAG,
                CredentialType.CLIENT_CERT,
                certificate_for(key.public_key(), "dev-1").encode(),
            )
            modem.write(
                IDENTITY_TAG,
                CredentialType.CLIENT_KEY,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            options["identity_tag"] = IDENTITY_TAG
        self.firmware = Firmware(
            "dev-1",
            modem,
            topics=Topics("certfleet"),
            signers={key_id(KEYS[0].public_key()): KEYS[0].public_key()},
            active_tags=[42],
            clock=lambda: self.clock,
            prober=self.probe,
            identity_prober=self.identity_probe,
            tls_broker=tls_broker,
            **options,
        )
        self.link = Link()
        self.seq = 0

    def bundle(self, op: str, rid: str = "", **fields: Any) -> Bundle:
        """The next bundle for the device (its seq, valid for an hour from now)."""
        self.seq += 1
        now = int(self.clock.timestamp())
        return Bundle(
            device_id="dev-1",
            rollout_id=rid,
            seq=self.seq,
            op=op,  # type: ignore[arg-type]  # an Operation
            issued_at=now,
            expires_at=now + 3600,
            **fields,
        )

    def stage(self, tag: int, pem: str, active: Sequence[int], rid: str = "") -> Bundle:
        """A stage of one CA chain item into `tag`, probed with `tag` alone."""
        return self.bundle(
            "stage",
            rid,
            tag=tag,
            credentials=(Credential(CredentialType.CA_CHAIN, pem),),
            probe=Probe(host="broker.example.net", port=8883, tags=(tag,)),
            active=tuple(active),
            commit_by=int(self.clock.timestamp()) + 600,
        )

    async def probe(
        self, host: str, port: int, chains: Sequence[bytes], timeout: float
    ) -> ProbeResult:
        """The truth about the staged trust ("truth"), or the outcome set for the test."""
        if self.outcome == "ok" or (self.outcome == "truth" and broker_accepts(chains)):
            return ProbeResult(ok=True, reason=None, detail="ok", chain_bytes=None)
        reason = "unknown_ca" if self.outcome == "truth" else self.outcome
        return ProbeResult(ok=False, reason=reason, detail=reason, chain_bytes=None)  # type: ignore[arg-type]  # a ProbeReason

    def keygen(self, tag: int, rid: str = "", subject: str = "dev-1") -> Bundle:
        """A keygen into `tag`, with ten minutes to stage its certificate."""
        return self.bundle(
            "keygen", rid, tag=tag, subject=subject, commit_by=int(self.clock.timestamp()) + 600
        )

    def identity_stage(
        self, tag: int, pem: str, rid: str = "", probe_tags: Sequence[int] | None = None
    ) -> Bundle:
        """The stage of client certificate `pem` into `tag`, probed with the active tags' CAs."""
        active = tuple(self.firmware.active_tags)
        return self.bundle(
            "stage",
            rid,
            tag=tag,
            credentials=(Credential(CredentialType.CLIENT_CERT, pem),),
            probe=Probe(host="broker.example.net", port=8883, tags=tuple(probe_tags or active)),
            active=active,
            commit_by=int(self.clock.timestamp()) + 600,
        )

    def issue(self, csr_field: str, *, ca: IssuedCA = DEVICE_CA, subject: str = "dev-1") -> str:
        """What an issuer gives for a `%KEYGEN` output: a certificate of its CSR's key."""
        csr = x509.load_der_x509_csr(parse_keygen_output(csr_field).csr_der)
        public_key = csr.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        return certificate_for(public_key, subject, ca=ca)

    def accepts_identity(self, identity: ClientIdentity | None) -> bool:
        """Whether the broker takes this client certificate (always, without mutual TLS)."""
        if not self.mutual_tls:
            return True
        if identity is None:
            return False
        certificate = x509.load_pem_x509_certificate(identity.certificate_pem)
        public = certificate.public_key()
        return (
            certificate.issuer == DEVICE_CA.certificate.subject
            and certificate.serial_number not in self.refused
            and isinstance(public, ec.EllipticCurvePublicKey)
            and public.public_numbers() == identity.key.public_key().public_numbers()
        )

    def reaches_broker(self) -> bool:
        """Whether the device's broker connection (trust and identity) works now."""
        firmware = self.firmware
        return broker_accepts(firmware.broker_ca_chains()) and self.accepts_identity(
            firmware.client_identity()
        )

    async def identity_probe(
        self,
        host: str,
        port: int,
        chains: Sequence[bytes],
        identity: ClientIdentity,
        timeout: float,
    ) -> ProbeResult:
        """The truth about the staged identity ("truth"), or the outcome set for the test."""
        if self.identity_outcome == "ok" or (
            self.identity_outcome == "truth"
            and broker_accepts(chains)
            and self.accepts_identity(identity)
        ):
            return ProbeResult(ok=True, reason=None, detail="ok", chain_bytes=None)
        if self.identity_outcome == "truth":
            reason = "unknown_ca" if not broker_accepts(chains) else "identity_refused"
        else:
            reason = self.identity_outcome
        return ProbeResult(ok=False, reason=reason, detail=reason, chain_bytes=None)  # type: ignore[arg-type]  # a ProbeReason

    def sign(self, bundle: Bundle | bytes) -> bytes:
        """Signed by the first of `KEYS` the device trusts."""
        payload = bundle if isinstance(bundle, bytes) else encode_payload(bundle)
        key = next(k for k in KEYS if key_id(k.public_key()) in self.firmware.signers)
        return sign1(payload, private_key=key, kid=key_id(key.public_key()))

    def root(self) -> ec.EllipticCurvePrivateKey:
        """The first of `KEYS` the device trusts."""
        return next(k for k in KEYS if key_id(k.public_key()) in self.firmware.signers)

    def delegation(
        self,
        online: ec.EllipticCurvePrivateKey,
        *,
        scope: Scope = FULL_SCOPE,
        issued_at: int | None = None,
        not_before: int | None = None,
        expires_at: int | None = None,
        root: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """A delegation of `online` by `root` (default: the trusted root), issued now, valid
        for two hours."""
        now = int(self.clock.timestamp())
        return sign_delegation(
            root=_Root(root or self.root()),
            public_key=online.public_key(),
            not_before=now - 60 if not_before is None else not_before,
            expires_at=now + 7200 if expires_at is None else expires_at,
            issued_at=now if issued_at is None else issued_at,
            scope=scope,
        )

    def sign_delegated(
        self,
        bundle: Bundle | bytes,
        online: ec.EllipticCurvePrivateKey,
        delegation: bytes | None = None,
    ) -> bytes:
        """Signed by `online`, carrying `delegation` (default: a fresh one of full scope)."""
        payload = bundle if isinstance(bundle, bytes) else encode_payload(bundle)
        return sign1(
            payload,
            private_key=online,
            kid=key_id(online.public_key()),
            delegation=self.delegation(online) if delegation is None else delegation,
        )

    def settle(self, *, connect: bool = False) -> None:
        """Carry the device as `simulator.agent` does until it needs nothing more."""
        firmware = self.firmware
        for _ in range(8):
            if not (connect or firmware.needs_offline or firmware.needs_reconnect):
                return
            firmware.go_offline()
            if self.reaches_broker():
                firmware.connect_succeeded()
                run(firmware.come_online(self.link))
                connect = False
            else:
                assert firmware.connect_failed(), "the device cannot reach its broker"
                connect = True
        raise AssertionError("the device did not settle")

    def deliver(self, payload: bytes, *, cut: int | None = None) -> list[ReportMessage]:
        """Deliver a bundle (power cut `cut` steps in, then reboot); the reports it caused."""
        firmware = self.firmware
        start = len(firmware.reports)
        if cut is not None:
            firmware.flash.fuse.arm(cut)
        handled = False
        try:
            run(firmware.handle(self.link, payload))
            handled = True
            firmware.check_commit_deadline()
            self.settle()
        except PowerCut:
            self.reboot(None if handled else payload)
        firmware.flash.fuse.disarm()
        return firmware.reports[start:]

    def reboot(self, redelivered: bytes | None) -> None:
        """Power back: reconnect, then the broker sends the unacknowledged bundle again.

        First, what the cut left: the identity tag in flash holds its certificate and key
        (docs/protocol.md §5: at every step, power cuts included)."""
        if self.mutual_tls:
            tag, modem = self.firmware.identity_tag, self.firmware.modem
            assert tag is not None, "the power cut left no identity tag"
            assert modem.exists(tag, CredentialType.CLIENT_CERT), "the cut left no certificate"
            assert modem.exists(tag, CredentialType.CLIENT_KEY), "the cut left no key"
        self.firmware.reboot()
        self.settle(connect=True)
        if redelivered is not None:
            run(self.firmware.handle(self.link, redelivered))
            self.firmware.check_commit_deadline()
            self.settle()

    def has_a_working_identity(self) -> bool:
        """No identity without mutual TLS; with it, the identity tag holds a certificate and
        key, and the broker takes them."""
        firmware = self.firmware
        tag = firmware.identity_tag
        if not self.mutual_tls:
            return tag is None
        return (
            tag is not None
            and firmware.modem.exists(tag, CredentialType.CLIENT_CERT)
            and firmware.modem.exists(tag, CredentialType.CLIENT_KEY)
            and self.accepts_identity(firmware.client_identity())
        )

    def trusts_a_working_ca(self) -> bool:
        """Active list not empty, every tag holds a CA, and the list validates the broker."""
        firmware = self.firmware
        active = firmware.active_tags
        return (
            bool(active)
            and all(firmware.modem.exists(t, CredentialType.CA_CHAIN) for t in active)
            and broker_accepts(firmware.broker_ca_chains())
        )
