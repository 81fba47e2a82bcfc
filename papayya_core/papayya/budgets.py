"""Budgets that pause work instead of failing it.

A tenant has a budget per period (``total``, ``month``, ``day``; calendar periods in UTC) and a run
may have one of its own. Each LLM call first **reserves** its worst-case cost on both accounts in one
atomic statement (all or nothing, under the accounts' row locks), then **settles** with the actual cost,
or **releases** the reservation if the call failed. So concurrent workers never spend more than the
budget by more than what calls cost beyond their reservations, Σ max(0, actual - reserved); a call's
excess is owed by its process and covered by the next lease, so it cannot pile up behind later calls.
(The naive check-then-spend lets a whole batch of in-flight calls through.)

The hot path stays off the account rows: a process leases chunks of budget and reserves calls against
them in memory (see ``Budgets``). A chunk is good for at most ``CHUNK_SECONDS`` and only while the run's
and the tenant's control generation are the ones it was leased under (``papayya.runstate``): a budget
lowered, a run paused, a cap changed voids every chunk leased before, so the next call of every worker
goes back to the accounts and meets the new limit.

Leases and settlements commit asynchronously (``synchronous_commit = off``), since waiting for an
fsync under a hot row's lock would serialise every worker; the ledger itself is written durably, and
``reconcile`` recomputes the accounts from it (on resume, when a budget changes, after a database
crash).

When a reservation is refused the item stops at that call with ``Paused`` (a control-flow signal user code
cannot swallow with ``except Exception``) and its run — for a tenant budget, every running run of the
tenant — becomes ``paused``. Nothing resumes by itself when a period rolls over: ``papayya resume``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from papayya.errors import BudgetError, Paused
from papayya.money import usd
from papayya.runstate import ControlState
from papayya.store import Store

log = logging.getLogger("papayya.budgets")

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


MAX_AMOUNT = Decimal(10) ** 12  # a trillion USD
MAX_DECIMALS = 20  # a float's shortest text (0.30000000000000004) fits; the store keeps it exactly


def parse_amount(value: object, what: str = "budget") -> Decimal:
    """A budget amount in USD: a finite number from 0 to 1,000,000,000,000 with at most 20 decimal
    places, else BudgetError saying so. An int, float, Decimal or
    text (``"40"``, ``"$12.50"``) is accepted; a bool is not."""
    from papayya.validate import shown

    nan = "is not a number; give USD, e.g. 40 or 12.50"
    if isinstance(value, bool):
        raise BudgetError(f"The {what} {value!r} {nan}.")
    if isinstance(value, int):
        amount = Decimal(value)  # no str(): an int past 4,300 digits cannot be printed
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, float | str) and len(raw := str(value).strip().removeprefix("$")) <= 100:
        try:
            amount = Decimal(raw)
        except (InvalidOperation, ValueError):
            raise BudgetError(f"The {what} {shown(value)} {nan}.") from None
    else:
        raise BudgetError(f"The {what} {shown(value)} {nan}.")
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
        raise BudgetError(
            f"The {what} {shown(value)} must be a finite amount of USD >= 0 and at most {MAX_AMOUNT:,}."
        )
    if amount == 0:
        return Decimal(0)  # not "-0" or "0E-20000", which the store cannot hold
    if _decimals(amount) > MAX_DECIMALS:
        if _decimals(amount.normalize()) > MAX_DECIMALS:
            raise BudgetError(
                f"The {what} {shown(value)} has more than {MAX_DECIMALS} decimal places; give USD to at "
                f"most {MAX_DECIMALS} places, e.g. 12.50."
            )
        amount = amount.quantize(Decimal(1).scaleb(-MAX_DECIMALS))  # only trailing zeros go
    return amount


def _decimals(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) else 0


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


@dataclass
class _Wallet:
    """Budget this process leased from an account pair and has not yet spent (or given back)."""

    balance: Decimal = Decimal(0)  # leased, not reserved by a call: spend it without a round trip
    covered: Decimal = Decimal(0)  # spent out of leases, still counted as reserved in the accounts
    direct: Decimal = Decimal(0)  # spent without a reservation (recorded after the fact)
    chunk: Decimal = Decimal(0)  # the next lease's size, adapted to the room the accounts have
    leasing: threading.Lock = field(default_factory=threading.Lock)  # one lease at a time per wallet
    void: Decimal = Decimal(0)  # leased under terms that changed since: owed back to the accounts
    run_gen: int | None = None  # the control generations the balance was leased under
    tenant_gen: int | None = None
    expires: float = 0.0  # monotonic: no call reserves from the balance after this


class Budgets:
    """The budget gate of one process. Thread-safe.

    To keep the hot path off the account rows, the process leases **chunks** of budget (about 20
    calls' worth, at most 2 % of the room left) and reserves calls against them in memory; only a chunk
    that runs out costs a round trip. A chunk is counted as reserved in the accounts the moment it is
    leased, so the accounts never promise more than the budget; what a process leased and did not spend
    goes back at the end of a run (``give_back``) and the spend it made is written to the accounts every
    second (``flush``). A process that dies keeps its last chunk counted as reserved until ``reconcile``
    (on resume), which errs on the side of spending less.

    A chunk is spent from only while it is *current*: younger than ``CHUNK_SECONDS`` (measured from
    before the lease was asked for, so never longer than that after the accounts granted it) and
    leased under the run's and tenant's control generations this process knows now. Otherwise what is
    left of it is owed back and the call leases afresh, under the limits as they are now. So once a
    change to a budget, a cap or a run's state has been committed for ``CHUNK_SECONDS``, no call
    anywhere reserves under the old terms: ``papayya tenants set`` and ``papayya pause`` wait that
    long before they return.
    """

    LEASE_CALLS = 20
    LEASE_SHARE = Decimal("0.02")
    CHUNK_SECONDS = 1.0
    FLUSH_SECONDS = 1.0

    def __init__(self, store: Store, control: ControlState | None = None) -> None:
        self.store = store
        self.control = control or ControlState(store)
        self._ensured: set[tuple[str, str, UUID]] = set()
        self._wallets: dict[Accounts, _Wallet] = {}
        self._lock = threading.Lock()
        # Spend reaches the accounts from this process's own flusher, whatever runs the attempts (the
        # native worker, a Celery or Temporal worker, an SQS consumer): no backend can forget it.
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()

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

    def _current(self, wallet: _Wallet, accounts: Accounts) -> bool:
        """The wallet's balance may be spent: not expired, leased under the current generations."""
        if time.monotonic() >= wallet.expires:
            return False
        run_gen = self.control.run_gen(accounts.run_id)
        tenant_gen = self.control.tenant_gen(accounts.tenant_id)
        return (run_gen is None or run_gen == wallet.run_gen) and (
            tenant_gen is None or tenant_gen == wallet.tenant_gen
        )

    def reserve(self, accounts: Accounts, amount: Decimal | None, *, what: str) -> Decimal:
        """Reserve ``amount`` (None: price unknown) or raise Paused saying which budget has no room."""
        if self.control.run_stopped(accounts.run_id):
            raise Paused("paused", f"run {accounts.run_id} is paused")
        if amount is not None:
            with self._lock:
                wallet = self._wallets.setdefault(accounts, _Wallet())
                if wallet.balance >= amount and self._current(wallet, accounts):
                    wallet.balance -= amount
                    return amount
            # One thread leases for the wallet at a time; the others find its chunk when they get here.
            with wallet.leasing:
                with self._lock:
                    current = self._current(wallet, accounts)
                    if current and wallet.balance >= amount:
                        wallet.balance -= amount
                        return amount
                    if not current and wallet.balance > 0:  # leased under old terms: owed back
                        wallet.void += wallet.balance
                        wallet.balance = Decimal(0)
                    void, wallet.void = wallet.void, Decimal(0)
                    # Take what is left in the wallet for this call, so no other thread counts it too. A
                    # negative balance is spend that went past its reservations (a call that cost more
                    # than its estimate): the lease covers it too, so that excess never accumulates.
                    claimed = max(wallet.balance, Decimal(0))
                    debt = max(-wallet.balance, Decimal(0))
                    wallet.balance -= claimed
                    need = amount - claimed + debt
                    chunk = max(need, wallet.chunk, amount * self.LEASE_CALLS)
                if void:
                    self.store.budget_settle(accounts.keys(), reserved=void, actual=Decimal(0))
                # Lease a chunk; when the accounts have no room for it, lease exactly what this call needs.
                for lease in dict.fromkeys((chunk, need)):
                    asked = time.monotonic()
                    row = self.store.budget_reserve(accounts.keys(), lease)
                    self._observe(accounts, row)
                    if row["reserved"]:
                        with self._lock:
                            wallet.balance += lease - need + debt
                            wallet.chunk = self._next_chunk(row, amount)
                            wallet.run_gen, wallet.tenant_gen = row["run_gen"], row["tenant_gen"]
                            wallet.expires = asked + self.CHUNK_SECONDS
                        return amount
                    if row["run_status"] != "running":
                        break
                with self._lock:
                    wallet.balance += claimed
        else:
            row = self.store.budget_reserve(accounts.keys(), None)
            self._observe(accounts, row)
            if row["reserved"]:
                return Decimal(0)
        raise self._refusal(accounts, row, amount, what)

    def _observe(self, accounts: Accounts, row: Any) -> None:
        """A lease's answer carries the run's state and generations: what the control plane is now."""
        if row["run_status"] is not None:
            self.control.observe_run(accounts.run_id, row["run_status"], row["run_gen"])
        self.control.observe_tenant(accounts.tenant_id, row["tenant_gen"])

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

    def _start_flusher(self) -> None:
        with self._lock:
            if self._closed.is_set() or (self._flusher is not None and self._flusher.is_alive()):
                return
            self._flusher = threading.Thread(target=self._flush_loop, name="papayya-budgets", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.FLUSH_SECONDS):
            try:
                self.flush()
            except Exception as exc:  # the store is away: the next second tries again
                log.warning("could not write budget spend to the accounts (%s); retried", exc)

    def close(self) -> None:
        """Stop the flusher and give every lease back (the process is done with budgets)."""
        self._closed.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=5)
        self.give_back()

    def settle(self, accounts: Accounts, *, reserved: Decimal, actual: Decimal | None) -> None:
        """Replace a reservation by the actual cost (None: unknown, counted as 0 against budgets).

        The difference goes back to the wallet (a call that cost more than it reserved leaves the wallet
        short, and the next lease covers it); the spend reaches the accounts at the next ``flush``."""
        spent = actual or Decimal(0)
        self._start_flusher()
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
            for a, w in self._wallets.items():  # a lease nobody spent from in time is owed back too
                if w.balance > 0 and not self._current(w, a):
                    w.void += w.balance
                    w.balance = Decimal(0)
            due = [
                (a, w.covered, w.direct, w.void)
                for a, w in self._wallets.items()
                if w.covered or w.direct or w.void
            ]
            for a, _, _, _ in due:
                wallet = self._wallets[a]
                wallet.covered = wallet.direct = wallet.void = Decimal(0)
        for accounts, covered, direct, void in due:
            self.store.budget_settle(accounts.keys(), reserved=covered + void, actual=covered + direct)

    def give_back(self, run_id: UUID | None = None) -> None:
        """Flush, then return unspent leases (of one run, or all) to the accounts."""
        self.flush()
        with self._lock:
            back = [
                (a, max(w.balance, Decimal(0)) + w.void)
                for a, w in self._wallets.items()
                if run_id in (None, a.run_id)
            ]
            for a, _ in back:
                del self._wallets[a]
        for accounts, balance in back:
            if balance > 0:
                self.store.budget_settle(accounts.keys(), reserved=balance, actual=Decimal(0))
