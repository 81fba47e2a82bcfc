"""The native engine beside the PostgreSQL queues it is measured against, run on demand:

    .venv/bin/python tests/benchmarks/bench_engine.py [--items N] [--quick] [--big] [--json PATH]

Every measurement gets a fresh database on one PostgreSQL server (``--server``, default
postgresql://postgres@127.0.0.1:5432/postgres; its role must be allowed to create databases), with the
server's durability as configured (``synchronous_commit`` on: a commit waits for its WAL flush). Every
worker is a separate process. In one run:

1. Draining N no-op items with 1, 2 and 4 worker processes, and how fast each system takes them in:

   - raw SQL roofline: a minimal jobs table (loaded with COPY, then ANALYZE) drained with the
     claim/complete pattern of a good PostgreSQL queue: claim 32 in one ``UPDATE ... WHERE id IN
     (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, complete the 32 in one ``UPDATE`` over
     ``unnest`` of their ids, each statement its own durable commit;
   - PGQueuer: its ``QueueManager`` in drain mode (batch 32) with a no-op async entrypoint, over
     asyncpg (its usual driver) when installed, else psycopg (``--pgqueuer-driver``); jobs enqueued
     in one batch ``enqueue``, schema from ``Queries.install``;
   - procrastinate: its worker with ``wait=False`` (concurrency 16) and a no-op async task, jobs
     deferred with ``batch_defer_async``, schema from ``apply_schema_async``;
   - papayya: ``noop.submit(items)``, then ``papayya worker ... --concurrency 16 --burst`` processes.

   A drain rate runs from the first claim to the last completion, so process start-up and the wait
   for an empty queue before exiting are left out: the roofline's workers connect, start together and
   time themselves; the others' spans are read from their own rows on the database clock (PGQueuer's
   log, procrastinate's events, papayya's attempts). Beside it, in brackets, the rate from process
   start to the last worker gone. Systems take turns, so a passing load on the machine hits them all.

2. papayya alone: ``submit()`` throughput, idle enqueue-to-start latency (an idle worker, one item at
   a time, both ends on the database clock) and a worker's peak RSS over runs of growing size.

The papayya part is skipped, saying why, while the engine's API (``Agent.submit``, ``papayya worker
--burst``) is not in this tree; the baselines still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[2]
AGENT = "tests.benchmarks.engine_agents:noop"
BATCH = 32  # items per claim, for the roofline and PGQueuer
CONCURRENCY = 16  # items in flight per worker process, for procrastinate and papayya
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 900.0
EXIT_GRACE = 30.0  # seconds a --burst worker gets to exit once its run is done
TENANT = "bench"

# The roofline: the least a durable PostgreSQL queue can do per batch.
ROOF_SCHEMA = """
CREATE TABLE jobs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status  text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL,
    lease   timestamptz
);
CREATE INDEX jobs_queued_idx ON jobs (id) WHERE status = 'queued';
"""
ROOF_CLAIM = """
UPDATE jobs SET status = 'running', lease = now() + interval '60 seconds'
 WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT %(batch)s
              FOR UPDATE SKIP LOCKED)
RETURNING id, payload
"""
ROOF_COMPLETE = """
UPDATE jobs SET status = 'done', lease = NULL
  FROM unnest(%(ids)s::bigint[]) AS done(id)
 WHERE jobs.id = done.id
"""


@dataclass
class Plan:
    """How big each measurement is."""

    items: int
    workers: tuple[int, ...]
    submit_items: int
    rss_items: tuple[int, ...]
    latency_samples: int
    latency_gap: float
    repeat: int
    server: str
    only: tuple[str, ...]
    pgqueuer_driver: str


@dataclass
class Drain:
    """One drain: ``items`` items by ``workers`` worker processes."""

    workers: int
    items: int
    drain_s: float  # first claim to last completion
    total_s: float  # process start to the last worker done
    enqueue_s: float  # taking the items in
    peak_rss_kib: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.drain_s

    @property
    def rate_total(self) -> float:
        return self.items / self.total_s

    @property
    def enqueue_rate(self) -> float:
        return self.items / self.enqueue_s


@dataclass
class System:
    """A system's drains, best of the repeats for each number of workers."""

    key: str
    label: str
    drains: dict[int, Drain] = field(default_factory=dict)
    skipped: str | None = None
    failed: str | None = None

    def keep(self, d: Drain) -> None:
        best = self.drains.get(d.workers)
        if best is None or d.rate > best.rate:
            self.drains[d.workers] = d

    @property
    def enqueue_rate(self) -> float:
        return max((d.enqueue_rate for d in self.drains.values()), default=0.0)


