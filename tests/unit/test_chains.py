"""Server chains and CAs against the modem's rules, and which devices a change strands."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.domain import chains
from orchestrator.domain.chains import (
    MAX_CHAIN_BYTES,
    ChainProblem,
    ChainValidationError,
    DeviceTrust,
    Impact,
    ValidatedChain,
    assess_ca_impact,
    assess_impact,
    validate_ca,
    validate_server_chain,
    would_validate,
)
from simulator.pki import issue_intermediate, issue_server_cert, make_ca

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOSTS = ("mqtt.example.com", "192.0.2.10")

Key = CertificateIssuerPrivateKeyTypes


KEY_MAKERS: Mapping[str, Callable[[], Key]] = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa1024": lambda: rsa.generate_private_key(65537, 1024),  # noqa: S505 - a weak key, to refuse
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa4096": lambda: rsa.generate_private_key(65537, 4096),
    "rsa8192": lambda: rsa.generate_private_key(65537, 8192),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
    "dsa2048": lambda: dsa.generate_private_key(2048),
}


class KeyRing:
    """Private keys made on first use and kept for the module (RSA 8192 takes seconds)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], Key] = {}

    def __call__(self, kind: str, slot: int = 0) -> Key:
        """The key of `kind` in `slot`; distinct slots give distinct keys."""
        if (kind, slot) not in self._keys:
            self._keys[kind, slot] = KEY_MAKERS[kind]()
        return self._keys[kind, slot]


@pytest.fixture(scope="module")
def keys() -> KeyRing:
    """Keys shared by the whole module."""
    return KeyRing()


