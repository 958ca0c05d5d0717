"""In-memory fakes of the ports, with the semantics of the Redis adapters."""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.identity import RevokedCertificate
from orchestrator.domain.inventory import (
    DeviceState,
    ExpiringItem,
    ExpiryClass,
    ExpiryWindow,
    FleetSummary,
    classify,
    earliest_not_after_by_tag,
)
from orchestrator.domain.renewal import PlanSummary, RenewalPlan
from orchestrator.domain.reports import DeviceReport
from orchestrator.ports import ExpiryCounts

__all__ = ["FakeIdentityStore", "FakeInventory", "FakeLibrary", "FakePlanStore"]


def _as_utc(moment: datetime) -> datetime:
    """What Redis gives back for a time it stored as an epoch-seconds score."""
    return datetime.fromtimestamp(moment.timestamp(), UTC)


def _stored(credential: ReportedCredential) -> ReportedCredential:
    """A credential as it reads back from the device hash (notAfter in UTC)."""
    return ReportedCredential(
        sec_tag=credential.sec_tag,
        type=credential.type,
        sha256=credential.sha256,
        not_after=_as_utc(credential.not_after) if credential.not_after is not None else None,
        subject=credential.subject,
        issuer=credential.issuer,
    )


@dataclass(frozen=True, slots=True)
class _Device:
    reported_at: datetime
    received_at: datetime
    items: Mapping[tuple[int, CredentialType], ReportedCredential]
    active_tags: tuple[int, ...] | None = None
    protocol_version: int = 1
    identity_tag: int | None = None

    def tags(self) -> set[int]:
        return {tag for tag, _ in self.items}

    def earliest(self) -> dict[int, datetime]:
        return earliest_not_after_by_tag(self.items.values())

    def identities(self) -> dict[int, datetime]:
        """The notAfter of each client certificate (type 1) indexed, by sec_tag: the identity
        tag's alone when the device names one, else every one it holds."""
        return {
            tag: item.not_after
            for (tag, typ), item in self.items.items()
            if typ is CredentialType.CLIENT_CERT
            and item.not_after is not None
            and self.identity_tag in (None, tag)
        }


