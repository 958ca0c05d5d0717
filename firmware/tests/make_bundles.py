"""Write the signed test bundles the C tests read, with the project's own encoder.

Run from the repository root: `.venv/bin/python firmware/tests/make_bundles.py`.
It writes firmware/tests/vectors/bundles/: one `<name>.cbor` per case, `MANIFEST`
(one line per case: name, the reason checks 1 to 12 of docs/protocol.md §4 give,
and whether the orchestrator's `open_bundle` must agree), `CONTEXT` (the device
the bundles are for: id, clock, last accepted seq, trusted signer) and
`factory-ca.pem`, the CA the test device holds in its active sec_tag, the identity
files (`identity-key.pem`: the key the tests' %KEYGEN makes, so a certificate can be
issued for it ahead; `old-identity.pem` and `old-identity-key.pem`: the identity the
device is provisioned with in sec_tag 45); and firmware/tests/vectors/tls/, server chains
under the staged CA for the probe tests.

Valid bundles come from `Bundle` + `encode_payload` + `sign1`, as the orchestrator
sends them; invalid ones are payload maps or envelopes built by hand around the same
encoder, since `Bundle` refuses to hold them. Before writing, every case marked
`agree` is opened with `open_bundle`, which must give the manifest's reason, so the
C decoder and the Python one are held to the same bytes. ECDSA signatures are
randomized: a re-run changes the bytes, not the cases.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.domain.credentials import CredentialType
from orchestrator.protocol.bundle import (
    Bundle,
    BundleRejectedError,
    Credential,
    Probe,
    SignerKey,
    encode_payload,
    open_bundle,
)
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.limits import (
    CA_CHAIN_MAX_BYTES,
    MAX_BUNDLE_BYTES,
    PROBE_HOST_MAX_BYTES,
    RID_MAX_BYTES,
    SUBJECT_MAX_BYTES,
)
from simulator.pki import IssuedCA, issue_intermediate, issue_server_cert, make_ca

OUT = Path(__file__).resolve().parent / "vectors" / "bundles"
DEVICE = "nrf-352656100000000"
NOW = 1_800_000_000
LAST_SEQ = 10
KEY = ec.derive_private_key(0x5EED_0001, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0x5EED_0002, ec.SECP256R1())
NEW_KEYS = [ec.derive_private_key(0x5EED_0010 + i, ec.SECP256R1()) for i in range(4)]
KID = key_id(KEY.public_key())
ACTIVE_TAG = 42
SPARE_TAG = 43
IDENTITY_TAG = 44
"""The spare identity tag a keygen makes its key in."""
OLD_IDENTITY_TAG = 45
"""The identity the identity tests provision the device with."""
IDENTITY_KEY = ec.derive_private_key(0x5EED_0100, ec.SECP256R1())
"""The key the tests' %KEYGEN makes (fuzz/fuzz_device.c knows its scalar too)."""
OLD_IDENTITY_KEY = ec.derive_private_key(0x5EED_0101, ec.SECP256R1())


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed P-256 point of a key."""
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def pem(size: int, label: str = "CERTIFICATE") -> str:
    """ASCII PEM-shaped text of exactly `size` bytes (the key store fake checks the armour)."""
    head, tail = f"-----BEGIN {label}-----\n", f"\n-----END {label}-----\n"
    body = size - len(head) - len(tail)
    lines = "".join("QUJD"[i % 4] if (i + 1) % 65 else "\n" for i in range(body))
    return head + lines + tail


VALID_FROM = datetime(2026, 1, 1, tzinfo=UTC)
VALID_TO = datetime(2036, 1, 1, tzinfo=UTC)


def real_ca(name: str) -> IssuedCA:
    """A real P-256 root CA: the host key store parses certificates as the modem does."""
    return make_ca(name, not_before=VALID_FROM, not_after=VALID_TO)


def client_cert(issuer: IssuedCA, key: ec.EllipticCurvePrivateKey) -> str:
    """A client certificate for `key`, subject CN=<the device id>, as an issuer makes it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_TO)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


