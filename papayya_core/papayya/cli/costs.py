"""``papayya costs``: what LLM calls cost over a window, by tenant, run, model or agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import TENANT, TIME, Param, short

DEFAULT_WINDOW = timedelta(days=30)
# The open end of a window: calls are stamped by the database clock, which may run ahead of ours.
_OPEN_END = datetime(9999, 1, 1, tzinfo=UTC)


class ByType(Param[str]):
    """``tenant``, ``run``, ``model`` or ``agent``, or two of them: ``tenant,model`` (a pivot)."""

    name = "by"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        parts = [p.strip() for p in str(value).split(",")]
        if not 1 <= len(parts) <= 2 or any(p not in _KINDS for p in parts) or len(set(parts)) != len(parts):
            self.fail(
                f"{short(str(value))} is not one of {', '.join(map(repr, _KINDS))}, nor two of them "
                "(e.g. tenant,model)",
                param,
                ctx,
            )
        return ",".join(parts)


_KINDS = ("tenant", "run", "model", "agent")


@click.command("costs")
@click.option(
    "--by",
    type=ByType(),
    default="tenant",
    show_default=True,
    metavar="tenant|run|model|agent[,...]",
    help="What to group the cost by; two of them (e.g. tenant,model) pivot: a row per the first, a "
    "column per the second.",
)
@click.option("--tenant", type=TENANT, default=None, help="Only this tenant's calls.")
@click.option(
    "--since",
    type=TIME,
    default=None,
    help="Start of the window: an ISO date/time (UTC unless it has an offset) or 30m, 24h, 7d, 2w ago.  "
    "[default: 30d]",
)
@click.option("--until", type=TIME, default=None, help="End of the window (exclusive).  [default: now]")
@render.json_option
def costs_command(
    by: str, tenant: str | None, since: datetime | None, until: datetime | None, as_json: bool
) -> None:
    """LLM cost by tenant, run, model or agent over a window.

    The window is the last 30 days unless --since/--until say otherwise. Calls of a model with no
    known price count as unknown, never as $0.
    """
    since = since or datetime.now(UTC) - DEFAULT_WINDOW
    if until is not None and until <= since:
        raise click.UsageError(
            f"--until {until.isoformat()} is not after --since {since.isoformat()}; widen the window"
        )
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
    found = store.costs(by, since=since, until=until or _OPEN_END, tenant_id=tenant)
    if "," in by:
        _pivot(by, found, tenant=tenant, since=since, until=until, as_json=as_json)
        return
    rows = [_row(r) for r in found]
    total = _total(rows)
    if not _opening(by, by, rows, total, tenant=tenant, since=since, until=until, as_json=as_json):
        return
    headers = [by, "calls", "input tokens", "output tokens", "cost", "unpriced calls"]
    lines = [
        (
            r["key"],
            f"{r['calls']:,}",
            render.count(r["input_tokens"]),
            render.count(r["output_tokens"]),
            render.cost_label(r["cost_usd"], r["unpriced_calls"] > 0),
            f"{r['unpriced_calls']:,}",
        )
        for r in [*rows, {"key": "total", **total}]
    ]
    _closing(render.table(headers, lines, right=headers[1:], whole=["run"]), total)


def _opening(
    by: str,
    what: str,
    rows: list[dict[str, Any]],
    total: dict[str, Any],
    *,
    tenant: str | None,
    since: datetime,
    until: datetime | None,
    as_json: bool,
) -> bool:
    """Print the JSON (and return False: nothing more to print), or the heading of the table of
    ``what``; False too when there is no row."""
    if as_json:
        render.emit_json(
            {"by": by, "tenant": tenant, "since": since, "until": until, "rows": rows, "total": total}
        )
        return False
    window = f"since {render.when(since)}" + (f" until {render.when(until)}" if until else "")
    scope = f" for tenant {tenant!r}" if tenant else ""
    render.out(render.note(f"LLM cost by {what}{scope}, {window}"))
    if not rows:
        render.out("No LLM calls in this window.")
        return False
    return True


def _closing(t: Any, total: dict[str, Any]) -> None:
    """The table with a rule above its total row, and what unpriced calls mean."""
    t.rows[-2].end_section = True
    render.out(t)
    if total["unpriced_calls"]:
        render.out(
            render.note(
                f"{total['unpriced_calls']:,} calls have no known price and are not in the cost; "
                "give their model a price with `papayya tenants set TENANT --price provider:model=IN/OUT`."
            )
        )


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": r["key"],
        "calls": r["calls"],
        "input_tokens": r["input_tokens"] or 0,
        "output_tokens": r["output_tokens"] or 0,
        "cost_usd": render.known_cost(r["cost_usd"], r["unpriced_calls"] > 0),
        "unpriced_calls": r["unpriced_calls"],
    }


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    unpriced = sum(r["unpriced_calls"] for r in rows)
    cost = sum((r["cost_usd"] or Decimal(0) for r in rows), Decimal(0))
    return {
        "calls": sum(r["calls"] for r in rows),
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "cost_usd": render.known_cost(cost, unpriced > 0),
        "unpriced_calls": unpriced,
    }


def _pivot(
    by: str,
    found: list[dict[str, Any]],
    *,
    tenant: str | None,
    since: datetime,
    until: datetime | None,
    as_json: bool,
) -> None:
    """``costs --by A,B``: a row per A, a column per B, cost in each cell, totals on the right."""
    first, second = by.split(",")
    rows = [{first: r["key1"], second: r["key2"], **_row({**r, "key": None})} for r in found]
    for r in rows:
        r.pop("key")
    total = _total(rows)
    what = f"{first} and {second}"
    if not _opening(by, what, rows, total, tenant=tenant, since=since, until=until, as_json=as_json):
        return
    columns = sorted({r[second] for r in rows}, key=str)
    cells: dict[tuple[Any, Any], dict[str, Any]] = {(r[first], r[second]): r for r in rows}
    lines = []
    for key in dict.fromkeys(r[first] for r in rows):
        mine = [r for r in rows if r[first] == key]
        sub = _total(mine)
        lines.append(
            (
                key,
                *(_cell(cells.get((key, c))) for c in columns),
                render.cost_label(sub["cost_usd"], sub["unpriced_calls"] > 0),
            )
        )
    lines.append(
        (
            "total",
            *(_cell(_total([r for r in rows if r[second] == c])) for c in columns),
            render.cost_label(total["cost_usd"], total["unpriced_calls"] > 0),
        )
    )
    headers = [f"{first} \\ {second}", *map(str, columns), "total"]
    _closing(
        render.table(headers, lines, right=headers[1:], whole=[headers[0]] if first == "run" else []), total
    )


def _cell(r: dict[str, Any] | None) -> str:
    return "-" if r is None else render.cost_label(r["cost_usd"], r["unpriced_calls"] > 0)
