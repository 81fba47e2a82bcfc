"""JSON endpoints, each the document the matching CLI command prints with ``--json``:

- ``GET /api/runs`` — ``papayya runs list --json`` (``?tenant=``, ``?status=``, ``?limit=``; the next page's
  address in the ``Link`` header);
- ``GET /api/runs/RUN`` — ``papayya runs show RUN --json`` (``?top=``, 5 by default);
- ``GET /api/runs/RUN/items`` — ``papayya items list RUN --json`` (``?outcome=``, ``?after=``, ``?limit=``);
- ``GET /api/runs/RUN/failures`` — ``papayya failures RUN --json``;
- ``GET /api/items/ITEM`` — ``papayya items show ITEM --json``;
- ``GET /api/tenants`` and ``/api/tenants/TENANT`` — ``papayya tenants list|show --json``;
- ``GET /api/tenants/TENANT/spend`` — the spend over time the tenant page draws;
- ``GET /api/batches`` and ``/api/batches/BATCH`` — ``papayya batches list|show --json`` (``?limit=``, 50
  by default; every tenant's, so a tenant token is refused with 403).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from papayya.errors import InputError
from papayya.ui import reads
from papayya.ui.web import access_of, as_json, in_thread


def _limit(request: Request, default: int, most: int = 1000) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"limit={raw[:20]!r} is not a number; give 1 to {most}.") from None
    if not 1 <= value <= most:
        raise InputError(f"limit={value} is out of range; give 1 to {most}.")
    return value


def _top(request: Request) -> int:
    raw = request.query_params["top"]
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InputError(f"top={raw[:20]!r} is not a number from 1 to 100.")
    return int(raw)


async def runs(request: Request) -> Response:
    q = request.query_params
    tenant, status, before = q.get("tenant") or None, q.get("status") or None, q.get("before") or None
    rows, cursor = await in_thread(
        reads.runs_page,
        access_of(request),
        tenant=tenant,
        status=status,
        before=before,
        limit=_limit(request, reads.PAGE),
    )
    response = as_json(rows)
    if cursor is not None:
        params = {k: v for k, v in q.items() if k != "before"}
        response.headers["link"] = f'</api/runs?{urlencode({**params, "before": cursor})}>; rel="next"'
    return response


async def run(request: Request) -> Response:
    top = _top(request) if "top" in request.query_params else 5
    detail = await in_thread(reads.run_detail, access_of(request), request.path_params["run_id"], top=top)
    return as_json(detail)


async def run_items(request: Request) -> Response:
    q = request.query_params
    page = await in_thread(
        reads.run_items,
        access_of(request),
        request.path_params["run_id"],
        outcome=q.get("outcome") or None,
        after=q.get("after") or None,
        limit=_limit(request, 100, 100_000),
    )
    return as_json(page)


async def failures(request: Request) -> Response:
    rows = await in_thread(
        reads.failures, access_of(request), request.path_params["run_id"], limit=_limit(request, 20, 100_000)
    )
    return as_json(rows)


async def item(request: Request) -> Response:
    return as_json(await in_thread(reads.item_detail, access_of(request), request.path_params["item_id"]))


async def tenants(request: Request) -> Response:
    rows = await in_thread(reads.tenants_list, access_of(request), limit=_limit(request, 1000, 100_000))
    for row in rows:
        row.pop("paused_runs")  # the CLI's rows; the dashboard's table adds this count
    return as_json(rows)


async def tenant(request: Request) -> Response:
    return as_json(await in_thread(reads.tenant_detail, access_of(request), request.path_params["tenant"]))


async def tenant_spend(request: Request) -> Response:
    return as_json(await in_thread(reads.tenant_spend, access_of(request), request.path_params["tenant"]))


async def batches(request: Request) -> Response:
    document = await in_thread(reads.batches_list, access_of(request), limit=_limit(request, 50, 100_000))
    return as_json(document)


async def batch(request: Request) -> Response:
    return as_json(await in_thread(reads.batch_detail, access_of(request), request.path_params["batch_id"]))
