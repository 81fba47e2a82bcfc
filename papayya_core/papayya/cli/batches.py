"""``papayya batches``: the provider batches carrying batch-mode runs' LLM calls, and the batcher.

``list`` and ``show`` read what :mod:`papayya.batches` recorded (provider batch ids, counts, what is
still charged, age); ``poll`` runs the batcher (:func:`papayya.batches.tick`) from this process, as
every native worker does in a thread of its own: for a machine that runs no worker, or to send what is
pending now (``--force``).
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click

from papayya import batches
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import short, uuid_span
from papayya.errors import NotFound, StoreClosed, StoreUnavailable
from papayya.runtime import get_runtime

log = logging.getLogger("papayya.batches")

WHERE = "list them with `papayya batches list`"
_SHOWN = 5  # candidates named in an "ambiguous" sentence
HEADERS = ["batch", "provider", "model", "provider batch", "status", "rows", "answered", "failed"]
HEADERS += ["open charge", "age"]


@click.group("batches")
def batches_group() -> None:
    """Provider batches of batch-mode runs: list them, show one, and send and read them (poll)."""


@batches_group.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@render.json_option
def list_command(limit: int, as_json: bool) -> None:
    """List provider batches, newest first, and the requests still waiting to be sent."""
    connect()
    document = list_document(limit)
    found, waiting = document["batches"], document["pending"]
    if as_json:
        render.emit_json(document)
        return
    if not found:
        render.out("No provider batches yet.")
    else:
        now = datetime.now(UTC)
        render.out(
            render.table(
                HEADERS,
                [
                    (
                        str(b["batch_id"])[:8],
                        b["provider"],
                        b["model"],
                        b["provider_batch_id"],
                        status_text(b),
                        f"{b['rows']:,}",
                        f"{b['answered']:,}",
                        f"{b['failed']:,}",
                        render.money(b["charged_usd"]),
                        age(b["created_at"], now),
                    )
                    for b in found
                ],
                right=["rows", "answered", "failed", "open charge", "age"],
                whole=["batch", "provider batch"],
                optional=["age", "open charge"],
            )
        )
        if len(found) == limit:
            render.out(render.note(f"(the newest {limit}; --limit shows more)"))
    render.out(render.cell(pending_line(waiting)))  # model names are shown, never read as markup


@batches_group.command("show")
@click.argument("ref", metavar="BATCH")
@render.json_option
def show_command(ref: str, as_json: bool) -> None:
    """Show BATCH (papayya's id, a prefix of it, or the provider's batch id) in full, with its runs."""
    connect()
    batch = find(ref)
    detail = show_document(batch)
    runs = detail["runs"]
    if as_json:
        render.emit_json(detail)
        return
    pairs: list[tuple[str, Any]] = [
        ("batch", batch["batch_id"]),
        ("provider", f"{batch['provider']} {batch['endpoint']}"),
        ("model", batch["model"]),
        ("provider batch", batch["provider_batch_id"] or "not created yet"),
        ("status", status_text(batch)),
        (
            "rows",
            f"{batch['rows']:,}: answered {batch['answered']:,}, failed {batch['failed']:,}, "
            f"open {detail['open']:,}",
        ),
        (
            "open charge",
            f"{render.money(batch['charged_usd'])} (the open rows' worst case at the batch rate)",
        ),
        ("polls", f"{batch['polls']:,}"),
        (
            "created",
            f"{render.when(batch['created_at'])} ({age(batch['created_at'], datetime.now(UTC))} ago)",
        ),
        ("submitted", render.when(batch["submitted_at"])),
        ("ended", render.when(batch["ended_at"])),
    ]
    if batch["base_url"]:
        pairs.insert(2, ("base URL", batch["base_url"]))
    if batch["error"]:
        pairs.append(("error", batch["error"]))
    render.out(render.fields(pairs))
    if runs:
        render.out(render.heading("runs"))
        render.out(
            render.table(
                ["run", "tenant", "requests", "open", "answered", "failed"],
                [
                    (
                        r["run_id"],
                        r["tenant_id"],
                        f"{r['requests']:,}",
                        f"{r['open']:,}",
                        f"{r['answered']:,}",
                        f"{r['failed']:,}",
                    )
                    for r in runs
                ],
                right=["requests", "open", "answered", "failed"],
                whole=["run"],
            )
        )


@batches_group.command("poll")
@click.option("--once", is_flag=True, help="One round, then exit.")
@click.option(
    "--force",
    is_flag=True,
    help="Send pending requests now, however short a time they have gathered (batch_window_seconds).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=5.0,
    show_default=True,
    help="Seconds between rounds.",
)
@render.json_option
def poll_command(once: bool, force: bool, interval: float, as_json: bool) -> None:
    """Send pending batch requests and read provider batches that ended, every --interval seconds.

    Each round sends the pending requests that are due as provider batches, asks the open batches due
    a poll whether they ended, and writes the answers of those that did (ledger, journal, items back in
    the queue). Every native worker does this too; many batchers may run at once (each batch is worked
    on by one at a time). Prints the rounds that did something (with --json, one JSON object per line);
    Ctrl-C or SIGTERM stops after the current round.
    """
    connect()
    rt = get_runtime()
    if once:
        report_round(batches.tick(rt, force=force), as_json, always=True)
        return
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        click.echo("papayya batches poll: stopping after this round", err=True)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    click.echo(f"papayya batches poll: a round every {interval:g}s; Ctrl-C stops", err=True)
    rounds = 0
    while not stop.is_set():
        rounds += 1
        try:
            report_round(batches.tick(rt, force=force), as_json, always=False)
        except (StoreUnavailable, StoreClosed) as exc:
            log.warning("batches poll: %s; tried again next round", exc)
        except Exception:  # one bad round does not stop the batcher, as in a worker's
            log.exception("batches poll: a round failed; tried again next round")
        stop.wait(interval)
    click.echo(f"papayya batches poll: stopped after {rounds:,} round(s)", err=True)


# -- finding one batch ------------------------------------------------------------------------------


def find(ref: str) -> dict[str, Any]:
    """The batch ``ref`` names: papayya's id, a unique prefix of it, or the provider's batch id.

    Raises:
        NotFound: nothing matches.
        click.ClickException: a prefix names several batches.
    """
    text = ref.strip()
    span = uuid_span(text)
    low, high = span if span is not None else (None, None)
    rows = [dict(r) for r in connect().fetch_all("batches_find", {"low": low, "high": high, "ref": text})]
    exact = [r for r in rows if r["provider_batch_id"] == text or str(r["batch_id"]) == text.lower()]
    if len(exact) == 1 or len(rows) == 1:
        return exact[0] if exact else rows[0]
    if not rows:
        raise NotFound(
            f"{short(text)} is not a provider batch: neither papayya's batch id (or the start of one) nor "
            f"a provider's batch id; {WHERE}."
        )
    listed = ", ".join(
        f"{r['batch_id']} ({r['provider']} {r['provider_batch_id'] or '-'})" for r in rows[:_SHOWN]
    )
    more = f" and {len(rows) - _SHOWN:,} more" if len(rows) > _SHOWN else ""
    raise click.ClickException(
        f"{short(text)} starts the ids of {len(rows):,} batches: {listed}{more}; give a longer prefix or "
        "the whole id"
    )


# -- the documents --json prints (the dashboard's /api/batches serves the same) ----------------------


def list_document(limit: int = 50) -> dict[str, Any]:
    """``papayya batches list --json``: the newest ``limit`` batches and what is pending, per provider,
    endpoint and model. Every tenant's requests: a tenant-scoped caller must not see it."""
    rt = get_runtime()
    return {
        "batches": [batch_row(b) for b in batches.list_batches(rt, limit=limit)],
        "pending": [pending_row(p) for p in batches.pending(rt)],
    }


