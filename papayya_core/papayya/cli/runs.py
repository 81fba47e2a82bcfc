"""``papayya runs``: what each run did, per outcome, with its cost and why items fell short."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from shlex import quote
from typing import TYPE_CHECKING, Any
from uuid import UUID

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import BUDGET, RUN_ID, TENANT
from papayya.errors import BudgetError
from papayya.models import TERMINAL, Outcome
from papayya.result import RunResult
from papayya.runtime import get_runtime

if TYPE_CHECKING:
    from rich.text import Text

_OUTCOMES = (Outcome.SUCCEEDED.value, Outcome.DEGRADED.value, Outcome.FAILED.value)


@click.group("runs")
def runs_group() -> None:
    """List runs and show what one did."""


FULL_WIDTH = 160  # columns `runs list` needs to show whole run ids beside the rest


@runs_group.command("list")
@click.option("--tenant", type=TENANT, default=None, help="Only this tenant's runs.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@render.json_option
def list_command(tenant: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
    found = store.run_list_detail(tenant, limit)
    budgets = store.run_budgets([r["run_id"] for r in found])
    rows = [_run_row({**r, **budgets.get(r["run_id"], {})}) for r in found]
    if as_json:
        render.emit_json(rows)
        return
    if not rows:
        render.out("No runs yet." if tenant is None else f"No runs for tenant {tenant!r} yet.")
        return
    headers = ["run", "tenant", "agent", "status", "done", *_OUTCOMES, "cost", "created"]
    # On a terminal narrower than the full table, runs go by their first 8 characters, as git's
    # commits do: every command takes a unique prefix back (--json always has the full id).
    short = render.console().width < FULL_WIDTH
    render.out(
        render.table(
            headers,
            [
                (
                    str(r["run_id"])[:8] if short else r["run_id"],
                    r["tenant"],
                    r["agent"],
                    status_cell(r["status"], r["paused_reason"]),
                    f"{r['done']:,}/{r['total']:,}",
                    *(f"{r['counts'][o]:,}" for o in _OUTCOMES),
                    render.cost_label(r["cost_usd"], r["unpriced_calls"] > 0),
                    render.when(r["created_at"], seconds=False),
                )
                for r in rows
            ],
            right=["done", *_OUTCOMES, "cost"],
            whole=["run"],
            optional=["agent", "created"],
        )
    )
    if len(rows) == limit:
        render.out(render.note(f"(the newest {limit}; --limit shows more)"))
    paused = sum(r["status"] == "paused" for r in rows)
    if paused:
        render.out(
            render.note(
                f"({paused:,} paused: see why with `papayya runs show RUN`, continue with "
                "`papayya resume RUN`)"
            )
        )


@runs_group.command("show")
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@click.option(
    "--top", type=click.IntRange(1, 100), default=5, show_default=True, help="Reasons and failures to list."
)
@click.option(
    "--watch",
    is_flag=True,
    help="Follow the run: a progress line every --interval seconds until it stops running, then the summary.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between lines.",
)
@render.json_option
def show_command(run_id: UUID, top: int, watch: bool, interval: float, as_json: bool) -> None:
    """Show RUN: items by outcome, cost, top degraded reasons, top failures and cost by model."""
    store = connect()
    run = store.run_get(run_id)
    if watch and run["status"] == "running":
        _follow(run_id, run["tenant_id"], interval)
        run = store.run_get(run_id)
    result = RunResult.load(run_id, run["tenant_id"], top=top)
    detail = show_detail(run, result, top=top)
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
        ("status", status_text(result.status, result.paused_reason)),
        ("backend", run["backend"]),
        ("started", render.when(run["created_at"])),
        ("finished", render.when(run["finished_at"])),
    ]
    if result.replayed_from is not None:
        pairs.append(("replay of", replay_text(result)))
        if result.transitions:
            pairs.append(("then -> now", transitions_text(result.transitions)))
    pairs += [("items", f"{result.total:,}: {counts}"), ("cost", cost)]
    if detail["batch"] is not None:
        pairs.append(("batch", batch_text(detail["batch"])))
    pairs += [("budget", line) for line in budget_lines(result.budget)] or [("budget", "none")]
    render.out(render.fields(pairs))
    if result.status == "paused":
        render.out(render.note(resume_hint(result)))

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
    if detail["clusters"]:
        render.out(render.heading("top clusters"))
        render.out(
            render.table(
                ["cluster", "outcome", "items", "label", "cost", "sample item ids"],
                [
                    (
                        c["cluster"],
                        c["outcome"],
                        f"{c['items']:,}",
                        c["label"],
                        render.money(c["cost_usd"]),
                        _samples(c["sample_keys"]),
                    )
                    for c in detail["clusters"]
                ],
                right=["items", "cost"],
                whole=["cluster"],
            )
        )
    if detail["replays"]:
        render.out(render.heading("replays"))
        render.out(
            render.table(
                ["run", "status", "slice", "then -> now", "created"],
                [
                    (
                        r["run_id"],
                        r["status"],
                        slice_text(r["replay_slice"], r["total"], from_journal=r["from_journal"]),
                        transitions_text(r["transitions"]) or "-",
                        render.when(r["created_at"], seconds=False),
                    )
                    for r in detail["replays"]
                ],
                whole=["run"],
            )
        )
    if result.counts.get(Outcome.DEGRADED, 0) or result.counts.get(Outcome.FAILED, 0):
        render.out(
            render.note(f"\nitems that fell short: papayya items list {run_id} --outcome degraded|failed")
        )
        render.out(
            render.note(
                f"replay them: papayya replay --run {run_id} --outcome degraded|failed "
                "(or --cluster CLUSTER; add --from-journal to pay nothing)"
            )
        )


@runs_group.command("set")
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@click.option(
    "--budget",
    type=BUDGET,
    default=None,
    metavar="USD",
    help="What this run may spend on LLM calls in total, in USD, on top of its tenant's budget. When it "
    "is spent, the run pauses (it does not fail).",
)
@click.option("--no-budget", is_flag=True, help="Remove the run's own budget (its tenant's still applies).")
@render.json_option
def set_command(run_id: UUID, budget: Decimal | None, no_budget: bool, as_json: bool) -> None:
    """Change RUN's own budget. It applies to the run's next LLM call."""
    if budget is None and not no_budget:
        raise click.UsageError("Nothing to change: give --budget or --no-budget")
    if budget is not None and no_budget:
        raise click.UsageError("Give --budget or --no-budget, not both")
    store = connect()
    run = store.run_get(run_id)
    if run["status"] not in ("running", "paused"):
        raise BudgetError(
            f"Run {run_id} is {run['status']}; a budget applies only to a running or paused run."
        )
    store.run_budget_set(run_id, run["tenant_id"], budget)
    if budget is not None and (run["budget_usd"] is None or budget < run["budget_usd"]):
        get_runtime().control.settle_change()  # no worker reserves under the old limit after this
    run = store.run_get(run_id, run["tenant_id"])
    result = RunResult.load(run_id, run["tenant_id"])
    if as_json:
        render.emit_json(run_detail(run, result))
        return
    spent = render.money(result.cost_usd)
    if budget is None:
        render.out(
            f"Run {run_id} has no budget of its own now (spent {spent}); its tenant's budget still applies."
        )
    else:
        render.out(f"Run {run_id} now has a budget of {render.money(budget)} (spent {spent} of it).")
    if budget is not None and result.cost_usd >= budget and result.status == "running":
        render.out("It is all spent: the run pauses at its next LLM call.")
    elif result.status == "paused":
        render.out(render.note(resume_hint(result)))


# -- paused runs and their budgets, for people ----------------------------------------------------

_KINDS = ("budget:tenant", "budget:run", "unpriced", "manual")


def _reason_parts(reason: str | None) -> tuple[str | None, str]:
    """``budget:tenant: tenant t47 has spent ...`` -> ("budget:tenant", "tenant t47 has spent ...")."""
    if not reason:
        return None, ""
    kind, sep, message = reason.partition(": ")
    return (kind, message) if sep and kind in _KINDS else (None, reason)


def status_text(status: str, reason: str | None) -> str:
    """A run's status for people, with why it is paused: ``paused: tenant t47 has spent ...``."""
    if status != "paused" or not reason:
        return status
    _, message = _reason_parts(reason)
    return message if message.startswith("paused") else f"paused: {message}"


