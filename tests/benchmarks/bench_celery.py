"""What ``papayya_celery.install(app)`` costs a Celery worker, run on demand (not part of the test suite):

    python tests/benchmarks/bench_celery.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_celery.py

One real Celery worker (``start_worker``, in this process) on Redis (127.0.0.1:6379, ``BENCH_BROKER``),
with the solo pool and with a pool of 8 threads, taking turns in the same run between two apps with
the same task functions on the same broker and pool:

- the baseline: a plain Celery app (the ``@agent`` function is called as a plain function);
- ``papayya_celery.install(app)``: each message is an attempt of an item of a recorded run (its ids
  in the headers: validate, claim, call, judge and write the attempt).

Three tasks: a no-op (what papayya adds is then its durable writes alone), and ones that sleep 10 and
20 ms (a ratio that means something for real work). The messages of a round are published before the worker
starts; throughput is messages per second from the first task's start to the last task's end, and
the per-task time is from ``task_prerun`` to ``task_postrun`` (what papayya adds happens in between).
``--smoke`` runs one tiny round of each (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from typing import Any

from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from machine import configure_store, machine_line  # beside this file (run as a script)

import papayya
import papayya_celery
from papayya import agent
from papayya.execute import ItemRef
from papayya.runtime import get_runtime
from papayya_celery.backend import CeleryBackend

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/13")
N_NOOP = int(os.environ.get("BENCH_NOOP", "2000"))
N_SLEEP = int(os.environ.get("BENCH_SLEEP", "300"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
POOLS = (("solo", 1), ("threads", 8))  # (pool, concurrency)


class Clock:
    """Per-task durations (prerun -> postrun) and the span from the first start to the last end."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.first = self.last = 0.0
        self.done = threading.Event()
        self.expected = 0

    def prerun(self, task_id: str | None = None, **_: Any) -> None:
        now = time.perf_counter()
        if not self.started:
            self.first = now
        self.started[str(task_id)] = now

    def postrun(self, task_id: str | None = None, **_: Any) -> None:
        now = time.perf_counter()
        self.durations.append(now - self.started[str(task_id)])
        self.last = now
        if len(self.durations) >= self.expected:
            self.done.set()


def make_app(install: bool) -> tuple[Celery, dict[str, Any]]:
    app = Celery(f"bench-{'papayya' if install else 'plain'}-{uuid.uuid4().hex[:6]}", broker=BROKER)
    app.conf.update(
        task_default_queue=f"bench-{uuid.uuid4().hex[:8]}",
        task_ignore_result=True,
        worker_prefetch_multiplier=64,
        broker_connection_retry_on_startup=True,
    )
    if install:
        papayya_celery.install(app)

    @app.task(shared=False, name="bench.noop")
    @agent(name=f"bench.noop.{app.main}")
    def noop(item: Any) -> dict[str, bool]:
        return {"ok": True}

    @app.task(shared=False, name="bench.sleep10")
    @agent(name=f"bench.sleep10.{app.main}")
    def sleep10(item: Any) -> dict[str, bool]:
        time.sleep(0.010)
        return {"ok": True}

    @app.task(shared=False, name="bench.sleep20")
    @agent(name=f"bench.sleep20.{app.main}")
    def sleep20(item: Any) -> dict[str, bool]:
        time.sleep(0.020)
        return {"ok": True}

    return app, {"no-op": noop, "10 ms": sleep10, "20 ms": sleep20}


def publish(app: Celery, task: Any, n: int, install: bool) -> None:
    if not install:
        with app.producer_or_acquire() as producer:
            for i in range(n):
                task.apply_async(({"id": f"i{i}"},), producer=producer)
        return
    rt = get_runtime()
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    papayya.tenants.add(tenant)
    run_id = uuid.uuid4()
    rows = [(uuid.uuid4(), f"i{i:06d}", "{}") for i in range(n)]
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name=task.run.name,
        name="bench",
        backend="celery",
        items=rows,
        max_attempts=1,
        options={},
    )
    refs = [ItemRef(r[0], r[1], run_id, tenant) for r in rows]
    CeleryBackend(app).publish(rt, task.run.name, refs)


def one_round(install: bool, task_name: str, n: int, pool: str, concurrency: int) -> tuple[float, float]:
    """(messages per second, p50 seconds per task) of one round."""
    app, tasks = make_app(install)
    task = tasks[task_name]
    publish(app, task, n, install)
    clock = Clock()
    clock.expected = n
    signals.task_prerun.connect(clock.prerun, weak=False)
    signals.task_postrun.connect(clock.postrun, weak=False)
    try:
        with start_worker(
            app, pool=pool, concurrency=concurrency, perform_ping_check=False, shutdown_timeout=60
        ):
            if not clock.done.wait(600):
                raise RuntimeError(f"only {len(clock.durations)} of {n} tasks ran")
    finally:
        signals.task_prerun.disconnect(clock.prerun)
        signals.task_postrun.disconnect(clock.postrun)
        if install:
            papayya_celery.uninstall(app)
    return n / (clock.last - clock.first), statistics.median(clock.durations)


def main() -> None:
    parser = argparse.ArgumentParser(description="What papayya_celery.install costs a Celery worker.")
    parser.add_argument(
        "--smoke", action="store_true", help="one tiny round of each (CI): figures meaningless"
    )
    smoke = parser.parse_args().smoke
    repeat, n_noop, n_sleep = (1, 20, 10) if smoke else (REPEAT, N_NOOP, N_SLEEP)
    store = configure_store()
    print(machine_line(store))
    print(
        f"broker: {BROKER}; {repeat} round(s) each, taking turns; median of rounds"
        + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
        + "\n"
    )
    print(f"{'pool':<12}{'task':<8}{'setup':<20}{'msgs/s':>10}{'p50/task':>12}{'ratio':>8}{'added p50':>12}")
    for pool, concurrency in POOLS:
        for task_name, n in (("no-op", n_noop), ("10 ms", n_sleep), ("20 ms", n_sleep)):
            if smoke and task_name == "10 ms":
                continue
            rounds: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(repeat):
                for install in (False, True):
                    rounds[install].append(one_round(install, task_name, n, pool, concurrency))
            base_rate = statistics.median(r[0] for r in rounds[False])
            base_p50 = statistics.median(r[1] for r in rounds[False])
            for install in (False, True):
                rate = statistics.median(r[0] for r in rounds[install])
                p50 = statistics.median(r[1] for r in rounds[install])
                setup = "papayya installed" if install else "plain Celery"
                print(
                    f"{f'{pool} x{concurrency}':<12}{task_name:<8}{setup:<20}{rate:>10,.0f}"
                    f"{p50 * 1000:>10.2f}ms{rate / base_rate:>8.2f}{(p50 - base_p50) * 1000:>10.2f}ms",
                    flush=True,
                )


if __name__ == "__main__":
    main()
