"""In-memory stand-ins for the rollout engine's ports: the store, the task queue, metrics,
the sequences, the publisher, a signer and the delegation registry, so the engine's logic
runs without Redis."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from orchestrator.domain.errors import TransientError
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    TransitionRefusal,
    TransitionResult,
)
from orchestrator.ports.stores import IssuedDelegation
from orchestrator.protocol.cose import key_id
from orchestrator.protocol.delegation import Delegation, Revocation
from simulator.pki import make_ca
from tests.unit.builders import NOW

__all__ = [
    "DEVICE_TIMEOUT",
    "NEW_ROOT",
    "FakeDelegationRegistry",
    "FakeMetrics",
    "FakePublisher",
    "FakeRollouts",
    "FakeSequences",
    "FakeSigner",
    "PublishFailedError",
    "RecordingTasks",
    "trust_add_spec",
]


NEW_ROOT = make_ca(
    "New Root", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=400)
)
"""The CA the engine tests roll out."""
DEVICE_TIMEOUT = 600.0
"""The engine tests' device timeout (seconds)."""


def trust_add_spec(**overrides: object) -> RolloutSpec:
    """A trust.add of `NEW_ROOT` into sec_tag 43 beside 42, in one 100% wave; `overrides`
    replace any field."""
    values: dict[str, object] = {
        "kind": "trust.add",
        "ca_pems": (NEW_ROOT.pem.decode(),),
        "tag": 42,
        "spare_tag": 43,
        "probe_host": "broker.example.net",
        "probe_port": 8883,
        "waves": parse_waves("100%"),
        "min_sample": 1,
        "device_timeout_seconds": DEVICE_TIMEOUT,
        **overrides,
    }
    return RolloutSpec(**values)  # type: ignore[arg-type]


@dataclass
class _Stored:
    rollout: Rollout
    states: dict[str, DeviceRolloutState]
    wave_of: dict[str, int]
    members: list[list[str]]
    active: dict[str, list[int]]
    versions: dict[str, int] = field(default_factory=dict)
    bundles: dict[tuple[str, PushStep], bytes] = field(default_factory=dict)
    seqs: dict[tuple[str, PushStep], list[int]] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)
    sent: dict[tuple[PushStep, str], float] = field(default_factory=dict)
    log: list[dict[str, str]] = field(default_factory=list)


