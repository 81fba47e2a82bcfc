"""What the dashboard reads: the CLI's ``--json`` documents (built by the same functions) and the few
aggregates only the dashboard shows (a page of runs, a tenant's spend over time). All synchronous; the
web layer calls them in a thread. Every read is scoped by the caller's access; provider batches, which
carry every tenant's requests, are refused to a tenant token as a whole.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from papayya import tenants
from papayya.budgets import period_of
from papayya.cli import batches as cli_batches
from papayya.cli import items as cli_items
from papayya.cli import runs as cli_runs
from papayya.cli import tenants as cli_tenants
from papayya.cli.connect import connect
from papayya.cli.failures import _cluster_row
from papayya.clusters import clusters
from papayya.errors import InputError, NotFound
from papayya.models import ItemStatus
from papayya.result import RunResult
from papayya.ui.auth import Access, Forbidden

PAGE = 25  # runs per page
ITEMS_PAGE = 50  # items per page

ITEM_STATUSES = tuple(s.value for s in ItemStatus)
RUN_STATUSES = ("running", "paused", "completed", "cancelled")


# -- runs -----------------------------------------------------------------------------------------


def run_row(access: Access, run_id: UUID) -> dict[str, Any]:
    """The run; Forbidden (403) when it is another tenant's than the token's."""
    run = connect().run_get(run_id)
    access.check(run["tenant_id"])
    return run


def item_row(access: Access, item_id: UUID) -> dict[str, Any]:
    """``store.item_detail`` of the item; Forbidden (403) when it is another tenant's than the token's."""
    row = connect().item_detail(item_id)
    access.check(row["tenant_id"])
    return row


def runs_page(
    access: Access,
    *,
    tenant: str | None = None,
    status: str | None = None,
    before: str | None = None,
    limit: int = PAGE,
    lineage: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of runs, newest first, as ``papayya runs list --json`` rows; and the cursor of the next page.

    ``before`` is the cursor a previous page returned (``CREATED_AT~RUN_ID``); ``lineage`` adds each
    run's ``replayed_from`` (for the pages)."""
    if tenant is not None:
        tenants.validate_tenant_id(tenant)  # a 400 saying what is wrong, not a 500 from the store
    if access.tenant is not None:
        if tenant is not None:
            access.check(tenant)
        tenant = access.tenant
    store = connect()
    before_at, before_id = _cursor(before)
    rows = store.fetch_all(
        "run_list_detail",
        {
            "tenant_id": tenant,
            "status": status if status in RUN_STATUSES else None,
            "before_at": before_at,
            "before_id": before_id,
            "limit": limit + 1,  # one more than shown: is there a next page?
        },
    )
    more = len(rows) > limit
    rows = rows[:limit]
    page = [cli_runs._run_row(r) for r in rows]
    if lineage:
        for run, row in zip(page, rows, strict=True):
            run["replayed_from"] = row["replayed_from"]
    last = rows[-1] if more else None
    cursor = f"{last['created_at'].isoformat()}~{last['run_id']}" if last else None
    return page, cursor


def _cursor(before: str | None) -> tuple[datetime | None, UUID | None]:
    if not before:
        return None, None
    at, _, rid = before.partition("~")
    try:
        return datetime.fromisoformat(at), UUID(rid)
    except ValueError:
        raise NotFound(f"{before[:60]!r} is not a page of runs; start from the first page.") from None


def run_detail(access: Access, run_id: UUID, *, top: int = 10) -> dict[str, Any]:
    """``papayya runs show RUN --json``."""
    run = run_row(access, run_id)
    result = RunResult.load(run_id, run["tenant_id"], top=top)
    return cli_runs.show_detail(run, result, top=top)


def run_status_text(detail: dict[str, Any]) -> str:
    return cli_runs.status_text(detail["status"], detail["paused_reason"])


