"""The dashboard's pages: runs, one run, one item, tenants, one tenant, provider batches, one batch.
Server-rendered HTML; the run pages refresh their numbers from the JSON endpoints while a run is
running."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from papayya.cli import batches as cli_batches
from papayya.cli.runs import batch_text, budget_lines, slice_text, status_text, transitions_text
from papayya.models import Outcome
from papayya.ui import charts, reads
from papayya.ui.auth import CSRF_FIELD, Access, Tokens
from papayya.ui.web import in_thread

OUTCOMES = (Outcome.SUCCEEDED.value, Outcome.DEGRADED.value, Outcome.FAILED.value)
BATCHES_PAGE = 50  # provider batches listed, as `papayya batches list` by default


def legend_counts(counts: dict[str, int]) -> dict[str, int]:
    """What an outcome bar's legend lists: every status the bar has a segment for, and the three
    outcomes even at zero ("failed 0" is news too), in lifecycle order (``reads.ITEM_STATUSES``)."""
    merged = {**dict.fromkeys(OUTCOMES, 0), **{k: v for k, v in counts.items() if v}}
    order = {s: i for i, s in enumerate(reads.ITEM_STATUSES)}
    return {k: merged[k] for k in sorted(merged, key=lambda k: (order.get(k, len(order)), k))}


def _access(request: Request) -> Access:
    access: Access = request.state.access
    return access


def page(request: Request, template: str, **context: Any) -> str:
    """Render ``template`` with what every page needs: the access, the form secret, a flash message."""
    tokens: Tokens = request.app.state.tokens
    access: Access = getattr(request.state, "access", Access(None))
    context.update(
        request=request,
        access=access,
        csrf_field=CSRF_FIELD,
        csrf=tokens.csrf,
        message=request.query_params.get("msg"),
        message_kind="error" if request.query_params.get("kind") == "error" else "ok",
        outcomes=OUTCOMES,
        item_statuses=reads.ITEM_STATUSES,
        legend_counts=legend_counts,
        meter=charts.meter,
        status_text=status_text,
        transitions_text=transitions_text,
        batch_text=batch_text,
        slice_text=slice_text,
    )
    env = request.app.state.templates
    return str(env.get_template(template).render(**context))


def login_page(request: Request, *, failed: bool) -> str:
    return page(request, "login.html", failed=failed, next=request.url.path)


def error_page(request: Request, status: int, message: str) -> str:
    return page(request, "error.html", status=status, error=message)


async def home(request: Request) -> Response:
    access = _access(request)
    if access.tenant is not None:
        return RedirectResponse(f"/tenants/{_quote(access.tenant)}", status_code=303)
    return RedirectResponse("/runs", status_code=303)


async def runs(request: Request) -> Response:
    access = _access(request)
    q = request.query_params
    tenant = q.get("tenant") or None
    status = q.get("status") or None
    before = q.get("before") or None
    rows, cursor = await in_thread(
        reads.runs_page, access, tenant=tenant, status=status, before=before, lineage=True
    )
    html = page(
        request,
        "runs.html",
        runs=rows,
        cursor=cursor,
        tenant=tenant,
        status=status,
        first_page=before is None,
        statuses=reads.RUN_STATUSES,
    )
    return HTMLResponse(html)


async def run(request: Request) -> Response:
    access = _access(request)
    run_id: UUID = request.path_params["run_id"]
    q = request.query_params
    outcome = q.get("outcome") or None
    after = q.get("after") or None

    def load() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        detail = reads.run_detail(access, run_id)
        items = reads.run_items(access, run_id, outcome=outcome, after=after)
        clusters = reads.failures(access, run_id, limit=20)
        return detail, items, clusters

    detail, items, clusters = await in_thread(load)
    html = page(
        request,
        "run.html",
        run=detail,
        items=items,
        clusters=clusters,
        outcome=outcome,
        after=after,
        statuses=reads.ITEM_STATUSES,
        budget_lines=budget_lines(detail["budget"]),
    )
    return HTMLResponse(html)


async def item_by_key(request: Request) -> Response:
    item_id = await in_thread(
        reads.item_id_by_key, _access(request), request.path_params["run_id"], request.path_params["key"]
    )
    return RedirectResponse(f"/items/{item_id}", status_code=303)


async def item(request: Request) -> Response:
    item_id: UUID = request.path_params["item_id"]
    detail, columns = await in_thread(reads.item_columns, _access(request), item_id)
    return HTMLResponse(page(request, "item.html", item=detail, columns=columns))


async def tenants(request: Request) -> Response:
    access = _access(request)
    if access.tenant is not None:
        return RedirectResponse(f"/tenants/{_quote(access.tenant)}", status_code=303)
    rows = await in_thread(reads.tenants_list, access)
    return HTMLResponse(page(request, "tenants.html", tenants=rows))


async def tenant(request: Request) -> Response:
    access = _access(request)
    tenant_id: str = request.path_params["tenant"]
    before = request.query_params.get("before") or None

    def load() -> dict[str, Any]:
        detail = reads.tenant_detail(access, tenant_id)
        spend = reads.tenant_spend(access, tenant_id)
        runs, cursor = reads.runs_page(access, tenant=tenant_id, before=before, lineage=True)
        return {
            "tenant": detail,
            "spend": spend,
            "paused": reads.paused_runs(access, tenant_id),
            "runs": runs,
            "cursor": cursor,
        }

    data = await in_thread(load)
    data["period_chart"] = Markup(charts.period_chart(data["spend"]))  # built from numbers and escaped text
    data["daily_chart"] = Markup(charts.daily_chart(data["spend"]))
    done = sum(data["tenant"]["items"].get(o, 0) for o in (*OUTCOMES, "cancelled"))
    html = page(request, "tenant.html", done=done, first_page=before is None, **data)
    return HTMLResponse(html)


async def batches(request: Request) -> Response:
    document = await in_thread(reads.batches_list, _access(request), limit=BATCHES_PAGE)
    now = datetime.now(UTC)
    html = page(
        request,
        "batches.html",
        batches=document["batches"],
        pending_line=cli_batches.pending_line(document["pending"]),
        limited=len(document["batches"]) == BATCHES_PAGE,
        batch_status=cli_batches.status_text,
        age=lambda at: cli_batches.age(at, now),
    )
    return HTMLResponse(html)


async def batch(request: Request) -> Response:
    detail = await in_thread(reads.batch_detail, _access(request), request.path_params["batch_id"])
    now = datetime.now(UTC)
    html = page(
        request,
        "batch.html",
        batch=detail,
        batch_status=cli_batches.status_text,
        age=lambda at: cli_batches.age(at, now),
    )
    return HTMLResponse(html)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
