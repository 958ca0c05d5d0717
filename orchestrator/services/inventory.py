"""Use cases of the credential inventory: record device state, import PEMs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from orchestrator.domain.credentials import sha256_hex
from orchestrator.domain.errors import InvalidCredentialError
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
    "import_pems",
    "ingest_batch",
    "parse_pem_chain",
    "read_pem_files",
    "record_rejection",
    "record_states",
]

log = get_logger(__name__)


def record_states(
    store: InventoryStore,
    library: CredentialLibrary,
    messages: Sequence[StateMessage],
    *,
    received_at: datetime,
) -> int:
    """Record validated state messages in one batch; return how many were applied."""
    pems: dict[str, str] = {}
    for message in messages:
        pems.update(message.known_pems())
    if pems:
        library.add(pems)
    applied = store.record_states([m.to_domain() for m in messages], received_at=received_at)
    for message in messages:
        log.debug(
            "device_state_recorded",
            device_id=message.device_id,
            items=len(message.credentials),
        )
    return applied


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
    library: CredentialLibrary,
    topics: Topics,
    batch: Sequence[tuple[str, bytes]],
    *,
    received_at: datetime,
) -> IngestResult:
    """Validate (topic, payload) pairs of state and report topics, record the good ones.

    A bad message never stops the batch: it is logged and counted under its reason,
    and the good ones are recorded in pipelined round trips.
    """
    states: list[StateMessage] = []
    reports: list[DeviceReport] = []
    rejected = 0
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
                states.append(parse_state(payload, topic_device_id=device_id))
            else:
                report = parse_report(payload, topic_device_id=device_id).to_domain()
                reports.append(report)
        except RejectedMessageError as exc:
            record_rejection(store, exc.reason, device_id=device_id, topic=topic, detail=exc.detail)
            rejected += 1
    applied = record_states(store, library, states, received_at=received_at) if states else 0
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