class FakeRollouts:
    """`RolloutStore` in memory, with the Redis adapter's rules: guarded changes,
    transitions only from allowed states and answering issued seqs, first bundle per
    (device, step) kept, every stored bundle's seq recorded."""

    def __init__(self) -> None:
        self._rollouts: dict[str, _Stored] = {}
        self._order: list[str] = []
        self._claims: dict[str, str] = {}
        self._active_ids: set[str] = set()
        self._locks: dict[str, str] = {}
        self._debounced: set[str] = set()
        self._ids = itertools.count(1)

    def _get(self, rollout_id: str) -> _Stored:
        return self._rollouts[rollout_id]

    def _log(self, stored: _Stored, fields: dict[str, str]) -> None:
        stored.log.append({"id": f"{next(self._ids)}-0", **fields})

    # -- claims and creation --------------------------------------------------------------

    def claim(self, rollout_id: str, tags: Sequence[int], device_ids: Sequence[str]) -> list[str]:
        conflicts = sorted({d for d in device_ids if self._claims.get(d, rollout_id) != rollout_id})
        if not conflicts:
            for device in device_ids:
                self._claims[device] = rollout_id
        return conflicts

    def release(self, rollout_id: str, tags: Sequence[int], device_ids: Iterable[str]) -> None:
        for device in list(device_ids):
            if self._claims.get(device) == rollout_id:
                del self._claims[device]

    def claimed_by(self, device_id: str) -> str | None:
        """Which rollout holds the device (for tests)."""
        return self._claims.get(device_id)

    def create(
        self,
        rollout: Rollout,
        *,
        waves: Sequence[Sequence[str]],
        active: Mapping[str, Sequence[int]],
        actor: str,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        stored = _Stored(
            rollout=rollout,
            states={d: DeviceRolloutState.PENDING for w in waves for d in w},
            wave_of={d: i for i, w in enumerate(waves) for d in w},
            members=[sorted(w) for w in waves],
            active={d: list(tags) for d, tags in active.items()},
            versions=dict(versions or {}),
        )
        self._rollouts[rollout.id] = stored
        self._order.append(rollout.id)
        self._log(stored, rollout.created_entry(actor=actor).as_fields())

    # -- the aggregate --------------------------------------------------------------------

    def exists(self, rollout_id: str) -> bool:
        return rollout_id in self._rollouts

    def get(self, rollout_id: str) -> Rollout | None:
        stored = self._rollouts.get(rollout_id)
        return stored.rollout if stored else None

    def list_ids(self, limit: int = 100) -> list[str]:
        return list(reversed(self._order))[:limit]

    def change(self, rollout_id: str, change: Change) -> bool:
        stored = self._get(rollout_id)
        if not stored.rollout.holds(change.expect):
            return False
        stored.rollout = stored.rollout.applied(change)
        for entry in change.entries:
            self._log(stored, entry.as_fields())
        return True

    # -- devices --------------------------------------------------------------------------

    def transition(
        self, rollout_id: str, transitions: Sequence[DeviceTransition], *, now: datetime, actor: str
    ) -> list[TransitionResult]:
        stored = self._get(rollout_id)
        results = []
        for t in transitions:
            current = stored.states.get(t.device_id)
            refusal = self._refusal(stored, t, current)
            if refusal is not None or current is None:
                results.append(TransitionResult(t.device_id, False, current, refusal))
                continue
            stored.states[t.device_id] = t.new
            if t.clear_deadline:
                stored.deadlines.pop(t.device_id, None)
            elif t.deadline is not None:
                stored.deadlines[t.device_id] = t.deadline
            if t.step is not None and t.bundle is not None:
                stored.bundles[(t.device_id, t.step)] = t.bundle
                if t.seq is not None:
                    stored.seqs.setdefault((t.device_id, t.step), []).append(t.seq)
            self._log(
                stored,
                {
                    "time": now.isoformat(),
                    "actor": actor,
                    "kind": "device",
                    "subject": t.device_id,
                    "wave": str(stored.wave_of[t.device_id]),
                    "from": current.value,
                    "to": t.new.value,
                    "cause": t.cause,
                },
            )
            results.append(TransitionResult(t.device_id, True, current))
        return results

    @staticmethod
    def _refusal(
        stored: _Stored, t: DeviceTransition, current: DeviceRolloutState | None
    ) -> TransitionRefusal | None:
        """Why `t` may not apply, checked in the Redis script's order; None if it may."""
        if current is None:
            return TransitionRefusal.UNKNOWN_DEVICE
        if t.match is not None:
            issued = stored.seqs.get((t.device_id, t.match[0]))
            if issued is None:
                return TransitionRefusal.NO_BUNDLE
            if t.match[1] not in issued:
                return TransitionRefusal.SEQ
        return None if current in t.allowed else TransitionRefusal.STATE

    def issued_seqs(self, rollout_id: str, device_id: str, step: PushStep) -> list[int]:
        """The seqs recorded for (device, step), in issue order (for tests)."""
        return list(self._get(rollout_id).seqs.get((device_id, step), []))

    def wave_counts(self, rollout_id: str, waves: int) -> list[dict[str, int]]:
        stored = self._get(rollout_id)
        counts: list[Counter[str]] = [Counter() for _ in range(waves)]
        for device, state in stored.states.items():
            wave = stored.wave_of[device]
            if wave < waves:
                counts[wave][state.value] += 1
        return [dict(c) for c in counts]

    def wave_members(self, rollout_id: str, wave: int) -> list[str]:
        return list(self._get(rollout_id).members[wave])

    def scan_wave(
        self, rollout_id: str, wave: int, states: Iterable[DeviceRolloutState]
    ) -> Iterator[list[str]]:
        stored, wanted = self._get(rollout_id), frozenset(states)
        members = [d for d in stored.members[wave] if stored.states[d] in wanted]
        for start in range(0, len(members), 7):  # small chunks: callers must not assume one
            yield members[start : start + 7]

    def device_states(
        self, rollout_id: str, device_ids: Sequence[str] | None = None
    ) -> dict[str, DeviceRolloutState]:
        states = self._get(rollout_id).states
        if device_ids is None:
            return dict(states)
        return {d: states[d] for d in device_ids if d in states}

    def devices_in(self, rollout_id: str, states: Iterable[DeviceRolloutState]) -> list[str]:
        wanted = frozenset(states)
        return sorted(d for d, s in self._get(rollout_id).states.items() if s in wanted)

    def active_tags(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, list[int]]:
        active = self._get(rollout_id).active
        return {d: list(active[d]) for d in device_ids if d in active}

    def protocol_versions(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, int]:
        versions = self._get(rollout_id).versions
        return {d: versions.get(d, 1) for d in device_ids}

    def bundles(
        self, rollout_id: str, device_ids: Sequence[str], step: PushStep
    ) -> dict[str, bytes]:
        stored = self._get(rollout_id).bundles
        return {d: stored[(d, step)] for d in device_ids if (d, step) in stored}

    def put_bundles_if_absent(
        self,
        rollout_id: str,
        step: PushStep,
        bundles: Mapping[str, bytes],
        *,
        seqs: Mapping[str, int],
    ) -> int:
        stored = self._get(rollout_id)
        count = 0
        for device, data in bundles.items():
            if (device, step) not in stored.bundles:
                stored.bundles[(device, step)] = data
                stored.seqs.setdefault((device, step), []).append(seqs[device])
                count += 1
        return count

    def overdue(self, rollout_id: str, now: float) -> list[str]:
        deadlines = self._get(rollout_id).deadlines
        return sorted(d for d, when in deadlines.items() if when <= now)

    def deadlines(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, float]:
        deadlines = self._get(rollout_id).deadlines
        return {d: deadlines[d] for d in device_ids if d in deadlines}

    def send_counts(
        self, rollout_id: str, device_ids: Sequence[str], step: PushStep
    ) -> dict[str, int]:
        seqs = self._get(rollout_id).seqs
        return {d: len(seqs[(d, step)]) for d in device_ids if seqs.get((d, step))}

    def claim_sends(
        self,
        rollout_id: str,
        step: PushStep,
        device_ids: Sequence[str],
        *,
        now: float,
        every: float,
    ) -> list[str]:
        sent = self._get(rollout_id).sent
        claimed = []
        for device in device_ids:
            last = sent.get((step, device))
            if last is None or last < now - every:
                sent[(step, device)] = now
                claimed.append(device)
        return claimed

    def sent_since(self, rollout_id: str, step: PushStep, since: float) -> set[str]:
        sent = self._get(rollout_id).sent
        return {device for (s, device), when in sent.items() if s == step and when >= since}

    # -- process coordination -------------------------------------------------------------

    def set_active(self, rollout_id: str, active: bool) -> None:
        if active:
            self._active_ids.add(rollout_id)
        else:
            self._active_ids.discard(rollout_id)

    def active_ids(self) -> list[str]:
        return sorted(self._active_ids)

    def lock(self, rollout_id: str, owner: str, ttl_ms: int = 30_000) -> bool:
        if rollout_id in self._locks:
            return False
        self._locks[rollout_id] = owner
        return True

    def unlock(self, rollout_id: str, owner: str) -> None:
        if self._locks.get(rollout_id) == owner:
            del self._locks[rollout_id]

    def debounce(self, rollout_id: str, ttl_ms: int) -> bool:
        if rollout_id in self._debounced:
            return False
        self._debounced.add(rollout_id)
        return True

    def log(self, rollout_id: str, *, count: int | None = None) -> list[dict[str, str]]:
        entries = list(self._get(rollout_id).log)
        return entries if count is None else entries[:count]

    def events(self, rollout_id: str) -> list[dict[str, str]]:
        return [dict(e) for e in self._get(rollout_id).log if e.get("kind") != "device"]

    def log_tail(self, rollout_id: str, count: int) -> list[dict[str, str]]:
        return [dict(e) for e in reversed(self._get(rollout_id).log)][:count]

    def devices_page(
        self,
        rollout_id: str,
        states: Iterable[DeviceRolloutState],
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[str]]:
        wanted = frozenset(states)
        if DeviceRolloutState.PENDING in wanted:
            raise ValueError("devices_page reads the per-state sets; pending has none")
        found = sorted(d for d, s in self._get(rollout_id).states.items() if s in wanted)
        start = max(offset, 0)
        return len(found), found[start : start + max(count, 0)]


@dataclass
class RecordingTasks:
    """`RolloutTasks` that records what the engine enqueues instead of running it."""

    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    refresh_countdowns: list[float] = field(default_factory=list)
    """The countdown of each `refresh_crl` enqueued."""

    def start_rollout(self, rollout_id: str) -> None:
        self.calls.append(("start_rollout", (rollout_id,)))

    def dispatch_wave(self, rollout_id: str, wave: int) -> None:
        self.calls.append(("dispatch_wave", (rollout_id, wave)))

    def push_batch(
        self,
        rollout_id: str,
        wave: int,
        device_ids: Sequence[str],
        step: PushStep,
        *,
        countdown: float,
    ) -> None:
        self.calls.append(("push_batch", (rollout_id, wave, list(device_ids), step, countdown)))

    def evaluate_rollout(self, rollout_id: str, *, countdown: float = 0) -> None:
        self.calls.append(("evaluate_rollout", (rollout_id, countdown)))

    def rollback_rollout(self, rollout_id: str) -> None:
        self.calls.append(("rollback_rollout", (rollout_id,)))

    def issue_identities(self, rollout_id: str, wave: int, device_ids: Sequence[str]) -> None:
        self.calls.append(("issue_identities", (rollout_id, wave, list(device_ids))))

    def revoke_identities(self, rollout_id: str, device_ids: Sequence[str]) -> None:
        self.calls.append(("revoke_identities", (rollout_id, list(device_ids))))

    def refresh_crl(self, *, countdown: float = 0) -> None:
        self.calls.append(("refresh_crl", ()))
        self.refresh_countdowns.append(countdown)

    def named(self, name: str) -> list[tuple[object, ...]]:
        """The arguments of every call of `name`, in order."""
        return [args for n, args in self.calls if n == name]

    def pushes(self, step: PushStep) -> list[list[str]]:
        """The device batches pushed for `step`, in order."""
        return [list(args[2]) for args in self.named("push_batch") if args[3] == step]  # type: ignore[call-overload]


@dataclass
class FakeMetrics:
    """`Metrics` that keeps counters and gauges in a dict."""

    counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=Counter)
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def incr(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1) -> None:
        self.counters[(name, tuple(sorted((labels or {}).items())))] += amount  # type: ignore[assignment]

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self.gauges[(name, tuple(sorted((labels or {}).items())))] = value


