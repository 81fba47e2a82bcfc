"""A ready Temporal worker that runs any papayya agent: ``python -m papayya_temporal worker``.

It connects to ``PAPAYYA_TEMPORAL_ADDRESS`` / ``PAPAYYA_TEMPORAL_NAMESPACE`` with
``papayya_temporal.Interceptor()``, polls ``PAPAYYA_TEMPORAL_TASK_QUEUE`` and registers ``MapItems``,
the generic activity ``papayya.run_item`` (the agent of each item's run, imported once per process)
and any agent activities named on the command line. Sync agents run in the worker's thread pool,
async ones on its event loop. A reaper thread recovers items whose worker was lost. SIGTERM or
Ctrl-C stops polling and lets the attempts in flight finish within ``--grace`` seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from papayya_temporal.config import TemporalSettings

log = logging.getLogger("papayya.temporal")

DEFAULT_CONCURRENCY = 16


async def serve(
    settings: TemporalSettings,
    *,
    activities: Sequence[Any] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    grace: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the worker until ``stop`` is set (SIGTERM or SIGINT sets it when none is given)."""
    from temporalio.worker import Worker

    from papayya.reaper import Reaper
    from papayya.runtime import get_runtime
    from papayya_temporal.activity import run_any_item
    from papayya_temporal.backend import TemporalBackend, connect
    from papayya_temporal.interceptor import Interceptor
    from papayya_temporal.workflow import MapItems

    loop = asyncio.get_running_loop()
    # Sync agents and papayya's store calls run in threads: enough for every activity at once.
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=2 * concurrency + 4, thread_name_prefix="papayya-temporal"
    )
    loop.set_default_executor(pool)
    rt = await asyncio.to_thread(get_runtime)  # the store answers before any task is polled
    if not isinstance(rt.backend, TemporalBackend):
        # This worker's reaper re-drives stalled Temporal items (whatever PAPAYYA_BACKEND says here):
        # without it, an item stalled after a kill or a pause waits for a process that never comes.
        rt.backend = TemporalBackend(settings)
    client = await connect(settings, interceptors=[Interceptor()])
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[MapItems],
        activities=[run_any_item, *activities],
        activity_executor=pool,
        max_concurrent_activities=concurrency,
        graceful_shutdown_timeout=timedelta(seconds=grace),
    )
    reaper = Reaper(rt).start()
    try:
        async with worker:
            names = ", ".join(["MapItems", "papayya.run_item", *(_name(a) for a in activities)])
            print(
                f"papayya_temporal: worker polling task queue {settings.task_queue!r} at "
                f"{settings.address} (namespace {settings.namespace}): {names}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            print("papayya_temporal: stopping; attempts in flight finish first", file=sys.stderr, flush=True)
    finally:
        reaper.stop()
        pool.shutdown(wait=False, cancel_futures=True)


def _name(activity: Any) -> str:
    from papayya_temporal.backend import activity_name

    return activity_name(activity)


__all__ = ["DEFAULT_CONCURRENCY", "serve"]