def payloads(n: int, prefix: str = "item") -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i}"} for i in range(n)]


def _noop(payload: Any) -> None:
    """The roofline's unit of work: nothing."""


# --- worker processes for the baselines (spawned; each connects, then waits for the others) ---


@dataclass
class Workers:
    """What a set of worker processes did, with times on this machine's clock."""

    done: int  # items they processed
    spawned: float
    released: float  # all connected, let go together
    last_done: float  # the last one's last completion
    exited: float


def _run_workers(target: Callable[..., None], args: tuple[Any, ...], n: int) -> Workers:
    """Start ``n`` processes running ``target(gate, out, *args)``; release them together; wait for all.

    Each process connects, then calls ``_through(gate)``, then drains and puts (items, last time) in ``out``.
    """
    ctx = mp.get_context("spawn")
    gate = (ctx.Queue(), ctx.Event())
    out: Any = ctx.Queue()
    spawned = time.time()
    procs = [ctx.Process(target=target, args=(gate, out, *args), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()

    def collect(q: Any, timeout: float) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                got.append(q.get(timeout=0.2))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    codes = [p.exitcode for p in procs]
                    raise RuntimeError(f"a worker process failed: exit codes {codes}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers still busy after {timeout:.0f} s") from None
        return got

    try:
        collect(gate[0], STARTUP_TIMEOUT)
        gate[1].set()
        released = time.time()
        results = collect(out, RUN_TIMEOUT)
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return Workers(sum(r[0] for r in results), spawned, released, max(r[1] for r in results), time.time())


def _through(gate: tuple[Any, Any]) -> None:
    """In a worker process: say it is ready, then wait for the others."""
    gate[0].put(os.getpid())
    if not gate[1].wait(STARTUP_TIMEOUT):
        raise TimeoutError("the benchmark never released its workers")


def _roofline_worker(gate: Any, out: Any, url: str) -> None:
    done = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        _through(gate)
        while True:
            rows = conn.execute(ROOF_CLAIM, {"batch": BATCH}, prepare=True).fetchall()
            if not rows:
                break
            for _, payload in rows:
                _noop(payload)
            conn.execute(ROOF_COMPLETE, {"ids": [r[0] for r in rows]}, prepare=True)
            done += len(rows)
            last = time.time()
    out.put((done, last))


async def _pgqueuer_queries(url: str, driver: str) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """PGQueuer's Queries over one connection of the chosen driver, and how to close it."""
    from pgqueuer.queries import Queries

    if driver == "asyncpg":
        import asyncpg

        conn = await asyncpg.connect(url)
        return Queries.from_asyncpg_connection(conn), conn.close
    aconn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return Queries.from_psycopg_connection(aconn), aconn.close


def _pgqueuer_worker(gate: Any, out: Any, url: str, driver: str) -> None:
    out.put(asyncio.run(_pgqueuer_drain(gate, url, driver)))


async def _pgqueuer_drain(gate: Any, url: str, driver: str) -> tuple[int, float]:
    from pgqueuer import QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    done = 0
    last = 0.0
    queries, close = await _pgqueuer_queries(url, driver)
    try:
        qm = QueueManager(queries)

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal done, last
            done += 1
            last = time.time()

        await asyncio.to_thread(_through, gate)
        await qm.run(batch_size=BATCH, mode=QueueExecutionMode.drain)
    finally:
        await close()
    return done, last


def _procrastinate_app(url: str, pool_size: int) -> tuple[Any, list[float]]:
    import procrastinate

    logger = logging.getLogger("procrastinate")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its warning about an app in __main__: tasks are found by name here
    try:
        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=pool_size)
        )
    finally:
        logger.setLevel(level)
    done = [0.0, 0.0]  # items, the time of the last one

    @app.task(name="noop")
    async def noop(item_id: str) -> None:
        done[0] += 1
        done[1] = time.time()

    return app, done