def status_cell(status: str, reason: str | None) -> Text | str:
    """A run's status in a table; a paused run stands out, with what paused it."""
    if status != "paused":
        return status
    kind, _ = _reason_parts(reason)
    from rich.text import Text

    return Text(f"paused ({kind})" if kind else "paused", style="bold magenta")


def budget_lines(budget: list[dict[str, Any]]) -> list[str]:
    """``tenant 2026-11: spent $40.00 of $40.00`` for each budget a run is held to."""
    lines = []
    for b in budget:
        line = f"{b['scope']} {b['period']}" if b["scope"] == "tenant" else b["scope"]
        line += f": spent {render.money(b['spent_usd'])} of {render.money(b['budget_usd'])}"
        if b["reserved_usd"]:
            line += f" (+{render.money(b['reserved_usd'])} reserved)"
        lines.append(line)
    return lines


def resume_hint(result: RunResult) -> str:
    """What to do about a paused run: make room in the budget that stopped it, if it is spent; resume."""
    resume = f"`papayya resume {result.run_id}`"
    kind, _ = _reason_parts(result.paused_reason)
    tenant = quote(result.tenant)
    if kind == "unpriced":
        return (
            f"give the model a price with `papayya tenants set {tenant} --price PROVIDER:MODEL=IN/OUT`, "
            f"then {resume}"
        )
    scope = {"budget:tenant": "tenant", "budget:run": "run"}.get(kind or "")
    held = next((b for b in result.budget if b["scope"] == scope), None)
    if held is None:
        return f"continue with {resume}"
    left = held["budget_usd"] - held["spent_usd"]
    if left > 0:
        return f"continue with {resume} (the {scope}'s budget has {render.money(left)} left)"
    where = f"tenants set {tenant}" if scope == "tenant" else f"runs set {result.run_id}"
    return f"raise the {scope}'s budget with `papayya {where} --budget USD`, then {resume}"


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
        "paused_reason": r.get("paused_reason"),
        "budget_usd": r.get("budget_usd"),
        "total": r["total_items"],
        "done": sum(n for status, n in counts.items() if status in TERMINAL),
        "counts": render.by_status(counts),
        "llm_calls": r["calls"],
        "cost_usd": render.known_cost(r["cost_usd"], r["unpriced_calls"] > 0),
        "unpriced_calls": r["unpriced_calls"],
        "created_at": r["created_at"],
        "finished_at": r["finished_at"],
    }


