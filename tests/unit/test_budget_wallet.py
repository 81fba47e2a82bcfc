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
        self._lock = threading.Lock()

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