STAGED_CA = real_ca("certfleet staged CA")
IDENTITY_CA = real_ca("certfleet identity CA")
NEW_IDENTITY = client_cert(IDENTITY_CA, IDENTITY_KEY)
OLD_IDENTITY = client_cert(IDENTITY_CA, OLD_IDENTITY_KEY)
FOREIGN_IDENTITY = client_cert(IDENTITY_CA, OTHER_KEY)
CA = STAGED_CA.pem.decode()
FACTORY_CA = real_ca("certfleet factory CA").pem.decode()


def write_tls_fixtures(out: Path) -> None:
    """Server chains for the host probe's tests, all under the staged CA.

    staged-ca.pem: the CA they lead to. server: valid for localhost; server-ip: for the
    address 127.0.0.1 (an iPAddress name, no DNS name); expired: its validity ended
    in 2021; identity-ca.pem: the CA of the test identities, which a server that asks
    for a client certificate trusts; big: a leaf whose intermediates (big-chain.pem)
    make the Certificate message larger than the modem's 4096 bytes.
    """
    out.mkdir(parents=True, exist_ok=True)
    server = issue_server_cert(
        STAGED_CA, hosts=("localhost",), not_before=VALID_FROM, not_after=VALID_TO
    )
    server_ip = issue_server_cert(
        STAGED_CA, hosts=("127.0.0.1",), not_before=VALID_FROM, not_after=VALID_TO
    )
    expired = issue_server_cert(
        STAGED_CA,
        hosts=("localhost",),
        not_before=datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime(2021, 1, 1, tzinfo=UTC),
    )
    issuer, intermediates = STAGED_CA, list[IssuedCA]()
    while sum(len(i.certificate.public_bytes(Encoding.DER)) + 3 for i in intermediates) < 4400:
        issuer = issue_intermediate(
            issuer, f"intermediate {len(intermediates)}", not_before=VALID_FROM, not_after=VALID_TO
        )
        intermediates.append(issuer)
    big = issue_server_cert(issuer, hosts=("localhost",), not_before=VALID_FROM, not_after=VALID_TO)
    chain = b"".join(i.pem for i in reversed(intermediates))
    certs = (("server", server), ("server-ip", server_ip), ("expired", expired), ("big", big))
    for name, cert in certs:
        (out / f"{name}.pem").write_bytes(cert.pem)
        (out / f"{name}.key").write_bytes(cert.key_pem)
    (out / "big-chain.pem").write_bytes(chain)
    (out / "staged-ca.pem").write_text(CA)
    (out / "identity-ca.pem").write_bytes(IDENTITY_CA.pem)


def bundle(op: str, seq: int = LAST_SEQ + 1, **fields: Any) -> Bundle:
    """A bundle for the test device, issued now, valid for an hour."""
    base: dict[str, Any] = {
        "device_id": DEVICE,
        "rollout_id": "r-1",
        "seq": seq,
        "op": op,
        "issued_at": NOW - 60,
        "expires_at": NOW + 3600,
    }
    if op == "stage":
        base |= {
            "tag": SPARE_TAG,
            "credentials": (Credential(CredentialType.CA_CHAIN, CA),),
            "probe": Probe(host="staging.example.net", port=8883, tags=(SPARE_TAG,)),
            "active": (ACTIVE_TAG, SPARE_TAG),
            "commit_by": NOW + 1800,
        }
    elif op == "commit":
        base |= {"tag": SPARE_TAG, "undo_by": NOW + 7 * 86400}
    elif op == "retire":
        base |= {"tags": (ACTIVE_TAG,), "active": (SPARE_TAG,)}
    elif op == "keygen":
        base |= {"tag": IDENTITY_TAG, "subject": DEVICE, "commit_by": NOW + 1800}
    elif op == "trust-signer":
        key = NEW_KEYS[0]
        base |= {"signer": SignerKey(kid=key_id(key.public_key()), public_point=point(key))}
    return Bundle(**(base | fields))


def document(b: Bundle) -> dict[str, Any]:
    """The payload map of a bundle, to alter by hand."""
    loaded: dict[str, Any] = cbor2.loads(encode_payload(b))
    return loaded


