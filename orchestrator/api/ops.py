"""`/healthz` and `/metrics`: what an orchestrator (Kubernetes, Prometheus) polls."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from kombu import Connection
from kombu import exceptions as kombu_errors
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.api.errors import ApiConfigError
from orchestrator.api.models import Health, error_responses
from orchestrator.config import Settings
from orchestrator.domain.inventory import FleetSummary
from orchestrator.domain.rollout import RolloutState
from orchestrator.logs import get_logger

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["AmqpBroker", "FleetCollector", "Pingable", "broker_client", "ops_router"]

log = get_logger(__name__)

EXPIRY_CLASSES = ("ok", "expiring", "expired", "unknown")
DOCS = {
    "certfleet_webhooks_total": "CA webhooks received, by outcome.",
    "certfleet_scan_duration_seconds": "How long the last fleet scan took.",
    "certfleet_devices": "(device, sec_tag) pairs of the last scan, by expiry class.",
    "certfleet_devices_reported": "Devices that have reported their credentials.",
    "certfleet_identities": (
        "Devices' client certificates (identities) of the last scan, by sec_tag and expiry class."
    ),
    "certfleet_rollouts": "Rollouts (the newest 1000), by state.",
    "certfleet_rollout_unconfirmed_devices": (
        "Devices the newest 1000 rollouts ended without a confirmation "
        "(completed_with_timeouts), which keep the old trust."
    ),
    "certfleet_library_evicted_total": (
        "Credential library entries evicted from a device's share (over 16 per device)."
    ),
    "certfleet_rollback_verified_by_inventory_total": (
        "Devices that refused their rollback's undo and whose inventory showed the new CA gone."
    ),
    "certfleet_csr_refused_total": (
        "Device CSRs given no certificate in identity rotations, by reason (the device keeps "
        "its identity)."
    ),
    "certfleet_identities_issued_total": "Certificates issued and staged to devices.",
    "certfleet_certificates_revoked_total": (
        "Device certificates certfleet revoked (old ones retired, new ones never used)."
    ),
    "certfleet_crl_entries": "Certificates the last CRL certfleet published lists.",
    "certfleet_console_signin_refused_total": (
        "Console sign-ins refused, by reason (token: not an API token; csrf: the form's cookie "
        "was missing or did not match)."
    ),
    "certfleet_console_refused_total": (
        "Console actions refused, by reason (viewer: the session may only read; csrf: the "
        "request lacked the session's CSRF token)."
    ),
    "certfleet_console_commands_refused_total": (
        "Rollout commands an operator gave from the console that the rollout's state refused, "
        "by verb."
    ),
    "certfleet_console_bad_requests_total": (
        "Console requests refused for their query (a malformed search or page link), by page."
    ),
    "certfleet_console_streams_opened_total": "Live rollout streams (console pages) opened.",
    "certfleet_console_streams_refused_total": (
        "Live rollout streams refused because their session already held the most it may."
    ),
    "certfleet_console_streams_closed_total": (
        "Live rollout streams closed (rollout ended, page closed, session ended, server stopping)."
    ),
    "certfleet_root_signatures_total": (
        "Signatures made with the root key, by purpose: delegation (a worker's delegation, "
        "made or renewed) or bundle (a root op, or bundles with CERTFLEET_DELEGATION_HOURS=0)."
    ),
    "certfleet_delegation_expires_timestamp": (
        "When the delegation a worker got last expires (epoch seconds); workers renew theirs "
        "at half its lifetime."
    ),
    "certfleet_push_stopped_total": (
        "Pushes stopped before their end, by reason (no_delegation: the worker had no "
        "delegation from the root covering its bundles; the push is retried)."
    ),
}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}
_AMQP_SCHEMES = {"amqp", "amqps", "pyamqp"}

AMQP_CHECK_TIMEOUT_SECONDS: Final = 2.0
"""How long `/healthz` waits for a RabbitMQ broker to accept a connection."""


class Pingable(Protocol):
    """What `/healthz` asks of the broker's client: a PING and a close."""

    def ping(self) -> Any: ...

    def close(self) -> None: ...


class AmqpBroker:
    """A RabbitMQ broker's health: `ping` opens an AMQP connection (handshake and login,
    `AMQP_CHECK_TIMEOUT_SECONDS` at most) and closes it again; no channel, no queue."""

    def __init__(self, url: str) -> None:
        self._url = url

    def ping(self) -> bool:
        """True when the broker accepted a connection with certfleet's credentials; False
        when it refused it (a wrong user included), or did not answer in time."""
        conn = Connection(
            self._url,
            connect_timeout=AMQP_CHECK_TIMEOUT_SECONDS,
            transport_options={
                "read_timeout": AMQP_CHECK_TIMEOUT_SECONDS,
                "write_timeout": AMQP_CHECK_TIMEOUT_SECONDS,
            },
        )
        refused: tuple[type[BaseException], ...] = (
            *conn.connection_errors,
            *conn.channel_errors,
            OSError,
        )
        try:
            conn.connect()  # one attempt: a refusal raises, a handshake past the timeout too
            return bool(conn.connected)
        except refused as exc:
            log.warning("health_ping_failed", error=type(exc).__name__)
            return False
        finally:
            conn.release()

    def close(self) -> None:
        """Nothing stays open between checks."""