@dataclass(frozen=True)
class Made:
    """A certificate made for a test, with its private key."""

    cert: x509.Certificate
    key: Key

    @property
    def pem(self) -> str:
        """The certificate, PEM-encoded."""
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make(
    cn: str,
    key: Key,
    *,
    issuer: Made | None = None,
    ca: bool | None = True,
    hosts: Sequence[str] = (),
    not_before: datetime = NOW - DAY,
    not_after: datetime = NOW + 365 * DAY,
    padding: int = 0,
) -> Made:
    """A certificate in the web PKI profile; `ca=None` leaves out basicConstraints.

    `hosts` makes it a server leaf (SAN, serverAuth); `padding` adds long OU names.
    """
    subject = x509.Name(
        [
            *(
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{i:02d}" + "u" * 60)
                for i in range(padding)
            ),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_key_usage(ca=bool(ca)), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if hosts:
        names = [_general_name(host) for host in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    unhashed = isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return Made(cert=builder.sign(signer, None if unhashed else hashes.SHA256()), key=key)


def pem(*made: Made) -> str:
    """The certificates as one PEM, in the order given."""
    return "".join(m.pem for m in made)


@dataclass(frozen=True)
class Pki:
    """A root, an intermediate under it and a server leaf under that."""

    root: Made
    intermediate: Made
    leaf: Made

    @property
    def chain_pem(self) -> str:
        """Leaf, intermediate, root."""
        return pem(self.leaf, self.intermediate, self.root)


def pki(keys: KeyRing, kind: str = "p256", *, name: str = "CA1", slot: int = 0, **leaf: Any) -> Pki:
    """A three-level PKI of `kind` keys from `slot` on; `leaf` overrides the leaf's options."""
    root = make(f"{name} Root", keys(kind, slot))
    intermediate = make(f"{name} Issuing", keys(kind, slot + 1), issuer=root)
    options: dict[str, Any] = {"hosts": HOSTS, "ca": False} | leaf
    server = make(f"{name} server", keys(kind, slot + 2), issuer=intermediate, **options)
    return Pki(root, intermediate, server)


def problem_of(
    text: str | bytes, validate: Callable[..., ValidatedChain] = validate_server_chain
) -> ChainValidationError:
    """The error `validate` raises for `text` at NOW."""
    with pytest.raises(ChainValidationError) as caught:
        validate(text, now=NOW)
    return caught.value


# --- one test per problem -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
    ids=["empty", "text", "broken-base64"],
)
@pytest.mark.parametrize("validate", [validate_server_chain, validate_ca])
def test_not_pem(text: str | bytes, validate: Callable[..., ValidatedChain]) -> None:
    """Input without a readable PEM certificate is refused as not_pem, saying what to give."""
    # given: text that holds no certificate
    # when
    error = problem_of(text, validate)
    # then
    assert error.problem is ChainProblem.NOT_PEM
    assert "BEGIN CERTIFICATE" in error.message
    assert isinstance(error, ValueError)


def test_order(keys: KeyRing) -> None:
    """A chain not leaf-to-root is refused as order, naming the certificate out of place."""
    # given: the root before the intermediate; an impostor with the right name, wrong key;
    # and a leaf alone
    good = pki(keys)
    impostor = make("CA1 Issuing", keys("p256", 9), issuer=good.root)
    cases = {
        "swapped": pem(good.leaf, good.root, good.intermediate),
        "wrong key": pem(good.leaf, impostor, good.root),
        "leaf alone": pem(good.leaf),
    }
    for label, text in cases.items():
        # when
        error = problem_of(text)
        # then
        assert error.problem is ChainProblem.ORDER, label
        assert "CN=CA1 server" in error.message, label


@pytest.mark.parametrize("ca", [None, False], ids=["no-basic-constraints", "ca-false"])
def test_not_a_ca(keys: KeyRing, ca: bool | None) -> None:
    """An issuing certificate without CA:TRUE is refused as not_a_ca, named by subject."""
    # given: an intermediate that is no CA, and the same certificate offered as a CA
    root = make("Root", keys("p256", 0))
    bare = make("Bare Issuing", keys("p256", 1), issuer=root, ca=ca)
    leaf = make("server", keys("p256", 2), issuer=bare, ca=False, hosts=HOSTS)
    # when
    error = problem_of(pem(leaf, bare, root))
    ca_error = problem_of(pem(bare, root), validate_ca)
    # then
    for caught in (error, ca_error):
        assert caught.problem is ChainProblem.NOT_A_CA
        assert "CN=Bare Issuing" in caught.message


def test_leaf_is_ca(keys: KeyRing) -> None:
    """A server leaf with CA:TRUE is refused as leaf_is_ca, named by subject."""
    # given
    chain = pki(keys, ca=True)
    # when
    error = problem_of(chain.chain_pem)
    # then
    assert error.problem is ChainProblem.LEAF_IS_CA
    assert "CN=CA1 server" in error.message


def test_expired(keys: KeyRing) -> None:
    """Any certificate past its notAfter is refused as expired, naming it and when."""
    # given: a chain whose intermediate expired yesterday
    root = make("Root", keys("p256", 0))
    old = make("Old Issuing", keys("p256", 1), issuer=root, not_after=NOW - DAY)
    leaf = make("server", keys("p256", 2), issuer=old, ca=False, hosts=HOSTS)
    # when
    error = problem_of(pem(leaf, old, root))
    ca_error = problem_of(pem(old, root), validate_ca)
    # then
    for caught in (error, ca_error):
        assert caught.problem is ChainProblem.EXPIRED
        assert "CN=Old Issuing" in caught.message
        assert (NOW - DAY).date().isoformat() in caught.message


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("rsa1024", "RSA 1024-bit"),
        ("rsa8192", "RSA 8192-bit"),
        ("p521", "ECDSA P-521"),
        ("ed25519", "Ed25519"),
        ("ed448", "Ed448"),
        ("dsa2048", "DSA 2048-bit"),
    ],
)
def test_key_type(keys: KeyRing, kind: str, shown: str) -> None:
    """A key the modem cannot handle is refused as key_type, naming the certificate and key."""
    # given: a leaf with that key, and a CA with it
    root = make("Root", keys("p256", 0))
    leaf = make("odd server", keys(kind), issuer=root, ca=False, hosts=HOSTS)
    odd_ca = make("Odd CA", keys(kind))
    # when
    error = problem_of(pem(leaf, root))
    ca_error = problem_of(odd_ca.pem, validate_ca)
    # then
    assert error.problem is ChainProblem.KEY_TYPE
    assert "CN=odd server" in error.message
    assert shown in error.message
    assert ca_error.problem is ChainProblem.KEY_TYPE
    assert "CN=Odd CA" in ca_error.message


def test_too_large(keys: KeyRing) -> None:
    """A server chain over 4096 DER bytes, or a CA item over 4096 PEM bytes, is too_large."""
    # given: four intermediates with long names; a CA whose name alone makes its PEM too big
    root = make("Root", keys("p256", 0))
    issuers = [root]
    for i in range(4):
        issuers.append(make(f"Issuing {i}", keys("p256", i + 1), issuer=issuers[-1], padding=4))
    leaf = make("big server", keys("p256", 9), issuer=issuers[-1], ca=False, hosts=HOSTS)
    big_ca = make("Big CA", keys("p256", 0), padding=20)
    # when
    error = problem_of(pem(leaf, *reversed(issuers)))
    ca_error = problem_of(big_ca.pem, validate_ca)
    # then
    assert error.problem is ChainProblem.TOO_LARGE
    assert "CN=big server" in error.message
    assert ca_error.problem is ChainProblem.TOO_LARGE
    assert "CN=Big CA" in ca_error.message
    assert len(big_ca.pem) > MAX_CHAIN_BYTES


