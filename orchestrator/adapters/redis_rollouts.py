"""Rollout state in Redis: per-device transitions, per-wave counts and the audit log.

Keys of one rollout share the hash tag `{rollout_id}`, so they live in one slot:

- `certfleet:ro:{id}:meta` (hash): spec, state, seed, waves, per-wave state and times,
  and `buckets`, how many record buckets the rollout's devices are spread over;
- `…:d:{b}` (hash, one per bucket, about 64 devices each, listpack-encoded): device ->
  its record `"<state> <wave> <active tags> <protocol version>"` (`redis_rollout_plan`);
- `…:m:{i}:{c}` (string): wave i's devices, newline-separated, 1,000 a string (fixed
  when the rollout is created);   `…:counts:{i}` (hash): state -> devices of wave i;
- `…:s:{state}` (set): the devices in that state, for every state but `pending`
  (so a step finds its devices in O(k)); the pending devices are found by reading
  the members of the waves whose counts still have any (dispatch, once per wave);
- `…:bundle` (hash): `{device}:{step}` -> the signed bundle sent for that step;
- `…:seq` (hash): `{device}:{step}` -> the seqs of every bundle issued for that step,
  space-separated (a re-send adds a fresh one; a late report about an earlier one matches);
- `…:deadline` (zset): device -> when its stage is due a re-send (while re-sends remain)
  or when it times out;   `…:log` (stream): the audit trail, a device entry per
  transition;   `…:events` (stream): its rollout and wave entries again (written by
  `create` and `change` beside the log's), so the console reads a 100,000-device
  rollout's gate decisions without its device entries;
- `…:sent:{step}` (zset): device -> when a send of the step (a commit, a stage re-send)
  was last claimed, so overlapping evaluations send it once per period;
- `…:claiming` (string, expires): the rollout's devices are being claimed (`redis_claims`).

Global: `certfleet:rollouts` (zset: id -> created), written after the rollout's own
keys (another slot), and `certfleet:rollouts:active` (set); the claims live in the
devices' shards (`redis_claims`).

A device transition is one Lua call (`lua/rollout_transition.lua`): it checks the
current state against the states the new one may come from, moves the wave counts,
keeps the deadline, stores the step's bundle and appends to the log — all in one
atomic step, so a duplicate or late report changes nothing and the counts always add
up. A device's report applies only if the (step, seq) it answers is among the seqs
issued to the device, checked in the same script, so a report about no bundle of this
rollout changes nothing (`redis_transitions` is the script's wire form). The meta hash
reads as the `Rollout` aggregate through `redis_rollout_codec`; a rollout changes only
by `change`, a WATCH transaction guarded by the change's `Expect`. Every script and
transaction touches the rollout's slot only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import redis

from orchestrator.adapters.redis_claims import claim_devices, release_devices
from orchestrator.adapters.redis_connection import RedisClient, raw_twin
from orchestrator.adapters.redis_errors import load_script, store_errors
from orchestrator.adapters.redis_rollout_codec import decode_rollout, encode_change, encode_expect
from orchestrator.adapters.redis_rollout_plan import (
    ROLLOUTS,
    UNSET,
    active_of,
    rollout_key,
    state_of,
    version_of,
    write_planned,
)
from orchestrator.adapters.redis_rollout_records import DeviceRecords
from orchestrator.adapters.redis_script_calls import ScriptCall, run_script_calls
from orchestrator.adapters.redis_transitions import decode_results, encode_transitions
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    TransitionResult,
)

__all__ = ["SCAN_COUNT", "TRANSITION_CHUNK", "RedisRollouts"]

TRANSITION_CHUNK = 500
"""Most transitions in one Lua call: a long batch goes as several calls in one round trip,
so Redis never runs one script for long."""


SCAN_COUNT = 1000
"""Devices read at a time when a wave is read in chunks (its member strings hold 1,000)."""
LOG_CHUNK: Final = 10_000
"""Audit entries read at a time when a rollout's `events` are rebuilt from its log."""