def run_items(
    access: Access,
    run_id: UUID,
    *,
    outcome: str | None = None,
    after: str | None = None,
    limit: int = ITEMS_PAGE,
) -> dict[str, Any]:
    """``papayya items list RUN --json``: a page of the run's items in item-id order."""
    if after is not None and "\x00" in after:
        raise InputError(f"after={after[:40]!r} holds a NUL; give the key of the last item of a page.")
    store = connect()
    run = run_row(access, run_id)
    status = outcome if outcome in ITEM_STATUSES else None
    rows = store.items_page(run_id, tenant_id=run["tenant_id"], status=status, after=after, limit=limit)

    return {
        "run_id": run_id,
        "tenant": run["tenant_id"],
        "outcome": status,
        "items": [cli_items.item_row(r) for r in rows],
        "next_after": rows[-1]["key"] if len(rows) == limit else None,
    }


def item_id_by_key(access: Access, run_id: UUID, key: str) -> UUID:
    store = connect()
    run = run_row(access, run_id)
    return store.item_id_by_key(run_id, run["tenant_id"], key)


def failures(access: Access, run_id: UUID, *, limit: int = 50) -> list[dict[str, Any]]:
    """``papayya failures RUN --json``: the run's clusters, largest first."""
    run = run_row(access, run_id)
    found = clusters(run_id=run_id, tenant=run["tenant_id"], limit=limit)
    return [_cluster_row(c.as_dict()) for c in found]


# -- items ----------------------------------------------------------------------------------------


def item_detail(access: Access, item_id: UUID) -> dict[str, Any]:
    """``papayya items show ITEM --json``: the item, its attempts, steps, LLM calls and lineage."""
    store = connect()
    row = item_row(access, item_id)
    detail = cli_items._item_detail(row)
    detail["lineage"] = cli_items.lineage(row, cli_items._linked_details(store, row))
    return detail


def item_columns(access: Access, item_id: UUID) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The item's JSON detail, and one column per attempt across the item and its replays (oldest
    first), each with its error, steps and LLM calls, for the side-by-side view."""
    store = connect()
    row = item_row(access, item_id)
    linked = cli_items._linked_details(store, row)
    detail = cli_items._item_detail(row)
    detail["lineage"] = cli_items.lineage(row, linked)
    rows = {r["item_id"]: r for r in linked or [row]}
    columns: list[dict[str, Any]] = []
    for entry in detail["lineage"]:
        source = rows[entry["item_id"]]
        by_id = {a["attempt_id"]: a for a in source["attempts_detail"]}
        for attempt in entry["attempts"]:
            aid = attempt["attempt_id"]
            columns.append(
                {
                    **attempt,
                    "key": entry["key"],
                    "this_item": entry["item_id"] == item_id,
                    "error": by_id[aid]["error"],
                    "backend": by_id[aid]["backend"],
                    "worker": by_id[aid]["worker"],
                    "step_list": [s for s in source["steps"] if s["attempt_id"] == aid],
                    "call_list": [c for c in source["llm_calls"] if c["attempt_id"] == aid],
                }
            )
    return detail, columns


# -- tenants --------------------------------------------------------------------------------------


def tenants_list(access: Access, *, limit: int = 1000) -> list[dict[str, Any]]:
    """``papayya tenants list --json`` rows (a tenant token sees its own), with ``paused_runs``."""
    connect()
    rows = tenants.list_all(limit)
    if access.tenant is not None:
        rows = [r for r in rows if r["tenant_id"] == access.tenant]
    ids = [r["tenant_id"] for r in rows]
    budgets = cli_tenants._budgets(ids)
    counts = connect().tenant_item_counts(ids)
    paused = {
        r["tenant_id"]: r["paused"]
        for r in connect().fetch_all("ui_paused_runs_by_tenant", {"tenant_ids": ids})
    }
    return [
        {
            **cli_tenants.tenant_row(r, budgets[r["tenant_id"]], counts[r["tenant_id"]]),
            "paused_runs": paused.get(r["tenant_id"], 0),
        }
        for r in rows
    ]


def tenant_detail(access: Access, tenant_id: str) -> dict[str, Any]:
    """``papayya tenants show TENANT --json``."""
    access.check(tenant_id)
    connect()
    return cli_tenants._detail(tenant_id)


def paused_runs(access: Access, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's paused runs, oldest first, with why each paused."""
    access.check(tenant_id)
    store = connect()
    out = []
    for rid in store.runs_paused_of_tenant(tenant_id):
        run = store.run_get(rid, tenant_id)
        out.append(
            {
                "run_id": rid,
                "agent": run["agent_name"],
                "name": run["name"],
                "backend": run["backend"],
                "paused_reason": run["paused_reason"],
                "status_text": cli_runs.status_text("paused", run["paused_reason"]),
                "created_at": run["created_at"],
            }
        )
    return out