@dataclass
class FakeSequences:
    """`SequenceStore` counting per device in memory."""

    last: Counter[str] = field(default_factory=Counter)

    def next_sequence(self, device_id: str) -> int:
        self.last[device_id] += 1
        return self.last[device_id]

    def next_sequences(self, device_ids: Sequence[str]) -> dict[str, int]:
        return {d: self.next_sequence(d) for d in device_ids}


class PublishFailedError(TransientError):
    """The fake broker went away (`FakePublisher.fail_after`)."""


@dataclass
class FakePublisher:
    """`BundlePublisher` that keeps what it was given, in order.

    Acknowledgements come in runs of `ack_run`; with `fail_after` set, the broker
    acknowledges that many bundles and then fails the publish, as a worker killed or a
    broker lost mid-batch would leave it.
    """

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    ack_run: int = 3
    fail_after: int | None = None

    def publish_bundle(self, device_id: str, data: bytes, *, expiry_seconds: int) -> None:
        self.sent.append((device_id, data))

    def publish_bundles(
        self,
        bundles: Iterable[tuple[str, bytes]],
        *,
        expiry_seconds: int,
        on_acked: Callable[[list[str]], None] | None = None,
    ) -> int:
        acked: list[str] = []
        total = 0

        def report() -> None:
            if on_acked is not None and acked:
                on_acked(list(acked))
            acked.clear()

        for device_id, data in bundles:
            if self.fail_after is not None and total >= self.fail_after:
                report()
                raise PublishFailedError(f"no PUBACK for {device_id}")
            self.sent.append((device_id, data))
            acked.append(device_id)
            total += 1
            if len(acked) >= self.ack_run:
                report()
        report()
        return total


