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
from orchestrator.protocol.cose import es256_sign, key_id, sign1
from orchestrator.protocol.delegation import Revocation, Scope, sign_delegation
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
ONLINE_KEY = ec.derive_private_key(0x5EED_0200, ec.SECP256R1())
"""A worker's key, delegated by KEY (the device's trusted root)."""
ONLINE_KID = key_id(ONLINE_KEY.public_key())
REVOKED_KEY = ec.derive_private_key(0x5EED_0201, ec.SECP256R1())
"""A delegated key the CONTEXT's revocation lists."""
REVOKED_BEFORE = NOW - 7200
"""The CONTEXT's revoked_before: delegations issued earlier are revoked."""
DLG_IAT = NOW - 3600
DLG_EXP = NOW + 86400
ALL_OPS = ("stage", "commit", "rollback", "retire", "keygen")


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


class Root:
    """A root key as sign_delegation takes it: its key id and raw ES256 r||s."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self.key_id = key_id(key.public_key())

    def sign(self, to_be_signed: bytes) -> bytes:
        return es256_sign(self.key, to_be_signed)


def delegation(
    key: ec.EllipticCurvePrivateKey = ONLINE_KEY,
    *,
    root: ec.EllipticCurvePrivateKey = KEY,
    ops: tuple[str, ...] = ALL_OPS,
    kinds: tuple[int, ...] = (0, 1),
    rids: tuple[str, ...] = (),
    nbf: int = DLG_IAT,
    exp: int = DLG_EXP,
    iat: int = DLG_IAT,
) -> bytes:
    """A delegation of `key` by `root`, as certfleet's workers carry them."""
    return sign_delegation(
        root=Root(root),
        public_key=key.public_key(),
        not_before=nbf,
        expires_at=exp,
        issued_at=iat,
        scope=Scope(ops=ops, kinds=kinds, rollouts=rids),
    )