def _follow(run_id: UUID, tenant_id: str, interval: float) -> None:
    """Print one line of progress per interval while the run is running (on stderr, so ``--json`` stays
    clean): items done of total, by outcome, in flight and queued, spend."""
    store = connect()
    while True:
        p = store.run_progress(run_id, tenant_id)
        summary = store.run_summary(run_id, tenant_id, top=1)
        counts, total = summary["counts"], sum(summary["counts"].values())
        done = sum(counts.get(s, 0) for s in ("succeeded", "degraded", "failed", "cancelled"))
        outcomes = ", ".join(
            f"{s} {counts[s]:,}" for s in ("succeeded", "degraded", "failed") if counts.get(s)
        )
        line = (
            f"{done:,}/{total:,} done ({outcomes or 'none yet'}); {p['running']:,} running, "
            f"{p['ready'] + p['waiting']:,} queued; "
            f"${Decimal(summary['cost']['cost_usd']):,.4f} spent"
        )
        if p["waiting_batch"]:
            line += f"; {p['waiting_batch']:,} waiting for a provider batch"
        if p["stalled"] or p["expired"]:
            line += f"; {p['stalled'] + p['expired']:,} lost their worker (being recovered)"
        click.echo(f"{render.when(datetime.now(UTC))}  {line}", err=True)
        if p["status"] != "running":
            return
        left = p["ready"] + p["waiting"] + p["running"] + p["expired"] + p["stalled"] + p["paused"]
        if not (left + p["waiting_batch"]):
            store.run_complete(run_id, tenant_id)  # every item is done: the run is
            return
        time.sleep(interval)


