"""Beat's scheduler: redbeat's, riding out a Redis restart instead of exiting.

redbeat keeps the schedule and beat's lock in Redis. Left alone, a lost connection
escapes its `tick` and beat exits; so does a lock that expired or vanished while
Redis was away (`LockNotOwnedError` on the next extend). Here a tick that cannot
reach Redis waits `RETRY_SECONDS` and tries again, and a lock no longer ours is
acquired again, blocking as at start-up while another beat holds it (that beat
schedules meanwhile). After either, the static schedule is stored again (a Redis
that restarted without its data has none, and redbeat only stores it at start-up);
an entry that survived keeps its last run. A due run missed during the outage is
sent on the first tick after it.

On a Redis Cluster store (`CERTFLEET_REDIS_CLUSTER=true`) redbeat uses the cluster
client (`celery_queue.celery_config` passes `cluster: True`): the schedule's keys and
the lock live on the cluster, each command on one key or in a non-transactional
pipeline, the lock's scripts on its one key. What the cluster answers while a master
fails over (`redis_errors.STORE_AWAY`: cluster down, a slot not served yet, TRYAGAIN)
and a cluster none of whose nodes answers (`RedisClusterException`, at start-up) count
as Redis away too.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Final

import redis
from celery.utils.log import get_logger
from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock
from redis.exceptions import RedisClusterException
from redis.lock import Lock

from orchestrator.adapters.redis_errors import STORE_AWAY

__all__ = ["RETRY_SECONDS", "ReconnectingRedBeatScheduler"]

RETRY_SECONDS: Final = 1.0
"""How long beat waits before it tries an unreachable Redis again."""

REDIS_AWAY: Final = (*STORE_AWAY, RedisClusterException)
"""What beat waits out: a Redis, or a Redis Cluster, that cannot answer for now."""

logger = get_logger("celery.beat")


class ReconnectingRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]  # redbeat is untyped
    """`RedBeatScheduler` that survives a Redis restart, graceful or killed."""

    lock: Lock | None = None
    _schedule_lost = False

    def setup_schedule(self) -> None:
        """Store the static entries, waiting for Redis if it is away at start-up."""
        while True:
            try:
                super().setup_schedule()
            except REDIS_AWAY as exc:
                logger.warning("beat: Redis unreachable at start-up (%s); retrying", exc)
                time.sleep(RETRY_SECONDS)
            else:
                return

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One round of redbeat's tick; seconds until the next one."""
        try:
            if self.lock_key and self.lock is None:
                self._acquire_lock()
            if self._schedule_lost:
                super().setup_schedule()
                self._schedule_lost = False
            interval: float = super().tick(*args, **kwargs)
        except redis.exceptions.LockError as exc:
            logger.warning("beat: lost the lock (%s); acquiring it again", exc)
            self.lock = None
            self._schedule_lost = True
            return 0.0
        except REDIS_AWAY as exc:
            logger.warning("beat: Redis unreachable (%s); retrying in %ss", exc, RETRY_SECONDS)
            self._schedule_lost = True
            return RETRY_SECONDS
        return interval

    def _acquire_lock(self) -> None:
        """Take beat's lock as redbeat does at start-up (blocks while another beat has it)."""
        acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=self))
