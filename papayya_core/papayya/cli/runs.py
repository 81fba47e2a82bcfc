"""``papayya runs``: what each run did, per outcome, with its cost and why items fell short."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import RUN_ID, TENANT
from papayya.models import TERMINAL, Outcome
from papayya.result import RunResult

_OUTCOMES = (Outcome.SUCCEEDED.value, Outcome.DEGRADED.value, Outcome.FAILED.value)


@click.group("runs")
def runs_group() -> None:
    """List runs and show what one did."""


@runs_group.command("list")
@click.option("--tenant", type=TENANT, default=None, help="Only this tenant's runs.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@render.json_option
def list_command(tenant: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
    rows = [_run_row(r) for r in store.run_list_detail(tenant, limit)]
    if as_json:
        render.emit_json(rows)
        return
    if not rows:
        render.out("No runs yet." if tenant is None else f"No runs for tenant {tenant!r} yet.")
        return
    headers = ["run", "tenant", "agent", "status", "done", *_OUTCOMES, "cost", "created"]
    render.out(
        render.table(
            headers,
            [
                (
                    r["run_id"],
                    r["tenant"],
                    r["agent"],
                    r["status"],
                    f"{r['done']:,}/{r['total']:,}",
                    *(f"{r['counts'][o]:,}" for o in _OUTCOMES),
                    render.cost_label(r["cost_usd"], r["unpriced_calls"] > 0),
                    render.when(r["created_at"], seconds=False),
                )
                for r in rows
            ],
            right=["done", *_OUTCOMES, "cost"],
            whole=["run"],
        )
    )
    if len(rows) == limit:
        render.out(render.note(f"(the newest {limit}; --limit shows more)"))


@runs_group.command("show")
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@click.option(
    "--top", type=click.IntRange(1, 100), default=5, show_default=True, help="Reasons and failures to list."
)
@render.json_option
def show_command(run_id: UUID, top: int, as_json: bool) -> None:
    """Show RUN: items by outcome, cost, top degraded reasons, top failures and cost by model."""
    store = connect()
    run = store.run_get(run_id)
    result = RunResult.load(run_id, run["tenant_id"], top=top)
    detail = _run_detail(run, result)
    if as_json:
        render.emit_json(detail)
        return
    counts = ", ".join(f"{k} {v:,}" for k, v in detail["counts"].items())
    cost = render.cost_label(detail["cost_usd"], result.unpriced_calls > 0)
    cost += f" over {result.llm_calls:,} LLM calls"
    if result.unpriced_calls:
        cost += f" ({result.unpriced_calls:,} with unknown price, not included)"
    pairs: list[tuple[str, Any]] = [
        ("run", run_id),
        ("tenant", result.tenant),
        ("agent", result.agent),
    ]
    if run["name"]:
        pairs.append(("name", run["name"]))
    pairs += [
        ("status", result.status),
        ("backend", run["backend"]),
        ("started", render.when(run["created_at"])),
        ("finished", render.when(run["finished_at"])),
    ]
    if run["replayed_from"]:
        pairs.append(("replay of", run["replayed_from"]))
    pairs += [("items", f"{result.total:,}: {counts}"), ("cost", cost)]
    render.out(render.fields(pairs))

    if result.top_reasons:
        render.out(render.heading("top degraded reasons"))
        render.out(
            render.table(
                ["items", "reason", "path", "sample item ids"],
                [
                    (f"{r['n']:,}", r["code"], r["path"], _samples(r["sample_keys"]))
                    for r in result.top_reasons
                ],
                right=["items"],
            )
        )
    if result.top_failures:
        render.out(render.heading("top failures"))
        render.out(
            render.table(
                ["items", "error", "message", "where", "category", "sample item ids"],
                [
                    (
                        f"{f['n']:,}",
                        f["type"],
                        f["pattern"],
                        f["frame"],
                        f["category"],
                        _samples(f["sample_keys"]),
                    )
                    for f in result.top_failures
                ],
                right=["items"],
            )
        )
    if result.cost_by_model:
        render.out(render.heading("cost by model"))
        render.out(
            render.table(
                ["model", "calls", "input tokens", "output tokens", "cost", "unpriced calls"],
                [
                    (
                        f"{m['provider']}/{m['model']}",
                        f"{m['calls']:,}",
                        render.count(m["input_tokens"]),
                        render.count(m["output_tokens"]),
                        render.cost_text(m["cost_usd"], m["unpriced_calls"] > 0),
                        f"{m['unpriced_calls']:,}",
                    )
                    for m in result.cost_by_model
                ],
                right=["calls", "input tokens", "output tokens", "cost", "unpriced calls"],
            )
        )
    if result.counts.get(Outcome.DEGRADED, 0) or result.counts.get(Outcome.FAILED, 0):
        render.out(
            render.note(f"\nitems that fell short: papayya items list {run_id} --outcome degraded|failed")
        )


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    counts = dict.fromkeys(_OUTCOMES, 0)
    counts.update(r["counts"])
    return {
        "run_id": r["run_id"],
        "tenant": r["tenant_id"],
        "agent": r["agent_name"],
        "name": r["name"],
        "backend": r["backend"],
        "status": r["status"],
        "total": r["total_items"],
        "done": sum(n for status, n in counts.items() if status in TERMINAL),
        "counts": render.by_status(counts),
        "llm_calls": r["calls"],
        "cost_usd": render.known_cost(r["cost_usd"], r["unpriced_calls"] > 0),
        "unpriced_calls": r["unpriced_calls"],
        "created_at": r["created_at"],
        "finished_at": r["finished_at"],
    }


def _run_detail(run: dict[str, Any], result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "tenant": result.tenant,
        "agent": result.agent,
        "name": run["name"],
        "backend": run["backend"],
        "status": result.status,
        "replayed_from": run["replayed_from"],
        "created_at": run["created_at"],
        "finished_at": run["finished_at"],
        "total": result.total,
        "counts": render.by_status(result.counts),
        "llm_calls": result.llm_calls,
        "cost_usd": render.known_cost(result.cost_usd, result.unpriced_calls > 0),
        "unpriced_calls": result.unpriced_calls,
        "top_reasons": [
            {"code": r["code"], "path": r["path"], "items": r["n"], "sample_keys": r["sample_keys"]}
            for r in result.top_reasons
        ],
        "top_failures": [
            {
                "fingerprint": f["fingerprint"],
                "type": f["type"],
                "pattern": f["pattern"],
                "frame": f["frame"],
                "category": f["category"],
                "items": f["n"],
                "sample_keys": f["sample_keys"],
            }
            for f in result.top_failures
        ],
        "cost_by_model": [
            {
                "provider": m["provider"],
                "model": m["model"],
                "calls": m["calls"],
                "input_tokens": m["input_tokens"],
                "output_tokens": m["output_tokens"],
                "cost_usd": render.known_cost(m["cost_usd"], m["unpriced_calls"] > 0),
                "unpriced_calls": m["unpriced_calls"],
            }
            for m in result.cost_by_model
        ],
    }


def _samples(keys: list[str] | None) -> str:
    return ", ".join(keys or [])
