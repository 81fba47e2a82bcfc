"""The ``temporal`` backend: ``map()``, ``submit()``, ``papayya resume`` and replay start ``MapItems``.

An agent that is a Temporal activity (``@activity.defn`` above ``@agent``) runs as that activity, on
the team's workers; any other agent runs as papayya's generic activity ``papayya.run_item``, which
imports the agent the run was started with (``python -m papayya_temporal worker`` registers it).

``run`` starts the run's ``MapItems`` workflow (id ``papayya-run-<run id>``) on the configured task
queue with the ids of the items to run, then waits, reading progress from the papayya store (the
source of truth), until every item is terminal or the run is paused. A run that is resumed signals
its workflow when it is waiting at the pause gate, and otherwise starts a new execution for exactly
the pending items; a replay is a new run, hence a new workflow for exactly the replayed items.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from papayya.errors import ConfigError
from papayya.progress import Progress
from papayya_temporal.activity import BACKEND, GENERIC_ACTIVITY
from papayya_temporal.config import TemporalError, TemporalSettings, TemporalUnavailable

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from papayya.agent import Agent
    from papayya.execute import ItemRef
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.temporal")

T = TypeVar("T")
_TERMINAL = ("succeeded", "degraded", "failed", "cancelled")
_POLL = 0.2
_QUIET_WARNING = 30.0  # seconds without any item starting before papayya says where to look


def workflow_id(run_id: UUID | str) -> str:
    """The id of a run's ``MapItems`` workflow (every execution of it: start, resume, continue-as-new)."""
    return f"papayya-run-{run_id}"


def activity_name(agent: Agent) -> str:
    """The Temporal activity name of an agent decorated ``@activity.defn`` above ``@agent``."""
    defn = getattr(agent, "__temporal_activity_definition", None)
    if defn is None or getattr(defn, "name", None) is None:
        raise ConfigError(
            f"Agent {agent.name} is not a Temporal activity; decorate it with @activity.defn above "
            "@agent and register it on a worker whose client has papayya_temporal.Interceptor()."
        )
    if getattr(defn, "fn", agent) is not agent:
        raise ConfigError(
            f"Agent {agent.name}: put @activity.defn above @agent (not below it), so that Temporal runs "
            "the agent and papayya sees each attempt."
        )
    return str(defn.name)


def activity_for(agent: Agent) -> str:
    """The activity ``MapItems`` runs for ``agent``: its own when it is a Temporal activity, else the
    generic ``papayya.run_item`` (which runs the agent of each item's run)."""
    if getattr(agent, "__temporal_activity_definition", None) is None:
        return GENERIC_ACTIVITY
    return activity_name(agent)


