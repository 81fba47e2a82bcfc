"""Budgets that pause work instead of failing it.

A tenant has a budget per period (``total``, ``month``, ``day``; calendar periods in UTC) and a run
may have one of its own. Each LLM call first **reserves** its worst-case cost on both accounts in one
atomic statement (all or nothing, under the accounts' row locks), then **settles** with the actual cost,
or **releases** the reservation if the call failed. So concurrent workers can never spend more than the
budget by more than the estimate error of the calls in flight: Σ max(0, actual - reserved), which is 0
when calls cap ``max_tokens``. (The naive check-then-spend lets a whole batch of in-flight calls through.)

Reservations and settlements commit asynchronously (``synchronous_commit = off``): an account row is hot,
and waiting for an fsync under its lock on every call would serialise every worker. The ledger itself is
written durably; ``reconcile`` recomputes accounts from it (after a database crash, on resume, when a
budget changes).

When a reservation is refused the item stops at that call with ``Paused`` (a control-flow signal user code
cannot swallow with ``except Exception``) and its run — for a tenant budget, every running run of the
tenant — becomes ``paused``. Nothing resumes by itself when a period rolls over: ``papayya resume``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from papayya.errors import BudgetError, Paused
from papayya.store import Store

PERIODS = ("total", "month", "day")


def period_of(period: str, now: datetime | None = None) -> tuple[str, datetime | None]:
    """The account key and start of the period containing ``now`` (UTC): ('2026-11', 2026-11-01T00:00Z)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if period == "total":
        return "total", None
    if period == "month":
        return now.strftime("%Y-%m"), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return now.strftime("%Y-%m-%d"), now.replace(hour=0, minute=0, second=0, microsecond=0)
    raise BudgetError(f"Unknown budget period {period!r}; use one of: {', '.join(PERIODS)}.")


def parse_amount(value: object, what: str = "budget") -> Decimal:
    """A budget amount in USD: a finite number >= 0, else BudgetError saying so."""
    try:
        amount = Decimal(str(value).strip().removeprefix("$"))
    except (InvalidOperation, ValueError):
        raise BudgetError(f"The {what} {value!r} is not a number; give USD, e.g. 40 or 12.50.") from None
    if not amount.is_finite() or amount < 0:
        raise BudgetError(f"The {what} {value!r} must be a finite amount of USD >= 0.")
    return amount


@dataclass(frozen=True, slots=True)
class Accounts:
    """The two accounts an attempt's LLM calls reserve on: its tenant's current period and its run."""

    tenant_id: str
    tenant_period: str
    period_start: datetime | None
    run_id: UUID

    def keys(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "tenant_period": self.tenant_period,
            "period_start": self.period_start,
            "run_id": self.run_id,
            "run_key": str(self.run_id),
        }


def _money(value: Any) -> str:
    return f"${Decimal(value):,.2f}"


class Budgets:
    """The budget gate of one process. Thread-safe."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ensured: set[tuple[str, str, UUID]] = set()
        self._lock = threading.Lock()

    def accounts(self, tenant_id: str, run_id: UUID, period: str) -> Accounts:
        """The accounts for an attempt starting now, created (spent from the ledger) on first use."""
        key, start = period_of(period)
        accounts = Accounts(tenant_id, key, start, run_id)
        marker = (tenant_id, key, run_id)
        if marker not in self._ensured:
            self.store.budget_accounts_ensure(accounts.keys())
            with self._lock:
                self._ensured.add(marker)
        return accounts

    def reserve(self, accounts: Accounts, amount: Decimal | None, *, what: str) -> Decimal:
        """Reserve ``amount`` (None: price unknown) or raise Paused saying which budget has no room."""
        row = self.store.budget_reserve(accounts.keys(), amount)
        if row["reserved"]:
            return amount or Decimal(0)
        if row["run_status"] != "running":
            raise Paused("paused", f"run {accounts.run_id} is {row['run_status']}")
        for acct in sorted(row["accounts"] or [], key=lambda a: a["scope"] != "tenant"):
            limit = acct["limit"]
            if limit is None:
                continue
            used = Decimal(str(acct["spent"])) + Decimal(str(acct["reserved"]))
            if amount is None:
                raise Paused(
                    "unpriced",
                    f"{what} has no known price, and the {acct['scope']} has a budget; set a price with "
                    f"`papayya tenants set {accounts.tenant_id} --price PROVIDER:MODEL=IN/OUT`",
                )
            if used + amount > Decimal(str(limit)):
                if acct["scope"] == "tenant":
                    period = "total" if acct["period"] == "total" else f"{acct['period']}"
                    reason = (
                        f"tenant {accounts.tenant_id} has spent {_money(acct['spent'])} "
                        f"(+{_money(acct['reserved'])} in flight) of its {_money(limit)} budget for {period}"
                    )
                    raise Paused("budget:tenant", reason)
                raise Paused(
                    "budget:run",
                    f"run {accounts.run_id} has spent {_money(acct['spent'])} of its {_money(limit)} budget",
                )
        raise Paused("budget:run", f"run {accounts.run_id}: no budget room for {what}")

    def settle(self, accounts: Accounts, *, reserved: Decimal, actual: Decimal | None) -> None:
        """Replace a reservation by the actual cost (None: unknown, counted as 0 against budgets)."""
        self.store.budget_settle(accounts.keys(), reserved=reserved, actual=actual or Decimal(0))

    def release(self, accounts: Accounts, reserved: Decimal) -> None:
        """Give a reservation back: the call did not happen (or failed before spending)."""
        if reserved:
            self.store.budget_settle(accounts.keys(), reserved=reserved, actual=Decimal(0))
