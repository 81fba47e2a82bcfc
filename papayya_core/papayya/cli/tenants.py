"""``papayya tenants``: create, configure, price and inspect tenants at runtime."""

from __future__ import annotations

from typing import Any

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import CONFIG_PAIR, MODEL, PRICE, TENANT, PriceSpec
from papayya.errors import NotFound
from papayya.models import PriceOverride

_PRICE_HELP = (
    "A negotiated price for this tenant, USD per million tokens: provider:model=IN/OUT[/CACHE_READ]"
    "[/CACHE_WRITE], e.g. openai:gpt-4o-mini=0.12/0.48; '-' keeps the public price of a kind. Repeatable."
)
_CONFIG_HELP = (
    "Set a config key (VALUE is read as JSON when it is JSON, e.g. 5 or true, else as text). Repeatable."
)


@click.group("tenants")
def tenants_group() -> None:
    """Create, configure and inspect tenants (no deploy needed)."""


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
@render.json_option
def add_command(
    tenant: str, config: tuple[tuple[str, Any], ...], prices: tuple[PriceSpec, ...], as_json: bool
) -> None:
    """Create TENANT, optionally with config and negotiated prices."""
    connect()
    tenants.add(tenant, config=dict(config))
    _apply_prices(tenant, prices)
    if as_json:
        render.emit_json(_detail(tenant))
        return
    render.out(f"Created tenant {tenant!r}; see it with `papayya tenants show {_shell(tenant)}`.")


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
@render.json_option
def set_command(
    tenant: str,
    config: tuple[tuple[str, Any], ...],
    unset: tuple[str, ...],
    prices: tuple[PriceSpec, ...],
    unset_prices: tuple[tuple[str, str], ...],
    as_json: bool,
) -> None:
    """Change TENANT's config and negotiated prices.

    Prices apply to calls recorded from now on; calls already recorded keep their cost.
    """
    if not (config or unset or prices or unset_prices):
        raise click.UsageError("Nothing to change: give --config, --unset, --price or --unset-price")
    both = sorted({k for k, _ in config} & set(unset))
    if both:
        raise click.UsageError(f"Config key {both[0]!r} is both set and unset; pick one")
    store = connect()
    # Check everything before the first write, so a refused change leaves the tenant as it was.
    tenants.get(tenant)
    existing = {(p.provider, p.model) for p in tenants.prices(tenant)}
    for provider, model in unset_prices:
        if (provider, model) not in existing:
            raise NotFound(
                f"Tenant {tenant!r} has no negotiated price for {provider}/{model}; see its prices with "
                f"`papayya tenants show {_shell(tenant)}`."
            )
    if config or unset:
        tenants.set_config(tenant, dict(config), list(unset))
    _apply_prices(tenant, prices)
    for provider, model in unset_prices:
        store.price_override_delete(tenant, provider, model)
    if as_json:
        render.emit_json(_detail(tenant))
        return
    changes = [f"set {k}" for k, _ in config] + [f"unset {k}" for k in unset]
    changes += [f"priced {p.label}" for p in prices] + [f"unpriced {p}/{m}" for p, m in unset_prices]
    render.out(f"Updated tenant {tenant!r}: {', '.join(changes)}.")


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
    items = ", ".join(f"{status} {n:,}" for status, n in detail["items"].items()) or "none"
    render.out(
        render.fields(
            [
                ("tenant", detail["tenant"]),
                ("created", render.when(detail["created_at"])),
                ("updated", render.when(detail["updated_at"])),
                ("runs", f"{detail['runs']:,}" + _last_run(detail["last_run_at"])),
                ("items", items),
                ("spend", spend),
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
    """List tenants with their run count and spend."""
    connect()
    rows = tenants.list_all(limit)
    if as_json:
        render.emit_json(
            [
                {
                    "tenant": r["tenant_id"],
                    "config": r["config"],
                    "runs": r["runs"],
                    "cost_usd": render.known_cost(r["spend_usd"], r["unpriced_calls"] > 0),
                    "unpriced_calls": r["unpriced_calls"],
                    "created_at": r["created_at"],
                    "updated_at": r["updated_at"],
                }
                for r in rows
            ]
        )
        return
    if not rows:
        render.out("No tenants yet; create one with `papayya tenants add TENANT`.")
        return
    render.out(
        render.table(
            ["tenant", "runs", "spend", "created"],
            [
                (
                    r["tenant_id"],
                    f"{r['runs']:,}",
                    render.cost_text(r["spend_usd"], r["unpriced_calls"] > 0),
                    render.when(r["created_at"], seconds=False),
                )
                for r in rows
            ],
            right=["runs", "spend"],
        )
    )


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
        "last_run_at": stats["last_run_at"],
        "items": render.by_status(stats["items"]),
        "llm_calls": stats["llm_calls"],
        "cost_usd": render.known_cost(stats["cost_usd"], unpriced > 0),
        "unpriced_calls": unpriced,
        "prices": [p.model_dump(exclude={"tenant_id"}) for p in prices],
    }


def _rate(value: Any) -> str:
    return "public" if value is None else render.decimal_text(value)


def _last_run(at: Any) -> str:
    return "" if at is None else f" (last {render.when(at)})"


def _shell(text: str) -> str:
    """``text`` quoted for a shell command line when it needs quoting."""
    import shlex

    return shlex.quote(text)
