"""What an instrumented OpenAI client costs per call, run on demand (not part of the test suite):

    python tests/benchmarks/bench_instrument.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_instrument.py

The real ``openai`` client calls papayya's FakeProvider on 127.0.0.1 (in this process, one connection
per request), from inside an agent, one call after another. Measured in the same run, taking turns:

- the baseline: a bare client (not instrumented) making the same calls from inside the same agent;
- ``papayya_openai.instrument``-ed clients, for a tenant without a budget and for one with a budget
  (every call: request hash, budget reservation, the HTTP call, price, one ledger+journal write,
  settlement);
- the same instrumented calls replayed from the journal by a retry of the item (no HTTP call).

The difference between the instrumented rows and the baseline is what papayya adds to each call; the
fake answers in about a millisecond, far faster than a real provider, so this is the worst case for
the ratio. CPU is this process's, the fake's server thread included (alike in every row).
``--smoke`` runs one tiny round (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import openai
from machine import configure_store, print_header  # beside this file (run as a script)

import papayya
import papayya_openai
from papayya import Retryable, agent, run
from papayya.testing import FakeProvider

N_CALLS = int(os.environ.get("BENCH_CALLS", "500"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
MODEL = "gpt-4o-mini"

Timing = tuple[float, float]  # (CPU seconds, wall seconds) per call


def calls(client: openai.OpenAI, n: int) -> Timing:
    """``n`` chat calls, one after another; (CPU, wall) seconds per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        client.chat.completions.create(
            model=MODEL, max_completion_tokens=16, messages=[{"role": "user", "content": f"question {i}"}]
        )
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def bench(fake: FakeProvider) -> dict[str, Timing]:
    bare = openai.OpenAI(base_url=fake.openai_url, api_key="bench", max_retries=0)
    inst = papayya_openai.instrument(openai.OpenAI(base_url=fake.openai_url, api_key="bench", max_retries=0))
    timings: dict[str, list[Timing]] = {"bare": [], "no budget": [], "budget": [], "replay": []}

    @agent(retries=1, backoff=0)
    def caller(item: papayya.Item) -> str:
        variant = item.input["variant"]
        if run.attempt == 1:
            timings["bare"].append(calls(bare, N_CALLS))  # the baseline, under the same load
            timings[variant].append(calls(inst, N_CALLS))
            if variant == "no budget":
                raise Retryable("again, from the journal")
            return "ok"
        # the retry asks the same questions in the same order: every call is a recorded one
        timings["replay"].append(calls(inst, N_CALLS))
        return "ok"

    @agent
    def warm_up(item: papayya.Item) -> str:
        calls(bare, 100)
        calls(inst, 100)
        return "ok"

    suffix = uuid.uuid4().hex[:6]
    free, capped = f"bench-free-{suffix}", f"bench-budget-{suffix}"
    papayya.tenants.add(free)
    papayya.tenants.add(capped)
    papayya.tenants.set_budget(capped, "1000000", "total")
    # the first calls of a process pay for opening the pool's connections and preparing statements
    warm_up.map([{"id": "w"}], tenant=free, progress=False)
    fake.reset()
    for r in range(REPEAT):  # the variants take turns, so a burst of load elsewhere hits them alike
        for tenant, variant in ((free, "no budget"), (capped, "budget")):
            item = {"id": f"r{r}", "variant": variant}
            result = caller.map([item], tenant=tenant, concurrency=1, progress=False)
            assert result.counts["succeeded"] == 1, result.counts
            assert result.llm_calls == N_CALLS, result.llm_calls
    assert fake.count == 4 * N_CALLS * REPEAT  # bare twice + two instrumented; replays asked nothing
    bare.close()
    inst.close()
    return {name: min(values, key=lambda t: t[1]) for name, values in timings.items()}


def main() -> None:
    global N_CALLS, REPEAT
    parser = argparse.ArgumentParser(description="What an instrumented OpenAI client costs per call.")
    parser.add_argument("--smoke", action="store_true", help="one tiny round (CI): figures meaningless")
    smoke = parser.parse_args().smoke
    if smoke:
        N_CALLS, REPEAT = 5, 1
    print_header(configure_store(), f"; openai {openai.__version__}", REPEAT, smoke)

    with FakeProvider() as fake:
        t = bench(fake)

    b_cpu, b_wall = t["bare"]
    rows = [
        ("baseline: bare openai client, same calls", t["bare"]),
        ("instrumented, tenant without a budget", t["no budget"]),
        ("instrumented, tenant with a budget", t["budget"]),
        ("instrumented, replayed from the journal", t["replay"]),
    ]
    print(f"OpenAI chat calls from inside an agent, {N_CALLS:,} calls in a row, FakeProvider on 127.0.0.1")
    print(f"   {'':42} {'wall us':>9} {'CPU us':>9} {'wall vs bare':>13}")
    for label, (cpu, wall) in rows:
        print(f"   {label:42} {wall * 1e6:>9.1f} {cpu * 1e6:>9.1f} {wall / b_wall:>12.2f}x")
    n_cpu, n_wall = t["no budget"]
    print(
        f"   papayya's own cost per recorded call: +{(n_wall - b_wall) * 1e6:.0f} us wall, "
        f"+{(n_cpu - b_cpu) * 1e6:.0f} us CPU (no budget)"
    )


if __name__ == "__main__":
    main()