def show_document(batch: dict[str, Any]) -> dict[str, Any]:
    """``papayya batches show --json`` of ``batch`` (a row :func:`find` returned), with its runs."""
    runs = [dict(r) for r in connect().fetch_all("batch_runs", {"batch_id": batch["batch_id"]})]
    return {**batch_row(batch), "runs": runs}


# -- rows and lines ---------------------------------------------------------------------------------


def batch_row(b: dict[str, Any]) -> dict[str, Any]:
    """A batch as ``--json`` prints it (stable keys)."""
    return {
        "batch_id": b["batch_id"],
        "provider": b["provider"],
        "endpoint": b["endpoint"],
        "model": b["model"],
        "provider_batch_id": b["provider_batch_id"],
        "status": b["status"],
        "provider_status": b["provider_status"],
        "rows": b["rows"],
        "answered": b["answered"],
        "failed": b["failed"],
        "open": max(0, b["rows"] - b["answered"] - b["failed"])
        if b["status"] in ("forming", "submitted")
        else 0,
        "charged_usd": b["charged_usd"],
        "polls": b["polls"],
        "error": b["error"],
        "created_at": b["created_at"],
        "submitted_at": b["submitted_at"],
        "ended_at": b["ended_at"],
    }


def pending_row(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": p["provider"],
        "endpoint": p["endpoint"],
        "model": p["model"],
        "pending": p["pending"],
        "oldest_at": p["oldest"],
    }