def _procrastinate_worker(gate: Any, out: Any, url: str) -> None:
    out.put(asyncio.run(_procrastinate_drain(gate, url)))


async def _procrastinate_drain(gate: Any, url: str) -> tuple[int, float]:
    app, done = _procrastinate_app(url, CONCURRENCY + 2)
    async with app.open_async():
        await app.check_connection_async()
        await asyncio.to_thread(_through, gate)
        await app.run_worker_async(concurrency=CONCURRENCY, wait=False, install_signal_handlers=False)
    return int(done[0]), done[1]


# --- the baselines: set up a fresh database, enqueue, drain, check every job finished ---


def _check(what: str, expected: int, got: int) -> None:
    if got != expected:
        raise RuntimeError(f"{what}: expected {expected:,}, got {got:,}")


def _one(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def drain_roofline(url: str, n: int, workers: int) -> Drain:
    items = payloads(n)
    with psycopg.connect(url) as conn:
        conn.execute(ROOF_SCHEMA)
        conn.commit()
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY jobs (payload) FROM STDIN") as copy:
            for item in items:
                copy.write_row((Jsonb(item),))
        conn.commit()
        enqueue_s = time.perf_counter() - t
        conn.execute("ANALYZE jobs")
        conn.commit()
    w = _run_workers(_roofline_worker, (url,), workers)
    _check("roofline jobs processed", n, w.done)
    _check("roofline jobs done", n, _one(url, "SELECT count(*) FROM jobs WHERE status = 'done'"))
    return Drain(workers, n, w.last_done - w.released, w.exited - w.spawned, enqueue_s)


PGQUEUER_SPAN = """
SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                        - min(created) FILTER (WHERE status = 'picked'))::float8
  FROM pgqueuer_log
"""


def drain_pgqueuer(url: str, n: int, workers: int, driver: str) -> Drain:
    async def setup() -> float:
        queries, close = await _pgqueuer_queries(url, driver)
        try:
            await queries.install()
            bodies = [json.dumps(p).encode() for p in payloads(n)]
            t = time.perf_counter()
            await queries.enqueue(["noop"] * n, list(bodies), [0] * n)
            return time.perf_counter() - t
        finally:
            await close()

    enqueue_s = asyncio.run(setup())
    w = _run_workers(_pgqueuer_worker, (url, driver), workers)
    _check("PGQueuer jobs processed", n, w.done)
    _check("PGQueuer jobs left in the queue", 0, _one(url, "SELECT count(*) FROM pgqueuer"))
    ok = _one(url, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    _check("PGQueuer jobs logged successful", n, ok)
    return Drain(workers, n, _one(url, PGQUEUER_SPAN), w.exited - w.spawned, enqueue_s)


PROCRASTINATE_SPAN = """
SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')
                        - min(at) FILTER (WHERE type = 'started'))::float8
  FROM procrastinate_events
"""


def drain_procrastinate(url: str, n: int, workers: int) -> Drain:
    async def setup() -> float:
        app, _ = _procrastinate_app(url, 2)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            kwargs = [{"item_id": p["id"]} for p in payloads(n)]
            t = time.perf_counter()
            await app.tasks["noop"].batch_defer_async(*kwargs)
            return time.perf_counter() - t

    enqueue_s = asyncio.run(setup())
    w = _run_workers(_procrastinate_worker, (url,), workers)
    _check("procrastinate jobs processed", n, w.done)
    ok = _one(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    _check("procrastinate jobs succeeded", n, ok)
    return Drain(workers, n, _one(url, PROCRASTINATE_SPAN), w.exited - w.spawned, enqueue_s)


# --- papayya's native engine ---


def papayya_missing() -> str | None:
    """Why the native engine cannot be measured in this tree, or None when it can."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.benchmarks.engine_agents import noop

    if not hasattr(noop, "submit"):
        return "the engine API is not in this tree yet (no Agent.submit())"
    help_ = subprocess.run(
        [sys.executable, "-m", "papayya", "worker", "--help"],
        cwd=ROOT,
        env={**os.environ, "PAPAYYA_PROGRESS": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if help_.returncode != 0:
        return "the engine API is not in this tree yet (no `papayya worker` command)"
    if "--burst" not in help_.stdout or "--concurrency" not in help_.stdout:
        return "the engine API is not in this tree yet (`papayya worker` lacks --burst or --concurrency)"
    return None


@contextlib.contextmanager
def papayya_store(server: str) -> Iterator[tuple[str, dict[str, str]]]:
    """papayya configured on a fresh database; yields its URL and the environment for worker processes."""
    from machine import throwaway_database

    import papayya
    from papayya.runtime import reset

    with throwaway_database(server) as url, tempfile.TemporaryDirectory(prefix="papayya-bench-") as home:
        env = {**os.environ, "PAPAYYA_DATABASE_URL": url, "PAPAYYA_PROGRESS": "0", "PAPAYYA_HOME": home}
        os.environ["PAPAYYA_DATABASE_URL"] = url
        os.environ["PAPAYYA_PROGRESS"] = "0"
        papayya.configure(database_url=url, progress=False, home=Path(home))
        try:
            papayya.tenants.add(TENANT)  # migrates the fresh database before anything is timed
            yield url, env
        finally:
            reset()


def _start_worker(env: dict[str, str], log: Any, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "papayya", "worker", AGENT, *options],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _peak_rss_kib(pid: int) -> int | None:
    """The process's peak RSS so far (Linux VmHWM), else its current RSS (psutil); None once it is gone.

    Not ``wait4``'s ru_maxrss: on Linux that also counts the parent's memory the child had before exec.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None  # a zombie: its memory is gone
    except FileNotFoundError:
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss // 1024)
    except Exception:
        return None


def _wait_all(
    procs: list[subprocess.Popen[bytes]], log: Any, finished: Callable[[], bool]
) -> tuple[float, list[int]]:
    """Wait for every worker to exit; the time the last one did and each one's peak RSS (KiB).

    ``finished`` says whether the run's items are all done: burst workers that are still there
    EXIT_GRACE seconds after that are killed and reported, rather than waited on for RUN_TIMEOUT.
    """
    peak = {p.pid: 0 for p in procs}
    deadline = time.monotonic() + RUN_TIMEOUT
    next_sample = next_check = 0.0
    done_at: float | None = None
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + 0.02
                for p in procs:
                    peak[p.pid] = max(peak[p.pid], _peak_rss_kib(p.pid) or 0)
            if done_at is None and now >= next_check:
                next_check = now + 0.5
                done_at = now if finished() else None
            if done_at is not None and now > done_at + EXIT_GRACE:
                raise TimeoutError(
                    f"the run's items were all done {EXIT_GRACE:.0f} s ago, but --burst workers have "
                    "not exited"
                )
            if now > deadline:
                raise TimeoutError(f"papayya workers still running after {RUN_TIMEOUT:.0f} s")
            time.sleep(0.002)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    end = time.time()
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed:
        log.seek(0)
        raise RuntimeError(f"a papayya worker exited with {failed}:\n{log.read().decode()[-3000:]}")
    return end, [peak[p.pid] for p in procs]


def _papayya_counts(url: str, run_id: Any) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM papayya.items WHERE run_id = %s GROUP BY 1", (run_id,)
        ).fetchall()
    return dict(rows)


def drain_papayya(server: str, n: int, workers: int) -> Drain:
    from tests.benchmarks.engine_agents import noop

    with papayya_store(server) as (url, env), tempfile.TemporaryFile() as log:
        items = payloads(n)
        t = time.perf_counter()
        run = noop.submit(items, tenant=TENANT)
        enqueue_s = time.perf_counter() - t
        spawned = time.time()
        procs = [
            _start_worker(env, log, "--concurrency", str(CONCURRENCY), "--burst") for _ in range(workers)
        ]
        end, peak = _wait_all(procs, log, lambda: _papayya_counts(url, run.run_id).get("succeeded") == n)
        counts = _papayya_counts(url, run.run_id)
        _check(f"papayya items succeeded ({counts})", n, counts.get("succeeded", 0))
        with psycopg.connect(url) as conn:
            span = conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 "
                "FROM papayya.attempts WHERE run_id = %s",
                (run.run_id,),
            ).fetchone()
        assert span is not None
        return Drain(workers, n, span[0], end - spawned, enqueue_s, peak)


def papayya_submit(server: str, n: int) -> dict[str, float]:
    from tests.benchmarks.engine_agents import noop

    with papayya_store(server) as (url, _):
        items = payloads(n)
        t = time.perf_counter()
        run = noop.submit(items, tenant=TENANT)
        seconds = time.perf_counter() - t
        counts = _papayya_counts(url, run.run_id)
        _check(f"papayya items recorded ({counts})", n, sum(counts.values()))
    return {"items": n, "seconds": seconds, "items_per_s": n / seconds}


def papayya_latency(server: str, samples: int, gap: float) -> dict[str, float]:
    """One idle worker; items submitted one at a time; submit() call to attempt start, on the DB clock."""
    from tests.benchmarks.engine_agents import noop

    with papayya_store(server) as (url, env), tempfile.TemporaryFile() as log:
        worker = _start_worker(env, log, "--concurrency", "4")
        try:
            with psycopg.connect(url, autocommit=True) as clock:
                warm = noop.submit([{"id": "warm-up"}], tenant=TENANT)  # the worker is up and polling
                _await_done(url, [warm.run_id], worker, log)
                time.sleep(0.5)  # and idle
                sent: list[tuple[Any, Any, float]] = []
                for i in range(samples):
                    row = clock.execute("SELECT clock_timestamp()").fetchone()
                    assert row is not None
                    t = time.perf_counter()
                    run = noop.submit([{"id": f"latency-{i}"}], tenant=TENANT)
                    sent.append((run.run_id, row[0], time.perf_counter() - t))
                    time.sleep(gap)
                _await_done(url, [s[0] for s in sent], worker, log)
                started = dict(
                    clock.execute(
                        "SELECT run_id, min(started_at) FROM papayya.attempts WHERE run_id = ANY(%s) "
                        "GROUP BY run_id",
                        ([s[0] for s in sent],),
                    ).fetchall()
                )
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    lat = sorted((started[run_id] - before).total_seconds() * 1000 for run_id, before, _ in sent)
    calls = sorted(s[2] * 1000 for s in sent)
    pct = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "samples": samples,
        "p50_ms": statistics.median(lat),
        "p99_ms": pct[98],
        "max_ms": lat[-1],
        "submit_call_p50_ms": statistics.median(calls),
    }