def delegation_document(**changes: Any) -> dict[str, Any]:
    """The payload map of a valid delegation, with changes (None removes a key)."""
    doc: dict[str, Any] = {
        "v": 1,
        "exp": DLG_EXP,
        "iat": DLG_IAT,
        "kid": ONLINE_KID,
        "nbf": DLG_IAT,
        "ops": list(ALL_OPS),
        "pub": point(ONLINE_KEY),
        "kinds": [0, 1],
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def cose(
    protected: dict[int, Any] | bytes,
    payload: bytes,
    *,
    key: ec.EllipticCurvePrivateKey,
    unprotected: dict[int, Any] | None = None,
    tag: int | None = 18,
) -> bytes:
    """A COSE_Sign1 with any headers, signed by `key` (a dict is encoded canonically)."""
    head = protected if isinstance(protected, bytes) else cbor2.dumps(protected, canonical=True)
    signature = es256_sign(key, sig_structure(head, payload))
    message = [head, unprotected or {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(tag, message) if tag is not None else message)


def hand_delegation(
    doc: dict[str, Any] | None = None,
    *,
    root: ec.EllipticCurvePrivateKey = KEY,
    protected: dict[int, Any] | None = None,
    **fields: Any,
) -> bytes:
    """A delegation built by hand (what sign_delegation refuses to make)."""
    payload = cbor2.dumps(doc if doc is not None else delegation_document(), canonical=True)
    head = protected if protected is not None else {1: -7, 4: key_id(root.public_key())}
    return cose(head, payload, key=root, **fields)


def delegated(
    b: Bundle,
    dlg: bytes | None = None,
    *,
    key: ec.EllipticCurvePrivateKey = ONLINE_KEY,
    kid: bytes | None = None,
) -> bytes:
    """A bundle signed by a delegated key, its delegation in the protected header."""
    return sign1(
        encode_payload(b),
        private_key=key,
        kid=kid if kid is not None else key_id(key.public_key()),
        delegation=dlg if dlg is not None else delegation(key),
    )


def delegated_raw(b: Bundle, value: Any, *, protected: bytes | None = None) -> bytes:
    """A delegated bundle whose label -65537 holds `value` (anything), signed by ONLINE_KEY."""
    head = protected or cbor2.dumps({1: -7, 4: ONLINE_KID, -65537: value}, canonical=True)
    return cose(head, encode_payload(b), key=ONLINE_KEY)


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
        *delegation_cases(),
        *revoke_payload_cases(),
    ]


def delegation_cases() -> list[Case]:
    """Checks 4 to 5d and 7a of a delegated bundle (issue 17), each refusal and its bounds.

    The CONTEXT's device trusts KEY as its root and refuses REVOKED_KEY's delegations and
    those issued before REVOKED_BEFORE.
    """
    commit = bundle("commit")
    doc = delegation_document
    bad = hand_delegation
    longest_rids = tuple(f"{i}" * RID_MAX_BYTES for i in range(4))
    return [
        ("dlg-ok-stage", "ok", True, lambda: delegated(bundle("stage"))),
        ("dlg-ok-commit", "ok", True, lambda: delegated(commit)),
        ("dlg-ok-rollback", "ok", True, lambda: delegated(bundle("rollback"))),
        ("dlg-ok-retire", "ok", True, lambda: delegated(bundle("retire"))),
        ("dlg-ok-keygen", "ok", True, lambda: delegated(bundle("keygen"))),
        (
            "dlg-ok-identity-stage",
            "ok",
            True,
            lambda: delegated(identity_stage(LAST_SEQ + 1)),
        ),
        (
            "dlg-ok-rid-named",
            "ok",
            True,
            lambda: delegated(commit, delegation(rids=("r-0", "r-1"))),
        ),
        # the largest delegation certfleet makes: 4 rids of 64 bytes, every op and kind
        (
            "dlg-ok-largest",
            "ok",
            True,
            lambda: delegated(
                bundle("stage", rollout_id=longest_rids[3]),
                delegation(rids=longest_rids, kinds=(0, 1, 2, 3, 4, 5)),
            ),
        ),
        (
            "dlg-ok-manual-rid",
            "ok",
            True,
            lambda: delegated(bundle("rollback", rollout_id="")),
        ),
        # check 3 stays the bundle's own
        (
            "dlg-bundle-alg-es384",
            "unsupported_algorithm",
            True,
            lambda: cose({1: -35, 4: ONLINE_KID, -65537: delegation()}, b"\xa0", key=ONLINE_KEY),
        ),
        # check 4: the delegation's form, alg and root
        ("dlg-not-bstr", "bad_delegation", True, lambda: delegated_raw(commit, 7)),
        ("dlg-empty", "bad_delegation", True, lambda: delegated_raw(commit, b"")),
        (
            "dlg-641-bytes",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, b"\xd2" + bytes(640)),
        ),
        ("dlg-untagged", "bad_delegation", True, lambda: delegated_raw(commit, bad(tag=None))),
        (
            "dlg-not-cose",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, cbor2.dumps(cbor2.CBORTag(18, [1, 2]))),
        ),
        (
            "dlg-extra-protected-label",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(protected={1: -7, 4: KID, 3: 0})),
        ),
        (
            "dlg-nested",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(protected={1: -7, 4: KID, -65537: delegation()})),
        ),
        (
            "dlg-unprotected-label",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(unprotected={5: b"x"})),
        ),
        # the protected header in another order than 1, 4, -65537: the C decoder reads it
        # in that order only (alg after the delegation: a malformed envelope, as alg after
        # kid is; the delegation after another label: a malformed delegation)
        (
            "dlg-label-first",
            "bad_envelope",
            False,
            lambda: delegated_raw(
                commit,
                None,
                protected=b"\xa3"
                + cbor2.dumps(-65537)
                + cbor2.dumps(delegation())
                + b"\x01\x26\x04"
                + cbor2.dumps(ONLINE_KID),
            ),
        ),
        (
            "dlg-label-after-other",
            "bad_delegation",
            False,
            lambda: delegated_raw(
                commit,
                None,
                protected=b"\xa4\x01\x26\x04"
                + cbor2.dumps(ONLINE_KID)
                + b"\x03\x00"
                + cbor2.dumps(-65537)
                + cbor2.dumps(delegation()),
            ),
        ),
        (
            "dlg-alg-es384",
            "unsupported_algorithm",
            True,
            lambda: delegated_raw(commit, bad(protected={1: -35, 4: KID})),
        ),
        (
            "dlg-no-alg",
            "unsupported_algorithm",
            True,
            lambda: delegated_raw(commit, bad(protected={4: KID})),
        ),
        (
            "dlg-unknown-root",
            "unknown_key",
            True,
            lambda: delegated(commit, delegation(root=OTHER_KEY)),
        ),
        (
            "dlg-no-root-kid",
            "unknown_key",
            True,
            lambda: delegated_raw(commit, bad(protected={1: -7})),
        ),
        # an online key's bundle without a delegation
        (
            "online-key-no-delegation",
            "unknown_key",
            True,
            lambda: signed(encode_payload(commit), key=ONLINE_KEY, kid=ONLINE_KID),
        ),
        # check 5: the root's signature on the delegation
        (
            "dlg-root-signature-flipped",
            "bad_signature",
            True,
            lambda: delegated(commit, flipped_last(delegation())),
        ),
        (
            "dlg-signed-by-other-key",
            "bad_signature",
            True,
            lambda: delegated_raw(commit, bad(root=OTHER_KEY, protected={1: -7, 4: KID})),
        ),
        # check 5a: the payload's table
        ("dlg-ok-by-hand", "ok", True, lambda: delegated_raw(commit, bad())),
        ("dlg-version-2", "bad_delegation", True, lambda: delegated_raw(commit, bad(doc(v=2)))),
        (
            "dlg-no-kinds",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(kinds=None))),
        ),
        (
            "dlg-extra-key",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(extra=1))),
        ),
        (
            "dlg-keys-out-of-order",
            "bad_delegation",
            True,
            lambda: delegated_raw(
                commit,
                cose(
                    {1: -7, 4: KID},
                    cbor2.dumps(dict(reversed(list(doc().items())))),
                    key=KEY,
                ),
            ),
        ),
        (
            "dlg-kid-7",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(kid=ONLINE_KID[:7]))),
        ),
        (
            "dlg-kid-not-of-pub",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(kid=key_id(OTHER_KEY.public_key())))),
        ),
        (
            "dlg-pub-not-a-point",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(pub=b"\x04" + bytes(64)))),
        ),
        (
            "dlg-pub-compressed",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(pub=b"\x02" + point(ONLINE_KEY)[1:33]))),
        ),
        ("dlg-ops-empty", "bad_delegation", True, lambda: delegated_raw(commit, bad(doc(ops=[])))),
        (
            "dlg-ops-trust-signer",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(ops=["commit", "trust-signer"]))),
        ),
        (
            "dlg-ops-revoke",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(ops=["revoke"]))),
        ),
        (
            "dlg-ops-unknown",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(ops=["commit", "reboot"]))),
        ),
        (
            "dlg-ops-repeated",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(ops=["commit", "commit"]))),
        ),
        (
            "dlg-kinds-6",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(kinds=[0, 6]))),
        ),
        (
            "dlg-kinds-repeated",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(kinds=[0, 0]))),
        ),
        (
            "dlg-rids-empty",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(rids=[]))),
        ),
        (
            "dlg-rids-5",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(rids=["a", "b", "c", "d", "r-1"]))),
        ),
        (
            "dlg-rids-repeated",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(rids=["r-1", "r-1"]))),
        ),
        (
            "dlg-rid-65",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(rids=["r" * (RID_MAX_BYTES + 1)]))),
        ),
        (
            "dlg-nbf-is-exp",
            "bad_delegation",
            True,
            lambda: delegated_raw(commit, bad(doc(nbf=DLG_EXP))),
        ),
        (
            "dlg-bundle-kid-other",
            "bad_delegation",
            True,
            lambda: delegated(commit, delegation(REVOKED_KEY), key=REVOKED_KEY, kid=ONLINE_KID),
        ),
        # check 5b: the revocation, before the validity
        (
            "dlg-revoked-kid",
            "delegation_revoked",
            True,
            lambda: delegated(commit, delegation(REVOKED_KEY), key=REVOKED_KEY),
        ),
        (
            "dlg-revoked-by-time",
            "delegation_revoked",
            True,
            lambda: delegated(commit, delegation(iat=REVOKED_BEFORE - 1)),
        ),
        (
            "dlg-issued-at-revoked-before",
            "ok",
            True,
            lambda: delegated(commit, delegation(iat=REVOKED_BEFORE)),
        ),
        (
            "dlg-revoked-and-expired",
            "delegation_revoked",
            True,
            lambda: delegated(commit, delegation(REVOKED_KEY, exp=NOW), key=REVOKED_KEY),
        ),
        # check 5c and its bounds
        ("dlg-expired", "delegation_expired", True, lambda: delegated(commit, delegation(exp=NOW))),
        ("dlg-exp-now-plus-1", "ok", True, lambda: delegated(commit, delegation(exp=NOW + 1))),
        (
            "dlg-nbf-skew-300",
            "ok",
            True,
            lambda: delegated(commit, delegation(nbf=NOW + 300)),
        ),
        (
            "dlg-nbf-skew-301",
            "delegation_expired",
            True,
            lambda: delegated(commit, delegation(nbf=NOW + 301)),
        ),
        # check 5d: the bundle's signature with the delegated key
        (
            "dlg-bundle-signed-by-other-key",
            "bad_signature",
            True,
            lambda: delegated(commit, key=OTHER_KEY, kid=ONLINE_KID, dlg=delegation()),
        ),
        (
            "dlg-bundle-signature-flipped",
            "bad_signature",
            True,
            lambda: flipped_last(delegated(commit)),
        ),
        # check 6 and 7 come before the scope
        (
            "dlg-bad-payload",
            "bad_payload",
            True,
            lambda: cose(
                {1: -7, 4: ONLINE_KID, -65537: delegation(ops=("stage",))},
                cbor2.dumps(document(commit) | {"extra": 1}, canonical=True),
                key=ONLINE_KEY,
            ),
        ),
        # check 7a: the scope
        (
            "dlg-scope-op",
            "out_of_scope",
            True,
            lambda: delegated(commit, delegation(ops=("stage", "rollback"))),
        ),
        (
            "dlg-scope-kind",
            "out_of_scope",
            True,
            lambda: delegated(identity_stage(LAST_SEQ + 1), delegation(kinds=(0,))),
        ),
        (
            "dlg-scope-kind-of-many",
            "out_of_scope",
            True,
            lambda: delegated(
                bundle(
                    "stage",
                    credentials=(
                        Credential(CredentialType.CA_CHAIN, CA),
                        Credential(CredentialType.PSK, pem(200, "X")),
                    ),
                )
            ),
        ),
        (
            "dlg-scope-rid",
            "out_of_scope",
            True,
            lambda: delegated(commit, delegation(rids=("r-2",))),
        ),
        (
            "dlg-scope-manual-rid",
            "out_of_scope",
            True,
            lambda: delegated(bundle("rollback", rollout_id=""), delegation(rids=("r-1",))),
        ),
        (
            "dlg-trust-signer",
            "out_of_scope",
            True,
            lambda: delegated(bundle("trust-signer")),
        ),
        ("dlg-revoke", "out_of_scope", True, lambda: delegated(revoke())),
        # checks 8 on still apply
        (
            "dlg-wrong-device",
            "wrong_device",
            True,
            lambda: delegated(bundle("commit", device_id="nrf-352656100000001")),
        ),
        ("dlg-replay", "replay", True, lambda: delegated(bundle("commit", seq=LAST_SEQ))),
    ]