def signed(payload: bytes, *, key: ec.EllipticCurvePrivateKey = KEY, kid: bytes = KID) -> bytes:
    return sign1(payload, private_key=key, kid=kid)


def from_bundle(b: Bundle) -> bytes:
    return signed(encode_payload(b))


def from_map(doc: dict[str, Any]) -> bytes:
    return signed(cbor2.dumps(doc, canonical=True))


def altered(op: str, change: Callable[[dict[str, Any]], None], **fields: Any) -> bytes:
    doc = document(bundle(op, **fields))
    change(doc)
    return from_map(doc)


def envelope(
    protected: Any, unprotected: Any, payload: Any, signature: Any, tag: int = 18
) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, [protected, unprotected, payload, signature]))


def flipped_last(data: bytes) -> bytes:
    """The message with its last signature byte altered."""
    return data[:-1] + bytes([data[-1] ^ 1])


def sized_stage(total: int) -> bytes:
    """A stage bundle of exactly `total` bytes, padded with a PSK item."""
    filler = 400
    for _ in range(8):
        creds = (
            Credential(CredentialType.CA_CHAIN, CA),
            Credential(CredentialType.PSK, pem(filler)),
        )
        data = from_bundle(bundle("stage", credentials=creds))
        if len(data) == total:
            return data
        filler += total - len(data)
    raise AssertionError(f"no stage bundle of {total} bytes")


Case = tuple[str, str, bool, Callable[[], bytes]]


