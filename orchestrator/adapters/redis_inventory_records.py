"""A device's inventory record: one short string in a small per-shard bucket hash.

A device's last applied state is kept as one field of `<shard>d:<bucket>` (hash:
device id -> record), its bucket chosen by `bucket_of` among `BUCKETS` per shard. The
record names each item by a short content digest (`item_ref`) whose full entry (the
JSON of its SHA-256, notAfter, subject and issuer) sits once per shard in
`<shard>items`, so the record of a device with one or two items stays under Redis's
`hash-max-listpack-value` (64 bytes) and a bucket of up to `hash-max-listpack-entries`
(128) devices stays in the compact encoding. A fleet's devices share few CA items, so
their entries cost the shard a few hundred bytes, not each device.

Record: `<reported_at>;<protocol version>;<identity tag>;<active tags>;<items>`, where
the active tags are comma-separated, `-` when the device reported none; the identity tag
is empty when none was reported; the items are `<sec_tag>:<type>:<ref>` separated by
spaces. `lua/record_states.lua` writes records and `lua/expiring_items.lua` reads
them (it computes `bucket_of` the same way, with `redis.sha1hex`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from orchestrator.adapters.redis_keys import inventory_prefix, shard_of
from orchestrator.domain.credentials import CredentialType, ReportedCredential

__all__ = [
    "BUCKETS",
    "Record",
    "bucket_of",
    "decode_record",
    "encode_record",
    "item_from_json",
    "item_json",
    "item_ref",
    "record_active_tags",
    "record_key",
]

BUCKETS: Final = 256
"""Record buckets per shard (4,096 in all): a few devices a bucket at 20,000 devices,
about a hundred at 400,000; past 128 a bucket is a plain hash table, still cheaper per
device than a key of its own."""


def bucket_of(device_id: str) -> int:
    """The bucket of a device's record in its shard: the first 32 bits of SHA-1 of its
    id (UTF-8), modulo `BUCKETS` (`lua/expiring_items.lua` computes the same)."""
    digest = hashlib.sha1(device_id.encode()).digest()  # noqa: S324  # a bucket, not a signature
    return int.from_bytes(digest[:4], "big") % BUCKETS


def record_key(device_id: str) -> str:
    """The bucket hash holding a device's record."""
    return f"{inventory_prefix(shard_of(device_id))}d:{bucket_of(device_id)}"


def item_json(credential: ReportedCredential) -> str:
    """An item's entry in `<shard>items` (what the device reported of it)."""
    return json.dumps(
        {
            "sha256": credential.sha256,
            "not_after": credential.not_after.timestamp() if credential.not_after else None,
            "subject": credential.subject,
            "issuer": credential.issuer,
        },
        separators=(",", ":"),
    )


def item_ref(entry: str) -> str:
    """The short content digest naming an item entry (72 bits of BLAKE2b, base64url)."""
    return base64.urlsafe_b64encode(
        hashlib.blake2b(entry.encode(), digest_size=9).digest()
    ).decode()


def item_from_json(sec_tag: int, typ: int, entry: str) -> ReportedCredential:
    """A stored item back as the device reported it."""
    data = json.loads(entry)
    not_after = data.get("not_after")
    return ReportedCredential(
        sec_tag=sec_tag,
        type=CredentialType(typ),
        sha256=data["sha256"],
        not_after=datetime.fromtimestamp(not_after, UTC) if not_after is not None else None,
        subject=data.get("subject"),
        issuer=data.get("issuer"),
    )


@functools.lru_cache(maxsize=256)
def _active_text(tags: tuple[int, ...] | None) -> str:
    return "-" if tags is None else ",".join(str(t) for t in tags)


def encode_record(
    reported_at: float,
    protocol_version: int,
    identity_tag: int | None,
    active_tags: tuple[int, ...] | None,
    named: str,
) -> str:
    """A record as stored; `named` its items, `<sec_tag>:<type>:<ref>` separated by spaces."""
    identity = "" if identity_tag is None else str(identity_tag)
    return f"{reported_at!r};{protocol_version};{identity};{_active_text(active_tags)};{named}"


@functools.lru_cache(maxsize=256)
def _active_tags(text: str) -> tuple[int, ...] | None:
    return None if text == "-" else tuple(int(t) for t in text.split(",") if t)


def record_active_tags(raw: str) -> tuple[int, ...] | None:
    """A stored record's active tags alone (None: the device reported none)."""
    return _active_tags(raw.split(";", 4)[3])


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded record."""

    reported_at: float
    protocol_version: int
    identity_tag: int | None
    active_tags: tuple[int, ...] | None
    items: tuple[tuple[int, int, str], ...]
    """(sec_tag, type, ref) of each item."""


def decode_record(raw: str) -> Record:
    """A stored record read back."""
    reported, version, identity, active, named = raw.split(";", 4)
    items = []
    for item in named.split():
        tag, typ, ref = item.split(":", 2)
        items.append((int(tag), int(typ), ref))
    return Record(
        reported_at=float(reported),
        protocol_version=int(version),
        identity_tag=int(identity) if identity else None,
        active_tags=_active_tags(active),
        items=tuple(items),
    )
