"""Use cases of the credential inventory: record device state, import PEMs."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from orchestrator.domain.credentials import CA_CHAIN_MAX_BYTES, CredentialType, sha256_hex
from orchestrator.domain.errors import InvalidCredentialError
from orchestrator.domain.identity_keys import spki_sha256
from orchestrator.domain.reports import DeviceReport
from orchestrator.logs import get_logger
from orchestrator.ports import CredentialLibrary, InventoryStore
from orchestrator.protocol.report import parse_report
from orchestrator.protocol.state import (
    RejectedMessageError,
    RejectReason,
    StateMessage,
    parse_state,
)
from orchestrator.protocol.topics import Topics

__all__ = [
    "ImportedCredential",
    "IngestResult",
    "client_keys",
    "import_pems",
    "ingest_batch",
    "library_pems",
    "parse_pem_chain",
    "pem_refusal",
    "read_pem_files",
    "record_rejection",
]

log = get_logger(__name__)


PemVerdict = tuple[tuple[RejectReason, str] | None, str | None]
"""Why the library refuses a pem (None: it takes it), and its first certificate's key."""


@functools.lru_cache(maxsize=4096)
def _pem_verdict(pem: str) -> PemVerdict:
    """One parse of a pem serves the library's verdict and the client key (`client_keys`).

    Fleets repeat a few CAs, and a device sends the same client certificate with every
    state, so the latest few thousand verdicts are remembered.
    """
    size = len(pem.encode())
    if size > CA_CHAIN_MAX_BYTES:
        return (RejectReason.PEM_TOO_LARGE, f"{size} bytes, limit {CA_CHAIN_MAX_BYTES}"), None
    if not pem.isascii():
        return (RejectReason.PEM_INVALID, "a PEM must be ASCII"), None
    try:
        certificates = parse_pem_chain(pem.encode(), source="pem")
    except InvalidCredentialError as exc:
        return (RejectReason.PEM_INVALID, str(exc)), None
    try:
        key = spki_sha256(certificates[0].public_key())
    except (ValueError, UnsupportedAlgorithm):
        key = None
    return None, key


def pem_refusal(pem: str) -> tuple[RejectReason, str] | None:
    """Why the library refuses a pem a device sent, or None if it takes it.

    The library keeps only what a modem could hold and certfleet can read: ASCII PEM
    X.509 certificates of at most `CA_CHAIN_MAX_BYTES`. Its key, the SHA-256 of the
    pem's bytes, is checked with the message (`CredentialEntry`).
    """
    return _pem_verdict(pem)[0]


def library_pems(store: InventoryStore, message: StateMessage, *, topic: str) -> dict[str, str]:
    """The pems of `message` the library may take; each refused one is logged and counted.

    A refused pem costs only itself: the item and the rest of the message are recorded.
    """
    accepted = {}
    for digest, pem in message.known_pems().items():
        refusal = pem_refusal(pem)
        if refusal is None:
            accepted[digest] = pem
        else:
            reason, detail = refusal
            record_rejection(store, reason, device_id=message.device_id, topic=topic, detail=detail)
    return accepted


def client_keys(message: StateMessage, pems: Mapping[str, str]) -> list[str]:
    """The keys (SPKI SHA-256) of the message's client certificates whose pem the library took.

    Recorded with the state, they let certfleet refuse a CSR for a key it has seen in use.
    """
    keys = []
    for item in message.credentials:
        pem = pems.get(item.sha256)
        if item.type is CredentialType.CLIENT_CERT and pem is not None:
            key = _pem_verdict(pem)[1]
            if key is not None:
                keys.append(key)
    return keys


def record_rejection(
    store: InventoryStore, reason: RejectReason, *, device_id: str | None, topic: str, detail: str
) -> None:
    """Log and count a refused device message; nothing of it is recorded."""
    log.warning(
        "device_message_rejected",
        device_id=device_id,
        topic=topic,
        reason=reason.value,
        detail=detail,
    )
    store.count_rejection(reason.value)


@dataclass(frozen=True, slots=True)
class ImportedCredential:
    """A PEM file added to the library."""

    sha256: str
    subjects: tuple[str, ...]
    not_after: datetime
    new: bool


def parse_pem_chain(content: bytes, *, source: str) -> list[x509.Certificate]:
    """The certificates of a PEM file, or `InvalidCredentialError` saying why not."""
    try:
        certificates = x509.load_pem_x509_certificates(content)
    except ValueError as exc:
        raise InvalidCredentialError(f"{source}: not a PEM certificate chain ({exc})") from None
    if not certificates:
        raise InvalidCredentialError(f"{source}: holds no certificate")
    return certificates


