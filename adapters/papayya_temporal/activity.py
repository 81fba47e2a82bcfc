"""An activity that is a papayya agent, run as an attempt of an item through the one lifecycle.

When an activity carries an item stamp (tenant, run and item ids in the ``papayya`` header) and its
function is an ``@agent``, each execution of it, first try or Temporal retry, is one attempt of that
item: ``execute.begin`` claims it (the ids are checked against the store: a forged header is refused),
the agent runs on the item's recorded input with the ``run`` context set, and ``execute.conclude``
records the outcome, cost, journal and cluster. While it runs, a heartbeat extends the papayya lease
and heartbeats Temporal, so Temporal's heartbeat timeout notices a dead worker and retries; the retry
finds the lease expired and keeps the lost attempt as ``stalled``.

What the activity answers Temporal, per outcome:

================  =========================================  =========================================
outcome           an ``item`` stamp (your workflows)          a ``map`` stamp (papayya's MapItems)
================  =========================================  =========================================
succeeded         the function's return value                 ``{"status": "succeeded"}``
degraded          the function's return value                 ``{"status": "degraded"}``
retry per policy  retryable ApplicationError, delayed by the agent's backoff (both)
failed            non-retryable ApplicationError              ``{"status": "failed"}``
                  ``papayya.Failed``
paused (budget)   non-retryable ApplicationError              ``{"status": "paused"}``
                  ``papayya.Paused``
================  =========================================  =========================================

papayya's retry policy decides; give the activity a Temporal retry policy that allows retries (the
default does) and papayya's non-retryable answers stop Temporal from retrying a finished item.

The generic activity ``papayya.run_item`` (``run_any_item``) runs any agent without declaring it: the
agent is the one the stamped item's run was started with (``papayya.control.agent_of_run``, imported
once per worker process), and the attempt goes through the same path as a registered agent activity.
The ``temporal`` backend names it for agents that are not Temporal activities themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import temporalio.activity
import temporalio.worker
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from papayya_temporal import headers as _headers
from papayya_temporal.headers import Stamp, current_stamp

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.context import AttemptContext
    from papayya.execute import Concluded, ItemRef
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.temporal")

BACKEND = "temporal"
# ApplicationError types papayya answers with, for workflows that want to tell them apart.
FAILED = "papayya.Failed"
PAUSED = "papayya.Paused"
REFUSED = "papayya.Refused"
RETRY = "papayya.Retry"
BUSY = "papayya.Busy"
STOPPED = "papayya.Stopped"
NOT_IMPORTABLE = "papayya.NotImportable"
UNSTAMPED = "papayya.Unstamped"
# papayya's verdicts on an item (retry it, it failed, its run is paused...) are the contract working,
# not the worker failing: Temporal logs benign errors at DEBUG instead of WARNING with a traceback.
BENIGN = ApplicationErrorCategory.BENIGN
# The generic activity: runs the agent of the stamped item's run.
GENERIC_ACTIVITY = "papayya.run_item"


def attempt_stamp() -> Stamp | None:
    """The tenant and run of the papayya attempt in progress in this task, if any (no item: a workflow
    started by an agent belongs to its tenant and run, it is not that item)."""
    from papayya.context import current

    ctx = current.get()
    if ctx is None:
        return None
    return Stamp(tenant_id=ctx.tenant_id, run_id=str(ctx.run_id))


def agent_of(fn: Any) -> Agent | None:
    """The papayya agent behind an activity function (decorators that keep ``__wrapped__`` are seen
    through), or None for a plain activity."""
    from papayya.agent import Agent

    seen = 0
    while fn is not None and seen < 8:
        if isinstance(fn, Agent):
            return fn
        fn = getattr(fn, "__wrapped__", None)
        seen += 1
    return None


class ActivityInbound(temporalio.worker.ActivityInboundInterceptor):
    """Restores the stamp; runs an agent with an item stamp as an attempt of that item."""

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        stamp = _headers.read(input.headers)
        if (stamp is None or stamp.item_id is None) and agent_of(input.fn) is not None:
            # An agent run with no item would pay unrecorded: it becomes an item of its tenant's
            # intake run (the stamp's tenant, else PAPAYYA_DEFAULT_TENANT), or is refused.
            stamp = await _adopt(agent_of(input.fn), stamp, input)
        if stamp is None:
            return await self.next.execute_activity(input)
        token = current_stamp.set(stamp)
        try:
            agent = agent_of(input.fn) if stamp.item_id is not None else None
            if agent is None and stamp.item_id is not None and _is_generic(input.fn):
                agent = await _agent_of_run(stamp)
            if agent is None:
                return await self.next.execute_activity(input)

            def through(attempt: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
                # The attempt goes down the chain in place of the function, so interceptors inside
                # papayya's (a team's own, the SDK's tracing) see every agent activity run.
                return self.next.execute_activity(dataclasses.replace(input, fn=attempt, args=[]))

            return await run_item(agent, stamp, input.executor, through=through)
        finally:
            current_stamp.reset(token)


@temporalio.activity.defn(name=GENERIC_ACTIVITY)
async def run_any_item() -> dict[str, str]:
    """The generic activity: runs the agent of the stamped item's run as an attempt of that item.

    ``papayya_temporal.Interceptor()`` does the work (it reads the stamp and runs the item); reaching
    this body means the worker's client has no interceptor, or the activity carries no item stamp."""
    raise ApplicationError(
        f"papayya's generic activity {GENERIC_ACTIVITY} needs an item stamp (the papayya header) and "
        "papayya_temporal.Interceptor() on its worker's client; start workers with "
        "`python -m papayya_temporal worker`.",
        type=UNSTAMPED,
        non_retryable=True,
    )


