"""Waiting on a run from the process that started it: its progress line, and ``wait_for_run`` for
backends whose workers live elsewhere (a broker's workers, Temporal, SQS consumers, ``submit()``)."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

from papayya.progress import Progress

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.engine")

QUIET_WARNING = 30.0  # seconds a waiter lets pass with no item started before it says where to look
TERMINAL_STATUSES = ("succeeded", "degraded", "failed", "cancelled")


def progress_for(
    rt: Runtime,
    agent: Agent,
    run_id: UUID,
    tenant_id: str,
    *,
    total: int,
    label: str | None,
    enabled: bool | None,
) -> Progress:
    """The progress line of a run: its label, size and budgets."""
    show = rt.settings.progress if enabled is None else enabled
    tenant = rt.store.tenant_get(tenant_id)
    run = rt.store.run_get(run_id, tenant_id)
    period = tenant["budget_period"] if tenant else "month"
    budgets = [
        f"${b:,.2f} {what}"
        for b, what in ((run["budget_usd"], "run"), (tenant and tenant["budget_usd"], f"tenant/{period}"))
        if b is not None
    ]
    return Progress(
        label or f"{agent.name} [{tenant_id}]", total=total, enabled=show, budget=" + ".join(budgets) or None
    )


def wait_for_run(
    rt: Runtime,
    run_id: UUID,
    tenant_id: str,
    *,
    progress: Progress | None = None,
    poll: float = 0.5,
    timeout: float | None = None,
) -> str:
    """Wait until the run has nothing queued, running or stalled (or is paused/cancelled), advancing
    ``progress`` from the store; return the run's status. For backends whose workers live elsewhere."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: dict[str, int] = {}
    started = time.monotonic()
    moved = False
    while True:
        p = rt.store.run_progress(run_id, tenant_id)
        if not moved:
            done = rt.store.run_summary(run_id, tenant_id, top=0)["counts"]
            moved = bool(p["running"] or p["expired"] or any(done.get(s) for s in TERMINAL_STATUSES))
            if not moved and time.monotonic() - started > QUIET_WARNING:
                moved = True  # said once
                log.warning(
                    "run %s: no item has started after %.0fs; is a worker of its backend running and "
                    "reading the same queue and the same PAPAYYA_DATABASE_URL?",
                    run_id,
                    time.monotonic() - started,
                )
        if progress is not None and progress.enabled:
            counts = rt.store.run_summary(run_id, tenant_id, top=0)["counts"]
            for status in ("succeeded", "degraded", "failed", "cancelled"):
                for _ in range(counts.get(status, 0) - seen.get(status, 0)):
                    progress.advance(status, Decimal(0))
                seen[status] = counts.get(status, 0)
        active = p["ready"] + p["waiting"] + p["running"] + p["expired"] + p["stalled"] + p["waiting_batch"]
        if p["status"] != "running":
            return str(p["status"])
        if not active:
            rt.store.run_complete(run_id, tenant_id)
            return str(rt.store.run_get(run_id, tenant_id)["status"])
        if deadline is not None and time.monotonic() > deadline:
            return str(p["status"])
        time.sleep(poll)
