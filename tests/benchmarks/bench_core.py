"""Core benchmarks, run on demand (not part of the test suite):

    python tests/benchmarks/bench_core.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_core.py

1. No-op items per second through ``map()`` in process, beside two baselines measured in the same
   run: the same no-op over a plain thread pool (no durability at all), and the minimum durable
   bookkeeping by hand on one connection (the items inserted, then a claim UPDATE and a finish UPDATE
   per item, each its own commit) into a real table beside papayya's: logged and fsynced at every
   commit as papayya's tables are (a TEMP table would skip the WAL flush a commit waits for).
2. The CPU cost of recording one LLM call (price it, build the record, write the ledger row in one
   round trip, notify plugins), beside the same ledger INSERT issued by hand through psycopg on its
   own connection: the difference is what papayya itself costs per call.

``--smoke`` runs each part once at a tiny size (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
from machine import configure_store, machine_line  # beside this file (run as a script)
from psycopg import sql

import papayya
from papayya import agent, run
from papayya.runtime import get_runtime

N_ITEMS = int(os.environ.get("BENCH_ITEMS", "3000"))
N_CALLS = int(os.environ.get("BENCH_CALLS", "3000"))
CONCURRENCY = 8
REPEAT = 3


@agent
def noop(item: papayya.Item) -> dict[str, str]:
    return {"id": item.id}


def bench_map() -> tuple[float, float, float]:
    items = [{"id": f"i{i}", "n": i} for i in range(N_ITEMS)]
    best_map = 0.0
    for r in range(REPEAT):
        papayya.tenants.add(f"bench-{r}")  # migrates a fresh store before anything is timed
    for r in range(REPEAT):
        t = time.perf_counter()
        result = noop.map(items, tenant=f"bench-{r}", concurrency=CONCURRENCY, progress=False)
        best_map = max(best_map, N_ITEMS / (time.perf_counter() - t))
        assert result.counts["succeeded"] == N_ITEMS

    best_pool = 0.0
    for _ in range(REPEAT):
        t = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda it: noop.fn(papayya.Item(it["id"], it)), items))
        best_pool = max(best_pool, N_ITEMS / (time.perf_counter() - t))

    # A real (logged) table in the same database, so each commit waits for its WAL flush as papayya's
    # do; every write its own commit in one round trip (autocommit), as papayya's store writes are.
    url = get_runtime().store.url
    table = f"bench_raw_items_{uuid.uuid4().hex[:8]}"
    best_raw = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, input jsonb, status text, token bigint)").format(
                sql.Identifier(table)
            )
        )
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, 'queued', NULL)").format(sql.Identifier(table))
        claim = sql.SQL("UPDATE {} SET status = 'running', token = 1 WHERE id = %s").format(
            sql.Identifier(table)
        )
        finish = sql.SQL("UPDATE {} SET status = 'succeeded' WHERE id = %s AND token = 1").format(
            sql.Identifier(table)
        )
        try:
            for _ in range(REPEAT):
                ids = [uuid.uuid4() for _ in items]
                t = time.perf_counter()
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(insert, [(i, json.dumps(it)) for i, it in zip(ids, items, strict=True)])
                for i in ids:
                    conn.execute(claim, (i,), prepare=True)
                    conn.execute(finish, (i,), prepare=True)
                best_raw = max(best_raw, N_ITEMS / (time.perf_counter() - t))
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    return best_map, best_pool, best_raw


def bench_llm_call() -> tuple[float, float, float, float]:
    """papayya's record_llm_call against the same ledger INSERT issued by hand (the one durable write)."""
    from papayya.context import current
    from papayya.store.queries import q

    timings: dict[str, list[tuple[float, float]]] = {"papayya": [], "baseline": []}

    @agent
    def caller(item: papayya.Item) -> str:
        ctx = current.get()
        assert ctx is not None
        row = {
            "tenant_id": ctx.tenant_id,
            "run_id": ctx.run_id,
            "item_id": ctx.item_id,
            "attempt_id": ctx.attempt_id,
            "step_key": None,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1200,
            "output_tokens": 300,
            "cache_read_tokens": 200,
            "cache_write_tokens": 0,
            "stop_reason": "stop",
            "latency_ms": 812.0,
            "cost_usd": Decimal("0.00024"),
            "price_source": "catalog",
            "idempotency_key": None,
            "result": None,
            "journal": False,
            "request_hash": None,
            "reserved_usd": None,
            "lease_token": ctx.lease_token,
            "mode": "live",
            "live_cost_usd": None,
        }
        with psycopg.connect(ctx.runtime.store.url, autocommit=True) as conn:
            for _ in range(REPEAT):
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(N_CALLS):
                    run.record_llm_call(
                        provider="openai",
                        model="gpt-4o-mini",
                        input_tokens=1200,
                        output_tokens=300,
                        cache_read_tokens=200,
                        stop_reason="stop",
                        latency_ms=812.0,
                    )
                timings["papayya"].append(
                    ((time.process_time() - cpu) / N_CALLS, (time.perf_counter() - wall) / N_CALLS)
                )
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(N_CALLS):
                    conn.execute(q("llm_call_record"), row)
                timings["baseline"].append(
                    ((time.process_time() - cpu) / N_CALLS, (time.perf_counter() - wall) / N_CALLS)
                )
        return "ok"

    result = caller.map([{"id": "x"}], tenant="bench-llm", concurrency=1, progress=False)
    if result.counts.get("succeeded") != 1:
        raise RuntimeError(f"the recording agent did not succeed: {result}")
    p_cpu, p_wall = min(timings["papayya"])
    b_cpu, b_wall = min(timings["baseline"])
    return p_cpu, p_wall, b_cpu, b_wall


def main() -> None:
    global N_ITEMS, N_CALLS, REPEAT
    parser = argparse.ArgumentParser(description="map() throughput and the cost of recording an LLM call.")
    parser.add_argument("--smoke", action="store_true", help="each part once, tiny (CI): figures meaningless")
    smoke = parser.parse_args().smoke
    if smoke:
        N_ITEMS, N_CALLS, REPEAT = 40, 40, 1
    store_kind = configure_store()
    print(machine_line(store_kind))
    print(
        f"best of {REPEAT} runs"
        + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
        + "\n"
    )

    m, pool, raw = bench_map()
    print(f"1. no-op items through map(), {N_ITEMS:,} items, concurrency {CONCURRENCY}")
    print(f"   {'':44} {'items/s':>10} {'vs map()':>9}")
    print(f"   {'papayya map()':44} {m:>10,.0f} {1:>8.2f}x")
    print(f"   {'baseline: thread pool, nothing recorded':44} {pool:>10,.0f} {pool / m:>8.2f}x")
    print(f"   {'baseline: by hand, insert+claim+finish':44} {raw:>10,.0f} {raw / m:>8.2f}x")

    cpu, wall, bcpu, bwall = bench_llm_call()
    print(f"\n2. recording one LLM call ({N_CALLS:,} calls, one durable write each)")
    print(f"   {'':44} {'CPU us':>10} {'wall us':>9}")
    print(f"   {'papayya run.record_llm_call':44} {cpu * 1e6:>10.1f} {wall * 1e6:>9.1f}")
    print(f"   {'baseline: the same ledger INSERT by hand':44} {bcpu * 1e6:>10.1f} {bwall * 1e6:>9.1f}")
    print(
        f"   papayya's own CPU per call above the bare write: {(cpu - bcpu) * 1e6:.1f} us (target <= 50 us)"
    )


if __name__ == "__main__":
    main()