def _await_done(url: str, run_ids: list[Any], worker: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM papayya.items WHERE run_id = ANY(%s) AND status = 'succeeded'",
                (run_ids,),
            ).fetchone()
            assert row is not None
            if row[0] == len(run_ids):
                return
            if worker.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(
                    f"the idle worker did not run the items (exit {worker.returncode}):\n"
                    f"{log.read().decode()[-3000:]}"
                )
            time.sleep(0.05)


# --- the run ---


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _on_fresh_database(drain: Callable[..., Drain], **options: Any) -> Callable[[str, int, int], Drain]:
    """A baseline's drain, given the server: each call on a database of its own."""

    def run(server: str, n: int, workers: int) -> Drain:
        from machine import throwaway_database

        with throwaway_database(server) as url:
            return drain(url, n, workers, **options)

    return run


def measurable(plan: Plan, systems: dict[str, System]) -> dict[str, Callable[[str, int, int], Drain]]:
    """The drains to run; the other systems are marked skipped, with the reason."""
    drains: dict[str, Callable[[str, int, int], Drain]] = {
        "roofline": _on_fresh_database(drain_roofline),
        "pgqueuer": _on_fresh_database(drain_pgqueuer, driver=plan.pgqueuer_driver),
        "procrastinate": _on_fresh_database(drain_procrastinate),
        "papayya": drain_papayya,
    }
    needs = {"pgqueuer": ("pgqueuer", plan.pgqueuer_driver), "procrastinate": ("procrastinate",)}
    for key in list(drains):
        absent = [m for m in needs.get(key, ()) if importlib.util.find_spec(m) is None]
        if key not in plan.only:
            systems[key].skipped = "not asked for (--only)"
        elif absent:
            systems[key].skipped = f"{' and '.join(absent)} not installed (pip install {' '.join(absent)})"
        elif key == "papayya":
            systems[key].skipped = papayya_missing()
        if systems[key].skipped:
            del drains[key]
    return drains