def _is_generic(fn: Any) -> bool:
    defn = getattr(fn, "__temporal_activity_definition", None)
    return fn is run_any_item or getattr(defn, "name", None) == GENERIC_ACTIVITY


async def _agent_of_run(stamp: Stamp) -> Agent:
    """The agent the stamped item's run was started with (imported once per process)."""
    from papayya.control import agent_of_run
    from papayya.errors import AgentNotImportable, NotFound

    try:
        run_id = UUID(stamp.run_id or "")
    except ValueError:
        raise _malformed(stamp) from None
    try:
        return await asyncio.to_thread(agent_of_run, run_id, stamp.tenant_id)
    except NotFound:
        log.warning("refused an activity for run %s of tenant %r: no such run", run_id, stamp.tenant_id)
        raise ApplicationError(
            f"papayya refused this activity: tenant {stamp.tenant_id!r} has no run {run_id} "
            "(a forged or mistaken papayya header)",
            type=REFUSED,
            category=BENIGN,  # papayya logged its one sentence: no SDK traceback on top
            non_retryable=True,
        ) from None
    except AgentNotImportable as exc:
        log.error("%s", exc)
        raise ApplicationError(str(exc), type=NOT_IMPORTABLE, category=BENIGN, non_retryable=True) from None


async def _adopt(
    agent: Agent | None, stamp: Stamp | None, input: temporalio.worker.ExecuteActivityInput
) -> Stamp:
    """Record an agent activity that came without an item (a team's own workflow) as an item of its
    tenant's intake run for the day, keyed by workflow and activity id (so Temporal's retries are
    attempts of that one item); refuse it, in one sentence, when no tenant is known."""
    from pydantic_core import to_jsonable_python

    from papayya import intake
    from papayya.errors import InputError, TenantError
    from papayya.runtime import get_runtime

    assert agent is not None
    info = temporalio.activity.info()
    rt = await asyncio.to_thread(get_runtime)
    tenant = stamp.tenant_id if stamp is not None else rt.settings.default_tenant
    if not tenant:
        message = (
            f"papayya refused activity {info.activity_type}: it is agent {agent.name} but carries no "
            "papayya item or tenant, so what it would spend has no owner; start the workflow inside "
            "`with papayya_temporal.stamped(TENANT):` (or with agent.submit(...)), or set "
            "PAPAYYA_DEFAULT_TENANT to adopt such activities under one tenant"
        )
        log.error("%s", message)
        raise ApplicationError(message, type=UNSTAMPED, category=BENIGN, non_retryable=True)
    args = list(input.args)
    data = args[0] if len(args) == 1 and isinstance(args[0], dict) else {"args": args}
    key = f"{info.workflow_id or info.activity_id}/{info.activity_id}"
    try:
        ref = await asyncio.to_thread(
            intake.adopt,
            rt,
            agent,
            tenant_id=tenant,
            key=key,
            input=to_jsonable_python(data, fallback=repr),
            backend=BACKEND,
        )
    except (InputError, TenantError) as exc:
        log.error("refused activity %s: %s", info.activity_type, exc)
        raise ApplicationError(
            f"papayya refused this activity: {exc}", type=REFUSED, category=BENIGN, non_retryable=True
        ) from None
    if stamp is None:
        log.info("activity %s: no papayya tenant; adopted under PAPAYYA_DEFAULT_TENANT", info.activity_type)
    return Stamp(tenant_id=tenant, run_id=str(ref.run_id), item_id=str(ref.item_id), key=ref.key, mode="item")


