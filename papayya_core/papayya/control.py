"""Pause and resume: people (and budgets) stop runs; ``resume`` continues them where they stopped.

A paused run keeps every item: the ones stopped at an LLM call are ``paused`` with their journal, the
rest are ``queued``. Resuming puts paused items back in the queue and runs every queued item through
the lifecycle again, in this process, with the agent this process defines under the run's agent name,
or else imported from where the run was started where that cannot start its batch again
(``papayya.registry``). Recorded steps and LLM calls are reused, so nothing is paid twice.
"""

from __future__ import annotations

import logging
import shlex
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import registry
from papayya.budgets import period_of
from papayya.errors import AgentNotImportable, BudgetError, NotFound
from papayya.money import usd
from papayya.runtime import get_runtime

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.result import RunResult

log = logging.getLogger("papayya.control")


def _uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise NotFound(f"{value!r} is not a run id; list runs with `papayya runs list`.") from None


def pause(run_id: UUID | str, *, reason: str = "paused by a person") -> None:
    """Pause a running run: no queued item starts, in-flight items stop at their next LLM call."""
    rt = get_runtime()
    run = rt.store.run_get(_uuid(run_id))
    if run["status"] != "running":
        raise BudgetError(f"Run {run['run_id']} is {run['status']}, not running; there is nothing to pause.")
    rt.control.paused(rt.store.runs_pause(run["tenant_id"], run["run_id"], f"manual: {reason}"))
    rt.control.settle_change()  # returns once no worker can reserve for the run any more


def agent_of_run(run_id: UUID, tenant_id: str) -> Agent:
    """The agent a run was started with, for generic workers that run any agent by the run's record
    (a Celery task, a Temporal activity, an SQS consumer serving every agent): this process's agent of
    that name, else its module imported where that cannot start a batch again (``papayya.registry``).
    AgentNotImportable (one sentence) when this process cannot find it."""
    run = get_runtime().store.run_get(run_id, tenant_id)
    try:
        return registry.find(run["agent_name"], run["entrypoint"], verb="run")
    except AgentNotImportable as exc:
        raise AgentNotImportable(
            f"This worker cannot run agent {run['agent_name']} of run {run_id}: {exc.message}"
        ) from exc


def check_budget_room(tenant_id: str, run_id: UUID, budget_period: str) -> None:
    """Raise BudgetError when a budget of the run is already spent: resuming would pause again at once."""
    store = get_runtime().store
    key, start = period_of(budget_period)
    keys = {
        "tenant_id": tenant_id,
        "tenant_period": key,
        "period_start": start,
        "run_id": run_id,
        "run_key": str(run_id),
    }
    store.budget_accounts_ensure(keys)
    for acct in store.budget_view(keys):
        limit = acct["limit_usd"]
        if limit is not None and Decimal(acct["spent_usd"]) >= Decimal(limit):
            if acct["scope"] == "tenant":
                raise BudgetError(
                    f"Tenant {tenant_id!r} has spent {usd(acct['spent_usd'])} of its {usd(limit)} budget "
                    f"for {acct['period']}; raise it with `papayya tenants set {shlex.quote(tenant_id)} "
                    "--budget USD` "
                    "(or wait for the next period), then resume."
                )
            raise BudgetError(
                f"Run {run_id} has spent {usd(acct['spent_usd'])} of its {usd(limit)} budget; "
                f"raise it with `papayya runs set {run_id} --budget USD`, then resume."
            )


def resume_run(
    run_id: UUID | str,
    *,
    agent: Agent | None = None,
    concurrency: int | None = None,
    progress: bool | None = None,
) -> RunResult:
    """Resume a paused run in this process and wait for it, as ``map()`` does."""
    rt = get_runtime()
    store = rt.store
    run = store.run_get(_uuid(run_id))
    rid, tenant_id = run["run_id"], run["tenant_id"]
    if run["status"] == "running":
        # A run whose process was killed stays "running"; once no item holds a live lease, it is orphaned.
        live = store.run_live_leases(rid, tenant_id)
        if live:
            raise BudgetError(
                f"Run {rid} is running ({live} items hold live leases); pause it first with "
                f"`papayya pause {rid}`, or wait until its leases expire if its process died."
            )
    elif run["status"] != "paused":
        raise BudgetError(f"Run {rid} is {run['status']}, not paused; only a paused run can be resumed.")
    if agent is None:
        agent = registry.find(run["agent_name"], run["entrypoint"], verb="resume")
    elif agent.name != run["agent_name"]:
        raise BudgetError(f"Run {rid} was started by agent {run['agent_name']}, not {agent.name}.")
    tenant = store.tenant_get(tenant_id)
    store.budget_reconcile(tenant_id)
    check_budget_room(tenant_id, rid, tenant["budget_period"] if tenant else "month")
    counts = store.run_resume(rid, tenant_id)
    rt.control.observe_run(rid, "running", counts["gen"])
    pending = store.run_pending_items(rid, tenant_id)
    log.info(
        "resuming run %s: %d items requeued (%d stalled attempts), %d to run",
        rid,
        counts["requeued"],
        counts["stalled"],
        len(pending),
    )
    workers = concurrency or int((run["options"] or {}).get("concurrency") or 8)
    return agent._execute(rt, rid, tenant_id, pending, workers, progress, run["name"], run["backend"])


def requeue_run(run_id: UUID | str, *, tenant: str | None = None) -> dict[str, Any]:
    """Resume a paused native run for its workers: what ``resume_run`` does, minus running the items here.

    The run becomes ``running`` again, its paused items (and those whose worker died) go back to the
    queue, and idle ``papayya worker`` processes of its agent are woken; they run it. No agent is
    imported. ``tenant`` scopes the run (a tenant-scoped caller passes it). Returns the counts of
    ``store.run_resume`` (``requeued``, ``stalled``).

    Raises:
        NotFound: no such run (for this tenant).
        BudgetError: the run is not paused, is not on the native engine (its backend's queue needs
            ``papayya resume``), or a budget of it is still spent.
    """
    rt = get_runtime()
    store = rt.store
    run = store.run_get(_uuid(run_id), tenant)
    rid, tenant_id = run["run_id"], run["tenant_id"]
    if run["status"] != "paused":
        # A running run needs nothing: workers claim its queued items and the reaper its lost ones.
        raise BudgetError(f"Run {rid} is {run['status']}, not paused; there is nothing to resume.")
    if run["backend"] != "native":
        raise BudgetError(
            f"Run {rid} runs on {run['backend']}, whose queue only `papayya resume {rid}` refills; run it "
            "where the agent's code is importable."
        )
    tenant_row = store.tenant_get(tenant_id)
    store.budget_reconcile(tenant_id)
    check_budget_room(tenant_id, rid, tenant_row["budget_period"] if tenant_row else "month")
    counts = store.run_resume(rid, tenant_id)
    rt.control.observe_run(rid, "running", counts["gen"])
    store.notify_work(run["agent_name"])
    log.info("resumed run %s for its workers: %d items requeued", rid, counts["requeued"])
    return dict(counts)


def resume_tenant(tenant_id: str, **kwargs: Any) -> list[RunResult]:
    """Resume every paused run of a tenant, oldest first."""
    runs = get_runtime().store.runs_paused_of_tenant(tenant_id)
    if not runs:
        raise BudgetError(f"Tenant {tenant_id} has no paused runs.")
    return [resume_run(r, **kwargs) for r in runs]
