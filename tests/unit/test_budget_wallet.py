"""The budget wallet under concurrency: a worker never pauses a run while its process holds the money."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal
from typing import Any

from papayya.budgets import Accounts, Budgets
from papayya.errors import Paused


class RoomStore:
    """A stand-in for the accounts: ``room`` dollars can be leased, each lease taking a moment."""

    def __init__(self, room: Decimal) -> None:
        self.room = room
        self.leases: list[Decimal] = []
        self.returned: list[Decimal] = []
        self.settles: list[tuple[Decimal, Decimal]] = []
        self.run_gen = 0
        self.tenant_gen = 0
        self._lock = threading.Lock()

    def budget_settle(self, keys: dict[str, Any], *, reserved: Decimal, actual: Decimal) -> None:
        with self._lock:
            self.room += reserved - actual
            self.returned.append(reserved - actual)
            self.settles.append((reserved, actual))

    def budget_reserve(self, keys: dict[str, Any], amount: Decimal) -> dict[str, Any]:
        time.sleep(0.05)  # a round trip: long enough for another worker to arrive meanwhile
        with self._lock:
            fits = amount <= self.room
            if fits:
                self.room -= amount
                self.leases.append(amount)
        return {
            "reserved": 1 if fits else 0,
            "fits": fits,
            "run_status": "running",
            "run_gen": self.run_gen,
            "tenant_gen": self.tenant_gen,
            "accounts": [{"scope": "tenant", "period": "total", "spent": "0", "reserved": "0", "limit": "1"}],
        }


def test_a_worker_waits_for_the_lease_in_flight_instead_of_pausing() -> None:
    # Given room for exactly one chunk, and two workers arriving at an empty wallet together
    amount = Decimal("0.01")
    store = RoomStore(room=amount * Budgets.LEASE_CALLS)
    budgets = Budgets(store)  # type: ignore[arg-type]
    accounts = Accounts("t", "total", None, uuid.uuid4())
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def call() -> None:
        start.wait()
        try:
            budgets.reserve(accounts, amount, what="openai/gpt-4o-mini")
            outcomes.append("reserved")
        except Paused as exc:
            outcomes.append(exc.kind)

    workers = [threading.Thread(target=call) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(5)

    # Then one lease serves both: the second worker reserves from the chunk the first one leased
    assert outcomes == ["reserved", "reserved"]
    assert store.leases == [amount * Budgets.LEASE_CALLS]


def test_a_chunk_leased_before_a_budget_change_is_not_spent_after_it() -> None:
    # Given a wallet holding a chunk leased at tenant generation 0
    amount = Decimal("0.01")
    store = RoomStore(room=Decimal(1))
    budgets = Budgets(store)  # type: ignore[arg-type]
    accounts = Accounts("t", "total", None, uuid.uuid4())
    budgets.reserve(accounts, amount, what="m")
    assert len(store.leases) == 1
    budgets.reserve(accounts, amount, what="m")
    assert len(store.leases) == 1  # the second call came out of the chunk, no round trip
    # When the tenant's budget changes (its generation moves on, as a worker learns it)
    store.tenant_gen = 1
    budgets.control.observe_tenant("t", 1)
    # Then the next call leases afresh under the new terms, and the old chunk is owed back
    budgets.reserve(accounts, amount, what="m")
    assert len(store.leases) == 2
    assert store.returned == [amount * (Budgets.LEASE_CALLS - 2)]


def test_a_chunk_expires_after_chunk_seconds(monkeypatch: Any) -> None:
    amount = Decimal("0.01")
    store = RoomStore(room=Decimal(1))
    budgets = Budgets(store)  # type: ignore[arg-type]
    accounts = Accounts("t", "total", None, uuid.uuid4())
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    budgets.reserve(accounts, amount, what="m")
    now[0] += Budgets.CHUNK_SECONDS / 2
    budgets.reserve(accounts, amount, what="m")
    assert len(store.leases) == 1
    now[0] += Budgets.CHUNK_SECONDS  # no generation news, but the chunk is too old to trust
    budgets.reserve(accounts, amount, what="m")
    assert len(store.leases) == 2


def test_a_run_seen_paused_then_resumed_reserves_again() -> None:
    store = RoomStore(room=Decimal(1))
    budgets = Budgets(store)  # type: ignore[arg-type]
    accounts = Accounts("t", "total", None, uuid.uuid4())
    budgets.control.observe_run(accounts.run_id, "paused", 3)
    try:
        budgets.reserve(accounts, Decimal("0.01"), what="m")
        raise AssertionError("a paused run reserved")
    except Paused:
        pass
    budgets.control.observe_run(accounts.run_id, "running", 4)  # resumed: a newer generation
    store.run_gen = 4
    assert budgets.reserve(accounts, Decimal("0.01"), what="m") == Decimal("0.01")
    budgets.control.observe_run(accounts.run_id, "paused", 3)  # stale news never wins
    assert budgets.reserve(accounts, Decimal("0.01"), what="m") == Decimal("0.01")


def test_spend_reaches_the_accounts_without_the_backend_asking() -> None:
    # Whatever runs the attempt (a Temporal activity has no monitor of its own), spend is written back.
    store = RoomStore(room=Decimal(1))
    budgets = Budgets(store)  # type: ignore[arg-type]
    accounts = Accounts("t", "total", None, uuid.uuid4())
    reserved = budgets.reserve(accounts, Decimal("0.01"), what="m")
    budgets.settle(accounts, reserved=reserved, actual=Decimal("0.004"))
    deadline = time.monotonic() + 10
    while Decimal("0.004") not in [actual for _, actual in store.settles]:
        assert time.monotonic() < deadline, store.settles
        time.sleep(0.05)
    budgets.close()