def status_text(b: dict[str, Any]) -> str:
    """``submitted (in_progress)``: papayya's status, with the provider's when it has one."""
    if b["provider_status"] and b["provider_status"] != b["status"]:
        return f"{b['status']} ({b['provider_status']})"
    return str(b["status"])


def pending_line(waiting: list[dict[str, Any]]) -> str:
    """``pending, not sent yet: openai/gpt-4o-mini 40 (oldest 2m)``, or that nothing is pending."""
    if not waiting:
        return "No requests pending."
    now = datetime.now(UTC)
    groups = ", ".join(
        f"{p['provider']}/{p['model']} {p['pending']:,} (oldest {age(p['oldest_at'], now)})" for p in waiting
    )
    return f"Pending, not sent yet: {groups}."


def age(since: datetime | None, now: datetime) -> str:
    """How long ago, in the largest whole unit: ``45s``, ``12m``, ``3h``, ``2d``."""
    if since is None:
        return "-"
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def round_text(r: batches.TickReport) -> str:
    """What one round did, for people: only what happened."""
    parts = []
    if r.formed:
        parts.append(f"sent {r.formed:,} batch(es)")
    if r.polled:
        parts.append(f"polled {r.polled:,}")
    if r.ended:
        parts.append(f"read {r.ended:,} that ended: {r.answered:,} answered, {r.failed:,} failed")
    if r.woken:
        parts.append(f"{r.woken:,} item(s) back in the queue")
    if r.items_failed:
        parts.append(f"{r.items_failed:,} item(s) failed by the provider's refusal")
    unknown = getattr(r, "unknown", 0)  # result rows papayya did not send
    if unknown:
        parts.append(f"{unknown:,} result row(s) papayya did not send, ignored (see the log)")
    if r.errors:
        parts.append(
            f"{r.errors:,} batch(es) left for a later round (the provider or the network; see the log)"
        )
    return "; ".join(parts) or "nothing was due"


def report_round(r: batches.TickReport, as_json: bool, *, always: bool) -> None:
    """Print one round: always with ``--once``; in the loop only a round that did more than poll."""
    busy = any(n for name, n in vars(r).items() if name != "polled")
    if not (busy or always):
        return
    now = datetime.now(UTC)
    if as_json:
        click.echo(render.one_line({"at": now, **vars(r)}, limit=10_000))
    else:
        click.echo(f"{render.when(now)}  {round_text(r)}")
