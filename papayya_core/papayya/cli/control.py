"""``papayya pause`` and ``papayya resume``: stop a run, and continue paused runs where they stopped.

``resume`` runs the remaining items in this process, with the agent imported from where the run was
started (its script file, or its module, importable from the current directory as with ``python -m``).
Recorded steps and LLM calls are reused, so nothing is paid twice.
"""

from __future__ import annotations

import os
import sys
from uuid import UUID

import click

from papayya import control, tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import RUN_ID, TENANT
from papayya.cli.runs import run_detail
from papayya.errors import BudgetError
from papayya.result import RunResult


@click.command("pause")
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@click.option(
    "--reason",
    default="paused by a person",
    show_default=True,
    help="Why; `papayya runs show RUN` prints it.",
)
@render.json_option
def pause_command(run_id: UUID, reason: str, as_json: bool) -> None:
    """Pause RUN: no queued item starts, and items in flight stop at their next LLM call.

    Nothing is lost: a stopped item keeps its journal. Continue with `papayya resume RUN`.
    """
    store = connect()
    control.pause(run_id, reason=reason)
    if as_json:
        run = store.run_get(run_id)
        render.emit_json(run_detail(run, RunResult.load(run_id, run["tenant_id"])))
        return
    render.out(
        f"Paused run {run_id}: no queued item starts, and items in flight stop at their next LLM call; "
        f"continue with `papayya resume {run_id}`."
    )


@click.command("resume")
@click.argument("run_id", metavar="[RUN]", type=RUN_ID, required=False)
@click.option(
    "--tenant", type=TENANT, default=None, help="Resume every paused run of this tenant, oldest first."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Items to run at once.  [default: the run's own]",
)
@render.json_option
def resume_command(run_id: UUID | None, tenant: str | None, concurrency: int | None, as_json: bool) -> None:
    """Continue a paused RUN (or every paused run of a tenant) in this process, and wait for it.

    Paused items go back to the queue and every queued item runs, with the agent imported from where the
    run was started; recorded steps and LLM calls are reused, never paid again. If a budget paused it,
    raise it first (`papayya tenants set TENANT --budget USD`, `papayya runs set RUN --budget USD`).
    Shows progress on a terminal, then the run's summary.
    """
    if run_id is None and tenant is None:
        raise click.UsageError("Give the RUN to resume, or --tenant TENANT for all its paused runs")
    if run_id is not None and tenant is not None:
        raise click.UsageError("Give a RUN or --tenant, not both")
    store = connect()
    if tenant is None:
        assert run_id is not None
        runs = [run_id]
    else:
        tenants.get(tenant)
        runs = store.runs_paused_of_tenant(tenant)
        if not runs:
            raise BudgetError(f"Tenant {tenant!r} has no paused runs; there is nothing to resume.")
    import_from_here()
    results: list[RunResult] = []
    for rid in runs:
        result = control.resume_run(rid, concurrency=concurrency)
        results.append(result)
        if not as_json:
            # Each summary as its run finishes: a later run refused (its budget spent by the earlier
            # ones) does not hide what the earlier ones did. Plain lines: the terminal wraps them.
            click.echo(("\n" if len(results) > 1 else "") + render.printable(str(result)))
    if as_json:
        details = [run_detail(store.run_get(r.run_id, r.tenant), r) for r in results]
        render.emit_json(details[0] if tenant is None else details)


def import_from_here() -> None:
    """Let the agent's module be imported from the current directory, as ``python -m`` would.

    The ``papayya`` console script has its own directory first on ``sys.path``, not the user's.
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