def cases() -> list[Case]:
    """(name, reason of checks 1 to 12, Python agrees, bytes)."""
    valid_env = envelope(b"\xa1\x01\x26", {}, b"\xa0", bytes(64))
    v1 = replace(bundle("commit"), undo_by=None, version=1)
    return [
        *scenario_cases(),
        # the valid ones, one per op, and the versions and envelope forms
        ("ok-stage", "ok", True, lambda: from_bundle(bundle("stage"))),
        ("ok-commit", "ok", True, lambda: from_bundle(bundle("commit"))),
        ("ok-rollback", "ok", True, lambda: from_bundle(bundle("rollback"))),
        ("ok-retire", "ok", True, lambda: from_bundle(bundle("retire"))),
        ("ok-trust-signer", "ok", True, lambda: from_bundle(bundle("trust-signer"))),
        ("ok-v1-commit", "ok", True, lambda: from_bundle(v1)),
        ("ok-manual-rid", "ok", True, lambda: from_bundle(bundle("rollback", rollout_id=""))),
        (
            "ok-untagged",
            "ok",
            True,
            lambda: sign1(encode_payload(bundle("commit")), private_key=KEY, kid=KID, tagged=False),
        ),
        # check 1 and its boundary
        ("size-at-limit", "ok", True, lambda: sized_stage(MAX_BUNDLE_BYTES)),
        ("size-over-limit", "too_large", True, lambda: sized_stage(MAX_BUNDLE_BYTES + 1)),
        # check 2
        (
            "env-tag-998",
            "bad_envelope",
            True,
            lambda: envelope(b"\xa1\x01\x26", {}, b"", bytes(64), 998),
        ),
        (
            "env-trailing-byte",
            "bad_envelope",
            True,
            lambda: from_bundle(bundle("commit")) + b"\x00",
        ),
        ("env-truncated", "bad_envelope", True, lambda: from_bundle(bundle("commit"))[:-1]),
        ("env-array-of-3", "bad_envelope", True, lambda: cbor2.dumps([b"\xa1\x01\x26", {}, b""])),
        ("env-empty", "bad_envelope", True, lambda: b""),
        # §3 fixes the signature at 64 bytes; the orchestrator's decoder leaves it to check 5.
        (
            "env-signature-63",
            "bad_envelope",
            False,
            lambda: envelope(cbor2.dumps({1: -7, 4: KID}), {}, b"", bytes(63)),
        ),
        (
            "env-payload-nil",
            "bad_envelope",
            True,
            lambda: envelope(b"\xa1\x01\x26", {}, None, bytes(64)),
        ),
        (
            "env-protected-trailing",
            "bad_envelope",
            True,
            lambda: envelope(b"\xa1\x01\x26\x00", {}, b"", bytes(64)),
        ),
        (
            "env-unprotected-list",
            "bad_envelope",
            True,
            lambda: envelope(b"\xa1\x01\x26", [1], b"", bytes(64)),
        ),
        (
            "env-alg-in-both",
            "bad_envelope",
            True,
            lambda: envelope(b"\xa1\x01\x26", {1: -7}, b"", bytes(64)),
        ),
        ("env-double-tag", "bad_envelope", True, lambda: b"\xd2" + valid_env),
        # check 3
        (
            "alg-es384",
            "unsupported_algorithm",
            True,
            lambda: envelope(cbor2.dumps({1: -35, 4: KID}), {}, b"\xa0", bytes(64)),
        ),
        (
            "alg-unprotected-only",
            "unsupported_algorithm",
            True,
            lambda: envelope(cbor2.dumps({4: KID}), {1: -7}, b"\xa0", bytes(64)),
        ),
        # check 4
        (
            "kid-unknown",
            "unknown_key",
            True,
            lambda: signed(
                encode_payload(bundle("commit")), key=OTHER_KEY, kid=key_id(OTHER_KEY.public_key())
            ),
        ),
        (
            "kid-missing",
            "unknown_key",
            True,
            lambda: envelope(b"\xa1\x01\x26", {}, b"\xa0", bytes(64)),
        ),
        # check 5
        (
            "sig-other-key",
            "bad_signature",
            True,
            lambda: signed(encode_payload(bundle("commit")), key=OTHER_KEY),
        ),
        (
            "sig-flipped",
            "bad_signature",
            True,
            lambda: flipped_last(from_bundle(bundle("commit"))),
        ),
        # check 6
        (
            "payload-unknown-key",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(extra=1)),
        ),
        (
            "payload-seq-text",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(seq="11")),
        ),
        (
            "payload-seq-zero",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(seq=0)),
        ),
        (
            "payload-exp-not-after-iat",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(exp=d["iat"])),
        ),
        (
            "payload-unknown-op",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(op="reboot")),
        ),
        ("payload-not-a-map", "bad_payload", True, lambda: signed(cbor2.dumps([1, 2]))),
        (
            "payload-stage-no-commit-by",
            "bad_payload",
            True,
            lambda: altered("stage", lambda d: d.pop("commit_by")),
        ),
        (
            "payload-commit-no-tag",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.pop("tag")),
        ),
        (
            "payload-bad-device-id",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(dev="-nrf")),
        ),
        (
            "payload-dev-64",
            "wrong_device",
            True,
            lambda: from_bundle(bundle("commit", device_id="d" * 64)),
        ),
        (
            "payload-dev-65",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(dev="d" * 65)),
        ),
        (
            "payload-rid-64",
            "ok",
            True,
            lambda: from_bundle(bundle("rollback", rollout_id="r" * RID_MAX_BYTES)),
        ),
        (
            "payload-rid-65",
            "bad_payload",
            True,
            lambda: altered("rollback", lambda d: d.update(rid="r" * (RID_MAX_BYTES + 1))),
        ),
        (
            "payload-rid-utf8-64",
            "ok",
            True,
            lambda: from_bundle(bundle("rollback", rollout_id="é" * (RID_MAX_BYTES // 2))),
        ),
        (
            "payload-host-253",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "stage",
                    probe=Probe(host="h" * PROBE_HOST_MAX_BYTES, port=8883, tags=(SPARE_TAG,)),
                )
            ),
        ),
        (
            "payload-host-254",
            "bad_payload",
            True,
            lambda: altered(
                "stage", lambda d: d["probe"].update(host="h" * (PROBE_HOST_MAX_BYTES + 1))
            ),
        ),
        (
            "payload-active-7",
            "ok",
            True,
            lambda: from_bundle(bundle("retire", active=tuple(range(100, 107)))),
        ),
        (
            "payload-active-8",
            "bad_payload",
            True,
            lambda: altered("retire", lambda d: d.update(active=list(range(100, 108)))),
        ),
        (
            "payload-active-repeated",
            "bad_payload",
            True,
            lambda: altered("retire", lambda d: d.update(active=[43, 43])),
        ),
        (
            "payload-tags-8",
            "bad_payload",
            True,
            lambda: altered("retire", lambda d: d.update(tags=list(range(100, 108)))),
        ),
        (
            "payload-probe-tags-8",
            "bad_payload",
            True,
            lambda: altered("stage", lambda d: d["probe"].update(tags=list(range(100, 108)))),
        ),
        (
            "payload-sec-tag-over-max",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(tag=2**31)),
        ),
        (
            "payload-creds-4",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "stage",
                    credentials=tuple(
                        Credential(CredentialType(t), CA if t == 0 else pem(200, "X"))
                        for t in (0, 2, 3, 4)
                    ),
                )
            ),
        ),
        (
            "payload-creds-5",
            "bad_payload",
            True,
            lambda: altered(
                "stage", lambda d: d.update(creds=[{"type": t, "pem": CA} for t in range(5)])
            ),
        ),
        (
            "payload-creds-same-type",
            "bad_payload",
            True,
            lambda: altered(
                "stage", lambda d: d.update(creds=[{"type": 0, "pem": CA}, {"type": 0, "pem": CA}])
            ),
        ),
        (
            "payload-creds-type-6",
            "bad_payload",
            True,
            lambda: altered("stage", lambda d: d.update(creds=[{"type": 6, "pem": CA}])),
        ),
        (
            "payload-ca-nul",
            "bad_payload",
            True,
            lambda: altered(
                "stage", lambda d: d.update(creds=[{"type": 0, "pem": CA[:-2] + "\0\n"}])
            ),
        ),
        (
            "payload-ca-not-ascii",
            "bad_payload",
            True,
            lambda: altered("stage", lambda d: d.update(creds=[{"type": 0, "pem": CA[:-2] + "é"}])),
        ),
        (
            "payload-undo-by-in-v1",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(v=1)),
        ),
        (
            "payload-undo-by-in-stage",
            "bad_payload",
            True,
            lambda: altered("stage", lambda d: d.update(undo_by=NOW + 60)),
        ),
        # The deterministic order of docs/protocol.md §3 is required by the C decoder only.
        (
            "payload-not-deterministic",
            "bad_payload",
            False,
            lambda: signed(cbor2.dumps(dict(reversed(list(document(bundle("commit")).items()))))),
        ),
        # check 7
        (
            "version-3",
            "unsupported_version",
            True,
            lambda: altered("commit", lambda d: d.update(v=3)),
        ),
        (
            "version-0",
            "unsupported_version",
            True,
            lambda: altered("rollback", lambda d: d.update(v=0)),
        ),
        # checks 8 to 11 and their boundaries
        (
            "wrong-device",
            "wrong_device",
            True,
            lambda: from_bundle(bundle("commit", device_id="nrf-352656100000001")),
        ),
        ("seq-replay", "replay", True, lambda: from_bundle(bundle("commit", seq=LAST_SEQ))),
        ("seq-next", "ok", True, lambda: from_bundle(bundle("commit", seq=LAST_SEQ + 1))),
        (
            "exp-now",
            "bundle_expired",
            True,
            lambda: from_bundle(bundle("commit", issued_at=NOW - 60, expires_at=NOW)),
        ),
        (
            "exp-now-plus-1",
            "ok",
            True,
            lambda: from_bundle(bundle("commit", issued_at=NOW - 60, expires_at=NOW + 1)),
        ),
        (
            "iat-skew-300",
            "ok",
            True,
            lambda: from_bundle(bundle("commit", issued_at=NOW + 300, expires_at=NOW + 900)),
        ),
        (
            "iat-skew-301",
            "not_yet_valid",
            True,
            lambda: from_bundle(bundle("commit", issued_at=NOW + 301, expires_at=NOW + 900)),
        ),
        # check 12 and its boundary
        (
            "ca-4096",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "stage",
                    credentials=(Credential(CredentialType.CA_CHAIN, pem(CA_CHAIN_MAX_BYTES)),),
                )
            ),
        ),
        (
            "ca-4097",
            "too_large",
            True,
            lambda: altered(
                "stage", lambda d: d.update(creds=[{"type": 0, "pem": pem(CA_CHAIN_MAX_BYTES + 1)}])
            ),
        ),
        *identity_payload_cases(),
    ]