class FakeInventory:
    """`InventoryStore` in memory, behaving as `RedisInventory` does.

    A report older than the one stored for its device is ignored (an equal time
    replaces it), its pems too; each sec_tag is decided by its earliest notAfter; CA
    chain (type 0) digests are counted per sec_tag. The pems of an applied report go
    to `library`, as Redis writes them in the same step.
    """

    def __init__(self, library: FakeLibrary | None = None) -> None:
        self.library = library if library is not None else FakeLibrary()
        self._devices: dict[str, _Device] = {}
        self._rejected: dict[str, int] = {}
        self._summary: str | None = None
        self._reports: dict[str, list[DeviceReport]] = {}
        self._keys: dict[str, str] = {}

    def record_states(
        self,
        states: Sequence[DeviceState],
        *,
        received_at: datetime,
        pems: Sequence[Mapping[str, str]] = (),
        keys: Sequence[Sequence[str]] = (),
    ) -> int:
        """Replace each device's items with its report unless a newer one is stored."""
        if pems and len(pems) != len(states):
            raise ValueError(f"{len(pems)} pem mappings for {len(states)} states")
        if keys and len(keys) != len(states):
            raise ValueError(f"{len(keys)} key lists for {len(states)} states")
        applied = 0
        for i, state in enumerate(states):
            previous = self._devices.get(state.device_id)
            if previous is not None and previous.reported_at > state.reported_at:
                continue
            if pems:
                self.library.add(pems[i])
            for key in keys[i] if keys else ():
                self._keys.setdefault(key, state.device_id)
            self._devices[state.device_id] = _Device(
                reported_at=state.reported_at,
                received_at=received_at,
                items={(c.sec_tag, c.type): _stored(c) for c in state.credentials},
                active_tags=state.active_tags,
                protocol_version=state.protocol_version,
                identity_tag=state.identity_tag,
            )
            applied += 1
        return applied

    def record_reports(self, reports: Sequence[DeviceReport]) -> None:
        """Append to each device's log, keeping the latest 50 as Redis does."""
        for report in reports:
            log = self._reports.setdefault(report.device_id, [])
            log.append(report)
            del log[:-50]

    def recent_reports(self, device_id: str, *, limit: int) -> list[DeviceReport]:
        """The device's latest `limit` reports, oldest first."""
        return self._reports.get(device_id, [])[-limit:] if limit > 0 else []

    def device_ids(self) -> list[str]:
        """Every device with a report applied."""
        return sorted(self._devices)

    def expiring_devices(self, sec_tag: int, until: datetime) -> list[str]:
        """Devices whose earliest notAfter in `sec_tag` is at or before `until`."""
        return sorted(
            d
            for d, device in self._devices.items()
            if (na := device.earliest().get(sec_tag)) is not None and na <= until
        )

    def devices_with_ca(self, sec_tag: int, sha256: str) -> list[str]:
        """Devices whose CA chain in `sec_tag` has this digest."""
        return sorted(
            d
            for d, device in self._devices.items()
            if (item := device.items.get((sec_tag, CredentialType.CA_CHAIN))) is not None
            and item.sha256 == sha256
        )

    def active_tags_of(self, device_ids: Sequence[str]) -> dict[str, tuple[int, ...] | None]:
        """Each device's reported active tag list."""
        return {d: self._devices[d].active_tags if d in self._devices else None for d in device_ids}

    def protocol_versions(self, device_ids: Sequence[str]) -> dict[str, int]:
        """Each device's protocol version (1 where none was recorded)."""
        return {
            d: self._devices[d].protocol_version if d in self._devices else 1 for d in device_ids
        }

    def active_ca_digests(self, device_ids: Sequence[str]) -> dict[str, dict[int, str]]:
        """Per device, the CA chain digest in each active sec_tag."""
        found: dict[str, dict[int, str]] = {}
        for d in device_ids:
            device = self._devices.get(d)
            if device is None:
                found[d] = {}
                continue
            found[d] = {
                tag: item.sha256
                for tag in device.active_tags or ()
                if (item := device.items.get((tag, CredentialType.CA_CHAIN))) is not None
            }
        return found

    def count_rejection(self, reason: str, amount: int = 1) -> None:
        """Count a refused device message under `reason`."""
        self._rejected[reason] = self._rejected.get(reason, 0) + amount

    def rejection_counts(self) -> dict[str, int]:
        """Refused device messages by reason, sorted by reason."""
        return dict(sorted(self._rejected.items()))

    def device_count(self) -> int:
        """How many devices have a report applied."""
        return len(self._devices)

    def device_credentials(self, device_id: str) -> DeviceState | None:
        """The last applied report of one device, items sorted by (sec_tag, type)."""
        device = self._devices.get(device_id)
        if device is None:
            return None
        return DeviceState(
            device_id=device_id,
            reported_at=_as_utc(device.reported_at),
            credentials=tuple(device.items[slot] for slot in sorted(device.items)),
            active_tags=device.active_tags,
            protocol_version=device.protocol_version,
            identity_tag=device.identity_tag,
        )

    def sec_tags(self) -> list[int]:
        """The sec_tags held by at least one device."""
        return sorted({tag for device in self._devices.values() for tag in device.tags()})

    def expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """Per sec_tag, (expired, expiring, ok) over devices with a notAfter in it."""
        result: dict[int, ExpiryCounts] = {}
        for tag in sec_tags:
            classes = [
                classify(earliest[tag], window)
                for earliest in (d.earliest() for d in self._devices.values())
                if tag in earliest
            ]
            result[tag] = (
                classes.count(ExpiryClass.EXPIRED),
                classes.count(ExpiryClass.EXPIRING),
                classes.count(ExpiryClass.OK),
            )
        return result

    def ca_digest_counts(self, sec_tags: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per sec_tag, how many devices hold each CA chain digest."""
        result: dict[int, dict[str, int]] = {}
        for tag in sec_tags:
            per_digest: dict[str, int] = {}
            for device in self._devices.values():
                ca_chain = device.items.get((tag, CredentialType.CA_CHAIN))
                if ca_chain is not None:
                    per_digest[ca_chain.sha256] = per_digest.get(ca_chain.sha256, 0) + 1
            result[tag] = per_digest
        return result

    def expiring_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """Expired and expiring (device, sec_tag) items, soonest first, at most `limit`."""
        if limit <= 0 or not sec_tags:
            return []
        found: list[tuple[float, str, int]] = []
        for device_id, device in self._devices.items():
            for tag, not_after in device.earliest().items():
                score = not_after.timestamp()
                if tag in sec_tags and score <= window.expiring_until:
                    found.append((score, device_id, tag))
        found.sort()
        items = []
        for score, device_id, tag in found[:limit]:
            held = self._devices[device_id].items
            described = held.get((tag, CredentialType.CA_CHAIN)) or held.get(
                (tag, CredentialType.CLIENT_CERT)
            )
            items.append(
                ExpiringItem(
                    device_id=device_id,
                    sec_tag=tag,
                    not_after=datetime.fromtimestamp(score, UTC),
                    subject=described.subject if described is not None else None,
                )
            )
        return items

    def expiring_page(
        self,
        sec_tags: Sequence[int],
        window: ExpiryWindow,
        *,
        limit: int,
        after: ExpiringItem | None = None,
        before: ExpiringItem | None = None,
        device_id_prefix: str = "",
    ) -> list[ExpiringItem]:
        """A page of the expiring list next to an item, by (notAfter, device id, sec_tag)."""
        if after is not None and before is not None:
            raise ValueError("a page follows an item or precedes one, not both")
        every = self.expiring_items(sec_tags, window, limit=len(self._devices) * len(sec_tags))
        items = [
            item
            for item in sorted(every, key=lambda i: (i.not_after, i.device_id, i.sec_tag))
            if item.device_id.startswith(device_id_prefix)
        ]
        keys = [(i.not_after, i.device_id, i.sec_tag) for i in items]
        if after is not None:
            at = bisect.bisect_right(keys, (after.not_after, after.device_id, after.sec_tag))
            return items[at : at + max(limit, 0)]
        if before is not None:
            end = bisect.bisect_left(keys, (before.not_after, before.device_id, before.sec_tag))
            return items[max(end - limit, 0) : end] if limit > 0 else []
        return items[: max(limit, 0)]

    def key_holders(self, spki_sha256s: Sequence[str]) -> dict[str, str]:
        """Of these client keys, those a reported certificate had, with the first device."""
        return {k: self._keys[k] for k in spki_sha256s if k in self._keys}

    def identity_tags_of(self, device_ids: Sequence[str]) -> dict[str, int | None]:
        """Each device's identity tag (None where none was reported)."""
        return {
            d: self._devices[d].identity_tag if d in self._devices else None for d in device_ids
        }

    def expiring_identities(self, sec_tag: int, before: datetime) -> list[str]:
        """Devices whose client certificate in `sec_tag` expires at or before `before`."""
        return sorted(
            d
            for d, device in self._devices.items()
            if (na := device.identities().get(sec_tag)) is not None and na <= before
        )

    def identity_expiry_counts(
        self, sec_tags: Sequence[int], window: ExpiryWindow
    ) -> dict[int, ExpiryCounts]:
        """Per sec_tag, (expired, expiring, ok) over the devices' client certificates."""
        result: dict[int, ExpiryCounts] = {}
        for tag in sec_tags:
            classes = [
                classify(na, window)
                for device in self._devices.values()
                if (na := device.identities().get(tag)) is not None
            ]
            result[tag] = (
                classes.count(ExpiryClass.EXPIRED),
                classes.count(ExpiryClass.EXPIRING),
                classes.count(ExpiryClass.OK),
            )
        return result

    def expiring_identity_items(
        self, sec_tags: Sequence[int], window: ExpiryWindow, *, limit: int
    ) -> list[ExpiringItem]:
        """Expired and expiring client certificates, soonest first, at most `limit`."""
        if limit <= 0 or not sec_tags:
            return []
        found = sorted(
            (na.timestamp(), device_id, tag)
            for device_id, device in self._devices.items()
            for tag, na in device.identities().items()
            if tag in sec_tags and na.timestamp() <= window.expiring_until
        )
        return [
            ExpiringItem(
                device_id=device_id,
                sec_tag=tag,
                not_after=datetime.fromtimestamp(score, UTC),
                subject=self._devices[device_id].items[(tag, CredentialType.CLIENT_CERT)].subject,
            )
            for score, device_id, tag in found[:limit]
        ]

    def save_summary(self, summary: FleetSummary) -> None:
        """Keep the summary in its JSON form, as Redis does."""
        self._summary = json.dumps(summary.as_json())

    def last_summary(self) -> FleetSummary | None:
        """The last saved summary, read back from JSON."""
        return FleetSummary.from_json(json.loads(self._summary)) if self._summary else None


class FakeLibrary:
    """`CredentialLibrary` in memory: content-addressed, an entry never changes."""

    def __init__(self, pems: Mapping[str, str] | None = None) -> None:
        self.pems: dict[str, str] = dict(pems or {})

    def add(self, pems: Mapping[str, str]) -> int:
        """Store the entries not yet held; return how many were new."""
        new = 0
        for digest, pem in pems.items():
            if digest not in self.pems:
                self.pems[digest] = pem
                new += 1
        return new

    def known(self, digests: Sequence[str]) -> set[str]:
        """The subset of `digests` held."""
        return {digest for digest in digests if digest in self.pems}

    def get(self, digest: str) -> str | None:
        """The PEM with this digest, if held."""
        return self.pems.get(digest)


class FakePlanStore:
    """`PlanStore` in memory, behaving as `RedisPlans` does.

    Plans are kept as the JSON documents Redis holds, so what is loaded went through
    `to_json`/`from_json`; `recent` orders by `created_at`, newest first (ties by id,
    as a Redis sorted set orders equal scores).
    """

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}

    def save(self, plan: RenewalPlan) -> None:
        """Write the whole plan."""
        self.documents[plan.id] = json.dumps(plan.to_json())

    def load(self, plan_id: str) -> RenewalPlan | None:
        """One plan, or None."""
        document = self.documents.get(plan_id)
        return RenewalPlan.from_json(json.loads(document)) if document else None

    def recent(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans, newest first."""
        plans = [RenewalPlan.from_json(json.loads(d)) for d in self.documents.values()]
        plans.sort(key=lambda plan: (plan.created_at.timestamp(), plan.id), reverse=True)
        return plans[:limit]

    def summaries(self, limit: int = 200) -> list[PlanSummary]:
        """The latest plans without their device lists, newest first."""
        return [plan.summary() for plan in self.recent(limit)]

    def open_plans(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans still open, newest first."""
        return [plan for plan in self.recent(limit) if plan.is_open]


class FakeIdentityStore:
    """`IdentityStore` in memory, behaving as `RedisIdentityStore` does.

    A claimed key stays claimed (any other device or rollout asking is told it was seen; the
    same device and rollout, a retried task, is told yes again); a revocation is
    kept once per serial and read back in UTC, ordered by serial, until its certificate
    expires (then it is dropped, as Redis drops it when the CRL is read).
    """

    def __init__(self) -> None:
        self.csr_fields: dict[str, dict[str, str]] = {}
        self.keys: dict[str, str] = {}
        self.issued: dict[str, dict[str, tuple[str | None, str]]] = {}
        self.revocations: dict[int, RevokedCertificate] = {}

    def put_csrs(self, rollout_id: str, csrs: Mapping[str, str]) -> None:
        """Keep each device's `csr` field (a later one replaces it)."""
        self.csr_fields.setdefault(rollout_id, {}).update(csrs)

    def csrs(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, str]:
        """The kept fields of these devices."""
        kept = self.csr_fields.get(rollout_id, {})
        return {device: kept[device] for device in device_ids if device in kept}

    def claim_key(self, spki_sha256: str, device_id: str, rollout_id: str) -> bool:
        """True the first time a key (hex, any case) is claimed and when the same device and
        rollout claim it again; False for any other claim."""
        key, owner = spki_sha256.lower(), f"{rollout_id}/{device_id}"
        return self.keys.setdefault(key, owner) == owner

    def put_certificates(
        self, rollout_id: str, certificates: Mapping[str, tuple[str | None, str]]
    ) -> None:
        """Keep (old PEM or None, new PEM) per device."""
        self.issued.setdefault(rollout_id, {}).update(certificates)

    def certificates(
        self, rollout_id: str, device_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str]]:
        """What `put_certificates` kept for these devices."""
        kept = self.issued.get(rollout_id, {})
        return {device: kept[device] for device in device_ids if device in kept}

    def add_revoked(self, revoked: Sequence[RevokedCertificate]) -> int:
        """Record revocations by serial (a repeat changes nothing); how many were new."""
        new = 0
        for entry in revoked:
            if entry.serial not in self.revocations:
                self.revocations[entry.serial] = dataclasses.replace(
                    entry, revoked_at=_as_utc(entry.revoked_at), not_after=_as_utc(entry.not_after)
                )
                new += 1
        return new

    def revoked(self, *, now: datetime) -> list[RevokedCertificate]:
        """Every revocation whose certificate has not expired by `now`, by serial."""
        for serial in [s for s, e in self.revocations.items() if e.not_after < now]:
            del self.revocations[serial]
        return [self.revocations[serial] for serial in sorted(self.revocations)]