def revoke(seq: int = LAST_SEQ + 1, kids: tuple[bytes, ...] = (), before: int = 0) -> Bundle:
    """A revoke op (root only): the whole list of revoked kids, and revoked_before."""
    return bundle("revoke", seq=seq, revoke_kids=kids, revoke_before=before)


def revoke_payload_cases() -> list[Case]:
    """Check 6 of the revoke op: kids 0 to 8 distinct 8-byte ids, both keys required."""
    kids = tuple(bytes([i]) * 8 for i in range(8))
    return [
        ("revoke-ok", "ok", True, lambda: from_bundle(revoke(kids=kids[:2], before=NOW))),
        ("revoke-empty", "ok", True, lambda: from_bundle(revoke())),
        ("revoke-kids-8", "ok", True, lambda: from_bundle(revoke(kids=kids))),
        (
            "revoke-kids-9",
            "bad_payload",
            True,
            lambda: altered(
                "commit", lambda d: d.update(op="revoke", kids=[*kids, b"9" * 8], before=0)
            ),
        ),
        (
            "revoke-kid-7-bytes",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(op="revoke", kids=[b"1234567"], before=0)),
        ),
        (
            "revoke-kids-repeated",
            "bad_payload",
            True,
            lambda: altered(
                "commit", lambda d: d.update(op="revoke", kids=[kids[0], kids[0]], before=0)
            ),
        ),
        (
            "revoke-no-before",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(op="revoke", kids=[])),
        ),
        (
            "revoke-no-kids",
            "bad_payload",
            True,
            lambda: altered("commit", lambda d: d.update(op="revoke", before=0)),
        ),
        # kids and before in another op are ignored (§3: an op ignores keys it does not use)
        (
            "revoke-kids-in-commit",
            "ok",
            True,
            lambda: altered("commit", lambda d: d.update(kids=[b"1234567"], before=1)),
        ),
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
        *delegation_scenario_cases(),
    ]


