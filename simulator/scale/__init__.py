"""Scale mode: many simulated devices per process and per MQTT connection.

Every device runs the same `Firmware` as in per-device mode; only the transport
differs. A process holds a slice of the fleet and spreads it over a few MQTT 5
connections (persistent sessions with stable client ids, QoS 1), each subscribed to
the bundle topics of its own devices, so the broker delivers every bundle once, to
the process that owns the device. Bundles are handled concurrently, each device's
in order; publishes are pipelined within a window of unacknowledged QoS 1 messages.
A device's offline step (`CFUN=4`) is its own: bundles that arrive meanwhile are
held, as its broker session would hold them, and handled once it is back.

`spec` says what the fleet is, `link` is one shared connection as its devices see
it, `fleet` serves the devices of one process, `processes` spreads them over several.
"""

from simulator.scale.fleet import ScaleFleet, run_scale_fleet
from simulator.scale.processes import run_scale_processes
from simulator.scale.spec import ScaleSpec, slice_of

__all__ = ["ScaleFleet", "ScaleSpec", "run_scale_fleet", "run_scale_processes", "slice_of"]