def identity_stage(seq: int, cert: str = NEW_IDENTITY, **fields: Any) -> Bundle:
    """The certificate's stage into the keygen's tag, probed with the device's CA tag."""
    return bundle(
        "stage",
        seq=seq,
        **(
            {
                "tag": IDENTITY_TAG,
                "credentials": (Credential(CredentialType.CLIENT_CERT, cert),),
                "probe": Probe(host="broker.example.net", port=8884, tags=(ACTIVE_TAG,)),
                "active": (ACTIVE_TAG,),
            }
            | fields
        ),
    )


def identity_payload_cases() -> list[Case]:
    """Checks 6 and 12 on the keygen op and the identity stage (issue 14)."""
    cert = {"type": 1, "pem": NEW_IDENTITY}
    return [
        ("keygen-ok", "ok", True, lambda: from_bundle(bundle("keygen"))),
        (
            "keygen-subject-64",
            "ok",
            True,
            lambda: from_bundle(bundle("keygen", subject="s" * SUBJECT_MAX_BYTES)),
        ),
        (
            "keygen-subject-65",
            "bad_payload",
            True,
            lambda: altered("keygen", lambda d: d.update(subject="s" * (SUBJECT_MAX_BYTES + 1))),
        ),
        (
            "keygen-subject-empty",
            "bad_payload",
            True,
            lambda: altered("keygen", lambda d: d.update(subject="")),
        ),
        (
            "keygen-subject-control",
            "bad_payload",
            True,
            lambda: altered("keygen", lambda d: d.update(subject="a\nb")),
        ),
        (
            "keygen-no-subject",
            "bad_payload",
            True,
            lambda: altered("keygen", lambda d: d.pop("subject")),
        ),
        (
            "keygen-no-commit-by",
            "bad_payload",
            True,
            lambda: altered("keygen", lambda d: d.pop("commit_by")),
        ),
        (
            "keygen-undo-by",
            "bad_payload",
            True,
            lambda: altered("keygen", lambda d: d.update(undo_by=NOW + 60)),
        ),
        ("identity-stage-ok", "ok", True, lambda: from_bundle(identity_stage(LAST_SEQ + 1))),
        (
            "identity-stage-with-ca",
            "bad_payload",
            True,
            lambda: altered("stage", lambda d: d.update(creds=[{"type": 0, "pem": CA}, cert])),
        ),
        (
            "identity-probe-tags-7",
            "bad_payload",
            True,
            lambda: altered(
                "stage",
                lambda d: d.update(
                    creds=[cert], probe=d["probe"] | {"tags": list(range(100, 107))}
                ),
            ),
        ),
        (
            "identity-cert-4096",
            "ok",
            True,
            lambda: from_bundle(identity_stage(LAST_SEQ + 1, cert=pem(CA_CHAIN_MAX_BYTES))),
        ),
        (
            "identity-cert-4097",
            "too_large",
            True,
            lambda: altered(
                "stage",
                lambda d: d.update(creds=[{"type": 1, "pem": pem(CA_CHAIN_MAX_BYTES + 1)}]),
            ),
        ),
    ]


