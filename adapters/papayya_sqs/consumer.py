"""``Consumer``: long-poll an SQS queue and run each message as one attempt of one item.

A receiver thread long-polls (batches of up to ten, never more than free slots); each message is
parsed and, for a batch at once, its ids are validated against the store (the tenant must own the
run and the item); then a pool thread runs it through the one lifecycle (``execute.begin`` ->
``invoke`` -> ``judge``/``settle``) and decides what becomes of the message:

=============================================  ===================================================
the attempt / the message                       the message
=============================================  ===================================================
terminal (succeeded, degraded, failed)          deleted (in batches; per-entry failures retried)
paused (a budget broke, or the run is paused)   deleted; the item is kept ``paused`` in the store and
                                                ``papayya resume`` sends it again
failed, the agent's policy retries it           hidden for ``retry_in`` seconds, then redelivered
... on the queue's last delivery                the item is failed (``DeadLettered``) and the message
(``ApproximateReceiveCount`` = maxReceiveCount) is made visible: SQS moves it to the DLQ
held by another attempt's live lease            hidden until that lease could have expired (on its
                                                last delivery: deleted; the holder finishes the item
                                                or the reaper sends it again)
its last delivery, fewer attempts of its item   a fresh message is sent for the item and this one
than deliveries (others spent its count)        deleted: the dead-letter queue only takes messages
                                                whose own item used their deliveries
a duplicate of a done item                      deleted
a duplicate of an item this consumer already    deleted: the message this consumer holds carries the
holds (both messages received by it)            item on, whatever becomes of its attempt
malformed, oversized, forged, no tenant         logged (one sentence) and moved to the DLQ with a
                                                ``papayya_error`` attribute; nothing is recorded
=============================================  ===================================================

An item that lost its worker before (``stalls`` > 0: it may be what killed it) runs alone: the consumer
lets what runs finish, receives nothing more, and runs it by itself; if it kills the process again, no
innocent item goes down (or is counted toward the dead-letter queue) with it, and after ``max_stalls``
losses the reaper fails it.

A monitor thread extends the visibility of every message in flight (with its latest receipt handle)
and the papayya lease of its attempt, writes budget spend every second and notices runs paused
elsewhere. The consumer also runs papayya's reaper: items whose consumer died are marked ``stalled``
and sent again. ``stop()`` (SIGTERM, Ctrl-C) drains: no more receives, items in flight get ``grace``
seconds, the rest are given back (item ``queued``, message visible again).

A consumer built with ``agent=None`` (``python -m papayya_sqs --any-agent``) serves any agent: each
papayya message's agent is the one its run was started with, imported once per process by
``papayya.control.agent_of_run``; then the message goes through the same path as above. The team's own
messages (no ``papayya_item``) have no run to say which agent they are for: they need an agent the
consumer was given (``agent=``, or ``MODULE:AGENT`` beside ``--any-agent``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue as queuelib
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from papayya import control, execute, intake
from papayya.agent import Agent
from papayya.context import AttemptContext
from papayya.errors import AgentNotImportable, InputError, StoreUnavailable, TenantError
from papayya.execute import ItemRef
from papayya.models import ItemStatus
from papayya.reaper import Reaper
from papayya.runtime import get_runtime
from papayya_otel import propagation as trace_context
from papayya_sqs import message as M
from papayya_sqs.config import DeadLettered, SqsSettings, SqsUnavailable, make_client
from papayya_sqs.queue import MAX_VISIBILITY, Queue

if TYPE_CHECKING:
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.sqs")

BACKEND = "sqs"
OPEN = (ItemStatus.QUEUED, ItemStatus.STALLED, ItemStatus.RUNNING)  # an item a delivery may still run
Overrides = dict[tuple[str, str], dict[str, Decimal | None]]


# -- what becomes of a message ------------------------------------------------------------------------


@dataclass(frozen=True)
class Delete:
    """The message is done with: delete it."""


@dataclass(frozen=True)
class Hide:
    """Leave the message for redelivery after ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class DeadLetter:
    """Move the message to the dead-letter queue, with ``reason``."""

    reason: str


@dataclass(frozen=True)
class Leave:
    """Do nothing: someone else holds the item (and its message) now."""


@dataclass(frozen=True)
class Renew:
    """Send the item a fresh message, then delete this one: its receive count was spent by others."""

    ref: ItemRef


Action = Delete | Hide | DeadLetter | Leave | Renew


