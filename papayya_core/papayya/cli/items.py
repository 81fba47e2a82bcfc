"""``papayya items``: the items of a run, and everything recorded about one of them."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Any
from uuid import UUID

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import RUN_ID, TENANT, TIME, resolve_item
from papayya.models import ItemStatus
from papayya.runtime import get_runtime
from papayya.store import Store

# What `items show` prints of an input or output before pointing at --json for the rest.
_SHOW_CHARS = 4000


def item_row(r: dict[str, Any]) -> dict[str, Any]:
    """One item of ``items list --json`` (and the dashboard's items endpoint)."""
    return {
        "item_id": r["item_id"],
        "key": r["key"],
        "status": r["status"],
        "attempts": r["attempts"],
        "reasons": r["reasons"],
        "error_type": r["error_type"],
        "fingerprint": r["fingerprint"],
        "cost_usd": render.known_cost(r["cost_usd"], r["cost_unknown"]),
        "cost_unknown": r["cost_unknown"],
        "updated_at": r["updated_at"],
    }


@click.group("items")
def items_group() -> None:
    """List the items of a run and show one in full."""


@items_group.command("list")
@click.argument("run_id", metavar="[RUN]", type=RUN_ID, required=False)
@click.option(
    "--tenant",
    type=TENANT,
    default=None,
    is_eager=True,  # read first: a short RUN is looked up within it
    help="Without RUN: this tenant's items across all its runs, each once, as it stands now (its "
    "latest outcome across replays).",
)
@click.option(
    "--outcome",
    type=click.Choice([s.value for s in ItemStatus]),
    default=None,
    help="Only items with this outcome (or status).",
)
@click.option(
    "--since",
    type=TIME,
    default=None,
    help="With --tenant: only items whose outcome came since then: 7d, 24h or an ISO time.",
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--after", metavar="KEY", default=None, help="Start after this item id (the next page).")
@render.json_option
def list_command(
    run_id: UUID | None,
    tenant: str | None,
    outcome: str | None,
    since: datetime | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List RUN's items (or --tenant's, across its runs) in item-id order, with why each fell short."""
    if run_id is None:
        if tenant is None:
            raise click.UsageError("Say whose items: give a RUN, or --tenant TENANT for all its runs")
        _list_across(tenant, outcome, since, limit, after, as_json)
        return
    if since is not None:
        raise click.UsageError("--since goes with --tenant (items across runs); a RUN lists all its items")
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
        store.run_get(run_id, tenant)
    run = store.run_get(run_id)
    rows = store.items_page(run_id, tenant_id=run["tenant_id"], status=outcome, after=after, limit=limit)
    next_after = rows[-1]["key"] if len(rows) == limit else None
    if as_json:
        render.emit_json(
            {
                "run_id": run_id,
                "tenant": run["tenant_id"],
                "outcome": outcome,
                "items": [item_row(r) for r in rows],
                "next_after": next_after,
            }
        )
        return
    if not rows:
        which = f"{outcome} items" if outcome else "items"
        render.out(f"Run {run_id} has no {which}" + (f" after {after!r}." if after else "."))
        return
    render.out(
        render.table(
            ["id", "status", "attempts", "cost", "why", "item"],
            [
                (
                    r["key"],
                    r["status"],
                    r["attempts"],
                    render.cost_text(r["cost_usd"], r["cost_unknown"]),
                    _why(r["reasons"], r["error_type"]),
                    r["item_id"],
                )
                for r in rows
            ],
            right=["attempts", "cost"],
            whole=["item"],
        )
    )
    if next_after is not None:
        from shlex import quote

        flags = f" --outcome {outcome}" if outcome else ""
        render.out(
            render.note(
                f"(more: papayya items list {run_id}{flags} --limit {limit} --after {quote(next_after)})"
            )
        )


def _list_across(
    tenant: str, outcome: str | None, since: datetime | None, limit: int, after: str | None, as_json: bool
) -> None:
    """``items list --tenant T``: the tenant's items across runs by the counting rule."""
    store = connect()
    tenants.get(tenant)
    rows = store.items_across(tenant, status=outcome, since=since, after=after, limit=limit)
    next_after = rows[-1]["key"] if len(rows) == limit else None
    if as_json:
        render.emit_json(
            {
                "tenant": tenant,
                "outcome": outcome,
                "since": since,
                "items": [{**item_row(r), "run_id": r["run_id"], "replayed": r["replayed"]} for r in rows],
                "next_after": next_after,
            }
        )
        return
    if not rows:
        which = f"{outcome} items" if outcome else "items"
        when = f" since {render.when(since, seconds=False)}" if since else ""
        render.out(f"Tenant {tenant!r} has no {which}{when}" + (f" after {after!r}." if after else "."))
        return
    render.out(
        render.table(
            ["id", "status", "attempts", "cost", "why", "run", "item"],
            [
                (
                    r["key"] + (" (replayed)" if r["replayed"] else ""),
                    r["status"],
                    r["attempts"],
                    render.cost_text(r["cost_usd"], r["cost_unknown"]),
                    _why(r["reasons"], r["error_type"]),
                    r["run_id"],
                    r["item_id"],
                )
                for r in rows
            ],
            right=["attempts", "cost"],
            whole=["run", "item"],
        )
    )
    replayed = sum(r["replayed"] for r in rows)
    if replayed:
        render.out(
            render.note(
                f"({replayed:,} of these replayed: each shown once, as its latest outcome; see all its "
                "attempts with `papayya items show ID --tenant TENANT`)"
            )
        )
    if next_after is not None:
        from shlex import quote

        flags = f" --outcome {outcome}" if outcome else ""
        flags += f" --since {since.isoformat()}" if since else ""
        render.out(
            render.note(
                f"(more: papayya items list --tenant {quote(tenant)}{flags} --limit {limit} "
                f"--after {quote(next_after)})"
            )
        )


@items_group.command("show")
@click.argument("item", metavar="ITEM")
@click.option(
    "--run",
    "run_id",
    type=RUN_ID,
    default=None,
    metavar="RUN",
    help="Look for ITEM in RUN only (when its key is in several runs).",
)
@click.option(
    "--tenant",
    type=TENANT,
    default=None,
    is_eager=True,  # read first: a short RUN is looked up within it
    help="Look for ITEM among this tenant's items only.",
)
@click.option(
    "--traceback", "show_traceback", is_flag=True, help="Also print each failed attempt's traceback."
)
@render.json_option
def show_command(
    item: str, run_id: UUID | None, tenant: str | None, show_traceback: bool, as_json: bool
) -> None:
    """Show ITEM: its input, each attempt, the journal steps and the LLM calls with their cost.

    ITEM is the item's id (its key, e.g. acme-00100), papayya's item UUID or the start of it. A key names
    the item with its replays; this shows the one whose outcome counts now, beside the others.
    """
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
    if run_id is not None:
        tenant = store.run_get(run_id, tenant)["tenant_id"]
    item_id = resolve_item(item, run_id=run_id, tenant=tenant)
    row = get_runtime().blobs.expand_item(store.item_detail(item_id, tenant))
    detail = _item_detail(row)
    detail["lineage"] = lineage(row, _linked_details(store, row))
    if as_json:
        render.emit_json(detail)
        return
    _print_item(detail, show_traceback)


def _linked_details(store: Store, row: dict[str, Any]) -> list[dict[str, Any]]:
    """``item_detail`` of every item linked to ``row`` by replays (itself included), oldest first."""
    links = store.item_lineage(row["item_id"], row["tenant_id"])
    # A lineage is an item and its few replays: one read each is fine.
    return [
        row
        if link["item_id"] == row["item_id"]
        else get_runtime().blobs.expand_item(store.item_detail(link["item_id"], row["tenant_id"]))
        for link in links
    ]


def lineage(row: dict[str, Any], linked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The item's original and its replays, oldest first, each with its attempts side by side.

    Each attempt with an output carries ``output_diff``: a unified diff from the previous attempt (across
    the whole lineage) that had an output, ``""`` when nothing changed, None for the first.
    """
    entries = [
        {
            "item_id": d["item_id"],
            "run_id": d["run_id"],
            "key": d["key"],
            "status": d["status"],
            "replayed_from": d["replayed_from"],
            "created_at": d["created_at"],
            "attempts": [_lineage_attempt(d, a) for a in d["attempts_detail"]],
        }
        for d in linked or [row]
    ]
    previous: tuple[str, Any] | None = None
    for entry in entries:
        for a in entry["attempts"]:
            if a["output"] is None:
                continue
            label = f"run {entry['run_id']} attempt {a['number']}"
            if previous is not None:
                before_label, before = previous
                a["output_diff"] = render.output_diff(
                    before, a["output"], before_label=before_label, after_label=label
                )
            previous = (label, a["output"])
    return entries


def _lineage_attempt(d: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    error = a["error"] or {}
    return {
        "run_id": d["run_id"],
        "item_id": d["item_id"],
        "number": a["number"],
        "attempt_id": a["attempt_id"],
        "status": a["status"],
        "reasons": a["reasons"],
        "error_type": error.get("type"),
        "fingerprint": a["fingerprint"],
        "cost_usd": render.known_cost(a["cost_usd"], a["cost_unknown"]),
        "cost_unknown": a["cost_unknown"],
        "steps": sum(s["attempt_id"] == a["attempt_id"] for s in d["steps"]),
        "llm_calls": sum(c["attempt_id"] == a["attempt_id"] for c in d["llm_calls"]),
        "started_at": a["started_at"],
        "finished_at": a["finished_at"],
        "output": a["output"],
        "output_diff": None,
    }


def _why(reasons: list[dict[str, Any]], error_type: str | None) -> str:
    if error_type:
        return error_type
    return ", ".join(_reason_label(r) for r in reasons)


def _reason_label(reason: dict[str, Any]) -> str:
    return f"{reason.get('code')}: {reason['path']}" if reason.get("path") else str(reason.get("code"))


def _item_detail(row: dict[str, Any]) -> dict[str, Any]:
    numbers = {a["attempt_id"]: a["number"] for a in row["attempts_detail"]}
    return {
        "item_id": row["item_id"],
        "key": row["key"],
        "run_id": row["run_id"],
        "tenant": row["tenant_id"],
        "status": row["status"],
        "max_attempts": row["max_attempts"],
        "input": row["input"],
        "output": row["output"],
        "reasons": row["reasons"],
        "error": row["error"],
        "fingerprint": row["fingerprint"],
        "cost_usd": render.known_cost(row["cost_usd"], row["cost_unknown"]),
        "cost_unknown": row["cost_unknown"],
        "replayed_from": row["replayed_from"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "finished_at": row["finished_at"],
        "attempts": [
            {
                "number": a["number"],
                "attempt_id": a["attempt_id"],
                "status": a["status"],
                "backend": a["backend"],
                "worker": a["worker"],
                "started_at": a["started_at"],
                "finished_at": a["finished_at"],
                "reasons": a["reasons"],
                "error": a["error"],
                "fingerprint": a["fingerprint"],
                "output": a["output"],
                "cost_usd": render.known_cost(a["cost_usd"], a["cost_unknown"]),
                "cost_unknown": a["cost_unknown"],
            }
            for a in row["attempts_detail"]
        ],
        "steps": [
            {
                "step_key": s["step_key"],
                "kind": s["kind"],
                "attempt": numbers.get(s["attempt_id"]),
                "attempt_id": s["attempt_id"],
                "result": s["result"],
                "created_at": s["created_at"],
            }
            for s in row["steps"]
        ],
        "llm_calls": [
            {
                "attempt": numbers.get(c["attempt_id"]),
                "attempt_id": c["attempt_id"],
                "step_key": c["step_key"],
                "provider": c["provider"],
                "model": c["model"],
                "input_tokens": c["input_tokens"],
                "output_tokens": c["output_tokens"],
                "cache_read_tokens": c["cache_read_tokens"],
                "cache_write_tokens": c["cache_write_tokens"],
                "stop_reason": c["stop_reason"],
                "latency_ms": c["latency_ms"],
                "cost_usd": c["cost_usd"],
                "price_source": c["price_source"],
                "created_at": c["created_at"],
            }
            for c in row["llm_calls"]
        ],
    }


def _print_item(d: dict[str, Any], show_traceback: bool) -> None:
    n = len(d["attempts"])
    render.out(
        render.fields(
            [
                ("item", f"{d['key']}  ({d['item_id']})"),
                ("run", d["run_id"]),
                ("tenant", d["tenant"]),
                (
                    "status",
                    f"{d['status']} after {n} attempt{'s' if n != 1 else ''} (at most {d['max_attempts']})",
                ),
                ("cost", render.cost_label(d["cost_usd"], d["cost_unknown"])),
                *([("replay of", d["replayed_from"])] if d["replayed_from"] else []),
            ]
        )
    )
    render.out(render.heading("input"), render.cell(render.json_text(d["input"], limit=_SHOW_CHARS)))
    if d["output"] is not None:
        render.out(render.heading("output"), render.cell(render.json_text(d["output"], limit=_SHOW_CHARS)))

    for a in d["attempts"]:
        took = ""
        if a["started_at"] and a["finished_at"]:
            took = f" in {(a['finished_at'] - a['started_at']).total_seconds():.2f}s"
        render.out(render.heading(f"attempt {a['number']}: {a['status']}"))
        pairs: list[tuple[str, Any]] = [
            ("ran", f"{render.when(a['started_at'])}{took} on {a['backend']} ({a['worker']})"),
            ("cost", render.cost_label(a["cost_usd"], a["cost_unknown"])),
        ]
        pairs += [("reason", f"{_reason_label(r)}  {r.get('message') or ''}".rstrip()) for r in a["reasons"]]
        error = a["error"]
        if error:
            pairs.append(("error", f"{error.get('type')}: {error.get('message')}"))
            where = error.get("frame") or "-"
            retry = "retryable" if error.get("retryable") else "not retryable"
            pairs.append(("where", f"{where} ({error.get('category')} error, {retry})"))
        if a["fingerprint"]:
            pairs.append(("fingerprint", a["fingerprint"]))
        render.out(render.fields(pairs))
        if error and show_traceback and error.get("traceback"):
            render.out(render.cell(str(error["traceback"]).rstrip()))

    render.out(render.heading("journal steps"))
    if d["steps"]:
        render.out(
            render.table(
                ["step", "kind", "attempt", "result"],
                [(s["step_key"], s["kind"], s["attempt"], render.one_line(s["result"])) for s in d["steps"]],
                right=["attempt"],
            )
        )
    else:
        render.out(render.note("(none)"))

    render.out(render.heading("LLM calls"))
    if d["llm_calls"]:
        headers = ["attempt", "step", "model", "in", "out", "cache read", "stop", "latency", "cost", "price"]
        render.out(
            render.table(
                headers,
                [
                    (
                        c["attempt"],
                        c["step_key"],
                        f"{c['provider']}/{c['model']}",
                        render.count(c["input_tokens"]),
                        render.count(c["output_tokens"]),
                        render.count(c["cache_read_tokens"]),
                        c["stop_reason"],
                        None if c["latency_ms"] is None else f"{c['latency_ms']:,.0f} ms",
                        "unknown" if c["cost_usd"] is None else render.money(c["cost_usd"]),
                        c["price_source"],
                    )
                    for c in d["llm_calls"]
                ],
                right=["attempt", "in", "out", "cache read", "latency", "cost"],
            )
        )
    else:
        render.out(render.note("(none)"))

    if len(d["lineage"]) > 1:
        _print_lineage(d["lineage"])


def _print_lineage(entries: list[dict[str, Any]]) -> None:
    """Every attempt of the original and its replays side by side, then how the output changed."""
    attempts = [a for e in entries for a in e["attempts"]]
    render.out(render.heading(f"this item and its replays ({len(entries)} items, {len(attempts)} attempts)"))
    render.out(
        render.table(
            ["run", "attempt", "status", "why", "cost", "steps", "LLM calls", "item"],
            [
                (
                    a["run_id"],
                    a["number"],
                    a["status"],
                    _why(a["reasons"], a["error_type"]) or "-",
                    render.cost_label(a["cost_usd"], a["cost_unknown"]),
                    f"{a['steps']:,}",
                    f"{a['llm_calls']:,}",
                    a["item_id"],
                )
                for a in attempts
            ],
            right=["attempt", "cost", "steps", "LLM calls"],
            whole=["run", "item"],
        )
    )
    with_output = [a for a in attempts if a["output"] is not None]
    render.out(render.heading("output, attempt to attempt"))
    if len(with_output) < 2:
        render.out(render.note("(fewer than two attempts have an output: nothing to compare)"))
        return
    for before, after in pairwise(with_output):
        if after["output_diff"]:
            render.out(render.diff_lines(after["output_diff"]))
        else:
            render.out(
                render.note(
                    f"run {before['run_id']} attempt {before['number']} -> run {after['run_id']} attempt "
                    f"{after['number']}: the same output"
                )
            )
