"""Server chains and CAs checked against what the nRF9160 modem takes, and who they strand.

A server chain is PEM, leaf first, each certificate followed by its issuer, maybe
ending with a self-signed root that the server does not send. Devices trust the
anchor: that root, or else the last intermediate. Whether a device accepts a chain
is for `cryptography.x509.verification` (RFC 5280 web PKI profile) to say.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from orchestrator.domain.errors import CertfleetError

__all__ = [
    "MAX_CHAIN_BYTES",
    "ChainProblem",
    "ChainValidationError",
    "DeviceTrust",
    "Impact",
    "ValidatedChain",
    "Verdict",
    "assess_ca_impact",
    "assess_impact",
    "validate_ca",
    "validate_server_chain",
    "would_validate",
]

MAX_CHAIN_BYTES: Final = 4096
"""The server chain the modem accepts (DER, leaf and intermediates), and each CA item (PEM)."""

_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class ChainProblem(enum.StrEnum):
    """Why a chain or CA cannot go to the fleet; each has its own code."""

    NOT_PEM = "not_pem"
    ORDER = "order"
    NOT_A_CA = "not_a_ca"
    LEAF_IS_CA = "leaf_is_ca"
    EXPIRED = "expired"
    KEY_TYPE = "key_type"
    TOO_LARGE = "too_large"


class ChainValidationError(CertfleetError, ValueError):
    """A server chain or CA the modem would refuse; `problem` says why, `message` what to do."""

    def __init__(self, problem: ChainProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedChain:
    """A chain that passed every check; for a CA given directly, `leaf` is the CA itself."""

    certificates: tuple[x509.Certificate, ...]
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    anchor: x509.Certificate
    anchor_pem: str
    not_yet_valid_until: datetime | None
    chain_bytes: int
    hosts: tuple[str, ...]


def _name(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    return f"'{subject}'" if subject else f"the certificate with serial {cert.serial_number:x}"


def _load(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise ChainValidationError(
            ChainProblem.NOT_PEM,
            f"no PEM certificates could be read ({error}): give the certificates as "
            "-----BEGIN CERTIFICATE----- blocks",
        ) from error


def _key_refusal(cert: x509.Certificate) -> str | None:
    """The key type if the modem cannot handle it (e.g. "RSA 1024-bit"), else None."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return cert.public_key_algorithm_oid.dotted_string
    if isinstance(key, rsa.RSAPublicKey):
        usable, kind = 2048 <= key.key_size <= 4096, f"RSA {key.key_size}-bit"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name, key.curve.name)
        usable, kind = curve in ("P-256", "P-384"), f"ECDSA {curve}"
    elif isinstance(key, dsa.DSAPublicKey):
        usable, kind = False, f"DSA {key.key_size}-bit"
    else:
        usable, kind = False, type(key).__name__.removesuffix("PublicKey")
    return None if usable else kind


def _check_keys(certificates: Sequence[x509.Certificate]) -> None:
    for cert in certificates:
        refusal = _key_refusal(cert)
        if refusal is not None:
            raise ChainValidationError(
                ChainProblem.KEY_TYPE,
                f"{_name(cert)} has key type {refusal}, which the nRF9160 modem cannot use: "
                "reissue it with RSA 2048..4096 bits or ECDSA P-256/P-384",
            )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_order(certificates: Sequence[x509.Certificate]) -> None:
    for position, (cert, issuer) in enumerate(itertools.pairwise(certificates), start=1):
        if not _issued_by(cert, issuer):
            raise ChainValidationError(
                ChainProblem.ORDER,
                f"certificate {position} {_name(cert)} is not issued by the next one, "
                f"{_name(issuer)}: order the PEM from the leaf to the root, each certificate "
                "followed by the one that issued it",
            )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_issuers_are_cas(issuers: Iterable[x509.Certificate]) -> None:
    for cert in issuers:
        if not _is_ca(cert):
            raise ChainValidationError(
                ChainProblem.NOT_A_CA,
                f"{_name(cert)} must be a CA but lacks basicConstraints CA:TRUE: give the "
                "certificate of the CA itself (basicConstraints critical, CA:TRUE)",
            )