class _Gate:
    """Runs an item that lost its worker before (a *suspect*: it may be what killed it) alone in this
    consumer, so that if it kills the process again, it takes no innocent item with it: a suspect waits
    until nothing else runs, and nothing starts (or is received) while one waits or runs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._suspects = 0  # waiting or running
        self._alone = False

    @property
    def isolating(self) -> bool:
        with self._cond:
            return self._suspects > 0

    def would_wait(self, suspect: bool) -> bool:
        """Whether an item entering now would have to wait (racy: a hint for what to do meanwhile)."""
        with self._cond:
            return self._running > 0 or self._alone if suspect else self._suspects > 0

    def enter(self, suspect: bool, stopping: threading.Event) -> bool:
        """Wait for this item's turn; False when the consumer stops meanwhile (nothing was started)."""
        with self._cond:
            if suspect:
                self._suspects += 1
            while not stopping.is_set():
                if suspect and self._running == 0 and not self._alone:
                    self._alone = True
                    break
                if not suspect and self._suspects == 0:
                    break
                self._cond.wait(0.2)
            else:
                if suspect:
                    self._suspects -= 1
                    self._cond.notify_all()
                return False
            self._running += 1
            return True

    def leave(self, suspect: bool) -> None:
        with self._cond:
            self._running -= 1
            if suspect:
                self._suspects -= 1
                self._alone = False
            self._cond.notify_all()


@dataclass
class _Flight:
    """A message this consumer received and has not settled yet."""

    msg: M.Received
    handle: str  # the newest receipt handle: a second delivery of the message replaces it
    ctx: AttemptContext | None = None
    decided_by: str | None = None  # "worker" (the thread that ran it) or "drain" (the shutdown): once
    outcome: str | None = None  # the stats counter the worker's decision lands in (counted once decided)


@dataclass
class ConsumerStats:
    """What ``run()`` did. ``received`` counts deliveries (a message delivered again after it was hidden
    counts again); once ``run()`` returned, each lands in exactly one outcome counter (``OUTCOMES``), so
    ``received == sum(stats.outcomes().values())``. ``dead_lettered`` is a tally on top: messages moved
    (or left for SQS to move) to the dead-letter queue, each also counted as ``refused`` or ``failed``."""

    OUTCOMES: ClassVar[tuple[str, ...]] = (
        "succeeded",
        "degraded",
        "failed",
        "retried",
        "paused",
        "duplicates",
        "refused",
        "released",
        "stale",
        "renewed",
        "held",
        "returned",
    )

    received: int = 0
    succeeded: int = 0
    degraded: int = 0
    failed: int = 0
    retried: int = 0
    paused: int = 0
    duplicates: int = 0
    refused: int = 0
    dead_lettered: int = 0
    released: int = 0
    stale: int = 0
    renewed: int = 0  # messages replaced by a fresh one: their receive count was spent by others
    held: int = 0  # its item held by another attempt: hidden until that lease could have expired
    returned: int = 0  # hidden for a later delivery, nothing recorded: store away, agent not served, error
    counts_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.counts_lock:
            setattr(self, name, getattr(self, name) + n)

    def outcomes(self) -> dict[str, int]:
        """The outcome counters: where each received message went."""
        with self.counts_lock:
            return {name: getattr(self, name) for name in self.OUTCOMES}


