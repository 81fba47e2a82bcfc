"""The native engine: papayya's own workers over PostgreSQL, in this process (``map()``) or in many
``papayya worker`` processes on many machines sharing one database.

A :class:`Worker` claims queued items in batches (one statement, ``FOR UPDATE SKIP LOCKED``, fair
across tenants, within each tenant's concurrency cap), keeps a small prefetch buffer, runs each item
through the one lifecycle on a thread (or on one event loop for ``async def`` agents) and writes the
results in batches, each write fenced by the item's lease token. A monitor thread heartbeats the
leases of everything the worker holds, fails attempts past the agent's timeout (a hung thread is
abandoned and replaced: the fencing token voids whatever it returns), writes budget spend every second
and runs the reaper, which gives back the items of workers that died. Idle workers sleep until a
``papayya_work`` notification (a hint sent once per submit, never per row) or their poll interval.

When the database goes away, the worker keeps what it holds, stops claiming, and retries with backoff;
results not yet written are retried until they are written or their lease went to someone else.

The package, one duty per module:

- ``worker``: the ``Worker`` (claiming, running, writing) with its monitor's separate clocks for the
  lease heartbeat, the run check and the reaper;
- ``held``: what a worker holds, each item's attempt buffered, running or judged, and begun or not
  (only a begun attempt counts against its item when the worker dies);
- ``waiting``: following a run from the process that started it (``wait_for_run``, the progress line);
- ``backends``: the ``Backend`` protocol, the native backend and the base of publishing backends.
"""

from __future__ import annotations

from papayya.engine.backends import Backend, NativeBackend, PublishingBackend
from papayya.engine.waiting import QUIET_WARNING, progress_for, wait_for_run
from papayya.engine.worker import BACKEND, CHANNEL, Worker, WorkerStats, serve

__all__ = [
    "BACKEND",
    "CHANNEL",
    "QUIET_WARNING",
    "Backend",
    "NativeBackend",
    "PublishingBackend",
    "Worker",
    "WorkerStats",
    "progress_for",
    "serve",
    "wait_for_run",
]