class RedisRollouts:
    """The rollout store."""

    def __init__(self, client: RedisClient) -> None:
        # redis-py's sync signatures are typed for the async client too; the store
        # keeps its clients untyped rather than cast every reply.
        self._redis: Any = client
        self._bytes: Any = raw_twin(client)
        self._transition = load_script(client, "orchestrator.adapters", "rollout_transition")
        self._claim_sends = load_script(client, "orchestrator.adapters", "rollout_claim_sends")
        self._put_bundles = load_script(client, "orchestrator.adapters", "rollout_put_bundles")
        self._page = load_script(client, "orchestrator.adapters", "rollout_devices_page")
        self._log_scan = load_script(client, "orchestrator.adapters", "rollout_log_scan")
        self._devices = DeviceRecords(client)

    # -- creation ----------------------------------------------------------------------------

    def claim(self, rollout_id: str, tags: Sequence[int], device_ids: Sequence[str]) -> list[str]:
        """Claim each device for this rollout; return the devices held by another one."""
        return claim_devices(self._redis, rollout_id, device_ids)

    def release(self, rollout_id: str, tags: Sequence[int], device_ids: Iterable[str]) -> None:
        """Drop this rollout's claims (only those it holds)."""
        release_devices(self._redis, rollout_id, device_ids)

    def create(
        self,
        rollout: Rollout,
        *,
        waves: Sequence[Sequence[str]],
        active: Mapping[str, Sequence[int]],
        actor: str,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        """Write a planned rollout: every device `pending` in its wave."""
        with store_errors():
            pipe = self._redis.pipeline(transaction=True)  # the rollout's slot only
            layout = write_planned(
                pipe, rollout, waves=waves, active=active, versions=versions or {}, actor=actor
            )
            pipe.xadd(
                rollout_key(rollout.id, "events"), rollout.created_entry(actor=actor).as_fields()
            )
            pipe.execute()
            # Indexed once its own keys are written: the index is another slot.
            self._redis.zadd(ROLLOUTS, {rollout.id: rollout.created_at.timestamp()})
        self._devices.remember(layout)

    # -- reading -----------------------------------------------------------------------------

    def exists(self, rollout_id: str) -> bool:
        with store_errors():
            return bool(self._redis.exists(rollout_key(rollout_id, "meta")))

    def get(self, rollout_id: str) -> Rollout | None:
        with store_errors():
            meta: dict[str, str] = self._redis.hgetall(rollout_key(rollout_id, "meta"))
        return decode_rollout(meta) if meta else None

    def list_ids(self, limit: int = 100) -> list[str]:
        with store_errors():
            return list(self._redis.zrevrange(ROLLOUTS, 0, limit - 1))

    def wave_counts(self, rollout_id: str, waves: int) -> list[dict[str, int]]:
        with store_errors():
            pipe = self._redis.pipeline(transaction=False)
            for index in range(waves):
                pipe.hgetall(rollout_key(rollout_id, f"counts:{index}"))
            return [
                {state: int(n) for state, n in raw.items() if int(n) != 0} for raw in pipe.execute()
            ]

    def wave_members(self, rollout_id: str, wave: int) -> list[str]:
        with store_errors():
            return sorted(d for chunk in self._devices.members(rollout_id, wave) for d in chunk)

    def device_states(
        self, rollout_id: str, device_ids: Sequence[str] | None = None
    ) -> dict[str, DeviceRolloutState]:
        with store_errors():
            if device_ids is None:
                every = self._devices.every(rollout_id)
                return {d: DeviceRolloutState(state_of(r)) for d, r in every}
            if not device_ids:
                return {}
            records = self._devices.records(rollout_id, device_ids)
            return {
                d: DeviceRolloutState(state_of(r))
                for d, r in zip(device_ids, records, strict=True)
                if r is not None
            }

    def devices_in(self, rollout_id: str, states: Iterable[DeviceRolloutState]) -> list[str]:
        """Devices whose state is one of `states`."""
        wanted = {state.value for state in states}
        with store_errors():
            pipe = self._redis.pipeline(transaction=False)
            for state in wanted - {UNSET}:
                pipe.smembers(rollout_key(rollout_id, f"s:{state}"))
            found: set[str] = set().union(*pipe.execute())
            if UNSET in wanted:
                found.update(self._pending(rollout_id))
            return sorted(found)

    def _pending(self, rollout_id: str) -> Iterator[str]:
        """The devices still pending, which no set lists: the counts say which waves have
        any (none once every wave was dispatched), and only those waves are read."""
        waves = len(self._devices.layout(rollout_id).sizes)
        pipe = self._redis.pipeline(transaction=False)
        for wave in range(waves):
            pipe.hget(rollout_key(rollout_id, f"counts:{wave}"), UNSET)
        for wave, pending in enumerate(pipe.execute()):
            if int(pending or 0) > 0:
                for chunk in self.scan_wave(rollout_id, wave, [DeviceRolloutState.PENDING]):
                    yield from chunk

    def put_bundles_if_absent(
        self,
        rollout_id: str,
        step: PushStep,
        bundles: Mapping[str, bytes],
        *,
        seqs: Mapping[str, int],
    ) -> int:
        """Keep the first bundle issued for each (device, step), recording its seq; how
        many were stored (all of them unless a bundle of the step was there already).

        One script call: a later bundle is dropped and its seq, never sent, not recorded.
        """
        if not bundles:
            return 0
        triples: list[str | bytes] = []
        for device, data in bundles.items():
            triples += [device, str(seqs[device]), data]
        with store_errors():
            stored = self._put_bundles(
                keys=[rollout_key(rollout_id, "bundle"), rollout_key(rollout_id, "seq")],
                args=[step.value, *triples],
                client=self._bytes,
            )
        return int(stored)

    def set_active(self, rollout_id: str, active: bool) -> None:
        """Keep the set of rollouts the beat tick looks at."""
        with store_errors():
            if active:
                self._redis.sadd(ROLLOUTS + ":active", rollout_id)
            else:
                self._redis.srem(ROLLOUTS + ":active", rollout_id)

    def active_ids(self) -> list[str]:
        with store_errors():
            return sorted(self._redis.smembers(ROLLOUTS + ":active"))

    def active_tags(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, list[int]]:
        with store_errors():
            if not device_ids:
                return {}
            records = self._devices.planned(rollout_id, device_ids)
            return {d: active_of(r) for d, r in zip(device_ids, records, strict=True) if r}

    def protocol_versions(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, int]:
        with store_errors():
            if not device_ids:
                return {}
            records = self._devices.planned(rollout_id, device_ids)
            return {d: version_of(r) if r else 1 for d, r in zip(device_ids, records, strict=True)}

    def bundle(self, rollout_id: str, device_id: str, step: PushStep) -> bytes | None:
        with store_errors():
            value = self._bytes.hget(rollout_key(rollout_id, "bundle"), f"{device_id}:{step.value}")
            return bytes(value) if value is not None else None

    def bundles(
        self, rollout_id: str, device_ids: Sequence[str], step: PushStep
    ) -> dict[str, bytes]:
        with store_errors():
            if not device_ids:
                return {}
            values = self._bytes.hmget(
                rollout_key(rollout_id, "bundle"), [f"{d}:{step.value}" for d in device_ids]
            )
            return {d: bytes(v) for d, v in zip(device_ids, values, strict=True) if v is not None}

    def overdue(self, rollout_id: str, now: float) -> list[str]:
        with store_errors():
            return list(self._redis.zrangebyscore(rollout_key(rollout_id, "deadline"), "-inf", now))

    def deadlines(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, float]:
        with store_errors():
            if not device_ids:
                return {}
            scores = self._redis.zmscore(rollout_key(rollout_id, "deadline"), list(device_ids))
            return {d: float(v) for d, v in zip(device_ids, scores, strict=True) if v is not None}

    def send_counts(
        self, rollout_id: str, device_ids: Sequence[str], step: PushStep
    ) -> dict[str, int]:
        with store_errors():
            if not device_ids:
                return {}
            values = self._redis.hmget(
                rollout_key(rollout_id, "seq"), [f"{d}:{step.value}" for d in device_ids]
            )
            return {d: len(v.split()) for d, v in zip(device_ids, values, strict=True) if v}

    def log(self, rollout_id: str, *, count: int | None = None) -> list[dict[str, str]]:
        with store_errors():
            entries = self._redis.xrange(rollout_key(rollout_id, "log"), count=count)
            return [{"id": entry_id, **fields} for entry_id, fields in entries]

    def events(self, rollout_id: str) -> list[dict[str, str]]:
        """The rollout and wave entries of the log, from `…:events`.

        A rollout stored before `…:events` existed (its first entry is not the log's
        first line, `created`) has them rebuilt from its log once, with the log's ids.
        """
        with store_errors():
            entries = self._redis.xrange(rollout_key(rollout_id, "events"))
            if not (entries and _is_created(entries[0][1])):
                entries = self._rebuild_events(rollout_id)
            return [{"id": entry_id, **fields} for entry_id, fields in entries]

    def _rebuild_events(self, rollout_id: str) -> list[tuple[str, dict[str, str]]]:
        """Copy the log's rollout and wave entries to `…:events`, replacing what is there.

        The log is read a stretch at a time, filtered on the server (`rollout_log_scan`),
        while `…:events` is watched: a `change` in between (which appends to both
        streams) makes it read the log again, so no entry is lost or doubled.
        """
        key, log_key = rollout_key(rollout_id, "events"), rollout_key(rollout_id, "log")
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    found: list[tuple[str, dict[str, str]]] = []
                    start = "-"
                    while True:
                        read, last, kept = self._log_scan(keys=[log_key], args=[start, LOG_CHUNK])
                        found += [(i, dict(zip(f[::2], f[1::2], strict=True))) for i, f in kept]
                        if int(read) < LOG_CHUNK:
                            break
                        start = f"({last}"
                    if not found:
                        pipe.unwatch()
                        return []
                    pipe.multi()
                    pipe.delete(key)
                    for entry_id, fields in found:
                        pipe.xadd(key, fields, id=entry_id)
                    pipe.execute()
                    return found
                except redis.WatchError:
                    continue

    def log_tail(self, rollout_id: str, count: int) -> list[dict[str, str]]:
        with store_errors():
            entries = self._redis.xrevrange(rollout_key(rollout_id, "log"), count=count)
            return [{"id": entry_id, **fields} for entry_id, fields in entries]

    def devices_page(
        self,
        rollout_id: str,
        states: Iterable[DeviceRolloutState],
        *,
        offset: int,
        count: int,
    ) -> tuple[int, list[str]]:
        """One script call: the sets' union sorted on the server, only the page returned."""
        wanted = sorted({s.value for s in states})
        if UNSET in wanted:
            raise ValueError("devices_page reads the per-state sets; pending has none")
        if not wanted:
            return 0, []
        keys = [rollout_key(rollout_id, "page")]
        keys += [rollout_key(rollout_id, f"s:{state}") for state in wanted]
        with store_errors():
            total, page = self._page(keys=keys, args=[max(offset, 0), max(count, 0)])
        return int(total), [d.decode() if isinstance(d, bytes) else str(d) for d in page]

    # -- writing -----------------------------------------------------------------------------

    def transition(
        self,
        rollout_id: str,
        transitions: Sequence[DeviceTransition],
        *,
        now: datetime,
        actor: str,
    ) -> list[TransitionResult]:
        """Apply device transitions in one Lua call, in order; each as it would alone.

        A transition with `match` applies only if that (step, seq) was issued to the device.
        """
        if not transitions:
            return []
        names = ("deadline", "bundle", "log", "seq")
        keys = [rollout_key(rollout_id, name) for name in names]
        prefix = rollout_key(rollout_id, "")
        with store_errors():
            bucket = self._devices.layout(rollout_id).bucket
            calls = []
            for i in range(0, len(transitions), TRANSITION_CHUNK):
                items, bundles = encode_transitions(transitions[i : i + TRANSITION_CHUNK], bucket)
                args = [prefix, now.isoformat(), actor, items, *bundles]
                calls.append(ScriptCall(self._transition, keys, args))
            answers = run_script_calls(self._bytes, calls)
        return decode_results(transitions, answers)

    def change(self, rollout_id: str, change: Change) -> bool:
        """Write the change's fields and log entries, only if its guard holds.

        Uses WATCH so two evaluators never both apply one state change.
        """
        key = rollout_key(rollout_id, "meta")
        fields = encode_change(change)
        checks = encode_expect(change.expect)
        with store_errors(), self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    for field, accepted in checks:
                        if pipe.hget(key, field) not in accepted:
                            pipe.unwatch()
                            return False
                    pipe.multi()
                    if fields:
                        pipe.hset(key, mapping=fields)
                    for entry in change.entries:
                        pipe.xadd(rollout_key(rollout_id, "log"), entry.as_fields())
                        pipe.xadd(rollout_key(rollout_id, "events"), entry.as_fields())
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def lock(self, rollout_id: str, owner: str, ttl_ms: int = 30_000) -> bool:
        """A short exclusive lock for the rollout's evaluator."""
        with store_errors():
            return bool(self._redis.set(rollout_key(rollout_id, "lock"), owner, nx=True, px=ttl_ms))

    def unlock(self, rollout_id: str, owner: str) -> None:
        with store_errors():
            key = rollout_key(rollout_id, "lock")
            if self._redis.get(key) == owner:
                self._redis.delete(key)

    def claim_sends(
        self,
        rollout_id: str,
        step: PushStep,
        device_ids: Sequence[str],
        *,
        now: float,
        every: float,
    ) -> list[str]:
        """Devices whose `step` bundle was not sent in the last `every` seconds, now marked sent.

        One script call: the claim and its check are atomic, so evaluations that overlap
        (the listener's, beat's) send a device's commit once per `every`, not once each.
        """
        if not device_ids:
            return []
        key = rollout_key(rollout_id, f"sent:{step.value}")
        with store_errors():
            calls = [  # short scripts: Redis stays responsive
                ScriptCall(
                    self._claim_sends,
                    [key],
                    [repr(now), repr(now - every), *device_ids[i : i + 500]],
                )
                for i in range(0, len(device_ids), 500)
            ]
            claimed = [d for chunk in run_script_calls(self._redis, calls) for d in chunk]
        return [c.decode() if isinstance(c, bytes) else str(c) for c in claimed]

    def sent_since(self, rollout_id: str, step: PushStep, since: float) -> set[str]:
        """Devices whose `step` send was claimed at or after `since` (one ZRANGEBYSCORE)."""
        with store_errors():
            key = rollout_key(rollout_id, f"sent:{step.value}")
            return set(self._redis.zrangebyscore(key, repr(since), "+inf"))

    def debounce(self, rollout_id: str, ttl_ms: int) -> bool:
        """True for the first caller in `ttl_ms` (the listener's evaluation debounce)."""
        with store_errors():
            return bool(self._redis.set(rollout_key(rollout_id, "eval"), "1", nx=True, px=ttl_ms))

    def scan_wave(
        self,
        rollout_id: str,
        wave: int,
        states: Iterable[DeviceRolloutState],
        *,
        count: int = SCAN_COUNT,
    ) -> Iterator[list[str]]:
        """The wave's devices whose state is one of `states`, a chunk at a time.

        The wave's member strings are read one at a time and each chunk's records in
        one script call, so memory stays the size of a chunk (about `count` devices)
        however large the wave. A wave's members are fixed when the rollout is
        created, so each device comes once.
        """
        wanted = frozenset(s.value for s in states)
        with store_errors():
            for members in self._devices.members(rollout_id, wave):
                for start in range(0, len(members), count):
                    part = members[start : start + count]
                    records = self._devices.records(rollout_id, part)
                    chunk = sorted(
                        d for d, r in zip(part, records, strict=True) if r and state_of(r) in wanted
                    )
                    if chunk:
                        yield chunk


def _is_created(fields: Mapping[str, str]) -> bool:
    """Whether an audit entry is a rollout's first, `created` (`Rollout.created_entry`)."""
    return (
        fields.get("kind") == "rollout"
        and fields.get("from") == ""
        and (fields.get("cause") == "created")
    )