def scenario_cases() -> list[Case]:
    """Bundles the device tests send in sequence; checks 1 to 12 pass for each."""
    stage = bundle("stage")

    def ts(i: int, **fields: Any) -> Callable[[], bytes]:
        key = NEW_KEYS[i]
        signer = SignerKey(kid=key_id(key.public_key()), public_point=point(key))
        return lambda: from_bundle(
            bundle("trust-signer", seq=LAST_SEQ + 1 + i, signer=signer, **fields)
        )

    seq = LAST_SEQ + 1
    return [
        ("s-stage", "ok", True, lambda: from_bundle(stage)),
        (
            "s-stage-44",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "stage",
                    seq=seq + 1,
                    tag=44,
                    active=(ACTIVE_TAG, 44),
                    probe=Probe(host="staging.example.net", port=8883, tags=(44,)),
                )
            ),
        ),
        (
            "s-stage-into-active",
            "ok",
            True,
            lambda: from_bundle(bundle("stage", tag=ACTIVE_TAG, active=(ACTIVE_TAG,))),
        ),
        (
            "s-stage-active-without-ca",
            "ok",
            True,
            lambda: from_bundle(bundle("stage", active=(44,))),
        ),
        (
            "s-stage-modem-refuses",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "stage", credentials=(Credential(CredentialType.CA_CHAIN, "not a certificate"),)
                )
            ),
        ),
        ("s-commit", "ok", True, lambda: from_bundle(bundle("commit", seq=seq + 1))),
        (
            "s-commit-v1",
            "ok",
            True,
            lambda: from_bundle(replace(bundle("commit", seq=seq + 1), undo_by=None, version=1)),
        ),
        ("s-commit-44", "ok", True, lambda: from_bundle(bundle("commit", seq=seq + 1, tag=44))),
        (
            "s-commit-active-44",
            "ok",
            True,
            lambda: from_bundle(bundle("commit", seq=seq + 1, active=(44,))),
        ),
        (
            "s-rollback-after-stage",
            "ok",
            True,
            lambda: from_bundle(bundle("rollback", seq=seq + 1)),
        ),
        ("s-rollback", "ok", True, lambda: from_bundle(bundle("rollback", seq=seq + 2))),
        ("s-rollback-again", "ok", True, lambda: from_bundle(bundle("rollback", seq=seq + 3))),
        (
            "s-rollback-other-rollout",
            "ok",
            True,
            lambda: from_bundle(bundle("rollback", seq=seq + 2, rollout_id="r-2")),
        ),
        (
            "s-rollback-manual",
            "ok",
            True,
            lambda: from_bundle(bundle("rollback", seq=seq + 2, rollout_id="")),
        ),
        ("s-retire", "ok", True, lambda: from_bundle(bundle("retire", seq=seq + 2))),
        (
            "s-retire-keeps-retired",
            "ok",
            True,
            lambda: from_bundle(
                bundle("retire", seq=seq + 2, tags=(ACTIVE_TAG,), active=(ACTIVE_TAG, SPARE_TAG))
            ),
        ),
        (
            "s-retire-to-empty-tag",
            "ok",
            True,
            lambda: from_bundle(bundle("retire", seq=seq + 2, tags=(SPARE_TAG,), active=(45,))),
        ),
        ("s-ts-1", "ok", True, ts(0)),
        ("s-ts-2", "ok", True, ts(1)),
        ("s-ts-3", "ok", True, ts(2)),
        ("s-ts-4", "ok", True, ts(3)),
        ("s-ts-retire-only", "ok", True, ts(0, retire_kid=KID)),
        ("s-ts-4-retire-0", "ok", True, ts(3, retire_kid=key_id(NEW_KEYS[0].public_key()))),
        (
            "s-ts-retire-all",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "trust-signer",
                    signer=SignerKey(kid=KID, public_point=point(KEY)),
                    retire_kid=KID,
                )
            ),
        ),
        (
            "s-ts-not-a-point",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "trust-signer",
                    signer=SignerKey(kid=b"\x01" * 8, public_point=b"\x04" + bytes(64)),
                )
            ),
        ),
        ("s-after-ts-retire", "ok", True, lambda: from_bundle(bundle("commit", seq=seq + 1))),
        *identity_scenario_cases(),
    ]


