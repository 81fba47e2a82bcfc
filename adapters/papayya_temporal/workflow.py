"""``MapItems``: the workflow that runs an agent activity over a run's items, with a pause gate.

Started by the ``temporal`` backend (``enrich.map(items, tenant=...)`` with ``PAPAYYA_BACKEND=temporal``)
with the ids of the run's items, never their data. It runs at most ``concurrency`` activities at a
time, each stamped with its item (``papayya`` header, mode ``map``), so the activity is an attempt of
that item through papayya's lifecycle on the worker.

When an item comes back ``paused`` (a budget broke, or a person paused the run) the gate closes: no
queued item starts, the ones in flight finish, and the workflow **waits** for the ``resume`` signal
instead of failing. ``papayya resume RUN`` sends it, with the items the store says are pending; no
recorded LLM call is paid again (the journal answers them). A long run continues as new before its
history grows large.

The store, not the workflow, knows whether the run is paused, so the gate is only a cache of it, kept
current by an epoch: each ``resume`` or ``redrive`` opens the gate and starts a new epoch, and a
``paused`` answer from an activity that started in an older epoch (it saw the pause the signal has
since lifted) does not close it; its item is run again. ``redrive`` opens the gate too because papayya
re-drives items only of runs that are running: a closed gate then is stale (a resume whose signal was
lost, a worker that saw the pause late), and keeping it closed would leave the run's items queued with
nothing to run them.

Sandbox-safe: this module imports only temporalio and ``papayya_temporal.headers`` (passed through, so
the stamp ContextVar is the one the interceptor reads); papayya's core never enters the sandbox.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from papayya_temporal.headers import Stamp, current_stamp

WORKFLOW_NAME = "papayya.MapItems"
# Items one workflow run completes before it continues as new (Temporal also suggests it by size).
ITEMS_PER_RUN = 2000


@dataclass
class MapJob:
    """What ``MapItems`` runs: an activity over items (``[item_id, key]`` pairs) of one run."""

    run_id: str
    tenant_id: str
    activity: str
    items: list[list[str]]
    concurrency: int = 8
    task_queue: str | None = None
    start_to_close_seconds: float = 3600.0
    heartbeat_seconds: float = 30.0
    counts: dict[str, int] = field(default_factory=dict)


@workflow.defn(name=WORKFLOW_NAME)
class MapItems:
    """Runs a papayya agent activity over a run's items; see the module docstring."""

    def __init__(self) -> None:
        self._queue: list[list[str]] = []
        self._known: set[str] = set()  # queued or in flight
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        self._epoch = 0  # a resume or redrive starts a new one; see the module docstring
        self._counts: dict[str, int] = {}
        self._error: str | None = None
        self._finished_here = 0

    # -- signals and queries ----------------------------------------------------------------------

    @workflow.signal
    def resume(self, items: list[list[str]]) -> None:
        """Open the pause gate; ``items`` are the run's pending items (from the store)."""
        self._open(items)

    @workflow.signal
    def redrive(self, items: list[list[str]]) -> None:
        """Run these items again (papayya's reaper found them stalled in a running run): the gate
        opens, since the store says the run is running."""
        self._open(items)

    def _open(self, items: list[list[str]]) -> None:
        self._add(items)
        self._paused = False
        self._epoch += 1

    @workflow.query
    def state(self) -> dict[str, Any]:
        """Whether the gate is closed, how many items wait and run, and the outcomes so far."""
        return {
            "paused": self._paused,
            "queued": len(self._queue),
            "running": len(self._inflight),
            "counts": dict(self._counts),
        }

    # -- the run ----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, job: MapJob) -> dict[str, int]:
        self._counts = dict(job.counts)
        self._add(job.items)
        while True:
            await workflow.wait_condition(
                lambda: self._startable(job) or not self._inflight or self._error is not None
            )
            if self._error is not None:
                raise ApplicationError(self._error, type="papayya.MapFailed", non_retryable=True)
            while self._startable(job):
                item = self._queue.pop(0)
                self._inflight.add(item[0])
                task = asyncio.create_task(self._one(job, item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._inflight:
                continue
            if self._paused:
                # The gate: wait for `papayya resume` instead of failing.
                await workflow.wait_condition(lambda: not self._paused)
                continue
            if not self._queue:
                return self._counts
            if self._draining():
                workflow.continue_as_new(
                    MapJob(
                        run_id=job.run_id,
                        tenant_id=job.tenant_id,
                        activity=job.activity,
                        items=list(self._queue),
                        concurrency=job.concurrency,
                        task_queue=job.task_queue,
                        start_to_close_seconds=job.start_to_close_seconds,
                        heartbeat_seconds=job.heartbeat_seconds,
                        counts=self._counts,
                    )
                )

    def _add(self, items: list[list[str]]) -> None:
        for item in items:
            if item[0] not in self._known:
                self._known.add(item[0])
                self._queue.append([item[0], item[1]])

    def _draining(self) -> bool:
        return self._finished_here >= ITEMS_PER_RUN or workflow.info().is_continue_as_new_suggested()

    def _startable(self, job: MapJob) -> bool:
        return (
            bool(self._queue)
            and not self._paused
            and self._error is None
            and len(self._inflight) < max(1, job.concurrency)
            and not self._draining()
        )

    async def _one(self, job: MapJob, item: list[str]) -> None:
        item_id, key = item
        epoch = self._epoch
        current_stamp.set(
            Stamp(tenant_id=job.tenant_id, run_id=job.run_id, item_id=item_id, key=key, mode="map")
        )
        status: str | None = None
        try:
            result = await workflow.execute_activity(
                job.activity,
                task_queue=job.task_queue,
                start_to_close_timeout=timedelta(seconds=job.start_to_close_seconds),
                heartbeat_timeout=timedelta(seconds=job.heartbeat_seconds),
                # papayya decides retries (its answers are non-retryable when an item is finished);
                # Temporal retries what papayya asks it to, and attempts lost with their worker.
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=60),
                    non_retryable_error_types=["NotFoundError", "TypeError"],
                ),
            )
            status = result.get("status") if isinstance(result, dict) else None
            if status is None:
                self._error = (
                    f"Activity {job.activity} ran item {key} without papayya; give its worker's client "
                    "papayya_temporal.Interceptor()."
                )
        except ActivityError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            if kind == "papayya.Refused":
                status = "refused"
            elif kind == "papayya.NotImportable":
                # The generic activity cannot import the run's agent on that worker: say so and stop.
                self._error = str(cause.message if isinstance(cause, ApplicationError) else cause)
            elif kind == "NotFoundError":
                self._error = (
                    f"No worker on task queue {job.task_queue or workflow.info().task_queue} has the "
                    f"activity {job.activity} ({cause}); register it with activities=[...]."
                )
            else:
                self._error = (
                    f"Activity {job.activity} failed outside papayya for item {key} ({cause}); is "
                    "papayya_temporal.Interceptor() on its worker's client?"
                )
        finally:
            self._inflight.discard(item_id)
            self._known.discard(item_id)
            self._finished_here += 1
        if status == "paused":
            if epoch == self._epoch:
                self._paused = True
            else:
                # It saw a pause that a resume lifted while it ran: run it again, keep the gate open.
                self._add([item])
                status = None
        if status is not None:
            self._counts[status] = self._counts.get(status, 0) + 1


__all__ = ["ITEMS_PER_RUN", "WORKFLOW_NAME", "MapItems", "MapJob"]
