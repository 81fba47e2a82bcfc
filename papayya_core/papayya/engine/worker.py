"""The native engine's ``Worker``, one per ``map()`` or ``papayya worker`` process: it claims items in
batches, keeps a small prefetch buffer, runs each item through the one lifecycle and writes results in
batches, each fenced by its lease token; its monitor's clocks heartbeat the leases, check the runs held
against the control plane and run the reaper (see the package docstring for the whole engine).

A claim leases items; an item's attempt *begins* (is recorded as running) only when a thread is about
to run it: the items claimed for free threads begin together right after the claim, an item that
waited in the buffer begins on its own when a thread takes it. So when the process dies, the reaper
counts a lost worker against the items whose attempt had begun, never against the buffered ones: with
``PAPAYYA_MAX_STALLS=1`` a poison item fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import execute
from papayya.context import AttemptContext
from papayya.engine.begins import GroupBegins
from papayya.engine.held import Held
from papayya.errors import StoreClosed, StoreUnavailable
from papayya.execute import Concluded, ItemRef, Judged
from papayya.models import ItemStatus
from papayya.progress import Progress
from papayya.reaper import sweep
from papayya.store import recordset

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.engine")

BACKEND = "native"
CHANNEL = "papayya_work"
BATCH_TICK = 1.0  # seconds between rounds of the batcher (batch mode)


@dataclass
class WorkerStats:
    """What a worker did: attempts it claimed and concluded, by outcome."""

    claimed: int = 0
    concluded: int = 0
    stale: int = 0
    released: int = 0


class Worker:
    """Claims and runs items of ``agents``; see the module docstring.

    Args:
        rt: The runtime (store, settings, hooks).
        agents: The agents this worker serves (by name); items of other agents are left to others.
        concurrency: Items run at once.
        run_ids: Serve only these runs (``map()`` serves its own run), or every run of the agents.
        until_done: Return once ``run_ids`` have nothing left to run (or are paused) — ``map()``.
        burst: Return once no item of the agents is queued or running — a drain.
        progress: A progress line to advance as items conclude.
        prefetch: Items claimed ahead of free threads (they hold leases, heartbeated like the rest).
        poll: Seconds between claims while idle when no notification arrives.
    """

    def __init__(
        self,
        rt: Runtime,
        agents: Sequence[Agent],
        *,
        concurrency: int = 8,
        run_ids: Sequence[UUID] | None = None,
        until_done: bool = False,
        burst: bool = False,
        progress: Progress | None = None,
        prefetch: int | None = None,
        poll: float = 1.0,
        backend: str = BACKEND,
    ) -> None:
        if not agents:
            raise ValueError("a worker needs at least one agent")
        self.rt = rt
        self.agents = {a.name: a for a in agents}
        self.concurrency = concurrency
        self.run_ids = list(run_ids) if run_ids is not None else None
        self.until_done = until_done
        self.burst = burst
        self.progress = progress
        # A claimed item that waits for a thread starts even if its run was paused meanwhile (until the
        # worker notices, within a second); map() claims only for free threads, so a pause is exact.
        self.prefetch = (0 if until_done else min(concurrency, 16)) if prefetch is None else prefetch
        self.poll = poll
        self.backend = backend
        self.stats = WorkerStats()
        self.held = Held()
        self._ready: queue.SimpleQueue[AttemptContext | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[Judged | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()  # stop claiming (SIGTERM, or done)
        self._halt = threading.Event()  # the threads and monitors exit
        self._busy = 0  # claimed and not yet written
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_sem: asyncio.Semaphore | None = None
        self._run_tenants: dict[UUID, str] = {}
        self._stalled_waiting = threading.Event()  # a busy worker drains so a stalled item can run alone
        self._touched: dict[UUID, str] = {}  # runs with items concluded since the last completion check
        self.store_ok = True

    # -- public -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; ``run`` finishes what it holds (within its grace) and returns."""
        self._stop.set()
        self._wake.set()

    def run(self, *, grace: float = 30.0) -> WorkerStats:
        """Claim and run items until stopped (or done, for ``until_done``/``burst``). On stop, items
        in flight get ``grace`` seconds to finish; the rest are given back to the queue."""
        self._start()
        interrupted = False
        try:
            self._claim_loop()
        except BaseException:
            interrupted = True
            raise
        finally:
            self._shutdown(grace=0.0 if interrupted else grace)
        return self.stats

    # -- claiming ---------------------------------------------------------------------------------

    def _free(self) -> int:
        with self._busy_lock:
            return self.concurrency + self.prefetch - self._busy

    def _claim_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            free = self._free()
            full = self.concurrency + self.prefetch
            rows: list[dict[str, Any]] = []
            if self._stalled_waiting.is_set() and free < full:
                # An item that lost its worker waits to run alone: finish what is held, then take it.
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            if free > 0:
                try:
                    asked = time.monotonic()  # a lease granted by this claim ends lease_seconds after it
                    rows = self.rt.store.items_claim(
                        agents=list(self.agents),
                        run_ids=self.run_ids,
                        limit=free,
                        worker=self.rt.worker_id,
                        lease_seconds=self.rt.settings.lease_seconds,
                        backend=self.backend,
                        alone=free == full,
                    )
                    if free == full:
                        self._stalled_waiting.clear()
                    self._store_back()
                    backoff = 0.5
                except StoreUnavailable as exc:
                    backoff = self._store_down(exc, backoff)
                    continue
                # The first items have a thread now (fewer when results still hold slots): they begin
                # together; the rest wait in the buffer and begin one by one as threads take them.
                ctxs = [self._hold(row, asked) for row in rows]
                self._begin(ctxs[: max(0, free - self.prefetch)])
                for ctx in ctxs:
                    self._hand(ctx)
                if any(row["stalls"] for row in rows):
                    # An item that lost its worker before runs alone: claim nothing until it is done.
                    while self._free() < self.concurrency + self.prefetch and not self._stop.is_set():
                        self._wake.wait(self.poll)
                        self._wake.clear()
                    continue
            if rows and len(rows) == free:
                # Full: wait until a batch worth claiming is free (the prefetch buffer covers the gap).
                want = max(1, (self.concurrency + self.prefetch) // 2)
                while self._free() < want and not self._stop.is_set():
                    self._wake.wait(self.poll)
                    self._wake.clear()
                continue
            if not rows:
                wait = self._idle_wait()
                if wait is None:
                    return
                self._wake.wait(wait)
                self._wake.clear()

    def _idle_wait(self) -> float | None:
        """Nothing to claim: how long to sleep, or None when this worker is done."""
        if not (self.until_done or self.burst):
            return self.poll
        if self.held:
            return self.poll  # results still on their way; a completion wakes us
        try:
            # A worker given runs waits on those runs only: a burst worker of an agent whose other runs
            # have ready items it may not claim (not its runs) would otherwise never stop.
            if self.run_ids is not None:
                waits = []
                for run_id in self.run_ids:
                    tenant_id = self._tenant_of(run_id)
                    if tenant_id is None:
                        continue
                    p = self.rt.store.run_progress(run_id, tenant_id)
                    if p["status"] != "running":
                        continue
                    if p["ready"] or p["running"] or p["expired"]:
                        waits.append(min(self.poll, 0.2) if p["ready"] else self.poll / 2)
                    elif p["waiting"]:
                        waits.append(min(self.poll, float(p["next_in"] or 0) + 0.01))
                    elif p["waiting_batch"] and self.until_done:  # answers come from a provider batch
                        waits.append(self.poll)
                return min(waits) if waits else None
            w = self.rt.store.work_ready(list(self.agents))
        except StoreUnavailable as exc:
            self._store_down(exc, 1.0)
            return self.poll
        if w["ready"] or w["running"]:
            return min(self.poll, 0.2) if w["ready"] else self.poll / 2
        if w["next_in"] is not None:  # items waiting out a retry backoff
            return min(self.poll, max(0.0, float(w["next_in"])) + 0.01)
        return None

    def _tenant_of(self, run_id: UUID) -> str | None:
        if run_id not in self._run_tenants:
            row = self.rt.store.fetch_one("run_tenant", {"run_id": run_id})
            if row is None:
                return None
            self._run_tenants[run_id] = row["tenant_id"]
        return self._run_tenants[run_id]

    def _hold(self, row: dict[str, Any], asked: float) -> AttemptContext:
        """The context of a claimed item, held (its lease heartbeated) from now on."""
        agent = self.agents[row["agent_name"]]
        # The claim found the run running at this generation: whatever this process saw before is older.
        self.rt.control.observe_run(row["run_id"], "running", row["run_gen"])
        overrides, period = self.rt.control.terms(row["tenant_id"])
        ctx = execute.context(
            self.rt,
            agent,
            ItemRef(row["item_id"], row["key"], row["run_id"], row["tenant_id"]),
            attempt_id=row["attempt_id"],
            number=row["attempts"],
            token=row["lease_token"],
            input=row["input"],
            journal=row["journal"],
            failures=row["failures"],
            from_journal=bool(row["from_journal"]),
            backend=self.backend,
            price_overrides=overrides,
            budget_period=period,
            llm_mode=row["llm_mode"],
            started=False,  # it starts when its attempt begins (_begin)
        )
        ctx.lease_until = asked + self.rt.settings.lease_seconds
        with self._busy_lock:
            self._busy += 1
        self.stats.claimed += 1
        self.held.add(ctx)
        return ctx

    def _hand(self, ctx: AttemptContext) -> None:
        """Give a held item to a thread (or the event loop), in claim order."""
        if ctx.agent.is_async:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._attempt_async(ctx), self._loop)
        else:
            self._ready.put(ctx)

    def _begin(self, ctxs: Sequence[AttemptContext]) -> list[AttemptContext] | None:
        """Record the attempts of ``ctxs`` as begun (one statement), before any of them runs user code:
        from then on a crash of this process counts against them. Returns those that did not begin
        (their lease moved on), or None when the store is away; either way their thread begins them or
        gives them back."""
        todo = [c for c in ctxs if not self.held.began(c)]
        if not todo:
            return []
        try:
            begun = begin_attempts(self.rt, todo, backend=self.backend)
        except StoreUnavailable as exc:
            log.warning("could not begin %d attempt(s) (%s)", len(todo), exc)
            return None
        self.held.mark_begun(c for c in todo if c.item_id in begun)
        for c in todo:
            if c.item_id in begun:
                execute.mark_started(c)
        return [c for c in todo if c.item_id not in begun]

    def _begin_one(self, ctx: AttemptContext) -> bool:
        """Begin a buffered attempt as its thread takes it (with the others taken up at that moment, in
        one statement: GroupBegins); False when it may not start (it is given back: to the queue, or to
        whoever holds its item now)."""
        if self.held.began(ctx):
            return True
        began = self._begins.begin(ctx)
        if began is False:
            ctx.abandoned = True
            log.warning("item %s: lost its lease while it waited in the buffer; not started", ctx.item.id)
        return began is True

    # -- running ----------------------------------------------------------------------------------

    def _thread(self) -> None:
        while not self._halt.is_set():
            ctx = self._ready.get()
            if ctx is None:
                return
            if not self.held.start(ctx):
                continue  # given back by a shutdown before it started
            if not (self._may_start(ctx) and self._begin_one(ctx)):
                if self.held.judge(ctx):
                    self._results.put(Judged(ctx, execute.release_finish(ctx)))  # stays queued
                continue
            try:
                output, error = execute.invoke(ctx)
            except BaseException:
                if self.held.judge(ctx):
                    self._results.put(Judged(ctx, execute.release_finish(ctx)))
                raise
            if not self.held.judge(ctx):
                if ctx.abandoned:
                    return  # timed out: the watchdog concluded it and started a thread in our place
                continue
            self._judge(ctx, output, error)

    def _may_start(self, ctx: AttemptContext) -> bool:
        """A buffered item starts only if its run is still running and its lease still holds (a worker
        frozen past its lease must not run, and pay for, items that may be someone else's now)."""
        if self.rt.control.run_stopped(ctx.run_id):
            return False
        if ctx.abandoned or (ctx.lease_until is not None and time.monotonic() > ctx.lease_until):
            ctx.abandoned = True
            return False
        return True

    def _judge(self, ctx: AttemptContext, output: Any, error: BaseException | None) -> None:
        try:
            judged = execute.judge(ctx, output=output, error=error)
        except Exception:
            log.exception(
                "item %s: papayya could not classify its result; it goes back to the queue", ctx.item.id
            )
            judged = None
        self._results.put(judged or Judged(ctx, execute.release_finish(ctx)))

    async def _attempt_async(self, ctx: AttemptContext) -> None:
        assert self._async_sem is not None
        async with self._async_sem:
            if not self.held.start(ctx):
                return
            if not (self._may_start(ctx) and await asyncio.to_thread(self._begin_one, ctx)):
                if self.held.judge(ctx):
                    self._results.put(Judged(ctx, execute.release_finish(ctx)))
                return
            try:
                output, error = await execute.ainvoke(ctx, ctx.agent.timeout)
            except asyncio.CancelledError:
                if self.held.judge(ctx):
                    self._results.put(Judged(ctx, execute.release_finish(ctx)))
                raise
        if self.held.judge(ctx):
            self._judge(ctx, output, error)

    def _async_main(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._async_sem = asyncio.Semaphore(self.concurrency)
        asyncio.set_event_loop(loop)
        started.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    # -- writing ----------------------------------------------------------------------------------

    def _writer(self) -> None:
        backoff = 0.5
        batch: list[Judged] = []
        stopping = False
        while True:
            if not batch:
                if stopping:
                    return
                first = self._results.get()
                if first is None:
                    return
                batch.append(first)
                while len(batch) < 256:
                    try:
                        nxt = self._results.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    batch.append(nxt)
            try:
                results = execute.settle(batch)
                self._store_back()
                backoff = 0.5
            except StoreUnavailable as exc:
                # Keep the batch (its leases are still heartbeated) and try again: each result is
                # written, or discarded as stale if its item went to someone else meanwhile.
                if self._halt.is_set() and backoff >= 8:
                    log.error(
                        "giving up writing %d result(s) while stopping; the reaper recovers their items",
                        len(batch),
                    )
                    results = [Concluded(status="unwritten", terminal=False, discarded=True)] * len(batch)
                else:
                    backoff = self._store_down(exc, backoff)
                    continue
            except Exception:
                log.exception("could not write %d result(s); the reaper recovers their items", len(batch))
                results = [Concluded(status="unwritten", terminal=False, discarded=True)] * len(batch)
            for j, result in zip(batch, results, strict=True):
                self._done(result, j.ctx)
            batch = []

    def _done(self, result: Concluded, ctx: AttemptContext) -> None:
        self.held.remove(ctx)
        if result.terminal:
            self._touched[ctx.run_id] = ctx.tenant_id
        with self._busy_lock:
            self._busy -= 1
        if result.status == "stale":
            self.stats.stale += 1
        elif result.status == ItemStatus.QUEUED and result.retry_in is None:
            self.stats.released += 1
        else:
            self.stats.concluded += 1
        if self.progress is not None and result.terminal:
            self.progress.advance(result.status, result.cost_usd)
        self._wake.set()

    # -- monitoring -------------------------------------------------------------------------------

    def _monitor(self) -> None:
        lease = self.rt.settings.lease_seconds
        beat_every = lease / 3
        timeouts = any(a.timeout for a in self.agents.values())
        tick = min(beat_every, 0.05 if timeouts else 0.5)
        reap_every = max(0.2, min(lease / 3, 10.0))
        last_beat = last_check = last_reap = time.monotonic()
        while not self._halt.wait(tick):
            now = time.monotonic()
            for ctx in self.held.overdue():
                self._abandon(ctx)
            if now - last_beat >= beat_every:
                last_beat = now
                self._heartbeat(lease)
            if now - last_check >= 1.0:
                last_check = now
                self._check_runs()
            if now - last_reap >= reap_every and not self._stop.is_set():
                last_reap = now
                try:
                    if sweep(self.rt):
                        self._wake.set()
                except StoreUnavailable as exc:
                    log.warning("reaper: sweep failed (%s); retried", exc)

    def _batcher(self) -> None:
        """Batch mode: send the pending requests that are due and read the provider batches that ended
        (papayya.batches), in a thread of its own, since an upload or a results file may take a while."""
        from papayya import batches

        me = f"{self.rt.worker_id}:batcher"
        while not self._halt.wait(BATCH_TICK):
            try:
                report = batches.tick(self.rt, worker=me)
            except (StoreUnavailable, StoreClosed) as exc:
                log.debug("batcher: %s; tried again", exc)
                continue
            except Exception:
                log.exception("batcher: a round failed; tried again")
                continue
            if report.woken:
                self._wake.set()

    def _heartbeat(self, lease: float) -> None:
        """Extend the leases of everything held. An attempt whose lease was extended may run until
        ``lease`` seconds after the heartbeat was sent; one the store no longer lists is not ours any
        more (the reaper gave it to someone else): it stops before its next paid call."""
        try:
            execute.heartbeat(self.rt, self.held.contexts(), lease)
        except StoreUnavailable as exc:
            log.warning("heartbeat failed (%s); retried next beat", exc)

    def _look_for_stalled(self) -> None:
        """If a queued item that lost its worker waits in a run we serve, drain so it can run alone."""
        if self._free() == self.concurrency + self.prefetch:
            return  # idle: the next claim takes it anyway
        row = self.rt.store.fetch_one(
            "stalled_waiting",
            {"backend": self.backend, "agents": list(self.agents), "run_ids": self.run_ids},
        )
        if row is not None and row["waiting"]:
            self._stalled_waiting.set()
            self._wake.set()

    def _abandon(self, ctx: AttemptContext) -> None:
        timeout = ctx.agent.timeout
        assert timeout is not None
        log.warning("item %s: attempt %d passed its %gs timeout", ctx.item.id, ctx.attempt, timeout)
        try:
            raise TimeoutError(f"agent {ctx.agent.name} did not finish within {timeout:g}s")
        except TimeoutError as exc:
            judged = execute.judge(ctx, error=exc)
        ctx.abandoned = True  # whatever the stuck function returns now is void
        self._results.put(judged or Judged(ctx, execute.release_finish(ctx)))
        if not ctx.agent.is_async:
            self._spawn(self._thread, "papayya-worker")  # the stuck thread is lost to us

    def _check_runs(self) -> None:
        """Once a second: complete runs that are done, look for an item waiting to run alone, and
        read the control state of the runs held (paused or resumed elsewhere: in-flight items stop at
        their next call, a resumed run is claimed again). Budget spend is written by the budgets'
        own flusher."""
        try:
            self._complete_runs()
            self._look_for_stalled()
            self.rt.control.refresh(self.held.runs() | set(self.run_ids or ()))
        except StoreUnavailable as exc:
            log.warning("run check failed (%s); retried next second", exc)
        except Exception:
            log.exception("run check failed; retried next second")

    def _complete_runs(self) -> None:
        """Mark the runs this worker concluded items of completed, if nothing of theirs is left."""
        touched, self._touched = self._touched, {}
        for run_id, tenant_id in touched.items():
            self.rt.store.run_complete(run_id, tenant_id)  # a no-op while it has items to run

    def _store_down(self, exc: Exception, backoff: float) -> float:
        if self.store_ok:
            log.warning("lost the store (%s); holding %d item(s) and retrying", exc, len(self.held))
        self.store_ok = False
        self.rt.store.recover()
        self._halt.wait(backoff)
        return min(backoff * 2, 10.0)

    def _store_back(self) -> None:
        if not self.store_ok:
            log.warning("the store is back")
            self.store_ok = True

    # -- listening --------------------------------------------------------------------------------

    def _listen(self) -> None:
        """Wake the claim loop when an agent of ours gets new work, and hear control changes (pause,
        resume, budgets, caps) as they commit. Hints: polling covers losses."""
        import psycopg

        from papayya.runstate import CHANNEL as CONTROL

        backoff = 0.5
        while not self._halt.is_set():
            try:
                with psycopg.connect(self.rt.store.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {CONTROL}")
                    backoff = 0.5
                    while not self._halt.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.channel == CONTROL:
                                self.rt.control.on_notify(note.payload)
                                self._wake.set()  # a resumed run has work to claim
                            elif note.payload in self.agents:
                                self._wake.set()
            except psycopg.Error as exc:
                if self._halt.is_set():
                    return
                log.debug("listener lost its connection (%s); reconnecting", exc)
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    # -- start and stop ---------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _start(self) -> None:
        if any(a.is_async for a in self.agents.values()):
            started = threading.Event()
            self._spawn(self._async_main, "papayya-loop", started)
            started.wait()
        if any(not a.is_async for a in self.agents.values()):
            for _ in range(self.concurrency):
                self._spawn(self._thread, "papayya-worker")
        self._writer_thread = self._spawn(self._writer, "papayya-writer")
        self._begins = GroupBegins(self._begin)
        self._spawn(self._monitor, "papayya-monitor")
        self._spawn(self._batcher, "papayya-batcher")
        if not self.until_done:
            self._spawn(self._listen, "papayya-listen")

    def _shutdown(self, *, grace: float) -> None:
        """Stop claiming; let items in flight finish within ``grace``; give the rest back."""
        self._stop.set()
        deadline = time.monotonic() + grace
        while True:
            with self._busy_lock:
                busy = self._busy
            waiting = self._ready.qsize()  # buffered, not started: no reason to wait for those
            if busy <= waiting or time.monotonic() >= deadline:
                break
            self._wake.wait(0.05)
            self._wake.clear()
        given_back = self.held.take_unjudged()
        for ctx in given_back:
            ctx.abandoned = True  # a thread still running it stops before its next paid call
        for ctx in given_back:
            execute.await_paid_calls(ctx)  # and a call it has on the wire is recorded first
            self._results.put(Judged(ctx, execute.release_finish(ctx)))
        self._halt.set()
        for _ in range(len(self._threads) + 1):
            self._ready.put(None)
        self._results.put(None)
        self._writer_thread.join(timeout=30)
        self._begins.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        try:
            self._complete_runs()
            self.rt.budgets.give_back()
        except (StoreUnavailable, StoreClosed) as exc:
            log.warning(
                "could not give back unspent budget leases (%s); `papayya resume` reconciles them", exc
            )


def begin_attempts(rt: Runtime, ctxs: Sequence[AttemptContext], *, backend: str = BACKEND) -> set[UUID]:
    """Record the attempts of claimed items as begun, in one statement fenced by their lease tokens;
    returns the ids of the items that began (the others are not this worker's any more)."""
    if not ctxs:
        return set()
    rows = rt.store.fetch_all(
        "attempts_begin",
        {
            "begins": recordset(
                [
                    {
                        "item_id": str(c.item_id),
                        "tenant_id": c.tenant_id,
                        "token": c.lease_token,
                        "attempt_id": str(c.attempt_id),
                        "number": c.attempt,
                    }
                    for c in ctxs
                ]
            ),
            "backend": backend,
            "worker": rt.worker_id,
        },
        # What a begin is for, counting a crash of this process against the item, needs the row in
        # the server, not on its disk: a dead worker's commits stay. Only a crash of PostgreSQL itself
        # within a fraction of a second (before the WAL writer or any later flushed commit) can lose
        # it, and the item then goes back without a stall.
        flushed=False,
    )
    return {r["item_id"] for r in rows}


def serve(rt: Runtime, agents: Iterable[Agent], **options: Any) -> WorkerStats:
    """Run a worker for ``agents`` in this process until it is stopped (``papayya worker``)."""
    return Worker(rt, list(agents), **options).run()
