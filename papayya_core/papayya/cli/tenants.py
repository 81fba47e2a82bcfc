"""``papayya tenants``: create, configure, price and inspect tenants at runtime."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from papayya import tenants
from papayya.budgets import PERIODS, period_of
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import BUDGET, CONFIG_PAIR, MODEL, PRICE, TENANT, PriceSpec
from papayya.cli.roles import grant_command, revoke_command
from papayya.cli.secrets import secret_group
from papayya.errors import NotFound
from papayya.runtime import get_runtime

if TYPE_CHECKING:
    from papayya.models import PriceOverride

_PRICE_HELP = (
    "A negotiated price for this tenant, USD per million tokens: provider:model=IN/OUT[/CACHE_READ]"
    "[/CACHE_WRITE], e.g. openai:gpt-4o-mini=0.12/0.48; '-' keeps the public price of a kind. Repeatable."
)
_CONFIG_HELP = (
    "Set a config key (VALUE is read as JSON when it is JSON, e.g. 5 or true, else as text). Repeatable."
)


_BUDGET_HELP = (
    "What the tenant may spend on LLM calls per period, in USD (e.g. 40 or 12.50). When it is spent, "
    "the tenant's runs pause (they do not fail) until it is raised or the period ends."
)
_PERIOD_HELP = "The budget's period: a calendar month or day in UTC, or in total.  [default: month]"

budget_option = click.option("--budget", type=BUDGET, default=None, metavar="USD", help=_BUDGET_HELP)
period_option = click.option("--period", type=click.Choice(PERIODS), default=None, help=_PERIOD_HELP)


@click.group("tenants")
def tenants_group() -> None:
    """Create, configure and inspect tenants (no deploy needed)."""


tenants_group.add_command(secret_group)  # `papayya tenants secret ...`: its own module (papayya.cli.secrets)
tenants_group.add_command(grant_command)  # `papayya tenants grant|revoke`: papayya.cli.roles
tenants_group.add_command(revoke_command)


def _apply_prices(tenant_id: str, prices: tuple[PriceSpec, ...]) -> None:
    for p in prices:
        tenants.set_price(
            tenant_id,
            p.provider,
            p.model,
            input_mtok=p.input_mtok,
            output_mtok=p.output_mtok,
            cache_read_mtok=p.cache_read_mtok,
            cache_write_mtok=p.cache_write_mtok,
        )


@tenants_group.command("add")
@click.argument("tenant", type=TENANT)
@click.option("--config", "config", type=CONFIG_PAIR, multiple=True, metavar="KEY=VALUE", help=_CONFIG_HELP)
@click.option(
    "--price", "prices", type=PRICE, multiple=True, metavar="PROVIDER:MODEL=IN/OUT", help=_PRICE_HELP
)
@budget_option
@period_option
@render.json_option
def add_command(
    tenant: str,
    config: tuple[tuple[str, Any], ...],
    prices: tuple[PriceSpec, ...],
    budget: Decimal | None,
    period: str | None,
    as_json: bool,
) -> None:
    """Create TENANT, optionally with config, negotiated prices and a budget."""
    store = connect()
    outcome: dict[str, Any] | None = None
    with store.transaction():  # all of it, or (something refused) no tenant at all
        tenants.add(tenant, config=dict(config))
        _apply_prices(tenant, prices)
        if budget is not None or period is not None:
            outcome = tenants.set_budget(tenant, budget, period, settle=False)
    _settle(outcome)
    if as_json:
        render.emit_json(_detail(tenant))
        return
    limit = f" with a budget of {_budget_phrase(budget, period or 'month')}" if budget is not None else ""
    render.out(f"Created tenant {tenant!r}{limit}; see it with `papayya tenants show {_shell(tenant)}`.")


@tenants_group.command("set")
@click.argument("tenant", type=TENANT)
@click.option("--config", "config", type=CONFIG_PAIR, multiple=True, metavar="KEY=VALUE", help=_CONFIG_HELP)
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Remove a config key. Repeatable.")
@click.option(
    "--price", "prices", type=PRICE, multiple=True, metavar="PROVIDER:MODEL=IN/OUT", help=_PRICE_HELP
)
@click.option(
    "--unset-price",
    "unset_prices",
    type=MODEL,
    multiple=True,
    metavar="PROVIDER:MODEL",
    help="Remove a negotiated price (the public price applies again). Repeatable.",
)
@budget_option
@period_option
@click.option("--no-budget", is_flag=True, help="Remove the budget: the tenant's spend is not capped.")
@click.option(
    "--max-running",
    type=click.IntRange(1, 1_000_000),
    default=None,
    metavar="N",
    help="Run at most N of the tenant's items at once across all workers (applies without a restart).",
)
@click.option("--no-max-running", is_flag=True, help="Remove the cap on the tenant's items running at once.")
@render.json_option
def set_command(
    tenant: str,
    config: tuple[tuple[str, Any], ...],
    unset: tuple[str, ...],
    prices: tuple[PriceSpec, ...],
    unset_prices: tuple[tuple[str, str], ...],
    budget: Decimal | None,
    period: str | None,
    no_budget: bool,
    max_running: int | None,
    no_max_running: bool,
    as_json: bool,
) -> None:
    """Change TENANT's config, negotiated prices, budget and cap on items running at once.

    Prices apply to calls recorded from now on; calls already recorded keep their cost. A budget applies
    to the next LLM call of every worker: if the tenant has already spent it this period, its running
    runs pause at once (resume them with `papayya resume --tenant TENANT` once there is room).
    """
    budgeting = budget is not None or period is not None or no_budget
    capping = max_running is not None or no_max_running
    if not (config or unset or prices or unset_prices or budgeting or capping):
        raise click.UsageError(
            "Nothing to change: give --config, --unset, --price, --unset-price, --budget, --period, "
            "--no-budget, --max-running or --no-max-running"
        )
    if budget is not None and no_budget:
        raise click.UsageError("Give --budget or --no-budget, not both")
    if max_running is not None and no_max_running:
        raise click.UsageError("Give --max-running or --no-max-running, not both")
    both = sorted({k for k, _ in config} & set(unset))
    if both:
        raise click.UsageError(f"Config key {both[0]!r} is both set and unset; pick one")
    store = connect()
    outcome: dict[str, Any] | None = None
    # One transaction: a change refused halfway (by a check or by the store) leaves the tenant as it was.
    with store.transaction():
        record = tenants.get(tenant)
        existing = {(p.provider, p.model) for p in tenants.prices(tenant)}
        for provider, model in unset_prices:
            if (provider, model) not in existing:
                raise NotFound(
                    f"Tenant {tenant!r} has no negotiated price for {provider}/{model}; see its prices "
                    f"with `papayya tenants show {_shell(tenant)}`."
                )
        if config or unset:
            tenants.set_config(tenant, dict(config), list(unset))
        _apply_prices(tenant, prices)
        for provider, model in unset_prices:
            store.price_override_delete(tenant, provider, model)
        if budgeting:
            # --period alone keeps the amount; --no-budget removes it.
            amount = None if no_budget else budget if budget is not None else record.budget_usd
            outcome = tenants.set_budget(tenant, amount, period, settle=False)
        if capping:
            tenants.set_max_running(tenant, max_running)
    _settle(outcome)
    if as_json:
        render.emit_json(_detail(tenant))
        return
    changes = [f"set {k}" for k, _ in config] + [f"unset {k}" for k in unset]
    changes += [f"priced {p.label}" for p in prices] + [f"unpriced {p}/{m}" for p, m in unset_prices]
    if outcome is not None:
        changes.append(_budget_change(outcome))
    if capping:
        changes.append(f"at most {max_running:,} items running at once" if max_running else "no running cap")
    render.out(f"Updated tenant {tenant!r}: {', '.join(changes)}.")
    if outcome is not None:
        _report_spent(tenant, outcome)


def _settle(outcome: dict[str, Any] | None) -> None:
    """After the commit: a new or lower budget returns once no worker can reserve under the old one."""
    if outcome is not None and outcome["tightened"]:
        get_runtime().control.settle_change()


@tenants_group.command("show")
@click.argument("tenant", type=TENANT)
@render.json_option
def show_command(tenant: str, as_json: bool) -> None:
    """Show TENANT: config, prices, spend, runs and items."""
    connect()
    detail = _detail(tenant)
    if as_json:
        render.emit_json(detail)
        return
    unpriced = detail["unpriced_calls"]
    spend = render.cost_label(detail["cost_usd"], unpriced > 0)
    spend += f" over {detail['llm_calls']:,} LLM calls"
    if unpriced:
        spend += f" ({unpriced:,} with unknown price, not included)"
    items = items_text(detail["items"], detail["replayed"])
    render.out(
        render.fields(
            [
                ("tenant", detail["tenant"]),
                ("created", render.when(detail["created_at"])),
                ("updated", render.when(detail["updated_at"])),
                (
                    "runs",
                    _runs_text(detail["runs"], detail["replay_runs"]) + _last_run(detail["last_run_at"]),
                ),
                ("items", items),
                ("spend", spend),
                ("budget", _budget_text(tenant, detail["budget"])),
                (
                    "running cap",
                    f"{detail['max_running']:,} items at once" if detail["max_running"] else "none",
                ),
                *_paused_line(tenant, detail["paused_runs"]),
            ]
        )
    )
    render.out(render.heading("config"))
    if detail["config"]:
        render.out(
            render.table(
                ["key", "value"], [(k, render.one_line(v, 200)) for k, v in detail["config"].items()]
            )
        )
    else:
        render.out(render.note("(empty; set keys with `papayya tenants set TENANT --config key=value`)"))
    render.out(render.heading("negotiated prices (USD per million tokens)"))
    if detail["prices"]:
        rows = [
            (
                f"{p['provider']}/{p['model']}",
                *(_rate(p[k]) for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")),
            )
            for p in detail["prices"]
        ]
        headers = ["model", "input", "output", "cache read", "cache write"]
        render.out(render.table(headers, rows, right=headers[1:]))
    else:
        render.out(render.note("(none; public prices apply)"))


@tenants_group.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@render.json_option
def list_command(limit: int, as_json: bool) -> None:
    """List tenants with their runs, items (each once, by its latest outcome across replays: degraded,
    failed, and how many were replayed) and spend."""
    store = connect()
    rows = tenants.list_all(limit)
    ids = [r["tenant_id"] for r in rows]
    budgets, counts = _budgets(ids), store.tenant_item_counts(ids)
    if as_json:
        render.emit_json([tenant_row(r, budgets[r["tenant_id"]], counts[r["tenant_id"]]) for r in rows])
        return
    if not rows:
        render.out("No tenants yet; create one with `papayya tenants add TENANT`.")
        return
    headers = ["tenant", "runs", "items", "degraded", "failed", "replayed", "spend", "budget"]
    headers += ["spent this period", "created"]
    render.out(
        render.table(
            headers,
            [
                (
                    r["tenant_id"],
                    f"{r['runs']:,}",
                    # the counting rule: each item once, by its latest outcome; replays beside
                    f"{sum(counts[r['tenant_id']]['items'].values()):,}",
                    f"{counts[r['tenant_id']]['items'].get('degraded', 0):,}",
                    f"{counts[r['tenant_id']]['items'].get('failed', 0):,}",
                    f"{counts[r['tenant_id']]['replayed']:,}",
                    render.cost_text(r["spend_usd"], r["unpriced_calls"] > 0),
                    _budget_cell(budgets[r["tenant_id"]]),
                    _spent_cell(budgets[r["tenant_id"]]),
                    render.when(r["created_at"], seconds=False),
                )
                for r in rows
            ],
            right=["runs", "items", "degraded", "failed", "replayed", "spend", "budget", "spent this period"],
        )
    )


def tenant_row(r: dict[str, Any], budget: Any, counts: dict[str, Any]) -> dict[str, Any]:
    """One tenant of ``tenants list --json`` (and the dashboard's tenants endpoint). ``counts``: its
    items by the counting rule (``Store.tenant_item_counts``)."""
    return {
        "tenant": r["tenant_id"],
        "config": r["config"],
        "runs": r["runs"],
        "items": render.by_status(counts["items"]),
        "replayed": counts["replayed"],
        "cost_usd": render.known_cost(r["spend_usd"], r["unpriced_calls"] > 0),
        "unpriced_calls": r["unpriced_calls"],
        "budget": budget,
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


def _detail(tenant_id: str) -> dict[str, Any]:
    record = tenants.get(tenant_id)
    prices: list[PriceOverride] = tenants.prices(tenant_id)
    stats = connect().tenant_stats(tenant_id)
    unpriced = stats["unpriced_calls"]
    return {
        "tenant": record.tenant_id,
        "config": record.config,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "runs": stats["runs"],
        "replay_runs": stats["replay_runs"],
        "last_run_at": stats["last_run_at"],
        # the counting rule: each item sent once, by its current outcome; replays beside, not added
        "items": render.by_status(stats["items"]),
        "replayed": stats["replayed"],
        "llm_calls": stats["llm_calls"],
        "cost_usd": render.known_cost(stats["cost_usd"], unpriced > 0),
        "unpriced_calls": unpriced,
        "prices": [p.model_dump(exclude={"tenant_id"}) for p in prices],
        "budget": _budgets([tenant_id])[tenant_id],
        "max_running": record.max_running,
        "paused_runs": connect().runs_paused_of_tenant(tenant_id),
    }


def items_text(items: dict[str, int], replayed: int) -> str:
    """``1,000: succeeded 980, degraded 12, failed 8 (12 replayed)``: each item once, by its current
    outcome, and how many of them were replayed (beside the counts, never added to them)."""
    if not items:
        return "none"
    text = f"{sum(items.values()):,}: " + ", ".join(f"{status} {n:,}" for status, n in items.items())
    return text + (f" ({replayed:,} replayed)" if replayed else "")


def _runs_text(runs: int, replays: int) -> str:
    if not replays:
        return f"{runs:,}"
    return f"{runs:,} ({replays:,} of them replay{'s' if replays != 1 else ''})"


def _rate(value: Any) -> str:
    return "public" if value is None else render.decimal_text(value)


def _last_run(at: Any) -> str:
    return "" if at is None else f" (last {render.when(at)})"


def _shell(text: str) -> str:
    """``text`` quoted for a shell command line when it needs quoting."""
    import shlex

    return shlex.quote(text)


# -- budgets --------------------------------------------------------------------------------------

_PER = {"total": "in total", "month": "per month", "day": "per day"}


def _budgets(tenant_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each tenant's budget and what it spent (and running workers hold reserved) in its current period."""
    month_key, month_start = period_of("month")
    day_key, day_start = period_of("day")
    rows = connect().tenant_budgets(
        tenant_ids,
        {"month_key": month_key, "month_start": month_start, "day_key": day_key, "day_start": day_start},
    )
    return {
        tid: {
            "budget_usd": row["budget_usd"],
            "period": row["budget_period"],
            "period_key": row["period_key"],
            "spent_usd": row["spent_usd"],
            "reserved_usd": row["reserved_usd"],
        }
        for tid, row in rows.items()
    }


def _budget_phrase(amount: Decimal, period: str) -> str:
    return f"{render.money(amount)} {_PER[period]}"


def _in_period(budget: dict[str, Any]) -> str:
    return "" if budget["period"] == "total" else f" in {budget['period_key']}"


def _budget_text(tenant_id: str, budget: dict[str, Any]) -> str:
    spent = f"spent {render.money(budget['spent_usd'])}{_in_period(budget)}"
    if budget["reserved_usd"]:
        spent += f" (+{render.money(budget['reserved_usd'])} reserved)"
    limit = budget["budget_usd"]
    if limit is None:
        return f"none ({spent}); set one with `papayya tenants set {_shell(tenant_id)} --budget USD`"
    text = f"{_budget_phrase(limit, budget['period'])}; {spent}"
    if budget["spent_usd"] >= limit:
        text += ", all of it: its runs pause at their next LLM call"
    return text


def _budget_cell(budget: dict[str, Any]) -> str | None:
    limit = budget["budget_usd"]
    return None if limit is None else f"{render.money(limit)}/{budget['period']}"


def _spent_cell(budget: dict[str, Any]) -> str:
    spent = render.money(budget["spent_usd"])
    return spent if budget["period"] == "total" else f"{spent} ({budget['period_key']})"


def _paused_line(tenant_id: str, paused: list[Any]) -> list[tuple[str, str]]:
    if not paused:
        return []
    runs = "1 run" if len(paused) == 1 else f"{len(paused):,} runs"
    return [("paused", f"{runs}; continue with `papayya resume --tenant {_shell(tenant_id)}`")]


def _budget_change(outcome: dict[str, Any]) -> str:
    if outcome["budget_usd"] is None:
        return f"removed the budget (period {outcome['period']})"
    return f"budget {_budget_phrase(outcome['budget_usd'], outcome['period'])}"


def _report_spent(tenant_id: str, outcome: dict[str, Any]) -> None:
    """Say what the new budget means now: runs just paused because it is already spent, or paused runs
    that can continue because it has room again."""
    limit = outcome["budget_usd"]
    tenant = _shell(tenant_id)
    if limit is None or outcome["spent_usd"] < limit:
        waiting = connect().runs_paused_of_tenant(tenant_id)
        if waiting:
            runs = "1 paused run" if len(waiting) == 1 else f"{len(waiting):,} paused runs"
            render.out(
                render.cell(
                    f"Tenant {tenant_id!r} has {runs}; continue with `papayya resume --tenant {tenant}`."
                )
            )
        return
    period = "" if outcome["period"] == "total" else f" for {outcome['period_key']}"
    spent = (
        f"Tenant {tenant_id!r} has already spent {render.money(outcome['spent_usd'])} of its new "
        f"{render.money(limit)} budget{period}"
    )
    paused: list[Any] = outcome["paused_runs"]
    if not paused:
        until = "the budget is raised" + ("" if outcome["period"] == "total" else " or the period ends")
        render.out(render.cell(f"{spent}; its runs will pause at their next LLM call until {until}."))
        return
    which = "run is" if len(paused) == 1 else "runs are"
    render.out(
        render.cell(
            f"{spent}, so its {len(paused):,} running {which} now paused; raise the budget, then continue "
            f"with `papayya resume --tenant {tenant}`:"
        )
    )
    for run_id in paused:
        render.out(f"  {run_id}")
