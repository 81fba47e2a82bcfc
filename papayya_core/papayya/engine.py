"""The native engine, in process: worker threads (or one event loop for async agents) running a run's
items through the one lifecycle, a heartbeat that keeps their leases alive, and a watchdog that fails
attempts past the agent's timeout.

A timed-out sync function cannot be killed; its thread is abandoned (the fencing token voids whatever
it returns) and a fresh worker takes its place, so the run keeps its concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from papayya import execute
from papayya.context import AttemptContext, current
from papayya.execute import Concluded, ItemRef
from papayya.models import ItemStatus
from papayya.progress import Progress
from papayya.tenants import overrides_map

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.engine")

# What a worker reports for an item it did not start because the run is paused.
LEFT_QUEUED = Concluded(status="queued", terminal=False)

BACKEND = "native"


class _Inflight:
    """Attempts in progress: for the heartbeat (leases) and the watchdog (deadlines)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[UUID, tuple[AttemptContext, float | None]] = {}

    def add(self, ctx: AttemptContext, timeout: float | None) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        with self._lock:
            self._attempts[ctx.attempt_id] = (ctx, deadline)

    def remove(self, ctx: AttemptContext) -> None:
        with self._lock:
            self._attempts.pop(ctx.attempt_id, None)

    def leases(self) -> list[tuple[UUID, int]]:
        with self._lock:
            return [(c.item_id, c.lease_token) for c, _ in self._attempts.values()]

    def overdue(self) -> list[AttemptContext]:
        now = time.monotonic()
        with self._lock:
            late = [c for c, d in self._attempts.values() if d is not None and now >= d]
            for c in late:
                del self._attempts[c.attempt_id]
            return late


