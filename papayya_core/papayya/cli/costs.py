"""``papayya costs``: what LLM calls cost over a window, by tenant, run, model or agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import TENANT, TIME

DEFAULT_WINDOW = timedelta(days=30)
# The open end of a window: calls are stamped by the database clock, which may run ahead of ours.
_OPEN_END = datetime(9999, 1, 1, tzinfo=UTC)


@click.command("costs")
@click.option(
    "--by",
    type=click.Choice(["tenant", "run", "model", "agent"]),
    default="tenant",
    show_default=True,
    help="What to group the cost by.",
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
    rows = [_row(r) for r in store.costs(by, since=since, until=until or _OPEN_END, tenant_id=tenant)]
    total = _total(rows)
    if as_json:
        render.emit_json(
            {"by": by, "tenant": tenant, "since": since, "until": until, "rows": rows, "total": total}
        )
        return
    window = f"since {render.when(since)}" + (f" until {render.when(until)}" if until else "")
    scope = f" for tenant {tenant!r}" if tenant else ""
    render.out(render.note(f"LLM cost by {by}{scope}, {window}"))
    if not rows:
        render.out("No LLM calls in this window.")
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
    t = render.table(headers, lines, right=headers[1:], whole=["run"])
    t.rows[-2].end_section = True  # a rule above the total
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
