"""One Celery message, run as one attempt of one item through the core lifecycle.

The message's headers name its tenant and item (or only its tenant: the message is then recorded as a
new item by :func:`papayya.intake.adopt`). A team's agent task runs its own agent; the generic task
(``papayya_celery.generic``) runs the agent the item's run was started with
(:func:`papayya.control.agent_of_run`), through this same path. Both are validated against the store; then
``execute.begin`` claims the item, ``execute.invoke`` calls the agent with the ``run`` context set and
``execute.conclude`` judges and writes the attempt. What this module adds is only the translation:

- a message papayya cannot run (forged ids, a duplicate, a paused run) is acked and logged, never run;
- a delivery that finds the item held by a live lease (a worker that died mid-item and was redelivered
  before its lease expired, or a duplicate) is looked at again once the lease could have expired;
- a retry, whether papayya's (the agent's ``retries=``) or Celery's (``autoretry_for``,
  ``task.retry()``), is a new attempt of the same item: the failed attempt is written with the item
  back to ``queued``, then Celery publishes the retry with the item id in its headers;
- the attempt runs inside the trace context the message carries (``traceparent``, stamped at publish),
  so with OpenTelemetry its ``papayya.attempt`` span is a child of the publisher's span;
- each worker process heartbeats the leases of the attempts it runs, writes its budget spend every
  second and notices runs paused elsewhere, like a native worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from celery import Task
from celery.exceptions import Retry
from celery.utils.time import get_exponential_backoff_interval
from pydantic_core import to_jsonable_python

from papayya import control, execute, intake
from papayya.agent import Agent
from papayya.context import AttemptContext
from papayya.errors import StoreUnavailable, TenantError
from papayya.execute import ItemRef
from papayya.models import ItemStatus
from papayya.runtime import Runtime, get_runtime
from papayya_celery import message as H
from papayya_otel import propagation as trace_context

log = logging.getLogger("papayya.celery")

BACKEND = "celery"

Overrides = dict[tuple[str, str], dict[str, Decimal | None]]


def agent_of(task: Any) -> Agent | None:
    """The papayya agent a Celery task runs (``@app.task`` over ``@agent``), or None."""
    for candidate in (getattr(task, "_orig_run", None), getattr(task, "run", None)):
        if isinstance(candidate, Agent):
            return candidate
    return None


# -- this process's attempts ------------------------------------------------------------------------


class _Process:
    """What one worker process holds: its attempts in flight (their leases are extended every third of
    a lease), its tenants' prices and budget periods (re-read every few seconds), and its budget spend
    (written every second, given back when the process stops)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._held: dict[UUID, AttemptContext] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tenant(self, tenant_id: str) -> tuple[Overrides, str]:
        return self.rt.control.terms(tenant_id)

    def hold(self, ctx: AttemptContext) -> None:
        with self._lock:
            self._held[ctx.attempt_id] = ctx
            if self._thread is None:
                self._thread = threading.Thread(target=self._monitor, name="papayya-celery", daemon=True)
                self._thread.start()

    def drop(self, ctx: AttemptContext) -> None:
        with self._lock:
            self._held.pop(ctx.attempt_id, None)

    def _monitor(self) -> None:
        lease = self.rt.settings.lease_seconds
        beat_every = lease / 3
        last_beat = last_check = time.monotonic()
        while not self._stop.wait(min(beat_every, 0.5)):
            with self._lock:
                held = list(self._held.values())
            now = time.monotonic()
            try:
                if now - last_beat >= beat_every:
                    last_beat = now
                    execute.heartbeat(self.rt, held, lease)
                if now - last_check >= 1.0:
                    last_check = now
                    # Runs paused (or resumed) elsewhere: in-flight items stop at their next call.
                    self.rt.control.refresh({c.run_id for c in held})
            except Exception as exc:  # the store is away: retried next beat
                log.warning("heartbeat or run check failed (%s); retried", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.rt.budgets.give_back()
        except Exception as exc:
            log.warning("could not give back unspent budget (%s); `papayya resume` reconciles it", exc)


_state: _Process | None = None
_state_lock = threading.Lock()
_inherited: list[Runtime] = []  # runtimes a forked child got from its parent: never used, never closed


def process(rt: Runtime) -> _Process:
    """This process's state for ``rt`` (new after a fork or a new runtime)."""
    global _state
    state = _state
    if state is None or state.rt is not rt or state.pid != os.getpid():
        with _state_lock:
            state = _state
            if state is None or state.rt is not rt or state.pid != os.getpid():
                state = _state = _Process(rt)
    return state


def close_process() -> None:
    """The worker process is stopping: stop heartbeating and give back unspent budget."""
    global _state
    with _state_lock:
        state, _state = _state, None
    if state is not None and state.pid == os.getpid():
        state.close()


def _after_fork_in_child() -> None:
    """A prefork pool child must not use the connections of its parent's runtime (the socket is
    shared): forget it without closing it, so the child builds its own on first use."""
    global _state
    _state = None
    from papayya import runtime

    inherited = runtime._runtime
    if inherited is not None:
        _inherited.append(inherited)  # closing it would close the parent's connections
        runtime._runtime = None


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- one message ------------------------------------------------------------------------------------


def run_message(task: Task, agent: Agent | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the message being executed by ``task`` as an attempt; return what the task returns.

    ``agent`` is the agent ``task`` runs; None for the generic task (``papayya.run_item``), which runs
    the agent the item's run was started with (``papayya.control.agent_of_run``)."""
    with trace_context.attached(_trace_headers(task)):
        return _run_message(task, agent, args, kwargs)


def _trace_headers(task: Task) -> dict[str, Any]:
    """The trace context the message carries (``traceparent``...): its attempt is a child of the span
    that published it."""
    req = task.request
    found = {k: v for k, v in (req.headers or {}).items() if isinstance(v, str)}
    for name in trace_context.fields():
        value = req.get(name)
        if isinstance(value, str):
            found[name] = value
    return found


def _run_message(task: Task, agent: Agent | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    req = task.request
    tenant_id = req.get(H.TENANT)
    rt = get_runtime()
    if not tenant_id and not req.get(H.ITEM) and rt.settings.default_tenant:
        # A producer not yet passing tenants: adopted under the default tenant, and said so.
        tenant_id = rt.settings.default_tenant
        log.info("task %s [%s]: no papayya tenant; adopted under PAPAYYA_DEFAULT_TENANT", task.name, req.id)
    if not tenant_id:
        raise TenantError(
            f"Task {task.name} [{req.id}] arrived without a papayya tenant, so its cost and outcome "
            f"have no owner; publish it with headers=papayya_celery.headers(TENANT) or inside "
            "`with papayya_celery.tenant(TENANT):`, or set PAPAYYA_DEFAULT_TENANT to adopt such tasks "
            "under one tenant."
        )
    proc = process(rt)
    try:
        resolved = _resolve(rt, task, agent, str(tenant_id), args, kwargs)
        if resolved is None:
            return None
        agent, ref = resolved
        overrides, period = proc.tenant(ref.tenant_id)
        ctx = execute.begin(rt, agent, ref, backend=BACKEND, price_overrides=overrides, budget_period=period)
        if ctx is None:
            return _refused(task, rt, ref)
    except StoreUnavailable as exc:
        delay = min(60.0, 2.0 ** min(req.retries, 6))
        log.warning(
            "task %s [%s]: the papayya store is away (%s); retrying in %gs", task.name, req.id, exc, delay
        )
        raise _retry(task, None, countdown=delay) from exc
    proc.hold(ctx)
    try:
        if agent.is_async:
            output, error = asyncio.run(execute.ainvoke(ctx, agent.timeout))
        else:
            output, error = execute.invoke(ctx)
    except BaseException:
        proc.drop(ctx)  # the worker is stopping mid-item: give the item back without an outcome
        try:
            execute.release(ctx)
        except Exception:
            log.exception(
                "item %s: could not release it; the reaper re-drives it once its lease expires", ref.key
            )
        raise
    proc.drop(ctx)
    return _conclude(task, ctx, ref, output, error)


def _resolve(
    rt: Runtime,
    task: Task,
    agent: Agent | None,
    tenant_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Agent, ItemRef] | None:
    """The agent and the item the message is for: the item its headers name (validated against the
    store), or a new item recorded from its arguments; for the generic task (``agent`` None), the agent
    the item's run was started with. None when the headers do not stand up (logged; the message is
    acked and dropped). AgentNotImportable when this process cannot import the run's agent."""
    req = task.request
    item = req.get(H.ITEM)
    if not item:
        if agent is None:
            log.error(
                "task %s [%s]: refused, it names no papayya item (%s header), so there is no agent to run; "
                "publish it with agent.map(...) or agent.submit(...); dropped",
                task.name,
                req.id,
                H.ITEM,
            )
            return None
        key = req.get(H.KEY) or req.id
        ref = intake.adopt(
            rt, agent, tenant_id=tenant_id, key=key, input=_input(args, kwargs), backend=BACKEND
        )
        return agent, ref
    try:
        item_id = UUID(str(item))
    except ValueError:
        log.error(
            "task %s [%s]: refused, its %s header %r is not an item id", task.name, req.id, H.ITEM, item
        )
        return None
    row = rt.store.fetch_one("celery_item", {"item_id": item_id, "tenant_id": tenant_id})
    if row is None:
        log.error(
            "task %s [%s]: refused, tenant %r has no item %s (a forged or mistaken header); dropped",
            task.name,
            req.id,
            tenant_id,
            item_id,
        )
        return None
    if agent is None:  # the generic task: AgentNotImportable fails the task, the item stays queued
        agent = control.agent_of_run(row["run_id"], tenant_id)
    elif row["agent_name"] != agent.name:
        log.error(
            "task %s [%s]: refused, item %s belongs to agent %s, not %s; dropped",
            task.name,
            req.id,
            item_id,
            row["agent_name"],
            agent.name,
        )
        return None
    return agent, ItemRef(item_id, row["key"], row["run_id"], tenant_id)


def _input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any]:
    """A message's input snapshot: its one mapping argument, or all its arguments."""
    if len(args) == 1 and not kwargs and isinstance(args[0], Mapping):
        return args[0]
    return {"args": list(args), "kwargs": dict(kwargs)}


def _refused(task: Task, rt: Runtime, ref: ItemRef) -> None:
    why = execute.refusal(rt, ref)
    req = task.request
    if why == "running":
        # A live lease holds the item: a duplicate delivery, or the redelivery of a message whose worker
        # died before its lease expired. Look again once it could have expired: by then a live attempt
        # has finished (and this copy is dropped as done) or a dead one can be taken over.
        delay = max(0.5, rt.settings.lease_seconds / 2)
        log.info("item %s is held by another attempt; this delivery looks again in %gs", ref.key, delay)
        raise _retry(task, ref, countdown=delay)
    if why == "unknown":
        log.error(
            "task %s [%s]: refused, tenant %r has no item %s; dropped",
            task.name,
            req.id,
            ref.tenant_id,
            ref.item_id,
        )
    elif why == "paused":
        log.info(
            "item %s: its run %s is paused; the item is parked until `papayya resume`", ref.key, ref.run_id
        )
    else:
        log.info("item %s: not run (%s); this delivery is dropped", ref.key, why)


def _conclude(task: Task, ctx: AttemptContext, ref: ItemRef, output: Any, error: BaseException | None) -> Any:
    if isinstance(error, Retry):
        # The agent called task.retry(): Celery has published the retry already. This attempt failed,
        # and the item waits for that retry.
        cause = error.exc if isinstance(error.exc, BaseException) else error
        _requeue(ctx, cause, None)
        raise error
    countdown = None if error is None else _autoretry(task, error)
    if error is not None and countdown is not None:
        _requeue(ctx, error, countdown)
        raise _retry(task, ref, countdown=countdown, exc=error)
    result = execute.conclude(ctx, output=output, error=error)
    if result.retry_in is not None:  # the agent's own retry policy
        raise _retry(task, ref, countdown=result.retry_in, exc=error)
    if result.terminal and result.status == ItemStatus.FAILED and isinstance(error, Exception):
        raise error  # Celery shows the failure too
    if result.status not in (ItemStatus.SUCCEEDED, ItemStatus.DEGRADED) or result.discarded:
        return None
    try:
        return to_jsonable_python(output)  # what a JSON result backend can store
    except Exception:
        return None


def _requeue(ctx: AttemptContext, error: BaseException, countdown: float | None) -> None:
    """Write the attempt as failed with the item back to ``queued``: Celery retries it."""
    judged = execute.judge(ctx, error=error)
    if judged is None:
        return
    finish = dataclasses.replace(
        judged.finish, item_status=ItemStatus.QUEUED, terminal=False, retry_in=countdown
    )
    execute.settle([dataclasses.replace(judged, finish=finish)])


def _autoretry(task: Task, error: BaseException) -> float | None:
    """The countdown of the retry Celery's ``autoretry_for`` asks for after ``error``, or None."""
    autoretry_for = tuple(getattr(task, "autoretry_for", ()) or ())
    if not autoretry_for or not isinstance(error, autoretry_for):
        return None
    dont = tuple(getattr(task, "dont_autoretry_for", ()) or ())
    if dont and isinstance(error, dont):
        return None
    retry_kwargs = dict(getattr(task, "retry_kwargs", {}) or {})
    max_retries = retry_kwargs.get("max_retries", task.max_retries)
    if max_retries is not None and task.request.retries >= max_retries:
        return None
    if "countdown" in retry_kwargs:
        return float(retry_kwargs["countdown"])
    backoff = float(getattr(task, "retry_backoff", False) or 0)
    if backoff:
        return float(
            get_exponential_backoff_interval(
                factor=int(max(1.0, backoff)),
                retries=task.request.retries,
                maximum=int(getattr(task, "retry_backoff_max", 600)),
                full_jitter=bool(getattr(task, "retry_jitter", True)),
            )
        )
    return float(task.default_retry_delay)


def _retry(task: Task, ref: ItemRef | None, *, countdown: float, exc: BaseException | None = None) -> Retry:
    """Publish this message again after ``countdown`` seconds, naming its item from now on; return the
    ``Retry`` to raise (Celery then acks this delivery and shows the task as retried)."""
    req = task.request
    found = dict(req.headers or {})
    if ref is not None:
        found.update({H.TENANT: ref.tenant_id, H.ITEM: str(ref.item_id)})
    try:
        retry: Retry = task.retry(
            exc=exc if isinstance(exc, Exception) else None,
            countdown=countdown,
            max_retries=req.retries + 1,  # papayya bounds attempts, not Celery's max_retries
            headers=found,
            throw=False,
        )
    finally:
        task.__dict__.pop("override_max_retries", None)
    return retry
