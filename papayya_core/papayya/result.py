"""``RunResult``: what a run did, per outcome, with its cost and why items fell short."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from papayya import validate
from papayya.budgets import period_of
from papayya.clusters import Cluster, clusters
from papayya.models import Outcome
from papayya.money import usd
from papayya.runtime import get_runtime


@dataclass(frozen=True)
class ItemResult:
    item_id: UUID
    key: str
    status: str
    reasons: list[dict[str, Any]]
    error_type: str | None
    fingerprint: str | None
    cost_usd: Decimal
    cost_unknown: bool


@dataclass
class RunResult:
    """The accountable result of one run.

    Attributes:
        counts: items by outcome, e.g. ``{"succeeded": 9800, "degraded": 180, "failed": 20}``.
        cost_usd: what the run's LLM calls cost (priced calls only; see ``unpriced_calls``).
        unpriced_calls: calls whose model has no known price (their cost is unknown, not zero).
        top_reasons: the most common degradation reasons with counts and sample item ids.
        top_failures: the most common failure fingerprints with counts and sample item ids.
    """

    run_id: UUID
    tenant: str
    agent: str
    status: str
    total: int
    counts: dict[str, int]
    cost_usd: Decimal
    unpriced_calls: int
    llm_calls: int
    paused_reason: str | None = None
    budget: list[dict[str, Any]] = field(default_factory=list)
    replayed_from: UUID | None = None
    replay_slice: dict[str, Any] | None = None
    transitions: dict[str, int] = field(default_factory=dict)  # "degraded->succeeded": n, for a replay
    top_reasons: list[dict[str, Any]] = field(default_factory=list)
    top_failures: list[dict[str, Any]] = field(default_factory=list)
    cost_by_model: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, run_id: UUID | str, tenant: str, *, top: int = 10) -> RunResult:
        """The result of run ``run_id`` of ``tenant``, as the store has it now.

        Raises:
            NotFound: ``run_id`` is not a run id, or no such run of this tenant.
            TenantError: ``tenant`` is not a usable tenant id.
        """
        run_id = validate.uuid(run_id, "a run id")
        tenant = validate.tenant_id(tenant)
        validate.count(top, "top")
        store = get_runtime().store
        run = store.run_get(run_id, tenant)
        summary = store.run_summary(run_id, tenant, top=top)
        counts = {o.value: 0 for o in (Outcome.SUCCEEDED, Outcome.DEGRADED, Outcome.FAILED)}
        counts.update(summary["counts"])
        tenant_row = store.tenant_get(tenant)
        key, start = period_of(tenant_row["budget_period"] if tenant_row else "month")
        keys = {
            "tenant_id": tenant,
            "tenant_period": key,
            "period_start": start,
            "run_id": run_id,
            "run_key": str(run_id),
        }
        store.budget_accounts_ensure(keys)
        budget = [
            {
                "scope": b["scope"],
                "period": b["period"],
                "spent_usd": b["spent_usd"],
                "reserved_usd": b["reserved_usd"],
                "budget_usd": b["limit_usd"],
            }
            for b in store.budget_view(keys)
            if b["limit_usd"] is not None
        ]
        cost = summary["cost"]
        return cls(
            run_id=run_id,
            tenant=tenant,
            agent=run["agent_name"],
            status=run["status"],
            total=run["total_items"],
            counts=counts,
            cost_usd=cost["cost_usd"],
            unpriced_calls=cost["unpriced_calls"],
            llm_calls=cost["calls"],
            paused_reason=run["paused_reason"],
            budget=budget,
            replayed_from=run["replayed_from"],
            replay_slice=run["replay_slice"],
            transitions=next(
                (r["transitions"] for r in store.run_lineage(run_id, tenant) if r["run_id"] == run_id), {}
            )
            if run["replayed_from"]
            else {},
            top_reasons=summary["reasons"],
            top_failures=summary["failures"],
            cost_by_model=summary["models"],
        )

    def clusters(self, limit: int = 50) -> list[Cluster]:
        """This run's failure clusters (degraded and failed items by fingerprint), largest first."""
        return clusters(run_id=self.run_id, tenant=self.tenant, limit=limit)

    def items(self, outcome: str | None = None, *, limit: int | None = None) -> list[ItemResult]:
        """Items of this run (optionally only one outcome), ordered by id; all of them by default."""
        validate.optional_text(outcome, "outcome")
        if limit is not None:
            validate.count(limit, "limit", high=2**31 - 1)
        store = get_runtime().store
        out: list[ItemResult] = []
        after: str | None = None
        while limit is None or len(out) < limit:
            page_size = 1000 if limit is None else min(1000, limit - len(out))
            rows = store.items_page(
                self.run_id, tenant_id=self.tenant, status=outcome, after=after, limit=page_size
            )
            out.extend(
                ItemResult(
                    r["item_id"],
                    r["key"],
                    r["status"],
                    r["reasons"],
                    r["error_type"],
                    r["fingerprint"],
                    r["cost_usd"],
                    r["cost_unknown"],
                )
                for r in rows
            )
            if len(rows) < page_size:
                break
            after = rows[-1]["key"]
        return out

    def __str__(self) -> str:
        status = self.status + (f" ({self.paused_reason})" if self.paused_reason else "")
        lines = [
            f"run {self.run_id} ({self.agent}) for tenant {self.tenant!r}: {status}",
            "  " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()) + f" of {self.total:,} items",
            f"  cost {usd(self.cost_usd)} over {self.llm_calls:,} LLM calls"
            + (
                f" ({self.unpriced_calls} calls with unknown price, not included)"
                if self.unpriced_calls
                else ""
            ),
        ]
        if self.replayed_from is not None:
            what = ", ".join(f"{k}: {v}" for k, v in (self.replay_slice or {}).items() if k != "from_journal")
            mode = "from the journal" if (self.replay_slice or {}).get("from_journal") else "fresh"
            lines.append(f"  replay of {self.replayed_from} ({what or 'all items'}; {mode})")
            if self.transitions:
                lines.append(
                    "  then -> now: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.transitions.items()))
                )
        lines.extend(
            f"  budget {b['scope']}"
            + (f" {b['period']}" if b["scope"] == "tenant" else "")
            + f": spent {usd(b['spent_usd'])} of {usd(b['budget_usd'])}"
            for b in self.budget
        )
        if self.status == "paused":
            lines.append(f"  resume with: papayya resume {self.run_id}")
        if self.top_reasons:
            lines.append("  top degraded reasons:")
            lines.extend(
                f"    {r['n']:>6,} x {r['code']}" + (f": {r['path']}" if r["path"] else "")
                for r in self.top_reasons
            )
        if self.top_failures:
            lines.append("  top failures:")
            lines.extend(
                f"    {f['n']:>6,} x {f['type']} {f['pattern']}"
                + (f" in {f['frame']}" if f["frame"] else "")
                + f" ({f['category']})"
                for f in self.top_failures
            )
        return "\n".join(lines)
