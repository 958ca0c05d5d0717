"""What a scale-mode fleet is, and which of its devices each process owns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import Topics
from simulator.agent import BrokerAddress

__all__ = ["ScaleSpec", "slice_of"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSpec:
    """A scale-mode fleet: devices `{id_prefix}{n:05d}`, n < `count`, with `ca_chain` in `sec_tag`.

    Args:
        connections: MQTT connections per process.
        window: most unacknowledged QoS 1 publishes per connection.
        offline_seconds: how long a device stays offline (`CFUN=4`) for key store work.
        probe_cache_seconds: how long a probe result serves other devices with the same key.
        puback_timeout: seconds a publish waits for its PUBACK before it is sent again.
    """

    count: int
    ca_chain: bytes
    sec_tag: int
    id_prefix: str
    broker: BrokerAddress
    topics: Topics
    signers: Mapping[bytes, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    probe_timeout: float = 10.0
    faults: frozenset[str] = frozenset()
    connections: int = 4
    window: int = 100
    offline_seconds: float = 0.0
    probe_cache_seconds: float = 60.0
    keepalive: int = 60
    reconnect_interval: float = 2.0
    puback_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.connections < 1 or self.window < 1:
            raise ValueError("count, connections and window must be at least 1")
        if self.broker.tls:
            raise ValueError(
                "scale mode shares each connection between devices, so it cannot validate the "
                "broker with each device's own tags; use the per-device mode for --tls"
            )


def slice_of(count: int, processes: int, index: int) -> range:
    """The device numbers process `index` of `processes` owns: disjoint, together all."""
    return range(count * index // processes, count * (index + 1) // processes)