def _malformed(stamp: Stamp) -> ApplicationError:
    log.warning("refused an activity whose papayya header is malformed: %r", stamp)
    return ApplicationError(
        "papayya refused this activity: its papayya header does not name an item "
        "(a forged or mistaken header)",
        type=REFUSED,
        category=BENIGN,  # papayya logged its one sentence: no SDK traceback on top
        non_retryable=True,
    )


# -- the attempt --------------------------------------------------------------------------------


def _ref(stamp: Stamp) -> ItemRef | None:
    from papayya.execute import ItemRef

    try:
        assert stamp.item_id is not None
        return ItemRef(UUID(stamp.item_id), stamp.key or "", UUID(stamp.run_id or ""), stamp.tenant_id)
    except (ValueError, AssertionError):
        return None


def _begin(rt: Runtime, agent: Agent, ref: ItemRef) -> AttemptContext | None:
    from papayya import execute

    overrides, period = rt.control.terms(ref.tenant_id)
    return execute.begin(rt, agent, ref, backend=BACKEND, price_overrides=overrides, budget_period=period)


async def run_item(
    agent: Agent,
    stamp: Stamp,
    executor: concurrent.futures.Executor | None,
    *,
    through: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
) -> Any:
    """One attempt of the stamped item; see the module docstring for what it answers. ``through``
    runs the attempt down the rest of the interceptor chain (``ActivityInbound`` passes its
    ``self.next``); without it the attempt runs here."""
    from papayya import execute
    from papayya.runtime import get_runtime

    ref = _ref(stamp)
    if ref is None:
        raise _malformed(stamp)
    rt = get_runtime() if _runtime_ready() else await asyncio.to_thread(get_runtime)
    ctx = await asyncio.to_thread(_begin, rt, agent, ref)
    if ctx is None:
        return await _refused(rt, ref, stamp)
    beat = asyncio.create_task(_heartbeat(rt, ctx), name="papayya-heartbeat")

    async def attempt() -> tuple[Any, BaseException | None, bool]:
        if agent.is_async:
            output, error = await execute.ainvoke(ctx, agent.timeout)
            return output, error, False
        return await _invoke_sync(ctx, executor, agent.timeout)

    try:
        output, error, timed_out = await (attempt() if through is None else through(attempt))
    except BaseException:
        # Cancelled (the worker is shutting down, or Temporal cancelled the activity): give the item
        # back without an outcome; Temporal's retry (or papayya resume) runs it again.
        beat.cancel()
        try:
            await asyncio.to_thread(execute.release, ctx)
        except Exception:
            log.exception("item %s: could not release it; the reaper recovers it", ref.key)
        raise
    finally:
        beat.cancel()
    if timed_out:
        assert agent.timeout is not None
        result = await asyncio.to_thread(execute.abandon_for_timeout, ctx, agent.timeout)
    else:
        result = await asyncio.to_thread(execute.conclude, ctx, output=output, error=error)
    return _answer(result, output, stamp, ctx, error)


def _runtime_ready() -> bool:
    from papayya import runtime

    return runtime._runtime is not None


async def _invoke_sync(
    ctx: AttemptContext, executor: concurrent.futures.Executor | None, timeout: float | None
) -> tuple[Any, BaseException | None, bool]:
    """A sync agent in a thread (the worker's thread pool when it has one). A sync function cannot be
    stopped: past its timeout the attempt is abandoned and whatever it returns later is discarded."""
    from papayya import execute

    loop = asyncio.get_running_loop()
    pool = executor if isinstance(executor, concurrent.futures.ThreadPoolExecutor) else None
    future = loop.run_in_executor(pool, contextvars.copy_context().run, execute.invoke, ctx)
    if timeout is None:
        output, error = await future
        return output, error, False
    try:
        output, error = await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        return None, None, True
    return output, error, False


async def _heartbeat(rt: Runtime, ctx: AttemptContext) -> None:
    """Keep the papayya lease and the Temporal heartbeat alive while the attempt runs."""
    from papayya import execute

    lease = rt.settings.lease_seconds
    info = temporalio.activity.info()
    interval = lease / 3
    if info.heartbeat_timeout:
        interval = min(interval, info.heartbeat_timeout.total_seconds() / 3)
    interval = max(interval, 0.05)
    while True:
        await asyncio.sleep(interval)
        try:
            temporalio.activity.heartbeat()
        except Exception:
            log.debug("temporal heartbeat failed", exc_info=True)
        try:
            held = await asyncio.to_thread(execute.heartbeat, rt, [ctx], lease)
        except Exception:
            log.exception("item %s: heartbeat failed; retried next beat", ctx.item.id)
            continue
        if ctx.item_id not in held:
            return  # concluded meanwhile, or lost (execute.heartbeat flagged and reported it)