def run_drains(plan: Plan, systems: dict[str, System]) -> None:
    """Every system's drains, taking turns (a load that comes and goes hits them all alike)."""
    drains = measurable(plan, systems)
    for _ in range(plan.repeat):
        for workers in plan.workers:
            for key, drain in list(drains.items()):
                try:
                    d = drain(plan.server, plan.items, workers)
                except Exception as exc:  # one system failing leaves the others' figures standing
                    traceback.print_exc()
                    systems[key].failed = str(exc).splitlines()[0]
                    systems[key].skipped = systems[key].failed
                    del drains[key]
                    continue
                systems[key].keep(d)
                print(
                    f"   ... {systems[key].label}, {workers} worker(s): {d.rate:,.0f} items/s "
                    f"({d.rate_total:,.0f} from process start)",
                    flush=True,
                )


def run_papayya(plan: Plan, systems: dict[str, System]) -> dict[str, Any]:
    """papayya's own figures: submit() throughput, idle latency, peak RSS by run size."""
    if systems["papayya"].skipped:
        return {"skipped": systems["papayya"].skipped}
    submit = papayya_submit(plan.server, plan.submit_items)
    print(f"   ... submit(): {submit['items_per_s']:,.0f} items/s", flush=True)
    latency = papayya_latency(plan.server, plan.latency_samples, plan.latency_gap)
    print(f"   ... latency p50 {latency['p50_ms']:.1f} ms", flush=True)
    rss = []
    for n in plan.rss_items:
        d = drain_papayya(plan.server, n, 1)
        rss.append({"items": n, "peak_rss_mib": d.peak_rss_kib[0] / 1024, "items_per_s": d.rate})
        print(f"   ... peak RSS over {n:,} items: {d.peak_rss_kib[0] / 1024:.1f} MiB", flush=True)
    return {"submit": submit, "latency": latency, "rss": rss}


