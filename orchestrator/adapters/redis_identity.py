"""What certfleet keeps about identity rotations, in Redis: public data only.

CSRs, certificates, key digests and revocations; never a private key (none ever
reaches certfleet: `%KEYGEN` keeps it in the modem).

Per rollout, under the rollout's hash tag `{rollout_id}` like `redis_rollouts`:

- `certfleet:ro:{id}:csr` (hash): device -> the `csr` field it reported (CSR and attestation);
- `certfleet:ro:{id}:idcerts` (hash): device -> JSON `{"old": PEM or null, "new": PEM}`, the
  certificate it had (to revoke once retired) and the one issued to it.

Global:

- `certfleet:id:keys` (hash): SHA-256 of a public key's SPKI DER (hex) -> `{rollout}/{device}`
  whose CSR claimed it first; HSETNX answers "seen before" (unless by the same claim again: a
  retried task), and the value tells an operator who had the key and when;
- `certfleet:id:revoked` (hash): certificate serial (decimal) -> JSON of the revocation
  (`RevokedCertificate`): what the CRL lists;
- `certfleet:id:revoked:exp` (zset): serial -> the certificate's notAfter (epoch seconds), so
  reading the revocations drops those whose certificate has expired (a CRL need not list them).

Every command touches one key, and no transaction spans the rollout's keys and the global
ones (on a cluster the global keys lie in slots of their own). The revocation pair is
written revocation first, then its expiry entry, and dropped in the same order. A crash
between the two writes leaves a revocation without its expiry entry: it is listed, and the
task's retry indexes it (and counts it as new, so the CRL is refreshed). A crash between
the two drops leaves an expiry entry without its revocation, dropped at the next read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.adapters.redis_rollout_plan import rollout_key
from orchestrator.domain.identity import RevokedCertificate

__all__ = ["CLAIMED_KEYS", "REVOKED", "REVOKED_EXPIRY", "RedisIdentityStore"]

CLAIMED_KEYS: Final = "certfleet:id:keys"
REVOKED: Final = "certfleet:id:revoked"
REVOKED_EXPIRY: Final = "certfleet:id:revoked:exp"


def _claim_owner(device_id: str, rollout_id: str) -> str:
    """`{rollout}/{device}`: one text per pair, as a device id never holds a `/`."""
    return f"{rollout_id}/{device_id}"


def _encode_revoked(entry: RevokedCertificate) -> str:
    """A revocation as JSON; the serial as text (it can pass 2**64), times as epoch seconds."""
    return json.dumps(
        {
            "serial": str(entry.serial),
            "revoked_at": entry.revoked_at.timestamp(),
            "not_after": entry.not_after.timestamp(),
            "device_id": entry.device_id,
            "reason": entry.reason,
        },
        sort_keys=True,
    )


def _decode_revoked(raw: str) -> RevokedCertificate:
    document = json.loads(raw)
    return RevokedCertificate(
        serial=int(document["serial"]),
        revoked_at=datetime.fromtimestamp(document["revoked_at"], UTC),
        not_after=datetime.fromtimestamp(document["not_after"], UTC),
        device_id=document["device_id"],
        reason=document["reason"],
    )


class RedisIdentityStore:
    """`IdentityStore` on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    @store_errors()
    def put_csrs(self, rollout_id: str, csrs: Mapping[str, str]) -> None:
        """Keep each device's reported `csr` field (a later report replaces it)."""
        if csrs:
            self._redis.hset(rollout_key(rollout_id, "csr"), mapping=dict(csrs))

    @store_errors()
    def csrs(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, str]:
        """The kept `csr` fields of these devices (absent: none kept)."""
        if not device_ids:
            return {}
        fields: list[str | None] = self._redis.hmget(rollout_key(rollout_id, "csr"), device_ids)
        return {device: field for device, field in zip(device_ids, fields, strict=True) if field}

    @store_errors()
    def claim_key(self, spki_sha256: str, device_id: str, rollout_id: str) -> bool:
        """Record a public key as certified for this device in this rollout; True when new or
        claimed by the same (device, rollout) before, False (nothing changes) otherwise."""
        key, owner = spki_sha256.lower(), _claim_owner(device_id, rollout_id)
        if self._redis.hsetnx(CLAIMED_KEYS, key, owner):
            return True
        # A claim is never changed once made, so reading it after HSETNX cannot race.
        return bool(self._redis.hget(CLAIMED_KEYS, key) == owner)

    @store_errors()
    def put_certificates(
        self, rollout_id: str, certificates: Mapping[str, tuple[str | None, str]]
    ) -> None:
        """Per device: (the old certificate's PEM or None when unknown, the new one's PEM)."""
        if certificates:
            self._redis.hset(
                rollout_key(rollout_id, "idcerts"),
                mapping={
                    device: json.dumps({"old": old, "new": new})
                    for device, (old, new) in certificates.items()
                },
            )

    @store_errors()
    def certificates(
        self, rollout_id: str, device_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str]]:
        """What `put_certificates` kept for these devices."""
        if not device_ids:
            return {}
        raws: list[str | None] = self._redis.hmget(rollout_key(rollout_id, "idcerts"), device_ids)
        kept: dict[str, tuple[str | None, str]] = {}
        for device, raw in zip(device_ids, raws, strict=True):
            if raw:
                document = json.loads(raw)
                kept[device] = (document["old"], document["new"])
        return kept

    @store_errors()
    def add_revoked(self, revoked: Sequence[RevokedCertificate]) -> int:
        """Record revocations by serial (a repeat changes nothing), then index their expiry;
        return how many were new to the index (a retry after a crash between the two counts
        those it indexes)."""
        if not revoked:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for entry in revoked:
            pipe.hsetnx(REVOKED, str(entry.serial), _encode_revoked(entry))
        pipe.execute()
        added: int = self._redis.zadd(
            REVOKED_EXPIRY,
            {str(entry.serial): entry.not_after.timestamp() for entry in revoked},
            nx=True,
        )
        return added

    @store_errors()
    def revoked(self, *, now: datetime) -> list[RevokedCertificate]:
        """Every revocation whose certificate has not expired by `now`, by serial; the expired
        ones are dropped on the way (a serial is never revoked again once it expired)."""
        expired: list[str] = self._redis.zrangebyscore(
            REVOKED_EXPIRY, "-inf", f"({now.timestamp()}"
        )
        raws: dict[str, str] = self._redis.hgetall(REVOKED)
        if expired:
            self._redis.hdel(REVOKED, *expired)
            self._redis.zrem(REVOKED_EXPIRY, *expired)
        gone = set(expired)
        current = [_decode_revoked(raw) for serial, raw in raws.items() if serial not in gone]
        return sorted(current, key=lambda entry: entry.serial)