def _answer(
    result: Concluded, output: Any, stamp: Stamp, ctx: AttemptContext, error: BaseException | None
) -> Any:
    mapped = stamp.mode == "map"
    key = ctx.item.id
    if result.discarded:
        raise ApplicationError(
            f"item {key}: attempt {ctx.attempt} lost its lease; its result was discarded",
            type=BUSY,
            category=BENIGN,
        )
    if result.retry_in is not None:
        raise ApplicationError(
            f"item {key}: attempt {ctx.attempt} failed ({_describe(error)}); papayya retries it",
            type=RETRY,
            category=BENIGN,
            next_retry_delay=timedelta(seconds=max(result.retry_in, 0.05)),
        )
    status = result.status
    if status in ("succeeded", "degraded"):
        return _summary(status, result.cost_usd) if mapped else output
    if status == "paused":
        if mapped:
            return _summary(status, result.cost_usd)
        raise ApplicationError(
            f"item {key}: its run {ctx.run_id} is paused (a budget broke); resume it with "
            f"`papayya resume {ctx.run_id}`",
            type=PAUSED,
            category=BENIGN,
            non_retryable=True,
        )
    if mapped:
        return _summary(status, result.cost_usd)
    raise ApplicationError(
        f"item {key} failed: {_describe(error)}", type=FAILED, category=BENIGN, non_retryable=True
    )


def _summary(status: str, cost: Decimal = Decimal(0)) -> dict[str, str]:
    return {"status": status, "cost_usd": str(cost)}


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error"
    return f"{type(error).__name__}: {str(error)[:300]}"


async def _refused(rt: Runtime, ref: ItemRef, stamp: Stamp) -> Any:
    """``begin`` did not claim the item: answer a duplicate, wait out a live lease, or refuse."""
    from papayya import execute

    why = await asyncio.to_thread(execute.refusal, rt, ref)
    mapped = stamp.mode == "map"
    if why == "unknown":
        log.warning("refused an activity for item %s of tenant %r: no such item", ref.item_id, ref.tenant_id)
        raise ApplicationError(
            f"papayya refused this activity: tenant {ref.tenant_id!r} has no item {ref.item_id} "
            "(a forged or mistaken papayya header)",
            type=REFUSED,
            category=BENIGN,  # papayya logged its one sentence: no SDK traceback on top
            non_retryable=True,
        )
    if why == "running":
        row = await asyncio.to_thread(
            rt.store.fetch_one,
            "temporal_item_lease_left",
            {"item_id": ref.item_id, "tenant_id": ref.tenant_id},
        )
        wait = float(row["seconds"]) if row else 0.0
        raise ApplicationError(
            f"item {ref.key} is held by another attempt; retried when its lease expires",
            type=BUSY,
            category=BENIGN,
            next_retry_delay=timedelta(seconds=min(max(wait + 0.25, 0.25), 300.0)),
        )
    if why == "done":
        row = await asyncio.to_thread(
            rt.store.fetch_one, "temporal_item_result", {"item_id": ref.item_id, "tenant_id": ref.tenant_id}
        )
        status = row["status"] if row else "done"
        if mapped:
            return _summary(status)
        if status in ("succeeded", "degraded"):
            return row["output"] if row else None
        raise ApplicationError(
            f"item {ref.key} already ended {status}", type=FAILED, category=BENIGN, non_retryable=True
        )
    if why == "paused":
        if mapped:
            return _summary("paused")
        raise ApplicationError(
            f"item {ref.key}: its run {ref.run_id} is paused; resume it with `papayya resume {ref.run_id}`",
            type=PAUSED,
            category=BENIGN,
            non_retryable=True,
        )
    if why == "lost":
        if mapped:
            return _summary("failed")
        raise ApplicationError(
            f"item {ref.key} lost its worker too many times; papayya fails it (WorkerLost)",
            type=FAILED,
            category=BENIGN,
            non_retryable=True,
        )
    if mapped:
        return _summary("stopped")
    raise ApplicationError(
        f"item {ref.key}: its run {ref.run_id} is {why}", type=STOPPED, category=BENIGN, non_retryable=True
    )


__all__ = [
    "BUSY",
    "FAILED",
    "GENERIC_ACTIVITY",
    "NOT_IMPORTABLE",
    "PAUSED",
    "REFUSED",
    "RETRY",
    "STOPPED",
    "UNSTAMPED",
    "ActivityInbound",
    "agent_of",
    "attempt_stamp",
    "run_any_item",
    "run_item",
]