def _not_yet_valid_until(
    certificates: Iterable[x509.Certificate], now: datetime
) -> datetime | None:
    """Check expiry; return the latest notBefore still ahead of `now`, if any."""
    latest: datetime | None = None
    for cert in certificates:
        if cert.not_valid_after_utc < now:
            raise ChainValidationError(
                ChainProblem.EXPIRED,
                f"{_name(cert)} expired at {cert.not_valid_after_utc.isoformat()}: "
                "renew it and give the new certificate",
            )
        start = cert.not_valid_before_utc
        if start > now and (latest is None or start > latest):
            latest = start
    return latest


def _anchor_pem(anchor: x509.Certificate) -> str:
    """The anchor as the CA chain item devices store, if it fits the modem."""
    pem = anchor.public_bytes(serialization.Encoding.PEM).decode("ascii")
    if (size := len(pem)) > MAX_CHAIN_BYTES:
        raise ChainValidationError(
            ChainProblem.TOO_LARGE,
            f"CA {_name(anchor)} is {size} bytes as PEM, over the {MAX_CHAIN_BYTES}-byte CA "
            "chain item the modem stores: use a CA with a smaller key (ECDSA) or fewer extensions",
        )
    return pem


def _hosts(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    addresses = san.get_values_for_type(x509.IPAddress)
    return (*san.get_values_for_type(x509.DNSName), *map(str, addresses))


def validate_server_chain(pem: str | bytes, *, now: datetime) -> ValidatedChain:
    """Check a server chain (leaf first) against the modem's rules at `now`."""
    certificates = _load(pem)
    _check_keys(certificates)
    leaf = certificates[0]
    if len(certificates) == 1:
        raise ChainValidationError(
            ChainProblem.ORDER,
            f"the chain holds only the leaf {_name(leaf)}: append the CA certificates that "
            "issued it, leaf first, so devices know which CA to trust",
        )
    _check_order(certificates)
    if _is_ca(leaf):
        raise ChainValidationError(
            ChainProblem.LEAF_IS_CA,
            f"server leaf {_name(leaf)} has basicConstraints CA:TRUE: issue the server a "
            "certificate with CA:FALSE and put it first",
        )
    _check_issuers_are_cas(certificates[1:])
    not_yet_valid_until = _not_yet_valid_until(certificates, now)
    sent = certificates[:-1] if _issued_by(certificates[-1], certificates[-1]) else certificates
    chain_bytes = sum(len(cert.public_bytes(serialization.Encoding.DER)) for cert in sent)
    if chain_bytes > MAX_CHAIN_BYTES:
        raise ChainValidationError(
            ChainProblem.TOO_LARGE,
            f"the chain of {_name(leaf)} is {chain_bytes} bytes (DER, leaf and intermediates), "
            f"over the modem's {MAX_CHAIN_BYTES}: use fewer intermediates or ECDSA certificates",
        )
    return ValidatedChain(
        certificates=tuple(certificates),
        leaf=leaf,
        intermediates=tuple(sent[1:]),
        anchor=certificates[-1],
        anchor_pem=_anchor_pem(certificates[-1]),
        not_yet_valid_until=not_yet_valid_until,
        chain_bytes=chain_bytes,
        hosts=_hosts(leaf),
    )


def validate_ca(pem: str | bytes, *, now: datetime) -> ValidatedChain:
    """Check a CA certificate (maybe followed by its issuers) that devices are to trust."""
    certificates = _load(pem)
    _check_keys(certificates)
    _check_order(certificates)
    _check_issuers_are_cas(certificates)
    not_yet_valid_until = _not_yet_valid_until(certificates, now)
    anchor = certificates[0]
    anchor_pem = _anchor_pem(anchor)
    return ValidatedChain(
        certificates=tuple(certificates),
        leaf=anchor,
        intermediates=(),
        anchor=anchor,
        anchor_pem=anchor_pem,
        not_yet_valid_until=not_yet_valid_until,
        chain_bytes=len(anchor_pem),
        hosts=(),
    )


class Verdict(enum.StrEnum):
    """What a change means for one device."""

    SAFE = "safe"
    AT_RISK = "at_risk"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTrust:
    """The CA chains one device trusts: those certfleet has a PEM for, and digests of the rest."""

    device_id: str
    ca_pems: tuple[str, ...]
    unknown_digests: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Impact:
    """Device ids, sorted, by what a change means for them."""

    safe: tuple[str, ...]
    at_risk: tuple[str, ...]
    unknown: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """How many devices per verdict."""
        return {"safe": len(self.safe), "at_risk": len(self.at_risk), "unknown": len(self.unknown)}

    def as_json(self, *, limit: int = 10000) -> dict[str, Any]:
        """Counts and device ids, each list capped at `limit`; `truncated` says if any was."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        groups = {"safe": self.safe, "at_risk": self.at_risk, "unknown": self.unknown}
        return {
            "counts": self.counts(),
            **{verdict: list(ids[:limit]) for verdict, ids in groups.items()},
            "truncated": any(len(ids) > limit for ids in groups.values()),
        }


def _subject(host: str) -> x509.DNSName | x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def would_validate(
    chain: ValidatedChain, ca_pems: Sequence[str], *, at: datetime, host: str | None = None
) -> bool:
    """Whether a device trusting `ca_pems` accepts `chain` for `host` at `at`.

    `host` defaults to the leaf's first SAN; with no host to check, False.
    """
    target = host if host is not None else next(iter(chain.hosts), None)
    anchors = [cert for pem in ca_pems for cert in _load(pem)]
    if target is None or not anchors:
        return False
    verifier = (
        PolicyBuilder().store(Store(anchors)).time(at).build_server_verifier(_subject(target))
    )
    try:
        verifier.verify(chain.leaf, list(chain.intermediates))
    except VerificationError:
        return False
    return True


def _impact(judged: Iterable[tuple[DeviceTrust, bool]]) -> Impact:
    """SAFE if trusted; else UNKNOWN if the device has CA chains certfleet lacks, else AT_RISK."""
    groups: dict[Verdict, list[str]] = {verdict: [] for verdict in Verdict}
    for device, trusted in judged:
        unknown = Verdict.UNKNOWN if device.unknown_digests else Verdict.AT_RISK
        groups[Verdict.SAFE if trusted else unknown].append(device.device_id)
    return Impact(
        safe=tuple(sorted(groups[Verdict.SAFE])),
        at_risk=tuple(sorted(groups[Verdict.AT_RISK])),
        unknown=tuple(sorted(groups[Verdict.UNKNOWN])),
    )


def assess_impact(
    chain: ValidatedChain, devices: Iterable[DeviceTrust], *, at: datetime, host: str | None = None
) -> Impact:
    """Which devices would accept `chain` at `at`; each distinct trust set is verified once."""
    accepts: dict[frozenset[str], bool] = {frozenset(): False}

    def accepted(trust_set: frozenset[str]) -> bool:
        if trust_set not in accepts:
            accepts[trust_set] = would_validate(chain, sorted(trust_set), at=at, host=host)
        return accepts[trust_set]

    return _impact((device, accepted(frozenset(device.ca_pems))) for device in devices)


def assess_ca_impact(ca: ValidatedChain, devices: Iterable[DeviceTrust]) -> Impact:
    """Which devices already trust the CA `ca` (its anchor is among their certificates)."""
    anchor_der = ca.anchor.public_bytes(serialization.Encoding.DER)
    holds: dict[str, bool] = {}

    def trusts(pem: str) -> bool:
        if pem not in holds:
            ders = {cert.public_bytes(serialization.Encoding.DER) for cert in _load(pem)}
            holds[pem] = anchor_der in ders
        return holds[pem]

    return _impact((device, any(trusts(pem) for pem in device.ca_pems)) for device in devices)