def delegation_scenario_cases() -> list[Case]:
    """A stage and commit under a delegation, and root-signed revokes (seq 11 then 12)
    with the delegated bundles that follow them (seq 12, 13)."""
    seq = LAST_SEQ + 1
    later = DLG_IAT + 1
    return [
        ("s-dlg-stage", "ok", True, lambda: delegated(bundle("stage"))),
        ("s-dlg-commit", "ok", True, lambda: delegated(bundle("commit", seq=seq + 1))),
        (
            "s-dlg-rollback",
            "ok",
            True,
            lambda: delegated(bundle("rollback", seq=seq + 2), delegation(rids=("r-1",))),
        ),
        ("s-revoke-online", "ok", True, lambda: from_bundle(revoke(kids=(ONLINE_KID,)))),
        ("s-revoke-before", "ok", True, lambda: from_bundle(revoke(before=later))),
        ("s-revoke-clear", "ok", True, lambda: from_bundle(revoke(seq=seq + 1))),
        ("s-dlg-stage-12", "ok", True, lambda: delegated(bundle("stage", seq=seq + 1))),
        ("s-dlg-stage-13", "ok", True, lambda: delegated(bundle("stage", seq=seq + 2))),
        (
            "s-dlg-later-stage-13",
            "ok",
            True,
            lambda: delegated(bundle("stage", seq=seq + 2), delegation(iat=later)),
        ),
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


REVOCATION = Revocation(kids=frozenset({key_id(REVOKED_KEY.public_key())}), before=REVOKED_BEFORE)
"""The CONTEXT device's revocation (from a revoke op it took)."""


def python_reason(data: bytes) -> str:
    try:
        open_bundle(
            data,
            signers={KID: KEY.public_key()},
            device_id=DEVICE,
            last_seq=LAST_SEQ,
            now=datetime.fromtimestamp(NOW, UTC),
            revocation=REVOCATION,
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
    context += [f"revoked {kid.hex()}\n" for kid in sorted(REVOCATION.kids)]
    context += [f"revoked_before {REVOCATION.before}\n"]
    (OUT / "CONTEXT").write_text("".join(context))
    (OUT / "factory-ca.pem").write_text(FACTORY_CA)
    # fuzz/fuzz_device.c signs some payloads under it: every op and credential type
    (OUT / "delegation.cose").write_bytes(delegation(kinds=tuple(range(6))))
    (OUT / "identity-key.pem").write_text(key_pem(IDENTITY_KEY))
    (OUT / "old-identity.pem").write_text(OLD_IDENTITY)
    (OUT / "old-identity-key.pem").write_text(key_pem(OLD_IDENTITY_KEY))
    write_tls_fixtures(OUT.parent / "tls")
    print(f"{len(manifest)} bundles in {OUT.relative_to(Path.cwd())}")


if __name__ == "__main__":
    main()