async def connect(settings: TemporalSettings, **kwargs: Any) -> Client:
    """A Temporal client for ``settings``; TemporalUnavailable (one sentence) when nothing answers."""
    from temporalio.client import Client

    try:
        return await asyncio.wait_for(
            Client.connect(settings.address, namespace=settings.namespace, **kwargs), timeout=15
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise TemporalUnavailable(
            f"Cannot reach the Temporal server at {settings.address} (PAPAYYA_TEMPORAL_ADDRESS): "
            f"{str(exc).splitlines()[0][:160] or type(exc).__name__}; start one (`temporal server "
            "start-dev`) or point PAPAYYA_TEMPORAL_ADDRESS at yours."
        ) from None


def _trace_context() -> Any:
    """The client interceptor that carries the caller's trace context to the workflow's activities."""
    from papayya_temporal.interceptor import TraceContext

    return TraceContext()


def _blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="papayya-temporal")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class TemporalBackend:
    """Runs a run's items as activities of a ``MapItems`` workflow on Temporal."""

    name = BACKEND

    def __init__(self, settings: TemporalSettings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> TemporalSettings:
        if self._settings is None:
            self._settings = TemporalSettings.from_env()
        return self._settings

    # -- the Backend protocol ---------------------------------------------------------------------

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
        """Start (or resume) the run's workflow and wait until every item is terminal or it pauses."""
        activity = activity_for(agent)
        settings = self.settings

        async def go() -> None:
            client = await connect(settings, interceptors=[_trace_context()])
            handle = await self._start(client, activity, run_id, tenant_id, items, concurrency)
            label = run_name or f"{agent.name} [{tenant_id}]"
            await self._wait(rt, handle, run_id, tenant_id, len(items), label, progress)

        _blocking(go())

    def submit(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
    ) -> None:
        """Start (or resume) the run's workflow and return at once."""
        activity = activity_for(agent)
        settings = self.settings

        async def go() -> None:
            client = await connect(settings, interceptors=[_trace_context()])
            await self._start(client, activity, run_id, tenant_id, items, concurrency)

        _blocking(go())

    def redrive(self, rt: Runtime, refs: list[ItemRef]) -> None:
        """Run stalled items again: signal their run's workflow, or start a new execution for them."""
        from papayya.control import agent_of_run
        from papayya.errors import AgentNotImportable

        by_run: dict[UUID, list[ItemRef]] = {}
        for ref in refs:
            by_run.setdefault(ref.run_id, []).append(ref)
        settings = self.settings

        async def go() -> None:
            client = await connect(settings, interceptors=[_trace_context()])
            for run_id, group in by_run.items():
                tenant_id = group[0].tenant_id
                run = rt.store.run_get(run_id, tenant_id)
                try:
                    activity = activity_for(agent_of_run(run_id, tenant_id))
                except AgentNotImportable:
                    activity = GENERIC_ACTIVITY  # not importable here: the generic workers import it
                concurrency = int((run["options"] or {}).get("concurrency") or 8)
                pairs = [(r.item_id, r.key) for r in group]
                await self._start(
                    client,
                    activity,
                    run_id,
                    group[0].tenant_id,
                    pairs,
                    concurrency,
                    signal="redrive",
                )

        _blocking(go())

    # -- workflow ---------------------------------------------------------------------------------

    async def _start(
        self,
        client: Client,
        activity: str,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
        *,
        signal: str = "resume",
    ) -> WorkflowHandle[Any, Any]:
        """Signal the run's workflow if it is running (waiting at its gate), else start an execution."""
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
        from temporalio.service import RPCError, RPCStatusCode

        from papayya_temporal.workflow import WORKFLOW_NAME, MapJob

        settings = self.settings
        wid = workflow_id(run_id)
        pairs = [[str(item_id), key] for item_id, key in items]
        handle = client.get_workflow_handle(wid)
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            if described.status == WorkflowExecutionStatus.RUNNING:
                await handle.signal(signal, pairs)
                log.info("run %s: signalled its workflow %s (%s, %d items)", run_id, wid, signal, len(pairs))
                return client.get_workflow_handle(wid)
        job = MapJob(
            run_id=str(run_id),
            tenant_id=tenant_id,
            activity=activity,
            items=pairs,
            concurrency=concurrency,
            task_queue=settings.task_queue,
            start_to_close_seconds=settings.activity_timeout,
            heartbeat_seconds=settings.heartbeat_timeout,
        )
        started = await client.start_workflow(
            WORKFLOW_NAME,
            job,
            id=wid,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        log.info("run %s: started workflow %s with %d items", run_id, wid, len(pairs))
        return started

    async def _wait(
        self,
        rt: Runtime,
        handle: WorkflowHandle[Any, Any],
        run_id: UUID,
        tenant_id: str,
        total: int,
        label: str,
        progress: bool | None,
    ) -> None:
        """Follow the run in the store until every item is terminal or the run is paused; raise
        TemporalError when its workflow ends in failure first. Sweeps expired leases meanwhile."""
        from temporalio.client import WorkflowExecutionStatus

        show = rt.settings.progress if progress is None else progress
        params = {"run_id": run_id, "tenant_id": tenant_id}
        first = await asyncio.to_thread(rt.store.fetch_one, "temporal_run_progress", params)
        seen = {s: int(first[s]) for s in _TERMINAL} if first else dict.fromkeys(_TERMINAL, 0)
        cost = Decimal(first["cost_usd"]) if first else Decimal(0)
        sweep_every = max(0.5, rt.settings.lease_seconds / 3)
        last_sweep = last_check = started = time.monotonic()
        moved = False
        with Progress(label, total=total, enabled=show) as bar:
            while True:
                row = await asyncio.to_thread(rt.store.fetch_one, "temporal_run_progress", params)
                if row is None:
                    return
                new_cost = Decimal(row["cost_usd"])
                for status in _TERMINAL:
                    for _ in range(int(row[status]) - seen[status]):
                        bar.advance(status, new_cost - cost)
                        cost = new_cost
                    seen[status] = int(row[status])
                pending = int(row["queued"]) + int(row["running"]) + int(row["stalled"])
                if row["run_status"] == "paused" and int(row["running"]) == 0:
                    for _ in range(int(row["paused"]) + int(row["queued"])):
                        bar.advance("paused", Decimal(0))
                    return
                if row["run_status"] not in ("running", "paused") or (
                    pending == 0 and not int(row["paused"])
                ):
                    return
                moved = moved or int(row["running"]) > 0 or any(seen.values())
                now = time.monotonic()
                if now - last_check >= 1.0:
                    last_check = now
                    described = await handle.describe()
                    if described.status == WorkflowExecutionStatus.COMPLETED and pending:
                        # Its workflow is done, yet items are left: workers refused them (another
                        # database, forged or unknown ids). Nothing will run them: say so, do not wait.
                        answer = await handle.result()
                        raise TemporalError(
                            f"The run's Temporal workflow {handle.id} completed with {pending} item(s) not "
                            f"run ({answer}): its workers refused them; check that they use the same "
                            "PAPAYYA_DATABASE_URL as this process, then `papayya resume` the run."
                        )
                    if described.status not in (
                        WorkflowExecutionStatus.RUNNING,
                        WorkflowExecutionStatus.COMPLETED,
                        WorkflowExecutionStatus.CONTINUED_AS_NEW,
                    ):
                        status = described.status.name.lower() if described.status else "ended"
                        raise TemporalError(await _why(handle, status))
                    if not moved and now - started > _QUIET_WARNING:
                        moved = True  # say it once
                        log.warning(
                            "run %s: no item has started after %.0fs; is a worker polling task queue %r "
                            "with MapItems and the agent's activity registered (`python -m "
                            "papayya_temporal worker` for agents that are not activities)?",
                            run_id,
                            now - started,
                            self.settings.task_queue,
                        )
                if now - last_sweep >= sweep_every:
                    last_sweep = now
                    await asyncio.to_thread(_sweep, rt)
                await asyncio.sleep(_POLL)


async def _why(handle: WorkflowHandle[Any, Any], status: str) -> str:
    from temporalio.client import WorkflowFailureError

    try:
        await handle.result()
    except WorkflowFailureError as exc:
        cause: Any = exc.cause
        while getattr(cause, "cause", None) is not None:
            cause = cause.cause
        return f"The run's Temporal workflow {handle.id} {status}: {getattr(cause, 'message', cause)}"
    except Exception as exc:
        return f"The run's Temporal workflow {handle.id} {status}: {exc}"
    return f"The run's Temporal workflow {handle.id} {status}."


def _sweep(rt: Runtime) -> None:
    """Recover expired leases (the reaper's sweep); a failure is retried at the next sweep."""
    try:
        from papayya import reaper
    except ImportError:  # a core without the reaper
        return
    try:
        reaper.sweep(rt)
    except Exception as exc:
        log.warning("reaper sweep failed (%s); retried", exc)


__all__ = ["TemporalBackend", "activity_for", "activity_name", "connect", "workflow_id"]
