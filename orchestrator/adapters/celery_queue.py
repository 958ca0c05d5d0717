"""Celery configuration shared by the worker app and the clients that enqueue on it.

The broker is Redis (`redis://`, the default: the state store's URL) or RabbitMQ
(`CERTFLEET_BROKER_URL=amqp://...`, the broker Celery recommends for production).
What differs between the two is chosen here, from the broker URL's scheme:

- **Redis**: kombu's Redis transport with `celery_redis.Transport` (it survives a
  Redis restart); a task taken by a worker that died is handed out again after the
  visibility timeout (`VISIBILITY_TIMEOUT_SECONDS`), swept for every
  `RESTORE_SWEEP_SECONDS`. The result backend is the state store's Redis.
- **RabbitMQ** (`amqp://`, `amqps://`, `pyamqp://`): the control, push and scan
  queues are quorum queues (replicated, durable; `x-queue-type: quorum`) on topic
  exchanges, so a countdown (a wave's bake, a debounced evaluation) waits in the
  broker's delay queues (Celery's native delayed delivery, quorum too) instead of in
  a worker's memory. Every publish waits for the broker's confirm
  (`confirm_publish`). A worker's unacknowledged task goes back to the queue as soon
  as the worker's connection closes (a SIGKILL included): no visibility timeout.
  Quorum queues refuse a global QoS, so the worker asks for a per-consumer prefetch
  (`worker_detect_quorum_queues`); no priorities are used. The result backend, unless
  `CERTFLEET_RESULT_BACKEND` names one, is `rpc://`: results travel back over
  RabbitMQ to the client that waits for them (only `certfleet scan` does), since
  Celery's Redis result backend cannot use a Redis Cluster.

`acks_late` holds on both: a task is acknowledged when it has run, so a worker lost
mid-task leaves it to another worker. RabbitMQ closes the channel of a consumer that
holds a delivery unacknowledged longer than its `consumer_timeout` (30 minutes by
default), and hands what the channel held to another worker. A worker's prefetch is
per consumer on quorum queues (one consumer per queue, `concurrency` deliveries each),
so a delivery may wait behind one task per queue before its own run:
`CONSUMER_TIMEOUT_FLOOR_SECONDS` (40 minutes) is the least `consumer_timeout` that
never takes a live task away; the shipped deployment sets one hour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from celery import Celery
from kombu import Exchange, Queue

from orchestrator.adapters.redis_connection import (
    CONNECT_TIMEOUT_SECONDS,
    HEALTH_CHECK_SECONDS,
    SOCKET_TIMEOUT_SECONDS,
    socket_options,
)
from orchestrator.config import Settings
from orchestrator.domain.rollout_states import PushStep

__all__ = [
    "CONSUMER_TIMEOUT_FLOOR_SECONDS",
    "QUEUES",
    "QUEUE_OF",
    "TASK_DISPATCH_WAVE",
    "TASK_EVALUATE_ROLLOUT",
    "TASK_ISSUE_IDENTITIES",
    "TASK_PLAN_IDENTITY_ROTATIONS",
    "TASK_PUSH_BATCH",
    "TASK_REFRESH_CRL",
    "TASK_REVOKE_IDENTITIES",
    "TASK_ROLLBACK_ROLLOUT",
    "TASK_SCAN_FLEET",
    "TASK_START_ROLLOUT",
    "TASK_TICK_ROLLOUTS",
    "TASK_TIME_LIMIT_SECONDS",
    "TASK_WATCH_RENEWALS",
    "VISIBILITY_TIMEOUT_SECONDS",
    "CeleryTaskQueue",
    "broker_kind",
    "celery_config",
    "result_backend_url",
]

TASK_SCAN_FLEET = "certfleet.scan_fleet"
TASK_START_ROLLOUT = "certfleet.start_rollout"
TASK_DISPATCH_WAVE = "certfleet.dispatch_wave"
TASK_PUSH_BATCH = "certfleet.push_batch"
TASK_EVALUATE_ROLLOUT = "certfleet.evaluate_rollout"
TASK_TICK_ROLLOUTS = "certfleet.tick_rollouts"
TASK_ROLLBACK_ROLLOUT = "certfleet.rollback_rollout"
TASK_WATCH_RENEWALS = "certfleet.watch_renewals"
TASK_ISSUE_IDENTITIES = "certfleet.issue_identities"
TASK_REVOKE_IDENTITIES = "certfleet.revoke_identities"
TASK_REFRESH_CRL = "certfleet.refresh_crl"
TASK_PLAN_IDENTITY_ROTATIONS = "certfleet.plan_identity_rotations"

QUEUE_OF: Final[Mapping[str, str]] = MappingProxyType(
    {
        TASK_SCAN_FLEET: "scan",
        TASK_PUSH_BATCH: "push",
        TASK_START_ROLLOUT: "control",
        TASK_DISPATCH_WAVE: "control",
        TASK_EVALUATE_ROLLOUT: "control",
        TASK_TICK_ROLLOUTS: "control",
        TASK_ROLLBACK_ROLLOUT: "control",
        TASK_WATCH_RENEWALS: "control",
        # issuance waits on the issuer and publishes bundles: beside the other pushes
        TASK_ISSUE_IDENTITIES: "push",
        TASK_REVOKE_IDENTITIES: "control",
        TASK_REFRESH_CRL: "control",
        TASK_PLAN_IDENTITY_ROTATIONS: "control",
    }
)
"""Each task's queue, named here only: the workers' routes, the clients' sends and the
beat entries all read it."""
QUEUES: Final = tuple(sorted(set(QUEUE_OF.values())))

TASK_TIME_LIMIT_SECONDS: Final = 600
"""The longest any certfleet task runs (`CertfleetTask.time_limit`) before it is killed."""

VISIBILITY_TIMEOUT_SECONDS: Final = TASK_TIME_LIMIT_SECONDS + 300
"""How long a task taken by a worker may stay unacknowledged before Redis hands it
to another worker: the task of a killed worker runs again after this long (plus
up to `RESTORE_SWEEP_SECONDS`). Longer than any run (`TASK_TIME_LIMIT_SECONDS`)
plus the default bake countdown (300 s), so a live task is never delivered twice."""

RESTORE_SWEEP_SECONDS: Final = 30
"""How often a worker looks for tasks whose visibility timeout has passed."""

PUBLISH_RETRY_POLICY: Final[Mapping[str, float]] = MappingProxyType(
    {"max_retries": 30, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}
)
"""Sending a task (or a task's retry, or a result) waits out a broker that is away
for about a minute (30 tries, 0, 0.5, 1, 1.5 s, then 2 s apart) before it fails: a
retry whose send fails is dropped by Celery (`Reject(requeue=False)`), so this must
outlast a Redis restart."""


CONSUMER_TIMEOUT_FLOOR_SECONDS: Final = (len(QUEUES) + 1) * TASK_TIME_LIMIT_SECONDS
"""The least `consumer_timeout` a RabbitMQ broker may have (its default, 1800 s, is
less): a delivery prefetched on each of the worker's queues may wait behind a task
per queue, at most `TASK_TIME_LIMIT_SECONDS` each, then run itself before its ack."""

AMQP_SCHEMES: Final = frozenset({"amqp", "amqps", "pyamqp"})
REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "redis+socket", "sentinel"})


def broker_kind(broker_url: str) -> str:
    """`"amqp"` for a RabbitMQ broker URL, `"redis"` for a Redis one, else `"other"`
    (configured as before RabbitMQ was supported: the Redis transport's options)."""
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme in AMQP_SCHEMES:
        return "amqp"
    if scheme in REDIS_SCHEMES:
        return "redis"
    return "other"


def result_backend_url(settings: Settings) -> str:
    """Celery's result backend: `CERTFLEET_RESULT_BACKEND`; else `rpc://` with a RabbitMQ
    broker (results over the broker: works whatever the state store, a Redis Cluster
    included), the state store's Redis with a Redis broker."""
    if settings.result_backend:
        return settings.result_backend
    if broker_kind(settings.celery_broker_url) == "amqp":
        return "rpc://"
    return settings.celery_result_backend


def _broker_settings(settings: Settings) -> dict[str, Any]:
    """What differs between a Redis and a RabbitMQ broker (the module docstring says why)."""
    if broker_kind(settings.celery_broker_url) != "amqp":
        scheme = settings.celery_broker_url.split("://", 1)[0].lower()
        transport = (
            {"broker_transport": "orchestrator.adapters.celery_redis:Transport"}
            if scheme in ("redis", "rediss")
            else {}
        )
        return {
            # A Redis broker goes through `celery_redis.Transport` (it survives a Redis
            # restart) and redelivers what a lost worker held after the visibility timeout.
            **transport,
            "broker_transport_options": {
                **socket_options(),
                "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
                "unacked_restore_interval": RESTORE_SWEEP_SECONDS,
                "unacked_restore_throttle": 1,
            },
            "task_queues": [Queue(name) for name in QUEUES],
        }
    return {
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": [
            Queue(
                name,
                Exchange(name, type="topic"),
                routing_key=name,
                queue_arguments={"x-queue-type": "quorum"},
            )
            for name in QUEUES
        ],
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "broker_native_delayed_delivery_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings of every certfleet process, from certfleet's settings."""
    interval = settings.scan_interval_seconds
    return {
        "broker_url": settings.celery_broker_url,
        **_broker_settings(settings),
        "result_backend": result_backend_url(settings),
        # Riding out a broker restart (docs/operations.md): reconnect forever.
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry": True,
        "task_publish_retry_policy": dict(PUBLISH_RETRY_POLICY),
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "result_backend_transport_options": {"retry_policy": dict(PUBLISH_RETRY_POLICY)},
        "redis_socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "redis_socket_keepalive": True,
        "redis_backend_health_check_interval": HEALTH_CHECK_SECONDS,
        "redbeat_redis_options": _redbeat_options(settings),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_default_queue": "control",
        "task_routes": {name: {"queue": queue} for name, queue in QUEUE_OF.items()},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_expires": 24 * 3600,
        "result_extended": True,
        "beat_scheduler": "orchestrator.adapters.redbeat_scheduler:ReconnectingRedBeatScheduler",
        "redbeat_redis_url": settings.redis_url,
        "redbeat_key_prefix": "certfleet:redbeat:",
        "redbeat_lock_key": "certfleet:redbeat:lock",
        "beat_max_loop_interval": min(5.0, interval, settings.tick_interval_seconds),
        "beat_schedule": {
            "scan-fleet": {
                "task": TASK_SCAN_FLEET,
                "schedule": interval,
                "options": {"queue": QUEUE_OF[TASK_SCAN_FLEET], "expires": interval},
            },
            "watch-renewals": {
                "task": TASK_WATCH_RENEWALS,
                "schedule": settings.endpoint_check_seconds,
                "options": {
                    "queue": QUEUE_OF[TASK_WATCH_RENEWALS],
                    "expires": settings.endpoint_check_seconds,
                },
            },
            # The CRL is signed again well before its nextUpdate (a broker holding an
            # expired CRL refuses every client certificate): beat asks every quarter of
            # its lifetime, and it is published once half of it is over.
            "refresh-crl": {
                "task": TASK_REFRESH_CRL,
                "schedule": settings.crl_next_update_seconds / 4,
                "options": {
                    "queue": QUEUE_OF[TASK_REFRESH_CRL],
                    "expires": settings.crl_next_update_seconds / 4,
                },
            },
            # Identity rotations are planned on the scan's clock: a scan classifies the
            # client certificates the planner reads.
            "plan-identity-rotations": {
                "task": TASK_PLAN_IDENTITY_ROTATIONS,
                "schedule": interval,
                "options": {
                    "queue": QUEUE_OF[TASK_PLAN_IDENTITY_ROTATIONS],
                    "expires": interval,
                },
            },
            "tick-rollouts": {
                "task": TASK_TICK_ROLLOUTS,
                "schedule": settings.tick_interval_seconds,
                "options": {
                    "queue": QUEUE_OF[TASK_TICK_ROLLOUTS],
                    "expires": settings.tick_interval_seconds,
                },
            },
        },
    }


def _redbeat_options(settings: Settings) -> dict[str, Any]:
    """redbeat's client options: the store's socket options; on a Redis Cluster store its
    cluster client (redbeat keeps the schedule and beat's lock there, each command on
    one key or a non-transactional pipeline)."""
    if settings.redis_cluster:
        return {**socket_options(), "cluster": True, "decode_responses": True}
    return socket_options()


class CeleryTaskQueue:
    """`TaskQueue` that sends by task name, so clients never import the worker code."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._whole_seconds = broker_kind(str(app.conf.broker_url)) == "amqp"

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryTaskQueue:
        """A client app configured like the workers."""
        app = Celery("certfleet-client")
        app.conf.update(celery_config(settings))
        return cls(app)

    def _send(self, name: str, *args: object, countdown: float = 0, **options: Any) -> Any:
        """Send task `name` to its queue (`QUEUE_OF`); a countdown of 0 sends it now.

        On RabbitMQ a countdown is rounded up to whole seconds: the broker's delay
        queues count whole seconds, and Celery refuses a delay under one second there.
        """
        if countdown and self._whole_seconds:
            countdown = math.ceil(countdown)
        return self._app.send_task(
            name, args=list(args), queue=QUEUE_OF[name], countdown=countdown or None, **options
        )

    def run_scan(self, *, timeout: float) -> Mapping[str, Any]:
        """Send `scan_fleet` to the scan queue and wait for its result."""
        result = self._send(TASK_SCAN_FLEET, expires=timeout)
        try:
            summary: Mapping[str, Any] = result.get(timeout=timeout)
        finally:
            result.forget()
        return summary

    def start_rollout(self, rollout_id: str) -> None:
        """Enqueue `start_rollout`."""
        self._send(TASK_START_ROLLOUT, rollout_id)

    def dispatch_wave(self, rollout_id: str, wave: int) -> None:
        """Enqueue `dispatch_wave`."""
        self._send(TASK_DISPATCH_WAVE, rollout_id, wave)

    def push_batch(
        self,
        rollout_id: str,
        wave: int,
        device_ids: Sequence[str],
        step: PushStep,
        *,
        countdown: float,
    ) -> None:
        """Enqueue one `push_batch` of hundreds of devices on the push queue."""
        self._send(
            TASK_PUSH_BATCH, rollout_id, wave, list(device_ids), step.value, countdown=countdown
        )

    def evaluate_rollout(self, rollout_id: str, *, countdown: float = 0) -> None:
        """Enqueue `evaluate_rollout`."""
        self._send(TASK_EVALUATE_ROLLOUT, rollout_id, countdown=countdown)

    def rollback_rollout(self, rollout_id: str) -> None:
        """Enqueue `rollback_rollout`."""
        self._send(TASK_ROLLBACK_ROLLOUT, rollout_id)

    def issue_identities(self, rollout_id: str, wave: int, device_ids: Sequence[str]) -> None:
        """Enqueue one `issue_identities` of up to a push batch of devices."""
        self._send(TASK_ISSUE_IDENTITIES, rollout_id, wave, list(device_ids))

    def revoke_identities(self, rollout_id: str, device_ids: Sequence[str]) -> None:
        """Enqueue `revoke_identities`."""
        self._send(TASK_REVOKE_IDENTITIES, rollout_id, list(device_ids))

    def refresh_crl(self, *, countdown: float = 0) -> None:
        """Enqueue `refresh_crl` (with a countdown: the coalesced refresh of a burst)."""
        self._send(TASK_REFRESH_CRL, countdown=countdown)