def read_pem_files(paths: Iterable[Path]) -> list[str]:
    """The PEM text of each file, checked to hold certificates, byte for byte as stored."""
    texts = []
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise InvalidCredentialError(f"{path}: cannot read it ({exc.strerror})") from None
        parse_pem_chain(content, source=str(path))
        try:
            texts.append(content.decode("ascii"))
        except UnicodeDecodeError:
            raise InvalidCredentialError(f"{path}: a PEM file must be ASCII") from None
    return texts


def import_pems(
    library: CredentialLibrary, files: Iterable[tuple[str, bytes]]
) -> list[ImportedCredential]:
    """Add each PEM file, byte for byte as a device would store it, to the library."""
    parsed: list[tuple[str, str, list[x509.Certificate]]] = []
    for source, content in files:
        certificates = parse_pem_chain(content, source=source)
        try:
            text = content.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidCredentialError(f"{source}: a PEM file must be ASCII") from None
        parsed.append((sha256_hex(content), text, certificates))
    already = library.known([digest for digest, _, _ in parsed])
    library.add({digest: text for digest, text, _ in parsed})
    return [
        ImportedCredential(
            sha256=digest,
            subjects=tuple(c.subject.rfc4514_string() for c in certificates),
            not_after=min(c.not_valid_after_utc for c in certificates),
            new=digest not in already,
        )
        for digest, _, certificates in parsed
    ]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one batch of device messages."""

    applied: int
    stale: int
    rejected: int
    reports: tuple[DeviceReport, ...] = ()


def ingest_batch(
    store: InventoryStore,
    topics: Topics,
    batch: Sequence[tuple[str, bytes]],
    *,
    received_at: datetime,
    clock_skew: timedelta,
) -> IngestResult:
    """Validate (topic, payload) pairs of state and report topics, record the good ones.

    A bad message never stops the batch: it is logged and counted under its reason,
    and the good ones are recorded in pipelined round trips. A state dated more than
    `clock_skew` after `received_at` is refused (`clock_skew`): kept, it would make
    every true state after it look stale. A state's pems join the library in the
    same atomic step as the state, and only if the state is applied; so do the keys
    of its client certificates (`client_keys`).
    """
    states: list[StateMessage] = []
    pems: list[dict[str, str]] = []
    keys: list[list[str]] = []
    reports: list[DeviceReport] = []
    rejected = 0
    latest = received_at + clock_skew
    for topic, payload in batch:
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] == "bundle":
            record_rejection(
                store,
                RejectReason.BAD_TOPIC,
                device_id=None,
                topic=topic,
                detail="not a device topic",
            )
            rejected += 1
            continue
        device_id, channel = parsed
        try:
            if channel == "state":
                state = parse_state(payload, topic_device_id=device_id)
                if state.time > latest:
                    raise RejectedMessageError(
                        RejectReason.CLOCK_SKEW,
                        f"time {state.time.isoformat()} is past {latest.isoformat()}"
                        f" (received at {received_at.isoformat()}, skew {clock_skew})",
                    )
                accepted = library_pems(store, state, topic=topic)
                pems.append(accepted)
                keys.append(client_keys(state, accepted))
                states.append(state)
            else:
                report = parse_report(payload, topic_device_id=device_id).to_domain()
                reports.append(report)
        except RejectedMessageError as exc:
            record_rejection(store, exc.reason, device_id=device_id, topic=topic, detail=exc.detail)
            rejected += 1
    applied = 0
    if states:
        # The message's `v` is the device's protocol version: bundles follow it.
        domain = [replace(m.to_domain(), protocol_version=m.v) for m in states]
        applied = store.record_states(domain, received_at=received_at, pems=pems, keys=keys)
        for state in states:
            log.debug(
                "device_state_recorded", device_id=state.device_id, items=len(state.credentials)
            )
    if reports:
        store.record_reports(reports)
        # One line per batch: a JSON log line per report cost more than recording it.
        log.info(
            "device_reports", reports=len(reports), phases=dict(Counter(r.phase for r in reports))
        )
        for report in reports:
            log.debug(
                "device_report",
                device_id=report.device_id,
                rollout_id=report.rollout_id,
                seq=report.seq,
                phase=report.phase,
                reason=report.reason,
            )
    return IngestResult(
        applied=applied, stale=len(states) - applied, rejected=rejected, reports=tuple(reports)
    )
