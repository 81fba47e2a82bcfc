"""Budgets that pause work instead of failing it.

A tenant has a budget per period (``total``, ``month``, ``day``; calendar periods in UTC) and a run
may have one of its own. Each LLM call first **reserves** its worst-case cost on both accounts in one
atomic statement (all or nothing, under the accounts' row locks), then **settles** with the actual cost,
or **releases** the reservation if the call failed. So concurrent workers can never spend more than the
budget by more than the estimate error of the calls in flight: Σ max(0, actual - reserved), which is 0
when calls cap ``max_tokens``. (The naive check-then-spend lets a whole batch of in-flight calls through.)

The hot path stays off the account rows: a process leases chunks of budget and reserves calls against
them in memory (see ``Budgets``). Leases and settlements commit asynchronously (``synchronous_commit =
off``), since waiting for an fsync under a hot row's lock would serialise every worker; the ledger itself
is written durably, and ``reconcile`` recomputes the accounts from it (on resume, when a budget changes,
after a database crash).

When a reservation is refused the item stops at that call with ``Paused`` (a control-flow signal user code
cannot swallow with ``except Exception``) and its run — for a tenant budget, every running run of the
tenant — becomes ``paused``. Nothing resumes by itself when a period rolls over: ``papayya resume``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
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


def usd(value: Any) -> str:
    """Money for people: cents from a dollar up, exact (to a millionth) below, so $0.004 is not $0.00."""
    amount = Decimal(str(value))
    if abs(amount) >= 1 or amount == amount.quantize(Decimal("0.01")):
        return f"${amount:,.2f}"
    return "$" + f"{amount:.6f}".rstrip("0").rstrip(".")


@dataclass
class _Wallet:
    """Budget this process leased from an account pair and has not yet spent (or given back)."""

    balance: Decimal = Decimal(0)  # leased, not reserved by a call: spend it without a round trip
    covered: Decimal = Decimal(0)  # spent out of leases, still counted as reserved in the accounts
    direct: Decimal = Decimal(0)  # spent without a reservation (recorded after the fact)
    chunk: Decimal = Decimal(0)  # the next lease's size, adapted to the room the accounts have
    leasing: threading.Lock = field(default_factory=threading.Lock)  # one lease at a time per wallet


class Budgets:
    """The budget gate of one process. Thread-safe.

    To keep the hot path off the account rows, the process leases **chunks** of budget (about 20
    calls' worth, at most 2 % of the room left) and reserves calls against them in memory; only a chunk
    that runs out costs a round trip. A chunk is counted as reserved in the accounts the moment it is
    leased, so the accounts never promise more than the budget; what a process leased and did not spend
    goes back at the end of a run (``give_back``) and the spend it made is written to the accounts every
    second (``flush``). A process that dies keeps its last chunk counted as reserved until ``reconcile``
    (on resume), which errs on the side of spending less.
    """

    LEASE_CALLS = 20
    LEASE_SHARE = Decimal("0.02")

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ensured: set[tuple[str, str, UUID]] = set()
        self._wallets: dict[Accounts, _Wallet] = {}
        self._paused_runs: set[UUID] = set()
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

    def run_paused(self, run_id: UUID) -> None:
        """The run was paused elsewhere: its in-flight items stop at their next LLM call."""
        with self._lock:
            self._paused_runs.add(run_id)

    def run_resumed(self, run_id: UUID) -> None:
        with self._lock:
            self._paused_runs.discard(run_id)

    def reserve(self, accounts: Accounts, amount: Decimal | None, *, what: str) -> Decimal:
        """Reserve ``amount`` (None: price unknown) or raise Paused saying which budget has no room."""
        if accounts.run_id in self._paused_runs:
            raise Paused("paused", f"run {accounts.run_id} is paused")
        if amount is not None:
            with self._lock:
                wallet = self._wallets.setdefault(accounts, _Wallet())
                if wallet.balance >= amount:
                    wallet.balance -= amount
                    return amount
            # One thread leases for the wallet at a time; the others find its chunk when they get here.
            with wallet.leasing:
                with self._lock:
                    if wallet.balance >= amount:
                        wallet.balance -= amount
                        return amount
                    # Take what is left in the wallet for this call, so no other thread counts it too.
                    claimed = max(wallet.balance, Decimal(0))
                    wallet.balance -= claimed
                    need = amount - claimed
                    chunk = max(need, wallet.chunk, amount * self.LEASE_CALLS)
                # Lease a chunk; when the accounts have no room for it, lease exactly what this call needs.
                for lease in dict.fromkeys((chunk, need)):
                    row = self.store.budget_reserve(accounts.keys(), lease)
                    if row["reserved"]:
                        with self._lock:
                            wallet.balance += lease - need
                            wallet.chunk = self._next_chunk(row, amount)
                        return amount
                    if row["run_status"] != "running":
                        break
                with self._lock:
                    wallet.balance += claimed
        else:
            row = self.store.budget_reserve(accounts.keys(), None)
            if row["reserved"]:
                return Decimal(0)
        raise self._refusal(accounts, row, amount, what)

    def _next_chunk(self, row: Any, amount: Decimal) -> Decimal:
        rooms = [
            Decimal(str(a["limit"])) - Decimal(str(a["spent"])) - Decimal(str(a["reserved"]))
            for a in row["accounts"] or []
            if a["limit"] is not None
        ]
        if not rooms:
            return amount * self.LEASE_CALLS
        return max(amount, min(amount * self.LEASE_CALLS, min(rooms) * self.LEASE_SHARE))

    def _refusal(self, accounts: Accounts, row: Any, amount: Decimal | None, what: str) -> Paused:
        if row["run_status"] != "running":
            return Paused("paused", f"run {accounts.run_id} is {row['run_status']}")
        for acct in sorted(row["accounts"] or [], key=lambda a: a["scope"] != "tenant"):
            limit = acct["limit"]
            if limit is None:
                continue
            if amount is None:
                return Paused(
                    "unpriced",
                    f"{what} has no known price, and the {acct['scope']} has a budget; set a price with "
                    f"`papayya tenants set {accounts.tenant_id} --price PROVIDER:MODEL=IN/OUT`",
                )
            used = Decimal(str(acct["spent"])) + Decimal(str(acct["reserved"]))
            if used + amount > Decimal(str(limit)):
                if acct["scope"] == "tenant":
                    return Paused(
                        "budget:tenant",
                        f"tenant {accounts.tenant_id} has spent or reserved {usd(used)} of its "
                        f"{usd(limit)} budget for {acct['period']}",
                    )
                return Paused(
                    "budget:run",
                    f"run {accounts.run_id} has spent or reserved {usd(used)} of its {usd(limit)} budget",
                )
        return Paused("budget:run", f"run {accounts.run_id}: no budget room for {what}")

    def settle(self, accounts: Accounts, *, reserved: Decimal, actual: Decimal | None) -> None:
        """Replace a reservation by the actual cost (None: unknown, counted as 0 against budgets).

        The difference goes back to the wallet (a call that cost more than it reserved leaves the wallet
        short, and the next lease covers it); the spend reaches the accounts at the next ``flush``."""
        spent = actual or Decimal(0)
        with self._lock:
            wallet = self._wallets.setdefault(accounts, _Wallet())
            if reserved:
                wallet.balance += reserved - spent
                wallet.covered += spent
            else:
                wallet.direct += spent

    def release(self, accounts: Accounts, reserved: Decimal) -> None:
        """Give a reservation back to the wallet: the call did not happen (or failed before spending)."""
        if reserved:
            with self._lock:
                self._wallets.setdefault(accounts, _Wallet()).balance += reserved

    def flush(self) -> None:
        """Write the spend made here to the accounts (moving it from reserved to spent)."""
        with self._lock:
            due = [(a, w.covered, w.direct) for a, w in self._wallets.items() if w.covered or w.direct]
            for a, _, _ in due:
                self._wallets[a].covered = self._wallets[a].direct = Decimal(0)
        for accounts, covered, direct in due:
            self.store.budget_settle(accounts.keys(), reserved=covered, actual=covered + direct)

    def give_back(self, run_id: UUID | None = None) -> None:
        """Flush, then return unspent leases (of one run, or all) to the accounts."""
        self.flush()
        with self._lock:
            back = [(a, w.balance) for a, w in self._wallets.items() if run_id in (None, a.run_id)]
            for a, _ in back:
                del self._wallets[a]
        for accounts, balance in back:
            if balance > 0:
                self.store.budget_settle(accounts.keys(), reserved=balance, actual=Decimal(0))