class FakeSigner:
    """`BundleSigner` with a P-256 key made in memory."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """What a device trusts to verify this signer's bundles."""
        return self._key.public_key()

    @property
    def key_id(self) -> bytes:
        return key_id(self.public_key)

    def delegation_for(self, expires_at: int) -> bytes | None:
        """None: this fake is a root key, trusted by devices as it is."""
        return None

    def sign(self, to_be_signed: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(to_be_signed, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@dataclass
class FakeDelegationRegistry:
    """`DelegationRegistry` in memory; `fail` makes `record` raise (a store away)."""

    issued: dict[bytes, IssuedDelegation] = field(default_factory=dict)
    revoked: Revocation = field(default_factory=Revocation)
    fail: bool = False
    revocation_reads: int = 0

    def record(self, delegation: Delegation, worker: str) -> None:
        if self.fail:
            raise TransientError("the fake registry is away")
        self.issued[delegation.kid] = IssuedDelegation(delegation=delegation, worker=worker)

    def active(self, now: datetime) -> list[IssuedDelegation]:
        at = now.timestamp()
        return sorted(
            (i for i in self.issued.values() if i.delegation.expires_at > at),
            key=lambda i: (i.delegation.issued_at, i.delegation.kid),
        )

    def revocation(self) -> Revocation:
        self.revocation_reads += 1
        return self.revoked

    def set_revocation(self, revocation: Revocation) -> None:
        self.revoked = revocation