def identity_scenario_cases() -> list[Case]:
    """An identity rotation in sequence: keygen (seq 11), stage (12), commit (13), then a
    rollback or retire (14); and the bundles check 13 refuses on the way."""
    keygen = LAST_SEQ + 1
    return [
        ("i-keygen", "ok", True, lambda: from_bundle(bundle("keygen"))),
        (
            "i-keygen-into-active",
            "ok",
            True,
            lambda: from_bundle(bundle("keygen", tag=ACTIVE_TAG)),
        ),
        (
            "i-keygen-into-identity",
            "ok",
            True,
            lambda: from_bundle(bundle("keygen", tag=OLD_IDENTITY_TAG)),
        ),
        ("i-stage", "ok", True, lambda: from_bundle(identity_stage(keygen + 1))),
        (
            "i-stage-foreign-key",
            "ok",
            True,
            lambda: from_bundle(identity_stage(keygen + 1, cert=FOREIGN_IDENTITY)),
        ),
        (
            "i-stage-other-rollout",
            "ok",
            True,
            lambda: from_bundle(identity_stage(keygen + 1, rollout_id="r-2")),
        ),
        (
            "i-stage-other-tag",
            "ok",
            True,
            lambda: from_bundle(identity_stage(keygen + 1, tag=46)),
        ),
        (
            "i-stage-into-identity",
            "ok",
            True,
            lambda: from_bundle(identity_stage(keygen + 1, tag=OLD_IDENTITY_TAG)),
        ),
        (
            "i-commit",
            "ok",
            True,
            lambda: from_bundle(bundle("commit", seq=keygen + 2, tag=IDENTITY_TAG)),
        ),
        ("i-rollback", "ok", True, lambda: from_bundle(bundle("rollback", seq=keygen + 3))),
        (
            "i-retire-old",
            "ok",
            True,
            lambda: from_bundle(
                bundle("retire", seq=keygen + 3, tags=(OLD_IDENTITY_TAG,), active=(ACTIVE_TAG,))
            ),
        ),
        (
            "i-retire-identity",
            "ok",
            True,
            lambda: from_bundle(
                bundle("retire", seq=keygen + 3, tags=(IDENTITY_TAG,), active=(ACTIVE_TAG,))
            ),
        ),
        (
            "i-stage-trust-into-identity",
            "ok",
            True,
            lambda: from_bundle(
                bundle(
                    "stage",
                    seq=keygen + 3,
                    tag=IDENTITY_TAG,
                    active=(ACTIVE_TAG, IDENTITY_TAG),
                    probe=Probe(host="staging.example.net", port=8883, tags=(IDENTITY_TAG,)),
                )
            ),
        ),
    ]