class LocalRun:
    """One run's items executed in this process."""

    def __init__(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
        progress: Progress,
        budget_period: str = "month",
    ) -> None:
        self.rt = rt
        self.agent = agent
        self.run_id = run_id
        self.budget_period = budget_period
        self.concurrency = concurrency
        self.refs = [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in items]
        self.overrides = overrides_map(tenant_id, rt)
        self.progress = progress
        self.inflight = _Inflight()
        self._remaining = len(self.refs)
        self._done = threading.Condition()
        self._stop = threading.Event()
        # Set when the run is paused (a budget broke, or a person paused it): queued items stay queued.
        self._halted = threading.Event()
        self._queue: queue.SimpleQueue[ItemRef | None] = queue.SimpleQueue()

    # -- bookkeeping ------------------------------------------------------------------------------

    def _finished(self, result: Concluded) -> None:
        """This process is done with an item: terminal, paused, or left queued by a pause."""
        self.progress.advance(result.status, result.cost_usd)
        with self._done:
            self._remaining -= 1
            if self._remaining <= 0:
                self._done.notify_all()

    def _monitor(self) -> None:
        interval = self.rt.settings.lease_seconds / 3
        tick = min(interval, 0.05) if self.agent.timeout else min(interval, 1.0)
        last_beat = last_check = time.monotonic()
        while not self._stop.wait(tick):
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                self._check_run()
            for ctx in self.inflight.overdue():
                assert self.agent.timeout is not None
                log.warning(
                    "item %s: attempt %d passed its %gs timeout", ctx.item.id, ctx.attempt, self.agent.timeout
                )
                result = execute.abandon_for_timeout(ctx, self.agent.timeout)
                if result.retry_in is not None:
                    self._requeue(
                        ItemRef(ctx.item_id, ctx.item.id, ctx.run_id, ctx.tenant_id), result.retry_in
                    )
                self._finished(result)
                if not self.agent.is_async:
                    self._spawn_worker()  # the stuck thread is lost to us; keep the concurrency
            if time.monotonic() - last_beat >= interval:
                last_beat = time.monotonic()
                try:
                    self.rt.store.leases_extend(self.inflight.leases(), self.rt.settings.lease_seconds)
                except Exception:
                    log.exception("heartbeat failed; leases will be retried next beat")

    def _check_run(self) -> None:
        """Once a second: write this process's spend to the budget accounts, and notice a run paused
        elsewhere (a person, or a budget on another worker) so in-flight items stop at their next call."""
        try:
            self.rt.budgets.flush()
            if self.rt.store.run_get(self.run_id)["status"] != "running":
                self.rt.budgets.run_paused(self.run_id)
                self._halted.set()
        except Exception:
            log.exception("budget flush or run check failed; retried next second")

    def _requeue(self, ref: ItemRef, delay: float) -> None:
        if delay <= 0:
            self._queue.put(ref)
        else:
            timer = threading.Timer(delay, self._queue.put, (ref,))
            timer.daemon = True
            timer.start()

    # -- sync agents ------------------------------------------------------------------------------

    def _begin(self, ref: ItemRef) -> AttemptContext | None:
        return execute.begin(
            self.rt,
            self.agent,
            ref,
            backend=BACKEND,
            price_overrides=self.overrides,
            budget_period=self.budget_period,
        )

    def _after(self, ref: ItemRef, result: Concluded) -> Concluded | None:
        """Note a pause; return what to count, or None while the item will run again (a retry)."""
        if result.status == ItemStatus.PAUSED:
            self._halted.set()
        elif (
            result is execute.SKIPPED
            and not self._halted.is_set()
            and self.rt.store.run_get(self.run_id)["status"] != "running"
        ):
            # Not queued any more because the run was paused by a person or another worker.
            self._halted.set()
        if result.retry_in is not None:
            self._requeue(ref, result.retry_in)
            return None
        return result

    def _attempt_sync(self, ref: ItemRef) -> Concluded:
        if self._halted.is_set():
            return LEFT_QUEUED
        ctx = self._begin(ref)
        if ctx is None:
            return execute.SKIPPED
        self.inflight.add(ctx, self.agent.timeout)
        token = current.set(ctx)
        ctx.capturing = True
        try:
            output = self.agent.fn(ctx.item)
        except KeyboardInterrupt:
            ctx.capturing = False
            self.inflight.remove(ctx)
            execute.release(ctx)
            raise
        except BaseException as exc:
            ctx.capturing = False
            self.inflight.remove(ctx)
            return execute.conclude(ctx, error=exc)
        finally:
            ctx.capturing = False
            current.reset(token)
        self.inflight.remove(ctx)
        return execute.conclude(ctx, output=output)

    def _worker(self) -> None:
        while not self._stop.is_set():
            ref = self._queue.get()
            if ref is None:
                return
            try:
                result = self._attempt_sync(ref)
            except Exception:
                log.exception(
                    "item %s: papayya could not record its attempt; it is resumable once its lease expires",
                    ref.key,
                )
                result = execute.Concluded(status="error", terminal=True)
            if result.status == "abandoned":
                return  # the watchdog already concluded this item and replaced this thread
            try:
                counted = self._after(ref, result)
            except Exception:  # never lose count of an item: map() waits for every one
                log.exception("item %s: could not check its run after the attempt", ref.key)
                counted = result
            if counted is not None:
                self._finished(counted)

    def _spawn_worker(self) -> None:
        threading.Thread(target=self._worker, name="papayya-worker", daemon=True).start()

    def run(self) -> None:
        monitor = threading.Thread(target=self._monitor, name="papayya-monitor", daemon=True)
        monitor.start()
        try:
            if self.agent.is_async:
                asyncio.run(self._run_async())
            else:
                for ref in self.refs:
                    self._queue.put(ref)
                for _ in range(min(self.concurrency, len(self.refs))):
                    self._spawn_worker()
                with self._done:
                    while self._remaining > 0:
                        self._done.wait(0.5)
        except BaseException:
            # Ctrl-C or a crash of papayya itself: leave the run resumable rather than "running".
            self.rt.store.runs_pause(self.refs[0].tenant_id, self.run_id, "interrupted: the process stopped")
            raise
        finally:
            self._stop.set()
            for _ in range(self.concurrency + 1):
                self._queue.put(None)
            monitor.join(timeout=5)
            self.rt.budgets.give_back(self.run_id)

    # -- async agents -----------------------------------------------------------------------------

    async def _attempt_async(self, ref: ItemRef) -> Concluded:
        if self._halted.is_set():
            return LEFT_QUEUED
        ctx = await asyncio.to_thread(self._begin, ref)
        if ctx is None:
            return execute.SKIPPED
        token = current.set(ctx)
        ctx.capturing = True
        try:
            coro = self.agent.fn(ctx.item)
            self.inflight.add(ctx, None)
            if self.agent.timeout:
                output = await asyncio.wait_for(coro, self.agent.timeout)
            else:
                output = await coro
        except TimeoutError:
            ctx.capturing = False
            self.inflight.remove(ctx)
            assert self.agent.timeout is not None
            return await asyncio.to_thread(execute.abandon_for_timeout, ctx, self.agent.timeout)
        except BaseException as exc:
            ctx.capturing = False
            self.inflight.remove(ctx)
            if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
                await asyncio.to_thread(execute.release, ctx)
                raise
            return await asyncio.to_thread(execute.conclude, ctx, error=exc)
        finally:
            ctx.capturing = False
            current.reset(token)
        self.inflight.remove(ctx)
        return await asyncio.to_thread(execute.conclude, ctx, output=output)

    async def _run_async(self) -> None:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(ref: ItemRef) -> None:
            while True:
                async with sem:
                    result = await self._attempt_async(ref)
                if result.status == ItemStatus.PAUSED:
                    self._halted.set()
                if result.retry_in is None:
                    break
                await asyncio.sleep(result.retry_in)
            self._finished(result)

        await asyncio.gather(*(one(ref) for ref in self.refs))


class Backend(Protocol):
    """What runs a recorded run's items. Backends register through ``papayya_register_backends``."""

    name: str

    def run(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
        progress: bool | None,
        run_name: str | None = None,
    ) -> None:
        """Run every item of the run through the lifecycle and return when each is terminal."""


class NativeBackend:
    """The native engine: papayya's own workers over PostgreSQL (in this process, for now)."""

    name = BACKEND

    def run(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
        progress: bool | None,
        run_name: str | None = None,
    ) -> None:
        show = rt.settings.progress if progress is None else progress
        label = run_name or f"{agent.name} [{tenant_id}]"
        tenant = rt.store.tenant_get(tenant_id)
        run = rt.store.run_get(run_id, tenant_id)
        period = tenant["budget_period"] if tenant else "month"
        budgets = [
            f"${b:,.2f} {what}"
            for b, what in ((run["budget_usd"], "run"), (tenant and tenant["budget_usd"], f"tenant/{period}"))
            if b is not None
        ]
        with Progress(label, total=len(items), enabled=show, budget=" + ".join(budgets) or None) as bar:
            LocalRun(
                rt,
                agent,
                run_id=run_id,
                tenant_id=tenant_id,
                items=items,
                concurrency=concurrency,
                progress=bar,
                budget_period=period,
            ).run()
