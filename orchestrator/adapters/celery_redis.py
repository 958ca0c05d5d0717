"""Celery's Redis transport, made to survive a Redis restart while a worker holds a task.

When the connection to Redis breaks, Celery's consumer first collects the broken
connection (which closes its channel and tries to put the unacknowledged messages
back, failing while Redis is away), then closes the connection again. By then the
channel's transport has been detached from its connection, so the second attempt
to restore reads the broker address from nothing and raises `AttributeError`,
which the worker treats as unrecoverable: it exits (kombu 5.x with celery 5.7,
seen on every Redis SIGKILL or SIGTERM that met a reserved or running task).

`Channel.close` here lets that one case pass: the channel is closed either way,
and the messages it could not put back stay in Redis's unacked index, from which
any worker restores them once the visibility timeout has passed
(`celery_queue.VISIBILITY_TIMEOUT_SECONDS`); the engine's tick does not wait for
that (a wave whose pushes went missing is dispatched again). Selected by
`celery_queue.celery_config` for `redis://` and `rediss://` broker URLs.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
    """A channel whose second close, after its transport was detached, is harmless."""

    def close(self) -> None:
        try:
            super().close()
        except AttributeError:
            if getattr(self.connection, "client", None) is not None:
                raise  # not the detached-transport case: a real bug, let it show
            log.warning(
                "broker connection closed while Redis was away; unacknowledged "
                "messages stay in Redis until the visibility timeout restores them"
            )


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with `Channel` above."""

    Channel = Channel