def _cell(d: Drain | None) -> str:
    return "-" if d is None else f"{d.rate:,.0f} ({d.rate_total:,.0f})"


def report(plan: Plan, systems: dict[str, System], engine: dict[str, Any], header: list[str]) -> None:
    print("\n" + "\n".join(header))
    print(
        f"\n1. Draining {plan.items:,} no-op items, each system on a fresh database: items/s from the first "
        "claim to the last\n   completion (in brackets: from process start to the last worker done), "
        f"best of {plan.repeat}"
    )
    cols = "".join(f"{f'{w} worker' + ('s' if w > 1 else ''):>22}" for w in plan.workers)
    print(f"   {'':52} {'enqueue/s':>10}{cols}")
    for s in systems.values():
        if s.skipped:
            print(f"   {s.label:52} {'FAILED' if s.failed else 'skipped'}: {s.skipped}")
            continue
        cells = "".join(f"{_cell(s.drains.get(w)):>22}" for w in plan.workers)
        print(f"   {s.label:52} {s.enqueue_rate:>10,.0f}{cells}")
    ours = systems["papayya"]
    if not ours.skipped:
        for name, against in _ratios(systems, plan.workers).items():
            cells = "".join(f"{(f'{r:.2f}x' if r else '-'):>22}" for r in against)
            print(f"   {name:52} {'':>10}{cells}")
    if "skipped" in engine:
        why = "FAILED" if systems["papayya"].failed else "skipped"
        print(f"\n2. papayya native engine: {why}: {engine['skipped']}")
        return
    sub, lat = engine["submit"], engine["latency"]
    print("\n2. papayya native engine")
    print(
        f"   submit() of {sub['items']:,} items: {sub['items_per_s']:,.0f} items/s "
        f"({sub['seconds']:.2f} s; goal >= 50,000/s)"
    )
    print(
        f"   idle enqueue -> start, {lat['samples']} items one at a time: p50 {lat['p50_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms (goals <= 10 / <= 100 ms); "
        f"submit() call p50 {lat['submit_call_p50_ms']:.1f} ms"
    )
    print("   peak RSS of one worker (--burst) by run size:")
    for r in engine["rss"]:
        print(
            f"     {r['items']:>10,} items: {r['peak_rss_mib']:7.1f} MiB  ({r['items_per_s']:,.0f} items/s)"
        )