def broker_client(settings: Settings, state_store: RedisClient) -> tuple[Pingable, bool]:
    """A client of the Celery broker for `/healthz`, and whether it is a client of its own.

    A Redis broker is PINGed (the state store's client when the URL is the store's); a
    RabbitMQ broker (`amqp://`, `amqps://`) is checked by opening a connection
    (`AmqpBroker`). Nothing connects until the first check.
    """
    url = settings.celery_broker_url
    if url == settings.redis_url:
        return state_store, False
    scheme = urlsplit(url).scheme
    if scheme in _AMQP_SCHEMES:
        return AmqpBroker(url), True
    if scheme == "redis+socket":
        url = "unix" + url[len("redis+socket") :]
    elif scheme not in _REDIS_SCHEMES:
        raise ApiConfigError(
            f"CERTFLEET_BROKER_URL has the scheme {scheme!r}; /healthz can check a Redis "
            "broker (redis://, rediss://, unix://) or a RabbitMQ one (amqp://, amqps://)"
        )
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    except ValueError:
        raise ApiConfigError("CERTFLEET_BROKER_URL is not a Redis URL redis-py accepts") from None
    return client, True


def _ping(client: Pingable) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, kombu_errors.KombuError) as exc:
        log.warning("health_ping_failed", error=type(exc).__name__)
        return False


class FleetCollector(Collector):
    """Prometheus metrics read at scrape time: the shared counters, scan and rollout gauges."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not touch Redis."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every metric, read from Redis now."""
        summary = self._container.inventory.last_summary()
        computed = [
            *self._devices(summary),
            self._devices_reported(),
            *self._rollouts(),
            self._library_evicted(),
        ]
        taken = {family.name for family in computed}
        yield from computed
        yield from self._shared(taken)

    @staticmethod
    def _devices(summary: FleetSummary | None) -> tuple[Metric, Metric]:
        """The last scan's CA items and client certificates, by sec_tag and expiry class."""
        family = GaugeMetricFamily(
            "certfleet_devices", DOCS["certfleet_devices"], labels=["sec_tag", "expiry_class"]
        )
        for tag, counts in sorted((summary.by_tag if summary else {}).items()):
            values = counts.as_json()
            for expiry_class in EXPIRY_CLASSES:
                family.add_metric([str(tag), expiry_class], values[expiry_class])
        identities = GaugeMetricFamily(
            "certfleet_identities",
            DOCS["certfleet_identities"],
            labels=["sec_tag", "expiry_class"],
        )
        scanned = summary.identities if summary is not None else None
        for tag, id_counts in sorted((scanned.by_tag if scanned is not None else {}).items()):
            for expiry_class, value in id_counts.as_json().items():
                identities.add_metric([str(tag), expiry_class], value)
        return family, identities

    def _devices_reported(self) -> Metric:
        return GaugeMetricFamily(
            "certfleet_devices_reported",
            DOCS["certfleet_devices_reported"],
            value=self._container.inventory.device_count(),
        )

    def _library_evicted(self) -> Metric:
        return CounterMetricFamily(
            "certfleet_library_evicted",
            DOCS["certfleet_library_evicted_total"],
            value=self._container.library.evicted(),
        )

    def _rollouts(self) -> tuple[Metric, Metric]:
        """Rollouts by state, and the devices those that completed with timeouts left
        unconfirmed (one read of the newest 1000 serves both)."""
        rollouts = self._container.rollouts
        found = [r for i in rollouts.list_ids(limit=1000) if (r := rollouts.get(i)) is not None]
        states = Counter(r.state.value for r in found)
        family = GaugeMetricFamily(
            "certfleet_rollouts", DOCS["certfleet_rollouts"], labels=["state"]
        )
        for state in RolloutState:
            family.add_metric([state.value], states.get(state.value, 0))
        unconfirmed = sum(
            len(r.unconfirmed or ())
            for r in found
            if r.state is RolloutState.COMPLETED_WITH_TIMEOUTS
        )
        return family, GaugeMetricFamily(
            "certfleet_rollout_unconfirmed_devices",
            DOCS["certfleet_rollout_unconfirmed_devices"],
            value=unconfirmed,
        )

    def _shared(self, taken: set[str]) -> Iterator[Metric]:
        """The counters and gauges every process keeps in `RedisMetrics`."""
        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for (name, labels), value in sorted(self._container.metrics.snapshot().items()):
            by_name[name].append((dict(labels), value))
        for name, samples in by_name.items():
            label_names = sorted({k for labels, _ in samples for k in labels})
            family: CounterMetricFamily | GaugeMetricFamily
            doc = DOCS.get(name, f"certfleet {name}")
            try:
                if name.endswith("_total"):
                    family = CounterMetricFamily(name, doc, labels=label_names)
                else:
                    family = GaugeMetricFamily(name, doc, labels=label_names)
            except ValueError:
                log.warning("metric_name_invalid", name=name)
                continue
            if family.name in taken:
                continue
            for sample_labels, value in samples:
                family.add_metric([sample_labels.get(k, "") for k in label_names], value)
            yield family


def ops_router(container: Container, *, broker: Pingable) -> APIRouter:
    """`/healthz` and `/metrics`, without authentication."""
    router = APIRouter(tags=["operations"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(container))

    @router.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Redis or the broker is unreachable"}},
    )
    def healthz() -> Any:
        """200 when Redis answers PING and the Celery broker PING or an AMQP connection,
        else 503 naming the failing one."""
        redis_ok = _ping(container.redis)
        broker_ok = redis_ok if broker is container.redis else _ping(broker)
        health = Health(
            status="ok" if redis_ok and broker_ok else "unavailable",
            redis="ok" if redis_ok else "unreachable",
            broker="ok" if broker_ok else "unreachable",
        )
        if health.status == "ok":
            return health
        return JSONResponse(health.model_dump(), status_code=503)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **error_responses(503),
        },
    )
    def metrics() -> Response:
        """Prometheus metrics, read from Redis at scrape time."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
