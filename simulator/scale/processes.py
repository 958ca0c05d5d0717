"""Scale mode over several OS processes, each owning a disjoint slice of the fleet."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from simulator.scale.fleet import run_scale_fleet
from simulator.scale.spec import ScaleSpec, slice_of

__all__ = ["run_scale_processes"]


def _child(spec: ScaleSpec, numbers: range, duration: float | None, ready: Connection) -> None:
    """One process of `run_scale_processes`: its slice until a signal or its parent dies."""

    async def main() -> None:
        stop = asyncio.Event()
        parent = os.getppid()
        loop = asyncio.get_running_loop()
        # Python-level handlers outlive the loop: a second SIGTERM (the parent passes it
        # on, and a process group gets it too) must not kill a process that is stopping.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))

        async def orphaned() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
            stop.set()

        watch = asyncio.create_task(orphaned())
        try:
            await run_scale_fleet(
                spec,
                numbers=numbers,
                duration=duration,
                stop=stop,
                on_ready=ready.send,
                handle_signals=False,
            )
        finally:
            watch.cancel()

    asyncio.run(main())


def run_scale_processes(
    spec: ScaleSpec,
    *,
    processes: int,
    duration: float | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> int:
    """Run the fleet in `processes` OS processes, each owning a disjoint slice.

    Blocks until every process ended (SIGINT/SIGTERM are passed on to them); calls
    `on_ready` with the device count once every process is ready. Returns the number
    of processes that exited with an error.
    """
    context = multiprocessing.get_context("fork")  # the spec (keys, chains) is inherited
    children = []
    readers: list[Connection] = []
    for index in range(processes):
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(
            target=_child,
            args=(spec, slice_of(spec.count, processes, index), duration, writer),
            name=f"certfleet-scale-{index}",
        )
        child.start()
        writer.close()
        children.append(child)
        readers.append(reader)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ready = 0
        waiting = list(readers)
        while any(child.is_alive() for child in children):
            sentinels = [child.sentinel for child in children]
            for source in wait([*waiting, *sentinels], timeout=1.0):
                if isinstance(source, Connection):
                    waiting.remove(source)
                    with contextlib.suppress(EOFError):  # a process that died before ready
                        ready += int(source.recv())
                    if not waiting and ready == spec.count and on_ready is not None:
                        on_ready(ready)
        for child in children:
            child.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return sum(1 for child in children if child.exitcode != 0)