class _Pool:
    """Daemon threads running submitted calls: an agent stuck past the shutdown's grace (its item given
    back) does not keep the process alive."""

    def __init__(self, size: int) -> None:
        self._work: queuelib.Queue[tuple[Any, tuple[Any, ...]] | None] = queuelib.Queue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"papayya-sqs-{n}", daemon=True) for n in range(size)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Any, *args: Any) -> None:
        self._work.put((fn, args))

    def _loop(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except BaseException:  # each call handles its own errors; this keeps the thread alive
                log.exception("consumer thread: unexpected error")

    def shutdown(self) -> None:
        for _ in self._threads:
            self._work.put(None)


class Consumer:
    """Runs the messages of one SQS queue as accountable items of ``agent`` (or several agents, or any).

    Args:
        queue_url: The queue; default ``PAPAYYA_SQS_QUEUE_URL``.
        agent: The agent (or agents) whose items arrive on this queue. With several, a message names
            its agent through its run (papayya's messages) or a ``papayya_agent`` attribute. ``None``:
            any agent (``any_agent``), each imported from where its run was started.
        any_agent: Also run papayya's messages of agents not in ``agent``, importing each run's agent
            with ``papayya.control.agent_of_run`` (once per process). Default: ``agent is None``. The
            team's own messages (no item id) still need an agent from ``agent``.
        sqs: A boto3 SQS client; default one built from ``PAPAYYA_SQS_*`` (endpoint, region).
        concurrency: Items run at once (threads); default ``PAPAYYA_SQS_CONCURRENCY`` (10).
        wait_seconds: Long-poll wait of one receive (0-20); default ``PAPAYYA_SQS_WAIT_SECONDS`` (20).
        visibility_timeout: Seconds a received message stays hidden (extended while its item runs);
            default ``PAPAYYA_SQS_VISIBILITY_TIMEOUT``, else the queue's own.
        reaper: Run papayya's reaper in this process (items whose consumer died are sent again).
    """

    def __init__(
        self,
        queue_url: str | None = None,
        *,
        agent: Agent | Sequence[Agent] | None = None,
        any_agent: bool | None = None,
        sqs: Any = None,
        concurrency: int | None = None,
        wait_seconds: int | None = None,
        visibility_timeout: int | None = None,
        reaper: bool = True,
    ) -> None:
        agents = [] if agent is None else [agent] if isinstance(agent, Agent) else list(agent)
        self.any_agent = agent is None if any_agent is None else any_agent
        if not all(isinstance(a, Agent) for a in agents) or not (agents or self.any_agent):
            raise TypeError(
                "agent= must be a papayya agent (a function decorated with @papayya.agent) or a list; "
                "agent=None (or any_agent=True) serves any agent"
            )
        self.settings = SqsSettings.from_env(
            queue_url=queue_url,
            concurrency=concurrency,
            wait_seconds=wait_seconds,
            visibility_timeout=visibility_timeout,
        )
        url = self.settings.require_queue()
        self.queue = Queue(
            url, sqs if sqs is not None else make_client(self.settings, url), fair=self.settings.fair
        )
        self.agents = {a.name: a for a in agents}
        self._run_agents: dict[UUID, Agent] = {}  # a consumer serving any agent: each run's agent
        self.concurrency = self.settings.concurrency
        self.wait_seconds = self.settings.wait_seconds
        self.reaper = reaper
        self.stats = ConsumerStats()
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._holding: dict[UUID, _Flight] = {}  # item -> the flight of this consumer handling it
        self._busy = 0
        self._slots = threading.Condition(self._lock)
        self._outbox: queuelib.Queue[tuple[_Flight, Action] | None] = queuelib.Queue()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._burst = False
        self._rt: Runtime | None = None
        self._visibility = 30
        self._gate = _Gate()

    def __repr__(self) -> str:
        return f"<papayya_sqs.Consumer {self.queue.url} serving {self.serving}>"

    @property
    def serving(self) -> str:
        """The agents this consumer runs, in words."""
        named = ", ".join(self.agents)
        if not self.any_agent:
            return named
        return f"any agent (and {named} for the team's own messages)" if named else "any agent"

    # -- running ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop receiving; ``run()`` then drains what is in flight and returns."""
        self._stopping.set()
        with self._slots:
            self._slots.notify_all()

    def run(self, *, burst: bool = False, grace: float = 30.0) -> ConsumerStats:
        """Receive and run messages until ``stop()`` (SIGTERM and Ctrl-C call it when this runs on the
        main thread) or, with ``burst``, until a receive finds the queue empty and nothing is in flight.
        Items still running ``grace`` seconds after the stop are given back. Returns what it did."""
        from papayya_sqs.backend import SqsBackend

        rt = self._rt = get_runtime()
        self._burst = burst
        self._stopping.clear()
        self._closed.clear()
        info = self.queue.info  # a wrong URL or missing credentials fail here, in one sentence
        self._visibility = self.settings.visibility_timeout or info.visibility_timeout
        mine = None if self.any_agent else self.agents
        if not isinstance(rt.backend, SqsBackend) or not rt.backend.serves(self.queue.url, mine):
            # this consumer's reaper sends the stalled items of its agents (any agent's, for a consumer
            # serving any) back to its own queue
            rt.backend = SqsBackend(self.queue, agents=mine)
        pool = _Pool(self.concurrency)
        threads = [
            threading.Thread(target=self._settle_loop, name="papayya-sqs-settle", daemon=True),
            threading.Thread(target=self._monitor, name="papayya-sqs-monitor", daemon=True),
            threading.Thread(
                target=self._receive_loop, args=(pool,), name="papayya-sqs-receive", daemon=True
            ),
        ]
        sweeper = Reaper(rt).start() if self.reaper else None
        restore = self._signals()
        for t in threads:
            t.start()
        log.info(
            "consumer on %s: %s, %d at once (visibility %ds, max receives %s)",
            self.queue.url,
            self.serving,
            self.concurrency,
            self._visibility,
            info.max_receive_count or "unbounded",
        )
        try:
            while not self._stopping.wait(0.2):
                pass
        finally:
            try:
                # A long poll in progress is not waited out: what it receives after the stop is made
                # visible again by the receiver itself (or by SQS after the visibility timeout, when the
                # process has exited by then).
                threads[2].join(timeout=0.1)
                self._drain(time.monotonic() + grace, grace)
            finally:
                self._closed.set()
                self._outbox.put(None)
                threads[0].join(timeout=30)
                pool.shutdown()
                if sweeper is not None:
                    sweeper.stop()
                try:
                    rt.budgets.give_back()
                except Exception as exc:
                    log.warning(
                        "could not give back unspent budget (%s); `papayya resume` reconciles it", exc
                    )
                restore()
        return self.stats

    def _signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def stop(signum: int, frame: FrameType | None) -> None:
            log.warning("consumer: stopping (finishing items in flight)")
            self.stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

        for s in previous:
            signal.signal(s, stop)

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        return restore

    def _receive_loop(self, pool: _Pool) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            with self._slots:
                # While an item that lost its worker before waits or runs alone, receive nothing: a
                # message received now would share its fate (and its receive count) if it kills us.
                while (
                    self._busy >= self.concurrency or self._gate.isolating
                ) and not self._stopping.is_set():
                    self._slots.wait(0.2)
                free = self.concurrency - self._busy
            if self._stopping.is_set():
                return
            try:
                msgs = self.queue.receive(free, self.wait_seconds, self._visibility)
            except SqsUnavailable as exc:
                log.warning("consumer: %s; retrying in %.1fs", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            if self._stopping.is_set():  # received while stopping: give them back at once
                if msgs:
                    self.queue.change_visibility([(m.message_id, m.receipt_handle, 0) for m in msgs])
                return
            if not msgs:
                if self._burst and self._quiet():
                    self.stop()
                continue
            self._dispatch(msgs, pool)

    def _quiet(self) -> bool:
        with self._lock:
            return self._busy == 0 and not self._flights and self._outbox.empty()

    def _dispatch(self, msgs: list[M.Received], pool: _Pool) -> None:
        fresh: list[_Flight] = []
        with self._lock:
            for m in msgs:
                known = self._flights.get(m.message_id)
                if known is not None:
                    # a second delivery of a message this consumer still holds: keep its newest handle
                    known.handle = m.receipt_handle
                    continue
                flight = _Flight(m, m.receipt_handle)
                self._flights[m.message_id] = flight
                self._busy += 1
                fresh.append(flight)
        self.stats.add("received", len(fresh))
        assert self._rt is not None
        parsed = [M.parse(f.msg, self._rt.settings.default_tenant) for f in fresh]
        try:
            rows = self._validate(parsed)
        except StoreUnavailable as exc:
            log.warning("consumer: the papayya store is away (%s); %d message(s) wait", exc, len(fresh))
            for f in fresh:
                f.outcome = "returned"
                self._finish(f, Hide(self._store_backoff(f.msg)))
            return
        for f, p in zip(fresh, parsed, strict=True):
            row = rows.get(p.ref.item_id) if p.ref is not None else None
            pool.submit(self._handle, f, p, row)

    def _validate(self, parsed: list[M.Parsed]) -> dict[UUID, dict[str, Any]]:
        """Look up, in one query, the items the batch's messages name, scoped by each message's tenant."""
        refs = [p.ref for p in parsed if p.ref is not None]
        if not refs:
            return {}
        assert self._rt is not None
        rows = self._rt.store.fetch_all(
            "sqs_items",
            {
                "item_ids": [r.item_id for r in refs],
                "run_ids": [r.run_id for r in refs],
                "tenant_ids": [r.tenant_id for r in refs],
            },
        )
        return {r["item_id"]: r for r in rows}

    # -- one message ------------------------------------------------------------------------------

    def _handle(self, flight: _Flight, parsed: M.Parsed, row: dict[str, Any] | None) -> None:
        try:
            with trace_context.attached(flight.msg.attributes):  # the sender's span is the attempt's parent
                action = self._process(flight, parsed, row)
        except StoreUnavailable as exc:
            log.warning(
                "message %s: the papayya store is away (%s); it comes back", flight.msg.message_id, exc
            )
            flight.outcome = "returned"
            action = Hide(self._store_backoff(flight.msg))
        except Exception:
            log.exception("message %s: papayya could not handle it; it comes back", flight.msg.message_id)
            flight.outcome = "returned"
            action = Hide(min(MAX_VISIBILITY, 30 * flight.msg.receive_count))
        self._finish(flight, action)

    def _decide(self, flight: _Flight, who: str) -> bool:
        """Whether ``who`` decides what becomes of the message (the first to ask does)."""
        with self._lock:
            if flight.decided_by is None:
                flight.decided_by = who
            return flight.decided_by == who

    def _finish(self, flight: _Flight, action: Action) -> None:
        with self._slots:
            self._busy -= 1
            self._slots.notify_all()
        if self._decide(flight, "worker"):  # else the shutdown gave it back already (and counted it)
            if not isinstance(action, Renew):  # (counted once its fresh message is sent, or not)
                if flight.outcome is None:
                    log.warning("message %s: no outcome recorded for %s", flight.msg.message_id, action)
                self.stats.add(flight.outcome or "returned")
            self._post(flight, action)

    def _post(self, flight: _Flight, action: Action) -> None:
        self._outbox.put((flight, action))

    @staticmethod
    def _store_backoff(msg: M.Received) -> float:
        return min(300.0, 5.0 * float(2 ** min(msg.receive_count, 6)))

    def _process(self, flight: _Flight, parsed: M.Parsed, row: dict[str, Any] | None) -> Action:
        rt = self._rt
        assert rt is not None
        msg = flight.msg
        if self._stopping.is_set():
            flight.outcome = "released"
            return Hide(0)  # stopping: not started, given back at once
        if parsed.problem is not None:
            return self._refuse(flight, f"refused {parsed.problem}")
        assert parsed.tenant_id is not None
        if parsed.ref is not None:
            ref = parsed.ref
            if row is None:
                return self._refuse(
                    flight,
                    f"refused message {msg.message_id}: tenant {ref.tenant_id!r} has no item {ref.item_id} "
                    f"in run {ref.run_id} (a forged or mistaken attribute); nothing ran",
                )
            agent = self.agents.get(row["agent_name"])
            if agent is None and self.any_agent:
                try:
                    agent = self._agent_of_run(ref)
                except AgentNotImportable as exc:
                    log.error(
                        "message %s: %s It goes back to the queue for a consumer that can.",
                        msg.message_id,
                        exc,
                    )
                    flight.outcome = "returned"
                    return Hide(min(MAX_VISIBILITY, 30 * msg.receive_count))
            if agent is None:
                log.error(
                    "message %s: item %s belongs to agent %s, which this consumer does not serve (%s); "
                    "it goes back to the queue for a consumer that does",
                    msg.message_id,
                    row["key"],
                    row["agent_name"],
                    ", ".join(self.agents),
                )
                flight.outcome = "returned"
                return Hide(min(MAX_VISIBILITY, 5 * msg.receive_count))
            ref = ItemRef(ref.item_id, row["key"], ref.run_id, ref.tenant_id)
        else:
            found = self._agent_named(parsed.agent)
            if isinstance(found, str):
                return self._refuse(flight, f"refused message {msg.message_id}: {found}")
            agent = found
            assert parsed.key is not None
            assert parsed.input is not None
            try:
                ref = intake.adopt(
                    rt, agent, tenant_id=parsed.tenant_id, key=parsed.key, input=parsed.input, backend=BACKEND
                )
            except (InputError, TenantError) as exc:
                return self._refuse(flight, f"refused message {msg.message_id}: {exc}")
            if msg.receive_count > 1:  # delivered before: its item may have lost a consumer already
                key = {"item_id": ref.item_id, "tenant_id": ref.tenant_id}
                row = rt.store.fetch_one("sqs_item_state", key)
        with self._lock:
            holder = self._holding.setdefault(ref.item_id, flight)
        if holder is not flight:
            # Another message of this item is in this consumer (a re-sent message, a FIFO retry, a
            # redelivery after a send's retry): that one carries the item, whatever becomes of its
            # attempt; this copy needs no look at the store, nor a redelivery to be accounted for.
            log.info(
                "item %s: message %s is a duplicate of message %s this consumer holds; deleted",
                ref.key,
                msg.message_id,
                holder.msg.message_id,
            )
            flight.outcome = "duplicates"
            return Delete()
        try:
            return self._hold(flight, rt, agent, ref, row)
        finally:
            with self._lock:
                if self._holding.get(ref.item_id) is flight:
                    del self._holding[ref.item_id]

    def _hold(
        self, flight: _Flight, rt: Runtime, agent: Agent, ref: ItemRef, row: dict[str, Any] | None
    ) -> Action:
        """Run ``ref``'s attempt for ``flight``, the one message of the item this consumer handles now."""
        msg = flight.msg
        if row is None or row["status"] not in OPEN:
            return self._run(flight, rt, agent, ref)  # done or paused: refused at once, nothing runs
        # It lost a consumer before (or its last one died and the reaper has not noticed yet)
        suspect = int(row["stalls"]) > 0 or row["status"] == ItemStatus.RUNNING
        if self._last_delivery(msg):  # SQS dead-letters this message on its next receive
            if row["status"] == ItemStatus.RUNNING:
                log.info(
                    "item %s is held by another attempt on its message's last delivery; this copy is "
                    "deleted (the holder finishes the item, or the reaper sends it again)",
                    ref.key,
                )
                flight.outcome = "duplicates"
                return Delete()
            spent = msg.receive_count - 1 - int(row["attempts"])
            if spent > 0 or self._gate.would_wait(suspect):
                log.info(
                    "item %s: its message %s is on its last delivery (%d of its deliveries were spent "
                    "while the item was not running on it%s); sent again as a fresh message so SQS does "
                    "not dead-letter an item that did nothing",
                    ref.key,
                    msg.message_id,
                    max(spent, 0),
                    ", and it would wait for an item running alone" if spent <= 0 else "",
                )
                return Renew(ref)
        if not self._gate.enter(suspect, self._stopping):
            flight.outcome = "released"
            return Hide(0)  # stopping while it waited its turn: not started, given back at once
        try:
            return self._run(flight, rt, agent, ref)
        finally:
            self._gate.leave(suspect)

    def _run(self, flight: _Flight, rt: Runtime, agent: Agent, ref: ItemRef) -> Action:
        overrides, period = rt.control.terms(ref.tenant_id)
        ctx = execute.begin(rt, agent, ref, backend=BACKEND, price_overrides=overrides, budget_period=period)
        if ctx is None:
            return self._refused(rt, flight, ref)
        flight.ctx = ctx
        if flight.decided_by == "drain":  # the shutdown gave the message back while this claimed it
            execute.release(ctx)
            return Leave()
        try:
            if agent.is_async:
                output, error = asyncio.run(execute.ainvoke(ctx, agent.timeout))
            else:
                output, error = execute.invoke(ctx)
        except BaseException:  # SystemExit raised by the agent, or its event loop was cancelled
            if self._decide(flight, "worker"):
                execute.release(ctx)
                flight.outcome = "released"
            return Hide(0)
        if not self._decide(flight, "worker"):  # the shutdown gave the message back meanwhile
            execute.release(ctx)  # (a no-op when the shutdown released this attempt already)
            return Leave()
        return self._conclude(flight, ctx, output, error)

    def _agent_of_run(self, ref: ItemRef) -> Agent:
        """The agent ``ref``'s run was started with (a consumer serving any agent); one store read per run
        in this consumer, one import per agent in this process."""
        with self._lock:
            found = self._run_agents.get(ref.run_id)
        if found is None:
            found = control.agent_of_run(ref.run_id, ref.tenant_id)
            with self._lock:
                if len(self._run_agents) >= 10_000:
                    self._run_agents.clear()
                self._run_agents[ref.run_id] = found
        return found

    def _agent_named(self, name: str | None) -> Agent | str:
        if name is not None:
            agent = self.agents.get(name)
            if agent is None:
                return f"its {M.AGENT} attribute names agent {name!r}, which this consumer does not serve"
            return agent
        if len(self.agents) == 1:
            return next(iter(self.agents.values()))
        if not self.agents:
            return (
                f"the team's own messages (no {M.ITEM} attribute) have no run to name their agent, and "
                "this consumer (serving any agent by its runs) was given none for them; give it the agent "
                f"(Consumer(agent=enrich, any_agent=True), or python -m papayya_sqs --any-agent "
                "MODULE:AGENT) or send the work with agent.map()/submit()"
            )
        return (
            f"this consumer serves several agents ({', '.join(self.agents)}) and the message names none; "
            f"send it with a {M.AGENT} attribute"
        )

    @staticmethod
    def _refuse(flight: _Flight, reason: str) -> Action:
        log.error("%s", reason)
        flight.outcome = "refused"
        return DeadLetter(reason)

    def _last_delivery(self, msg: M.Received) -> bool:
        """SQS will not deliver this message again: the next receive moves it to the DLQ."""
        limit = self.queue.info.max_receive_count
        return limit is not None and msg.receive_count >= limit

    def _conclude(
        self, flight: _Flight, ctx: AttemptContext, output: Any, error: BaseException | None
    ) -> Action:
        msg = flight.msg
        judged = execute.judge(ctx, output=output, error=error)
        if judged is None:  # its lease was lost meanwhile: the result is void, someone else holds the item
            flight.outcome = "stale"
            return Hide(0)
        dead = judged.finish.retry_in is not None and self._last_delivery(msg)
        if dead:
            # The agent wants another attempt, but SQS will not deliver this message again: the item
            # fails here as dead-lettered, so it is never silently gone.
            limit = self.queue.info.max_receive_count
            why = "no error" if error is None else f"{type(error).__name__}: {str(error)[:300]}"
            lettered = DeadLettered(
                f"its message was received {msg.receive_count} times, the queue's maxReceiveCount "
                f"({limit}), so SQS moves it to the dead-letter queue; last attempt: {why}"
            )
            lettered.__cause__ = error
            judged = execute.judge(ctx, error=lettered)
            assert judged is not None
        (result,) = execute.settle([judged])
        if result.discarded:
            flight.outcome = "stale"
            return Leave()
        if dead:
            flight.outcome = "failed"
            self.stats.add("dead_lettered")
            log.error(
                "item %s failed as dead-lettered: its message was received %d times (maxReceiveCount)",
                ctx.item.id,
                msg.receive_count,
            )
            return Hide(0)  # visible again: the next receive moves it to the dead-letter queue
        if result.retry_in is not None:
            flight.outcome = "retried"
            return Hide(math.ceil(result.retry_in))
        status = result.status
        if status in (ItemStatus.SUCCEEDED, ItemStatus.DEGRADED, ItemStatus.FAILED, ItemStatus.PAUSED):
            flight.outcome = str(status)
            return Delete()
        flight.outcome = "returned"  # (judge gives no other status: a guard)
        return Hide(0)

    def _refused(self, rt: Runtime, flight: _Flight, ref: ItemRef) -> Action:
        msg = flight.msg
        why = execute.refusal(rt, ref)
        if why == "unknown":
            return self._refuse(
                flight,
                f"refused message {msg.message_id}: tenant {ref.tenant_id!r} has no item {ref.item_id}",
            )
        if why == "running":
            # Another attempt holds a live lease: a duplicate delivery, or the redelivery of a message
            # whose consumer died before its lease expired. Look again once it could have expired.
            row = rt.store.fetch_one("sqs_lease_left", {"item_id": ref.item_id, "tenant_id": ref.tenant_id})
            wait = math.ceil((float(row["seconds"]) if row else 0.0) + 0.5)
            if self._last_delivery(msg):  # not dead-lettered: the holder finishes it, or the reaper
                flight.outcome = "duplicates"
                return Delete()
            log.info("item %s is held by another attempt; this delivery looks again in %ds", ref.key, wait)
            flight.outcome = "held"
            return Hide(wait)
        flight.outcome = "paused" if why == "paused" else "duplicates"
        if why == "paused":
            log.info("item %s: its run %s is paused; parked until `papayya resume`", ref.key, ref.run_id)
        else:
            log.info("item %s: not run (%s); message %s deleted", ref.key, why, msg.message_id)
        return Delete()

    # -- settling messages --------------------------------------------------------------------------

    def _settle_loop(self) -> None:
        done = False
        while not done:
            first = self._outbox.get()
            batch = [first]
            deadline = time.monotonic() + 0.005
            while len(batch) < 100:
                try:
                    batch.append(self._outbox.get(timeout=max(0.0, deadline - time.monotonic())))
                except queuelib.Empty:
                    break
            done = None in batch
            try:
                self._settle([b for b in batch if b is not None])
            except Exception:
                log.exception("consumer: could not settle %d message(s); they come back", len(batch))

    def _settle(self, batch: list[tuple[_Flight, Action]]) -> None:
        renew = [(f, a.ref) for f, a in batch if isinstance(a, Renew)]
        if renew:
            batch = [b for b in batch if not isinstance(b[1], Renew)]
            try:
                self.queue.send([ref for _, ref in renew])
            except SqsUnavailable as exc:
                log.error(
                    "could not send %d item(s) a fresh message (%s); their old messages go to the "
                    "dead-letter queue while the items stay queued: %s",
                    len(renew),
                    exc,
                    ", ".join(ref.key for _, ref in renew[:10]),
                )
                self.stats.add("returned", len(renew))
                batch += [(f, Hide(0)) for f, _ in renew]
            else:
                self.stats.add("renewed", len(renew))
                batch += [(f, Delete()) for f, _ in renew]
        deletes = [f for f, a in batch if isinstance(a, Delete)]
        hides = [(f, a.seconds) for f, a in batch if isinstance(a, Hide)]
        dead = [(f, a.reason) for f, a in batch if isinstance(a, DeadLetter)]
        if deletes:
            failed = self.queue.delete([(f.msg.message_id, f.handle) for f in deletes])
            retry = [f for f in deletes if f.msg.message_id in failed and f.handle != f.msg.receipt_handle]
            if retry:  # redelivered meanwhile: its newest receipt handle deletes it
                failed.update(self.queue.delete([(f.msg.message_id, f.handle) for f in retry]))
            for f in deletes:
                if f.msg.message_id in failed:
                    log.warning(
                        "message %s could not be deleted (%s); its next delivery is dropped as a duplicate",
                        f.msg.message_id,
                        failed[f.msg.message_id],
                    )
        if hides:
            failed = self.queue.change_visibility([(f.msg.message_id, f.handle, s) for f, s in hides])
            for f, _ in hides:
                if f.msg.message_id in failed:
                    log.info(
                        "message %s: visibility not changed (%s)", f.msg.message_id, failed[f.msg.message_id]
                    )
        for f, reason in dead:
            self._dead_letter(f, reason)
        with self._lock:
            for f, _ in batch:
                if self._flights.get(f.msg.message_id) is f:
                    del self._flights[f.msg.message_id]

    def _dead_letter(self, flight: _Flight, reason: str) -> None:
        try:
            moved = self.queue.move_to_dead_letter(flight.msg, reason)
        except SqsUnavailable as exc:
            log.error(
                "message %s could not be moved to the dead-letter queue (%s)", flight.msg.message_id, exc
            )
            moved = False
        if moved:
            self.stats.add("dead_lettered")
            return
        hidden = min(MAX_VISIBILITY, 600 * flight.msg.receive_count)
        log.error(
            "message %s stays in the queue, hidden for %ds: the queue has no dead-letter queue to move it "
            "to; give it a RedrivePolicy",
            flight.msg.message_id,
            hidden,
        )
        self.queue.change_visibility([(flight.msg.message_id, flight.handle, hidden)])

    # -- heartbeats ---------------------------------------------------------------------------------

    def _monitor(self) -> None:
        rt = self._rt
        assert rt is not None
        lease = rt.settings.lease_seconds
        lease_every = lease / 3
        hide_every = max(0.2, self._visibility / 3)
        tick = max(0.05, min(lease_every, hide_every, 1.0) / 4)
        last_lease = last_hide = last_budget = time.monotonic()
        while not self._closed.wait(tick):
            now = time.monotonic()
            with self._lock:
                flights = [f for f in self._flights.values() if f.decided_by is None]
            try:
                if now - last_hide >= hide_every:
                    last_hide = now
                    self._extend_visibility(flights)
                if now - last_lease >= lease_every:
                    last_lease = now
                    held = [f.ctx for f in flights if f.ctx is not None]
                    execute.heartbeat(rt, held, lease)
                if now - last_budget >= 1.0:
                    last_budget = now
                    # Runs paused (or resumed) elsewhere: in-flight items stop at their next LLM call.
                    rt.control.refresh({f.ctx.run_id for f in flights if f.ctx is not None})
            except Exception as exc:  # SQS or the store is away: the next beat tries again
                log.warning("consumer heartbeat failed (%s); retried", exc)

    def _extend_visibility(self, flights: Iterable[_Flight]) -> None:
        changes = [(f.msg.message_id, f.handle, self._visibility) for f in flights]
        if not changes:
            return
        failed = self.queue.change_visibility(changes)
        for message_id, why in failed.items():
            log.warning("message %s: could not extend its visibility (%s)", message_id, why)

    # -- stopping -------------------------------------------------------------------------------------

    def _drain(self, deadline: float, grace: float) -> None:
        """Wait until ``deadline`` for items in flight; give back the ones still running."""
        with self._slots:
            while self._busy and time.monotonic() < deadline:
                self._slots.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        with self._lock:
            left = [f for f in self._flights.values() if f.decided_by is None]
        for f in left:
            if not self._decide(f, "drain"):
                continue
            self.stats.add("released")  # (the worker's own decision, if it comes, is not counted)
            if f.ctx is not None:
                try:
                    execute.release(f.ctx)
                except Exception:
                    log.exception("item %s: could not release it; the reaper recovers it", f.ctx.item.id)
            self._post(f, Hide(0))
        if left:
            log.warning("consumer: gave back %d item(s) still running after %gs", len(left), grace)


__all__ = ["BACKEND", "Consumer", "ConsumerStats"]