def python_reason(data: bytes) -> str:
    try:
        open_bundle(
            data,
            signers={KID: KEY.public_key()},
            device_id=DEVICE,
            last_seq=LAST_SEQ,
            now=datetime.fromtimestamp(NOW, UTC),
        )
    except BundleRejectedError as exc:
        return exc.reason.value
    return "ok"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.cbor"):
        old.unlink()
    manifest = []
    for name, reason, agree, build in cases():
        data = build()
        if agree and (got := python_reason(data)) != reason:
            raise SystemExit(f"{name}: the orchestrator's open_bundle says {got}, not {reason}")
        (OUT / f"{name}.cbor").write_bytes(data)
        manifest.append(f"{name} {reason} {'agree' if agree else 'c-only'}\n")
    (OUT / "MANIFEST").write_text("".join(manifest))
    signers = [KEY, *NEW_KEYS, OTHER_KEY]
    names = ["signer", "new-0", "new-1", "new-2", "new-3", "other"]
    context = [f"device {DEVICE}\n", f"now {NOW}\n", f"last_seq {LAST_SEQ}\n"]
    context += [
        f"key {name} {key_id(k.public_key()).hex()} {point(k).hex()}\n"
        for name, k in zip(names, signers, strict=True)
    ]
    (OUT / "CONTEXT").write_text("".join(context))
    (OUT / "factory-ca.pem").write_text(FACTORY_CA)
    (OUT / "identity-key.pem").write_text(key_pem(IDENTITY_KEY))
    (OUT / "old-identity.pem").write_text(OLD_IDENTITY)
    (OUT / "old-identity-key.pem").write_text(key_pem(OLD_IDENTITY_KEY))
    write_tls_fixtures(OUT.parent / "tls")
    print(f"{len(manifest)} bundles in {OUT.relative_to(Path.cwd())}")


if __name__ == "__main__":
    main()
