"""What the dashboard's buttons do, through the same Python API as the CLI: pause, resume for the
workers, replay a slice or an item into a new run, and change a tenant's budget or running cap.

Each answers a browser with a redirect to the page that shows the result (and a message on top), and
an ``/api/...`` caller with JSON: the run's ``runs show --json`` or the tenant's ``tenants show --json``.
A refused action (a budget still spent, an empty slice) is a message, not an error page.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from papayya import control, tenants
from papayya.budgets import PERIODS
from papayya.cli.connect import connect
from papayya.errors import BudgetError, InputError, NotFound, PapayyaError
from papayya.replay import replay
from papayya.ui import reads
from papayya.ui.auth import Access
from papayya.ui.web import access_of, done, flag, in_thread, read_form, tenant_path


def _run_of(access: Access, run_id: UUID) -> dict[str, Any]:
    """The run, if this access sees it (Forbidden otherwise)."""
    return reads.run_row(access, run_id)


async def pause(request: Request) -> Response:
    access, run_id = access_of(request), request.path_params["run_id"]
    fields = await read_form(request)
    reason = fields.get("reason", "").strip() or "paused from the dashboard"

    def act() -> dict[str, Any]:
        _run_of(access, run_id)
        control.pause(run_id, reason=reason)
        return reads.run_detail(access, run_id)

    return await _answer(
        request,
        f"/runs/{run_id}",
        act,
        "Paused: no queued item starts, and items in flight stop at their next LLM call.",
    )


async def resume(request: Request) -> Response:
    access, run_id = access_of(request), request.path_params["run_id"]
    await read_form(request)

    def act() -> dict[str, Any]:
        _run_of(access, run_id)
        counts = control.requeue_run(run_id, tenant=access.tenant)
        detail = reads.run_detail(access, run_id)
        detail["requeued"] = counts["requeued"]
        return detail

    return await _answer(
        request,
        f"/runs/{run_id}",
        act,
        "Resumed: its items are queued again; `papayya worker` processes of its agent run them.",
    )


async def replay_run(request: Request) -> Response:
    access, run_id = access_of(request), request.path_params["run_id"]
    fields = await read_form(request)
    outcome = fields.get("outcome") or None
    cluster = fields.get("cluster") or None
    not_succeeded = flag(fields, "not_succeeded")
    from_journal = flag(fields, "from_journal")
    if not (outcome or cluster or not_succeeded):
        return done(request, f"/runs/{run_id}", "Say what to replay: an outcome or a cluster.", error=True)

    def act() -> dict[str, Any]:
        source = _run_of(access, run_id)
        _native_only(source, "replay")
        result = replay(
            run=run_id,
            outcome=outcome,
            cluster=cluster,
            not_succeeded=not_succeeded,
            tenant=access.tenant,
            from_journal=from_journal,
            execute=False,
        )
        connect().notify_work(source["agent_name"])
        return reads.run_detail(access, result.run_id)

    return await _created(request, f"/runs/{run_id}", act)


async def replay_item(request: Request) -> Response:
    access, item_id = access_of(request), request.path_params["item_id"]
    fields = await read_form(request)
    from_journal = flag(fields, "from_journal")

    def act() -> dict[str, Any]:
        store = connect()
        source = store.run_get(reads.item_row(access, item_id)["run_id"])
        _native_only(source, "replay")
        result = replay(item=item_id, tenant=access.tenant, from_journal=from_journal, execute=False)
        store.notify_work(source["agent_name"])
        return reads.run_detail(access, result.run_id)

    return await _created(request, f"/items/{item_id}", act)


def _native_only(run: dict[str, Any], verb: str) -> None:
    if run["backend"] != "native":
        raise BudgetError(
            f"Run {run['run_id']} runs on {run['backend']}, whose queue the dashboard does not feed; "
            f"{verb} it with `papayya {verb}` where the agent's code is importable."
        )


async def _created(request: Request, back: str, act: Any) -> Response:
    try:
        detail = await in_thread(act)
    except NotFound:
        raise
    except PapayyaError as exc:
        return done(request, back, exc.message, {"error": exc.message}, error=True)
    message = (
        f"Created replay run {detail['run_id']} with {detail['total']:,} queued items; "
        "`papayya worker` processes of its agent run them."
    )
    return done(request, f"/runs/{detail['run_id']}", message, detail)


async def _answer(request: Request, back: str, act: Any, message: str) -> Response:
    try:
        value = await in_thread(act)
    except NotFound:
        raise
    except PapayyaError as exc:
        return done(request, back, exc.message, {"error": exc.message}, error=True)
    return done(request, back, message, value)


async def tenant_budget(request: Request) -> Response:
    access, tenant = access_of(request), request.path_params["tenant"]
    fields = await read_form(request)
    access.check_admin()
    remove = flag(fields, "no_budget")
    raw = fields.get("budget", "").strip()
    period = fields.get("period", "").strip() or None
    if period is not None and period not in PERIODS:
        return done(
            request,
            tenant_path(tenant),
            f"Unknown period {period!r}; use one of: {', '.join(PERIODS)}.",
            error=True,
        )

    def act() -> dict[str, Any]:
        record = tenants.get(tenant)
        if not remove and not raw and period is None:
            raise InputError("Nothing to change: give a budget, a period, or remove the budget.")
        amount = None if remove else raw if raw else record.budget_usd
        outcome = tenants.set_budget(tenant, amount, period)
        detail = reads.tenant_detail(access, tenant)
        detail["budget_change"] = outcome
        return detail

    try:
        detail = await in_thread(act)
    except NotFound:
        raise
    except PapayyaError as exc:
        return done(request, tenant_path(tenant), exc.message, {"error": exc.message}, error=True)
    return done(request, tenant_path(tenant), _budget_message(tenant, detail["budget_change"]), detail)


def _budget_message(tenant: str, outcome: dict[str, Any]) -> str:
    from papayya.cli.render import money

    if outcome["budget_usd"] is None:
        return f"Tenant {tenant!r} has no budget now."
    text = f"Tenant {tenant!r} now has a budget of {money(outcome['budget_usd'])} per {outcome['period']}"
    if outcome["period"] == "total":
        text = f"Tenant {tenant!r} now has a budget of {money(outcome['budget_usd'])} in total"
    text += f" (spent {money(outcome['spent_usd'])})."
    if outcome["paused_runs"]:
        text += f" It is already spent: {len(outcome['paused_runs']):,} running runs are paused."
    return text


async def tenant_max_running(request: Request) -> Response:
    access, tenant = access_of(request), request.path_params["tenant"]
    fields = await read_form(request)
    access.check_admin()
    remove = flag(fields, "no_max_running")
    raw = fields.get("max_running", "").strip()

    def act() -> dict[str, Any]:
        tenants.get(tenant)
        if remove or not raw:
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                raise InputError(
                    f"{raw[:20]!r} is not a number of items; give a whole number >= 1."
                ) from None
        tenants.set_max_running(tenant, value)
        return reads.tenant_detail(access, tenant)

    try:
        detail = await in_thread(act)
    except NotFound:
        raise
    except PapayyaError as exc:
        return done(request, tenant_path(tenant), exc.message, {"error": exc.message}, error=True)
    cap = detail["max_running"]
    message = f"Tenant {tenant!r}: " + (
        f"at most {cap:,} items running at once." if cap else "no running cap."
    )
    return done(request, tenant_path(tenant), message, detail)