# --- chains that pass --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048", "rsa4096"])
def test_good_chains_validate(keys: KeyRing, kind: str) -> None:
    """Chains of P-256, P-384, RSA 2048 and 4096 keys pass, and their root's devices accept them."""
    # given
    chain = pki(keys, kind)
    # when
    validated = validate_server_chain(chain.chain_pem, now=NOW)
    # then
    assert validated.certificates == (chain.leaf.cert, chain.intermediate.cert, chain.root.cert)
    assert validated.leaf == chain.leaf.cert
    assert validated.intermediates == (chain.intermediate.cert,)
    assert (validated.anchor, validated.anchor_pem) == (chain.root.cert, chain.root.pem)
    assert validated.hosts == HOSTS
    assert validated.not_yet_valid_until is None
    assert would_validate(validated, [chain.root.pem], at=NOW)


def test_simulator_pki_chains_validate() -> None:
    """What simulator.pki issues passes the checks and x509.verification, by name and by IP."""
    # given
    root = make_ca("Sim Root", not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    issuing = issue_intermediate(
        root, "Sim Issuing", not_before=NOW - DAY, not_after=NOW + 90 * DAY
    )
    server = issue_server_cert(issuing, not_before=NOW - DAY, not_after=NOW + 30 * DAY)
    text = (server.pem + issuing.pem + root.pem).decode("ascii")
    # when
    validated = validate_server_chain(text, now=NOW)
    # then
    assert validated.hosts == ("localhost", "127.0.0.1")
    assert would_validate(validated, [root.pem.decode()], at=NOW)
    assert would_validate(validated, [root.pem.decode()], at=NOW, host="127.0.0.1")
    assert validate_ca(root.pem, now=NOW).anchor == root.certificate


def test_not_yet_valid_is_planned_not_refused(keys: KeyRing) -> None:
    """A notBefore still ahead gives not_yet_valid_until (the latest one), not an error."""
    # given: a leaf valid in 10 days, under a root valid in 5
    root = make("Future Root", keys("p256", 0), not_before=NOW + 5 * DAY)
    leaf = make(
        "server", keys("p256", 1), issuer=root, ca=False, hosts=HOSTS, not_before=NOW + 10 * DAY
    )
    # when
    validated = validate_server_chain(pem(leaf, root), now=NOW)
    # then
    assert validated.not_yet_valid_until == NOW + 10 * DAY
    assert validate_ca(root.pem, now=NOW).not_yet_valid_until == NOW + 5 * DAY
    assert not would_validate(validated, [root.pem], at=NOW)
    assert would_validate(validated, [root.pem], at=NOW + 11 * DAY)


def test_chain_bytes_exclude_a_trailing_root(keys: KeyRing) -> None:
    """chain_bytes counts leaf and intermediates; with no root the last intermediate anchors."""
    # given
    chain = pki(keys)
    sent = sum(
        len(m.cert.public_bytes(serialization.Encoding.DER))
        for m in (chain.leaf, chain.intermediate)
    )
    # when
    with_root = validate_server_chain(chain.chain_pem, now=NOW)
    without_root = validate_server_chain(pem(chain.leaf, chain.intermediate), now=NOW)
    # then
    assert with_root.chain_bytes == without_root.chain_bytes == sent
    assert without_root.intermediates == (chain.intermediate.cert,)
    assert without_root.anchor == chain.intermediate.cert
    assert would_validate(without_root, [chain.intermediate.pem], at=NOW)


def test_validate_ca_with_its_issuers(keys: KeyRing) -> None:
    """A CA given with its issuers is anchored at the first certificate; no leaf, no hosts."""
    # given
    chain = pki(keys)
    # when
    validated = validate_ca(pem(chain.intermediate, chain.root), now=NOW)
    # then
    assert validated.anchor == validated.leaf == chain.intermediate.cert
    assert (validated.intermediates, validated.hosts) == ((), ())
    assert validated.chain_bytes == len(chain.intermediate.pem)
    assert not would_validate(validated, [chain.root.pem], at=NOW)


# --- would the devices accept it ------------------------------------------------------------


def test_would_validate(keys: KeyRing) -> None:
    """A device accepts a chain only from a CA it trusts, while valid, for a host it names."""
    # given: CA1 (expiring in 30 days) issued the chain; CA2 is another CA of the fleet
    root1 = make("CA1 Root", keys("p256", 0), not_after=NOW + 30 * DAY)
    leaf = make("server", keys("p256", 1), issuer=root1, ca=False, hosts=HOSTS)
    chain = validate_server_chain(pem(leaf, root1), now=NOW)
    ca2, unrelated = pki(keys, name="CA2", slot=10).root, make("Unrelated", keys("p384", 0))
    # when / then
    assert would_validate(chain, [root1.pem], at=NOW)
    assert not would_validate(chain, [ca2.pem], at=NOW)
    assert would_validate(chain, [ca2.pem, root1.pem], at=NOW)
    assert would_validate(chain, [ca2.pem + root1.pem], at=NOW)  # several certs in one PEM
    assert not would_validate(chain, [unrelated.pem], at=NOW)
    assert not would_validate(chain, [], at=NOW)
    assert not would_validate(chain, [root1.pem], at=NOW + 31 * DAY)  # CA1 expired by then
    assert would_validate(chain, [root1.pem], at=NOW, host="192.0.2.10")
    assert not would_validate(chain, [root1.pem], at=NOW, host="other.example.com")


def device(device_id: str, *ca_pems: str, unknown: Sequence[str] = ()) -> DeviceTrust:
    """A device trusting `ca_pems`, plus CA chains certfleet only knows by digest."""
    return DeviceTrust(device_id=device_id, ca_pems=ca_pems, unknown_digests=tuple(unknown))


def test_assess_impact_classifies_devices(keys: KeyRing) -> None:
    """Safe if known CAs accept the chain; else unknown if some CAs are unknown, else at risk."""
    # given
    ca1, ca2 = pki(keys, name="CA1"), pki(keys, name="CA2", slot=10)
    chain = validate_server_chain(ca1.chain_pem, now=NOW)
    fleet = [
        device("d-both", ca2.root.pem, ca1.root.pem),
        device("d-old", ca2.root.pem),
        device("d-new", ca1.root.pem),
        device("d-unknown", ca2.root.pem, unknown=["ab" * 32]),
        device("d-unknown-but-safe", ca1.root.pem, unknown=["cd" * 32]),
        device("d-nothing"),
        device("d-only-unknown", unknown=["ef" * 32]),
    ]
    # when
    impact = assess_impact(chain, fleet, at=NOW)
    # then
    assert impact.safe == ("d-both", "d-new", "d-unknown-but-safe")
    assert impact.at_risk == ("d-nothing", "d-old")
    assert impact.unknown == ("d-only-unknown", "d-unknown")
    assert impact.counts() == {"safe": 3, "at_risk": 2, "unknown": 2}


def test_assess_impact_verifies_each_trust_set_once(
    keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100k devices sharing three trust sets cost three verifications, whatever the PEM order."""
    # given: every would_validate call counted
    ca1, ca2 = pki(keys, name="CA1"), pki(keys, name="CA2", slot=10)
    chain = validate_server_chain(ca1.chain_pem, now=NOW)
    calls: list[Sequence[str]] = []
    real = chains.would_validate

    def counting(chain: ValidatedChain, ca_pems: Sequence[str], **options: Any) -> bool:
        calls.append(ca_pems)
        return real(chain, ca_pems, **options)

    monkeypatch.setattr(chains, "would_validate", counting)
    one, two = ca1.root.pem, ca2.root.pem
    trust_sets = [(one,), (two,), (one, two), (two, one), ()]
    fleet = [device(f"d{i:06d}", *trust_sets[i % 5]) for i in range(100_000)]
    # when
    impact = assess_impact(chain, fleet, at=NOW)
    # then
    assert len(calls) == 3
    assert impact.counts() == {"safe": 60_000, "at_risk": 40_000, "unknown": 0}


def test_assess_ca_impact(keys: KeyRing) -> None:
    """A CA given directly is safe for devices that already hold it, anywhere in their PEMs."""
    # given
    ca1, ca2 = pki(keys, name="CA1"), pki(keys, name="CA2", slot=10)
    new_ca = validate_ca(ca1.root.pem, now=NOW)
    fleet = [
        device("d-has", ca2.root.pem, ca1.root.pem),
        device("d-has-in-bundle", ca1.intermediate.pem + ca1.root.pem),
        device("d-lacks", ca2.root.pem),
        device("d-lacks-unknown", ca2.root.pem, unknown=["ab" * 32]),
        device("d-issuing-only", ca1.intermediate.pem),
    ]
    # when
    impact = assess_ca_impact(new_ca, fleet)
    # then
    assert impact.safe == ("d-has", "d-has-in-bundle")
    assert impact.at_risk == ("d-issuing-only", "d-lacks")
    assert impact.unknown == ("d-lacks-unknown",)


def test_impact_as_json_caps_lists() -> None:
    """as_json gives all counts but at most `limit` ids per list, and says when it cut."""
    # given
    impact = Impact(safe=("a", "b", "c"), at_risk=("d",), unknown=())
    # when
    capped, whole = impact.as_json(limit=2), impact.as_json()
    # then
    assert capped == {
        "counts": {"safe": 3, "at_risk": 1, "unknown": 0},
        "safe": ["a", "b"],
        "at_risk": ["d"],
        "unknown": [],
        "truncated": True,
    }
    assert whole["safe"] == ["a", "b", "c"]
    assert whole["truncated"] is False