def tenant_spend(access: Access, tenant_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The tenant's spend over time, for the charts.

    ``period``: cumulative spend through the current budget period (a month by day, a day by hour; a
    ``total`` budget over the last 30 days, starting from what was spent before), with the budget.
    ``daily``: spend per day over the last 30 days.
    """
    access.check(tenant_id)
    store = connect()
    record = tenants.get(tenant_id)
    budget = cli_tenants._budgets([tenant_id])[tenant_id]
    now = now or datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_ago = today - timedelta(days=29)
    if record.budget_period == "day":
        start, step, slots = period_of("day")[1] or today, timedelta(hours=1), 24
        bucket = "hour"
    elif record.budget_period == "month":
        start = period_of("month")[1] or today.replace(day=1)
        step, bucket = timedelta(days=1), "day"
        following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        slots = (following - start).days
    else:
        start, step, slots, bucket = month_ago, timedelta(days=1), 30, "day"
    rows = store.fetch_all("ui_tenant_spend", {"tenant_id": tenant_id, "since": start, "bucket": bucket})
    in_window = sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))
    spent: Decimal = budget["spent_usd"]
    offset = max(Decimal(0), spent - in_window) if record.budget_period == "total" else Decimal(0)
    daily_rows = store.fetch_all(
        "ui_tenant_spend", {"tenant_id": tenant_id, "since": month_ago, "bucket": "day"}
    )
    return {
        "tenant": tenant_id,
        "period": record.budget_period,
        "period_key": budget["period_key"],
        "budget_usd": budget["budget_usd"],
        "spent_usd": spent,
        "reserved_usd": budget["reserved_usd"],
        "start": start,
        "step_seconds": int(step.total_seconds()),
        "slots": slots,
        "offset_usd": offset,
        "buckets": [{"at": r["bucket"], "cost_usd": r["cost_usd"], "calls": r["calls"]} for r in rows],
        "daily_start": month_ago,
        "daily": [{"at": r["bucket"], "cost_usd": r["cost_usd"], "calls": r["calls"]} for r in daily_rows],
        "now": now,
    }


# -- provider batches -----------------------------------------------------------------------------


def _check_all_tenants(access: Access) -> None:
    # A batch's rows and the pending counts mix tenants; rather than recount them per tenant, a tenant
    # token does not see batches at all (its runs' pages still say what they wait on).
    if not access.admin:
        raise Forbidden(
            "Provider batches carry every tenant's requests, so a tenant token cannot see them; "
            "a run's page says what it waits on."
        )


def batches_list(access: Access, *, limit: int = 50) -> dict[str, Any]:
    """``papayya batches list --json``: the newest batches and the pending requests (every tenant's)."""
    _check_all_tenants(access)
    connect()
    return cli_batches.list_document(limit)


def batch_detail(access: Access, batch_id: UUID) -> dict[str, Any]:
    """``papayya batches show BATCH --json``: the batch and the runs whose requests it carries."""
    _check_all_tenants(access)
    connect()
    return cli_batches.show_document(cli_batches.find(str(batch_id)))
