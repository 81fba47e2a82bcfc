"""What this process knows of the control plane: each run's state and each tenant's terms, with the
generation they were seen at.

The store is the truth. Every pause, resume, budget change and cap change bumps the generation
(``gen``) of the run or tenant it changes, in the same statement, and announces it on the
``papayya_control`` channel. A process caches what it learned (``observe``) only together with the
generation it was current at, and a newer generation always wins over an older one, so no decision
survives the change that voids it: a run seen paused is seen running again once it is resumed, and
budget leased under an old limit is dropped once the limit changes (``papayya.budgets``).

It learns where it already talks to the store, never with a round trip of its own per item: the
rows of a claim and of a budget lease carry the run's (and tenant's) generation, a worker's
listener hears the announcements, and a once-a-second ``refresh`` of the runs it holds covers lost
announcements and processes without a listener.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from papayya.store import Store

log = logging.getLogger("papayya.runstate")

CHANNEL = "papayya_control"
RUNNING = "running"


Overrides = dict[tuple[str, str], dict[str, Decimal | None]]


class ControlState:
    """Run states and tenant generations as last seen by this process, and each tenant's terms (price
    overrides, budget period) for the attempts it starts. Thread-safe."""

    TERMS_TTL = 5.0  # price overrides carry no generation: re-read at least this often

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._runs: dict[UUID, tuple[str, int]] = {}
        self._tenants: dict[str, int] = {}
        self._terms: dict[str, tuple[float, int | None, Overrides, str]] = {}

    # -- learning -------------------------------------------------------------------------------

    def observe_run(self, run_id: UUID, status: str, gen: int | None) -> None:
        """The run was ``status`` at generation ``gen`` (None: the generation is unknown, so only
        news about a run never seen before). An older generation never overwrites a newer one."""
        with self._lock:
            seen = self._runs.get(run_id)
            if gen is None:
                if seen is None:
                    self._runs[run_id] = (status, -1)
                return
            if seen is None or gen >= seen[1]:
                self._runs[run_id] = (status, gen)

    def observe_tenant(self, tenant_id: str, gen: int | None) -> None:
        if gen is None:
            return
        with self._lock:
            if gen > self._tenants.get(tenant_id, -1):
                self._tenants[tenant_id] = gen

    def paused(self, rows: Iterable[dict[str, object]]) -> None:
        """Runs this process just paused (rows of ``store.runs_pause``: run_id, gen)."""
        for row in rows:
            run_id, gen = row["run_id"], row["gen"]
            assert isinstance(run_id, UUID)
            assert isinstance(gen, int)
            self.observe_run(run_id, "paused", gen)

    def refresh(self, run_ids: Iterable[UUID]) -> None:
        """Read the current state of ``run_ids`` (and their tenants) from the store: one query."""
        ids = list(set(run_ids))
        if not ids:
            return
        for row in self.store.fetch_all("run_states", {"run_ids": ids}):
            self.observe_run(row["run_id"], row["status"], row["gen"])
            self.observe_tenant(row["tenant_id"], row["tenant_gen"])

    def on_notify(self, payload: str) -> None:
        """An announcement from ``papayya_control``: 'run GEN STATUS RUN_ID' or 'tenant GEN TENANT'."""
        kind, _, rest = payload.partition(" ")
        gen_text, _, rest = rest.partition(" ")
        try:
            gen = int(gen_text)
            if kind == "run":
                status, _, run_id = rest.partition(" ")
                self.observe_run(UUID(run_id), status, gen)
            elif kind == "tenant":
                self.observe_tenant(rest, gen)
        except ValueError:
            log.debug("ignored a control announcement papayya does not read: %r", payload)

    def settle_change(self) -> None:
        """After a change that restricts spending (a lowered budget, a pause): wait until every budget
        chunk leased under the old terms has expired, so that when the caller returns, no worker
        anywhere reserves under them any more (``Budgets.CHUNK_SECONDS``)."""
        from papayya.budgets import Budgets

        time.sleep(Budgets.CHUNK_SECONDS)

    def terms(self, tenant_id: str) -> tuple[Overrides, str]:
        """The tenant's price overrides and budget period for an attempt starting now: the cached ones
        while younger than ``TERMS_TTL`` and read under the tenant's current generation (a budget
        period changed elsewhere is seen at the next attempt), else read again."""
        now = time.monotonic()
        with self._lock:
            hit = self._terms.get(tenant_id)
            gen = self._tenants.get(tenant_id)
        if hit is not None and now - hit[0] < self.TERMS_TTL and hit[1] == gen:
            return hit[2], hit[3]
        record = self.store.tenant_get(tenant_id)
        period = str(record["budget_period"]) if record and record.get("budget_period") else "month"
        if record is not None:
            self.observe_tenant(tenant_id, record.get("gen"))
        overrides: Overrides = {
            (r["provider"], r["model"]): {
                k: r[k] for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
            }
            for r in self.store.price_overrides(tenant_id)
        }
        with self._lock:
            self._terms[tenant_id] = (now, self._tenants.get(tenant_id), overrides, period)
        return overrides, period

    # -- reading --------------------------------------------------------------------------------

    def run_stopped(self, run_id: UUID) -> bool:
        """True when the run was last seen paused, cancelled or completed: start nothing of it."""
        with self._lock:
            seen = self._runs.get(run_id)
        return seen is not None and seen[0] != RUNNING

    def run_gen(self, run_id: UUID) -> int | None:
        with self._lock:
            seen = self._runs.get(run_id)
        return None if seen is None or seen[1] < 0 else seen[1]

    def tenant_gen(self, tenant_id: str) -> int | None:
        with self._lock:
            return self._tenants.get(tenant_id)