def run_detail(run: dict[str, Any], result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "tenant": result.tenant,
        "agent": result.agent,
        "name": run["name"],
        "backend": run["backend"],
        "status": result.status,
        "paused_reason": result.paused_reason,
        "budget_usd": run["budget_usd"],
        "budget": [
            {
                "scope": b["scope"],
                "period": b["period"],
                "spent_usd": b["spent_usd"],
                "reserved_usd": b["reserved_usd"],
                "budget_usd": b["budget_usd"],
            }
            for b in result.budget
        ],
        "replayed_from": result.replayed_from,
        "replay_slice": _slice_only(result.replay_slice),
        "from_journal": _from_journal(result.replay_slice),
        "transitions": _by_count(result.transitions),
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


def show_detail(run: dict[str, Any], result: RunResult, *, top: int = 5) -> dict[str, Any]:
    """What ``runs show --json`` prints: :func:`run_detail`, the run's replays and its top clusters."""
    store = connect()
    lineage = store.run_lineage(result.run_id, result.tenant)
    replays = [r for r in lineage if r["replayed_from"] == result.run_id]
    # A run is replayed a handful of times, not thousands: one read each for its size is fine.
    totals = {r["run_id"]: store.run_get(r["run_id"], result.tenant)["total_items"] for r in replays}
    return {
        **run_detail(run, result),
        "replays": [
            {
                "run_id": r["run_id"],
                "status": r["status"],
                "total": totals.get(r["run_id"], 0),
                "replay_slice": _slice_only(r["replay_slice"]),
                "from_journal": r["from_journal"],
                "transitions": _by_count(r["transitions"]),
                "created_at": r["created_at"],
            }
            for r in replays
        ],
        "clusters": [c.as_dict() for c in result.clusters(limit=top)],
        "batch": batch_summary(result),
    }


def batch_summary(result: RunResult) -> dict[str, Any] | None:
    """The run's batch mode (:func:`papayya.batches.run_summary`) with what it saved against live prices;
    None for a run with no batch call made or waiting."""
    from papayya import batches

    s = batches.run_summary(get_runtime(), result.run_id, result.tenant)
    if not (s.get("batch_calls") or s.get("waiting") or s.get("pending") or s.get("open_batches")):
        return None
    return {
        "waiting": s["waiting"],
        "open_batches": s["open_batches"],
        "pending": s["pending"],
        "batch_calls": s["batch_calls"],
        "batch_cost_usd": s["batch_cost_usd"],
        "live_cost_usd": s["live_cost_usd"],
        "saved_usd": s["live_cost_usd"] - s["batch_cost_usd"],
    }


def batch_text(b: dict[str, Any]) -> str:
    """``9,800 waiting on 2 provider batches, 0 pending; batch calls: 200, cost $0.50 (live would have
    been $1.00, saved $0.50)``; without the first part once nothing waits."""
    calls = f"batch calls: {b['batch_calls']:,}"
    if b["batch_calls"]:
        calls += (
            f", cost {render.money(b['batch_cost_usd'])} (live would have been "
            f"{render.money(b['live_cost_usd'])}, saved {render.money(b['saved_usd'])})"
        )
    if not (b["waiting"] or b["open_batches"] or b["pending"]):
        return calls
    batches_ = "provider batch" if b["open_batches"] == 1 else "provider batches"
    return f"{b['waiting']:,} waiting on {b['open_batches']:,} {batches_}, {b['pending']:,} pending; {calls}"


def replay_text(result: RunResult) -> str:
    """``RUN (slice: outcome degraded, 200 items; fresh)`` for a replay run."""
    slice_ = result.replay_slice
    text = slice_text(slice_, result.total, from_journal=bool((slice_ or {}).get("from_journal")))
    return f"{result.replayed_from} (slice: {text})"


def slice_text(slice_: dict[str, Any] | None, total: int, *, from_journal: bool) -> str:
    """What a replay re-drove, for people: ``outcome degraded, 200 items; from the journal``."""
    slice_ = slice_ or {}
    parts = []
    if slice_.get("key"):
        parts.append(f"item {slice_['key']}")
    if slice_.get("outcome"):
        parts.append(f"outcome {slice_['outcome']}")
    if slice_.get("cluster"):
        parts.append(f"cluster {slice_['cluster']}")
    if slice_.get("keys"):
        parts.append("ids " + ", ".join(map(str, slice_["keys"])))
    if slice_.get("not_succeeded"):
        parts.append("not succeeded")
    parts.append(f"{total:,} item{'s' if total != 1 else ''}" if parts else f"all {total:,} items")
    if slice_.get("tenant"):  # replay --tenant: across the tenant's runs
        runs = slice_.get("runs") or 0
        parts.append(f"across {runs:,} run{'s' if runs != 1 else ''} of tenant {slice_['tenant']}")
    mode = "from the journal" if from_journal else "fresh"
    return f"{', '.join(parts)}; {mode}"


def transitions_text(transitions: dict[str, int] | None) -> str:
    """``degraded->succeeded 150, degraded->degraded 30``: how the replayed items did then and now."""
    return ", ".join(f"{k} {v:,}" for k, v in _by_count(transitions).items())


def _by_count(transitions: dict[str, int] | None) -> dict[str, int]:
    return dict(sorted((transitions or {}).items(), key=lambda kv: (-kv[1], kv[0])))


def _slice_only(slice_: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if slice_ is None else {k: v for k, v in slice_.items() if k != "from_journal"}


def _from_journal(slice_: dict[str, Any] | None) -> bool | None:
    return None if slice_ is None else bool(slice_.get("from_journal"))


def _samples(keys: list[str] | None) -> str:
    return ", ".join(keys or [])