def _ratios(systems: dict[str, System], workers: tuple[int, ...]) -> dict[str, list[float | None]]:
    ours = systems["papayya"].drains
    faster: list[float | None] = []
    roof: list[float | None] = []
    for w in workers:
        rivals = [systems[k].drains[w].rate for k in ("pgqueuer", "procrastinate") if w in systems[k].drains]
        faster.append(ours[w].rate / max(rivals) if w in ours and rivals else None)
        roof.append(
            ours[w].rate / systems["roofline"].drains[w].rate
            if w in systems["roofline"].drains and w in ours
            else None
        )
    return {"papayya / faster of PGQueuer, procrastinate": faster, "papayya / raw SQL roofline": roof}


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The native engine beside PostgreSQL queues (see the module docstring)."
    )
    parser.add_argument("--items", type=int, help="items per drain (default 20,000; 5,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small runs: a first look in about a minute")
    parser.add_argument("--big", action="store_true", help="submit() and worker RSS over 1,000,000 items too")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many drains per cell")
    parser.add_argument("--workers", default=None, help="worker process counts (default 1,2,4)")
    parser.add_argument(
        "--only",
        default="roofline,pgqueuer,procrastinate,papayya",
        help="which systems to measure (comma-separated)",
    )
    parser.add_argument("--server", default=os.environ.get("BENCH_SERVER_URL"), help="PostgreSQL server URL")
    parser.add_argument(
        "--pgqueuer-driver",
        choices=("asyncpg", "psycopg"),
        default="asyncpg" if importlib.util.find_spec("asyncpg") else "psycopg",
        help="PGQueuer's connection driver (default asyncpg, its usual one, when installed)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()

    from machine import SERVER_URL, machine_line, server_line

    server = args.server or SERVER_URL
    plan = Plan(
        items=args.items or (5_000 if args.quick else 20_000),
        workers=tuple(int(w) for w in (args.workers or ("1,4" if args.quick else "1,2,4")).split(",")),
        submit_items=1_000_000 if args.big else (20_000 if args.quick else 100_000),
        rss_items=(2_000, 10_000) if args.quick else (10_000, 100_000, *((1_000_000,) if args.big else ())),
        latency_samples=50 if args.quick else 200,
        latency_gap=0.02,
        repeat=args.repeat,
        server=server,
        only=tuple(args.only.split(",")),
        pgqueuer_driver=args.pgqueuer_driver,
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = [
        machine_line(server_line(server)),
        f"papayya {_version('papayya')}, pgqueuer {_version('pgqueuer')} (driver {plan.pgqueuer_driver} "
        f"{_version(plan.pgqueuer_driver)}), procrastinate {_version('procrastinate')}, psycopg "
        f"{_version('psycopg')}; {time.strftime('%Y-%m-%d %H:%M')}, load average at start {load}",
    ]
    print(header[0])
    systems = {
        "roofline": System("roofline", f"raw SQL roofline (SKIP LOCKED, batch {BATCH})"),
        "pgqueuer": System(
            "pgqueuer", f"PGQueuer {_version('pgqueuer')} ({plan.pgqueuer_driver}, drain, batch {BATCH})"
        ),
        "procrastinate": System(
            "procrastinate", f"procrastinate {_version('procrastinate')} (wait=False, conc. {CONCURRENCY})"
        ),
        "papayya": System("papayya", f"papayya native engine (--burst, conc. {CONCURRENCY})"),
    }
    run_drains(plan, systems)
    try:
        engine = run_papayya(plan, systems)
    except Exception as exc:  # the drains above still get reported
        traceback.print_exc()
        systems["papayya"].failed = str(exc).splitlines()[0]
        engine = {"skipped": systems["papayya"].failed}
    report(plan, systems, engine, header)
    if args.json:
        document = {
            "header": header,
            "plan": asdict(plan),
            "drain": {
                s.key: {"skipped": s.skipped}
                if s.skipped
                else {
                    "label": s.label,
                    "enqueue_items_per_s": s.enqueue_rate,
                    "workers": {
                        w: {**asdict(d), "items_per_s": d.rate, "items_per_s_from_start": d.rate_total}
                        for w, d in s.drains.items()
                    },
                }
                for s in systems.values()
            },
            "ratios": _ratios(systems, plan.workers) if not systems["papayya"].skipped else None,
            "papayya": engine,
        }
        Path(args.json).write_text(json.dumps(document, indent=2, default=str) + "\n")
    if any(s.failed for s in systems.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
