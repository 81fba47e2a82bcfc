"""Budget reservations per second on one hot tenant, run on demand:

    python tests/benchmarks/bench_budgets.py [--smoke]             # embedded PostgreSQL
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_budgets.py

Each worker is a separate process (as workers are in production) reserving on the same tenant's and
run's accounts in a loop for a few seconds. Three ways, in one run:

- papayya: ``Budgets.reserve`` + ``settle`` (a call's whole cycle), which leases chunks of budget with the
  atomic all-or-nothing statement and reserves calls against them in memory;
- every call on the row: that atomic statement for every call (committed asynchronously, as papayya does);
- the same committed synchronously: the baseline a straightforward implementation ships.

``--smoke`` runs one worker for half a second per way (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
import uuid
from decimal import Decimal

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
WORKERS = (1, 4, 16)
START = 3.0  # seconds every worker process gets to connect before the cell starts


def _worker(
    url: str, tenant: str, run_id: str, mode: str, start: float, seconds: float, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    import papayya
    from papayya.budgets import period_of
    from papayya.runtime import get_runtime
    from papayya.store.queries import q

    papayya.configure(database_url=url, pool_size=2)
    store = get_runtime().store
    key, period_start = period_of("month")
    keys = {
        "tenant_id": tenant,
        "tenant_period": key,
        "period_start": period_start,
        "run_id": uuid.UUID(run_id),
        "run_key": run_id,
        "amount": Decimal("0.000001"),
    }
    budgets = get_runtime().budgets
    accounts = budgets.accounts(tenant, uuid.UUID(run_id), "month")
    amount = keys["amount"]
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    end = time.perf_counter() + seconds
    if mode == "papayya":  # a whole call cycle: reserve, then settle with the actual cost
        while time.perf_counter() < end:
            budgets.reserve(accounts, amount, what="bench")
            budgets.settle(accounts, reserved=amount, actual=amount)
            n += 1
        budgets.give_back()
    else:
        pool = store._pool if mode == "sync" else store._fast().pool
        with pool.connection() as conn:
            while time.perf_counter() < end:
                row = conn.execute(q("budget_reserve"), keys).fetchone()
                assert row is not None
                assert row["reserved"]
                n += 1
    out.put(n)


def main() -> None:
    from machine import configure_store, machine_line  # beside this file (run as a script)

    import papayya
    from papayya.runtime import get_runtime

    global SECONDS, WORKERS, START
    parser = argparse.ArgumentParser(description="Budget reservations per second on one hot tenant.")
    parser.add_argument(
        "--smoke", action="store_true", help="one worker, half a second (CI): figures meaningless"
    )
    smoke = parser.parse_args().smoke
    if smoke:
        SECONDS, WORKERS, START = 0.5, (1,), 1.5
    store_kind = configure_store()
    rt = get_runtime()
    url = rt.store.url
    tenant = f"hot-{uuid.uuid4().hex[:6]}"
    papayya.tenants.add(tenant)
    papayya.tenants.set_budget(tenant, "1000000")

    run_id = uuid.uuid4()  # a running run with a budget of its own, as during a batch
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name="bench",
        name=None,
        backend="native",
        items=[],
        max_attempts=1,
        options={},
        budget_usd=Decimal(1000000),
    )
    rt.budgets.accounts(tenant, run_id, "month")  # both accounts exist
    print(machine_line(store_kind))
    print(
        f"one hot tenant + run budget, each worker a process, {SECONDS:g} s per cell"
        + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
        + "\n"
    )
    modes = ("papayya", "row", "sync")
    print("   reservations per second (all workers together)")
    print(
        f"   {'workers':>7} {'papayya (leased chunks)':>24} {'every call on the row':>22} "
        f"{'same, sync commit':>18} {'papayya/sync':>13}"
    )
    ctx = mp.get_context("spawn")
    for n in WORKERS:
        rates = []
        for mode in modes:
            out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
            start = time.time() + START  # let every process connect first
            procs = [
                ctx.Process(target=_worker, args=(url, tenant, str(run_id), mode, start, SECONDS, out))
                for _ in range(n)
            ]
            for p in procs:
                p.start()
            total = sum(out.get(timeout=120) for _ in procs)
            for p in procs:
                p.join()
            rates.append(total / SECONDS)
        print(
            f"   {n:>7} {rates[0]:>24,.0f} {rates[1]:>22,.0f} {rates[2]:>18,.0f} "
            f"{rates[0] / rates[2]:>12.1f}x"
        )


if __name__ == "__main__":
    main()
