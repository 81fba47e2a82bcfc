"""The native engine beside the PostgreSQL queues it is measured against, run on demand:

    .venv/bin/python tests/benchmarks/bench_engine.py [--seconds S] [--repeat R] [--quick] [--big]
                                                      [--items N] [--smoke] [--json PATH]

Every drain gets a fresh database on one PostgreSQL server (``--server``, default ``BENCH_SERVER_URL`` or
postgresql://postgres@127.0.0.1:5432/postgres; its role must be allowed to create databases and, for the
WAL figures to start alike, to run CHECKPOINT), with the server's durability as configured
(``synchronous_commit`` on: a commit waits for its WAL flush). In one run:

1. Draining items with 1, 2 and 4 worker processes. Every system gets the same items (a 1 kB JSON
   input each) and its handler makes the same 200 B JSON result (``engine_agents``):

   - raw SQL roofline: one jobs table (input, status, lease, result; loaded with COPY, then ANALYZE)
     drained the way a good PostgreSQL queue drains: claim 32 in one ``UPDATE ... WHERE id IN (SELECT
     ... FOR UPDATE SKIP LOCKED) RETURNING``, complete the 32 (status and result) in one ``UPDATE``
     over ``unnest``, each statement its own durable commit;
   - lean queue: the same data kept the least a queue that keeps it can write: the 1 kB input written
     once at enqueue in a table of its own, a narrow state row (id, status, lease) claimed 32 at a time
     and completed in one update, with the 200 B result inserted beside it in the same statement;
   - PGQueuer: its ``QueueManager`` in drain mode at batch 32, 128 and 256 (each its own row; the
     ratios use its best batch for each number of workers), a no-op async entrypoint that makes the
     result, over asyncpg (its usual driver) when installed, else psycopg (``--pgqueuer-driver``);
   - procrastinate: its worker with ``wait=False`` (concurrency 16) and a task that makes the result;
   - papayya: ``noop.submit(items)``, then ``engine.Worker(..., concurrency=16, burst=True)`` (what
     ``papayya worker --burst`` runs) in each worker process; the result is the item's output.

   PGQueuer and procrastinate keep no task result, so theirs is made and dropped: they write less
   than the others, which favours them.

   Every worker process starts, connects and waits idle at a gate; the benchmark releases them all
   at once. A drain runs from the release to the last durable completion, read from each system's
   own rows on the database clock (PGQueuer's log, procrastinate's events, papayya's attempts; the
   SQL workers time their last commit; the server is on this machine, so the clocks are one). In
   brackets: from the release to the last worker done. Without ``--items``, each cell is sized from
   a probe drain (not counted) so that it lasts ``--seconds`` (default 5); rounds (``--repeat``,
   default 3) take turns between systems, so a passing load hits them all; each cell reports the
   median and the min-max of its rounds.

   WAL bytes per item: ``pg_current_wal_insert_lsn()`` just before the release and after the last
   worker is done, divided by the items. A CHECKPOINT runs before each enqueue, so every system
   starts its drain with its pages already dirty since the last checkpoint. The counter is the whole
   server's: another database busy on the same server adds to it (run on a quiet server), and a
   checkpoint during a drain adds full-page images (such cells are marked ``*``).

2. papayya alone: ``submit()`` throughput, idle enqueue-to-start latency (an idle worker, one item at
   a time, both ends on the database clock) and a ``papayya worker --burst`` process's peak RSS over runs
   of growing size.

``--smoke`` runs everything once at a tiny size (seconds; figures meaningless): it only shows that each
part still runs, as CI does. The papayya part is skipped, saying why, while the engine's API
(``Agent.submit``, ``papayya worker --burst``) is not in this tree; the baselines still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import math
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
if str(ROOT) not in sys.path:  # worker processes import the workload and the agent from here
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.engine_agents import INPUT_BYTES, RESULT_BYTES, item_input, item_result  # noqa: E402

AGENT = "tests.benchmarks.engine_agents:noop"
BATCH = 32  # items per claim, for the roofline and the lean queue
PGQUEUER_BATCHES = (32, 128, 256)
CONCURRENCY = 16  # items in flight per worker process, for procrastinate and papayya
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 900.0
EXIT_GRACE = 30.0  # seconds a --burst worker gets to exit once its run is done
TENANT = "bench"

# The roofline: the least a durable PostgreSQL queue can do per batch, on one table.
ROOF_SCHEMA = """
CREATE TABLE jobs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status  text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL,
    lease   timestamptz,
    result  jsonb
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
UPDATE jobs SET status = 'done', lease = NULL, result = done.result
  FROM unnest(%(ids)s::bigint[], %(results)s::jsonb[]) AS done(id, result)
 WHERE jobs.id = done.id
"""

# The lean queue: the same data, the input apart from a narrow state row, the result beside it.
LEAN_SCHEMA = """
CREATE TABLE lean_input (id bigint PRIMARY KEY, input jsonb NOT NULL);
CREATE TABLE lean_state (id bigint PRIMARY KEY, status smallint NOT NULL DEFAULT 0, lease timestamptz);
CREATE INDEX lean_state_queued_idx ON lean_state (id) WHERE status = 0;
CREATE TABLE lean_result (id bigint PRIMARY KEY, result jsonb NOT NULL);
"""
LEAN_CLAIM = """
WITH claimed AS (
    UPDATE lean_state SET status = 1, lease = now() + interval '60 seconds'
     WHERE id IN (SELECT id FROM lean_state WHERE status = 0 ORDER BY id LIMIT %(batch)s
                  FOR UPDATE SKIP LOCKED)
    RETURNING id)
SELECT claimed.id, lean_input.input FROM claimed JOIN lean_input USING (id)
"""
LEAN_COMPLETE = """
WITH done AS (
    UPDATE lean_state SET status = 2, lease = NULL
      FROM unnest(%(ids)s::bigint[]) AS d(id)
     WHERE lean_state.id = d.id AND lean_state.status = 1
    RETURNING lean_state.id)
INSERT INTO lean_result (id, result)
SELECT d.id, d.result FROM unnest(%(ids)s::bigint[], %(results)s::jsonb[]) AS d(id, result)
  JOIN done USING (id)
"""


@dataclass
class Plan:
    """How big each measurement is."""

    items: int | None  # items per drain; None: sized from a probe drain to last ``seconds``
    seconds: float
    probe_items: int
    max_items: int
    workers: tuple[int, ...]
    submit_items: int
    rss_items: tuple[int, ...]
    latency_samples: int
    latency_gap: float
    repeat: int
    server: str
    only: tuple[str, ...]
    pgqueuer_driver: str
    pgqueuer_batches: tuple[int, ...]
    smoke: bool


@dataclass
class Drain:
    """One drain: ``items`` items by ``workers`` worker processes released together."""

    workers: int
    items: int
    drain_s: float  # release to the last durable completion
    done_s: float  # release to the last worker done
    enqueue_s: float  # taking the items in
    wal_bytes: int  # WAL written by the whole server from the release to the last worker done
    checkpoints: int  # checkpoints the server made meanwhile (each adds full-page images)
    peak_rss_kib: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.drain_s

    @property
    def rate_done(self) -> float:
        return self.items / self.done_s

    @property
    def enqueue_rate(self) -> float:
        return self.items / self.enqueue_s

    @property
    def wal_per_item(self) -> float:
        return self.wal_bytes / self.items


@dataclass
class System:
    """A system's drains: every round for each number of workers."""

    key: str
    label: str
    rounds: dict[int, list[Drain]] = field(default_factory=dict)
    skipped: str | None = None
    failed: str | None = None

    def add(self, d: Drain) -> None:
        self.rounds.setdefault(d.workers, []).append(d)

    def rate(self, workers: int) -> float | None:
        """The median rate of the rounds with ``workers`` workers."""
        got = self.rounds.get(workers)
        return statistics.median(d.rate for d in got) if got else None

    def wal(self, workers: int) -> float | None:
        got = self.rounds.get(workers)
        return statistics.median(d.wal_per_item for d in got) if got else None

    @property
    def enqueue_rate(self) -> float:
        return statistics.median(d.enqueue_rate for ds in self.rounds.values() for d in ds)


def payloads(n: int, prefix: str = "item") -> list[dict[str, Any]]:
    return [item_input(i, prefix) for i in range(n)]


# --- worker processes (spawned; each connects, then waits at the gate for the others) ---


@dataclass
class Workers:
    """What a set of worker processes did, with times on this machine's clock."""

    done: int  # items they processed
    released: float  # all connected and idle, let go together
    last_done: float  # the last one's last completion, by its own clock
    finished: float  # the last one reported done
    wal_bytes: int
    checkpoints: int


def _wal_mark(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    """The server's WAL insert position and how many checkpoints it has made."""
    row = conn.execute(
        "SELECT pg_current_wal_insert_lsn()::text, current_setting('server_version_num')::int"
    ).fetchone()
    assert row is not None
    view = (
        "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
        if row[1] >= 170000
        else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
    )
    count = conn.execute(view).fetchone()
    assert count is not None
    return row[0], int(count[0])


def _checkpoint(url: str) -> None:
    """Start from a checkpoint, so no system's drain runs into one its enqueue made due; a role that
    may not run CHECKPOINT skips it (the WAL figures are then noisier)."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def _run_workers(target: Callable[..., None], args: tuple[Any, ...], n: int, url: str) -> Workers:
    """Start ``n`` processes running ``target(gate, out, *args)``; release them together once all wait
    idle at the gate; wait for all. Each puts (items, time of its last completion) in ``out``."""
    ctx = mp.get_context("spawn")
    gate = (ctx.Queue(), ctx.Event())
    out: Any = ctx.Queue()
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
        with psycopg.connect(url, autocommit=True) as clock:
            collect(gate[0], STARTUP_TIMEOUT)
            lsn0, checkpoints0 = _wal_mark(clock)
            released = time.time()
            gate[1].set()
            results = collect(out, RUN_TIMEOUT)
            finished = time.time()
            lsn1, checkpoints1 = _wal_mark(clock)
            row = clock.execute(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", (lsn1, lsn0)
            ).fetchone()
            assert row is not None
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return Workers(
        sum(r[0] for r in results),
        released,
        max(r[1] for r in results),
        finished,
        int(row[0]),
        checkpoints1 - checkpoints0,
    )


def _through(gate: tuple[Any, Any]) -> None:
    """In a worker process: say it is ready, then wait for the others."""
    gate[0].put(os.getpid())
    if not gate[1].wait(STARTUP_TIMEOUT):
        raise TimeoutError("the benchmark never released its workers")


def _sql_worker(gate: Any, out: Any, url: str, claim: str, complete: str) -> None:
    """The roofline's and the lean queue's worker: claim a batch, make each result, complete the batch."""
    done = 0
    last = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        _through(gate)
        while True:
            rows = conn.execute(claim, {"batch": BATCH}, prepare=True).fetchall()
            if not rows:
                break
            results = [Jsonb(item_result(payload["id"])) for _, payload in rows]
            conn.execute(complete, {"ids": [r[0] for r in rows], "results": results}, prepare=True)
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


def _pgqueuer_worker(gate: Any, out: Any, url: str, driver: str, batch: int) -> None:
    out.put(asyncio.run(_pgqueuer_drain(gate, url, driver, batch)))


async def _pgqueuer_drain(gate: Any, url: str, driver: str, batch: int) -> tuple[int, float]:
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
            assert job.payload is not None
            item_result(json.loads(job.payload)["id"])  # made and dropped: PGQueuer keeps no result
            done += 1
            last = time.time()

        await asyncio.to_thread(_through, gate)
        await qm.run(batch_size=batch, mode=QueueExecutionMode.drain)
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
    async def noop(item: dict[str, Any]) -> None:
        item_result(item["id"])  # made and dropped: procrastinate keeps no result
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


def _papayya_worker(gate: Any, out: Any, url: str, home: str) -> None:
    """What ``papayya worker AGENT --burst --concurrency 16`` runs, warmed up before the gate."""
    os.environ.update(PAPAYYA_DATABASE_URL=url, PAPAYYA_PROGRESS="0", PAPAYYA_HOME=home)
    import papayya
    from papayya import engine
    from papayya.runtime import get_runtime
    from tests.benchmarks.engine_agents import noop

    papayya.configure(database_url=url, progress=False, home=Path(home))
    rt = get_runtime()
    rt.store.schema_version()  # connected and migrated
    rt.store.work_ready([noop.name])
    worker = engine.Worker(rt, [noop], concurrency=CONCURRENCY, burst=True)
    _through(gate)
    stats = worker.run()
    out.put((stats.concluded, time.time()))


# --- each system on a fresh database: enqueue, drain, check every item finished ---


def _check(what: str, expected: int, got: int) -> None:
    if got != expected:
        raise RuntimeError(f"{what}: expected {expected:,}, got {got:,}")


def _one(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _drain(w: Workers, n: int, workers: int, enqueue_s: float, last: float | None = None) -> Drain:
    """The drain ``w`` did; ``last`` is the last durable completion (epoch), else the workers' own."""
    end = w.last_done if last is None else last
    return Drain(workers, n, end - w.released, w.finished - w.released, enqueue_s, w.wal_bytes, w.checkpoints)


def drain_roofline(url: str, n: int, workers: int) -> Drain:
    with psycopg.connect(url) as conn:
        conn.execute(ROOF_SCHEMA)
        conn.commit()
        _checkpoint(url)
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY jobs (payload) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((Jsonb(item_input(i)),))
        conn.commit()
        enqueue_s = time.perf_counter() - t
        conn.execute("ANALYZE jobs")
        conn.commit()
    w = _run_workers(_sql_worker, (url, ROOF_CLAIM, ROOF_COMPLETE), workers, url)
    _check("roofline jobs processed", n, w.done)
    done = _one(url, "SELECT count(*) FROM jobs WHERE status = 'done' AND result IS NOT NULL")
    _check("roofline jobs done with a result", n, done)
    return _drain(w, n, workers, enqueue_s)


def drain_lean(url: str, n: int, workers: int) -> Drain:
    with psycopg.connect(url) as conn:
        conn.execute(LEAN_SCHEMA)
        conn.commit()
        _checkpoint(url)
        t = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY lean_input (id, input) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i + 1, Jsonb(item_input(i))))
            with cur.copy("COPY lean_state (id) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i + 1,))
        conn.commit()
        enqueue_s = time.perf_counter() - t
        conn.execute("ANALYZE")
        conn.commit()
    w = _run_workers(_sql_worker, (url, LEAN_CLAIM, LEAN_COMPLETE), workers, url)
    _check("lean queue items processed", n, w.done)
    _check("lean queue items done", n, _one(url, "SELECT count(*) FROM lean_state WHERE status = 2"))
    _check("lean queue results", n, _one(url, "SELECT count(*) FROM lean_result"))
    return _drain(w, n, workers, enqueue_s)


PGQUEUER_END = """
SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))::float8 FROM pgqueuer_log
"""


def drain_pgqueuer(url: str, n: int, workers: int, driver: str, batch: int) -> Drain:
    async def setup() -> float:
        queries, close = await _pgqueuer_queries(url, driver)
        try:
            await queries.install()
            bodies = [json.dumps(p).encode() for p in payloads(n)]
            _checkpoint(url)
            t = time.perf_counter()
            await queries.enqueue(["noop"] * n, list(bodies), [0] * n)
            return time.perf_counter() - t
        finally:
            await close()

    enqueue_s = asyncio.run(setup())
    w = _run_workers(_pgqueuer_worker, (url, driver, batch), workers, url)
    _check("PGQueuer jobs processed", n, w.done)
    _check("PGQueuer jobs left in the queue", 0, _one(url, "SELECT count(*) FROM pgqueuer"))
    ok = _one(url, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    _check("PGQueuer jobs logged successful", n, ok)
    return _drain(w, n, workers, enqueue_s, _one(url, PGQUEUER_END))


PROCRASTINATE_END = """
SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))::float8 FROM procrastinate_events
"""


def drain_procrastinate(url: str, n: int, workers: int) -> Drain:
    async def setup() -> float:
        app, _ = _procrastinate_app(url, 2)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            kwargs = [{"item": p} for p in payloads(n)]
            _checkpoint(url)
            t = time.perf_counter()
            await app.tasks["noop"].batch_defer_async(*kwargs)
            return time.perf_counter() - t

    enqueue_s = asyncio.run(setup())
    w = _run_workers(_procrastinate_worker, (url,), workers, url)
    _check("procrastinate jobs processed", n, w.done)
    ok = _one(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    _check("procrastinate jobs succeeded", n, ok)
    return _drain(w, n, workers, enqueue_s, _one(url, PROCRASTINATE_END))


# --- papayya's native engine ---


def papayya_missing() -> str | None:
    """Why the native engine cannot be measured in this tree, or None when it can."""
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


def burst_papayya(server: str, n: int, workers: int) -> Drain:
    """``papayya worker --burst`` processes started on a full queue: their peak RSS (and a rate)."""
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
        return Drain(workers, n, span[0], end - spawned, enqueue_s, 0, 0, peak)


PAPAYYA_END = """
SELECT extract(epoch FROM max(finished_at))::float8 FROM papayya.attempts WHERE run_id = %s
"""


def drain_papayya(server: str, n: int, workers: int) -> Drain:
    from tests.benchmarks.engine_agents import noop

    with papayya_store(server) as (url, env):
        items = payloads(n)
        _checkpoint(url)
        t = time.perf_counter()
        run = noop.submit(items, tenant=TENANT)
        enqueue_s = time.perf_counter() - t
        w = _run_workers(_papayya_worker, (url, env["PAPAYYA_HOME"]), workers, url)
        counts = _papayya_counts(url, run.run_id)
        _check(f"papayya items succeeded ({counts})", n, counts.get("succeeded", 0))
        _check("papayya attempts concluded by the workers", n, w.done)
        return _drain(w, n, workers, enqueue_s, _one(url, PAPAYYA_END, (run.run_id,)))


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


DrainFn = Callable[[str, int, int], Drain]


def _on_fresh_database(drain: Callable[..., Drain], **options: Any) -> DrainFn:
    """A baseline's drain, given the server: each call on a database of its own."""

    def run(server: str, n: int, workers: int) -> Drain:
        from machine import throwaway_database

        with throwaway_database(server) as url:
            return drain(url, n, workers, **options)

    return run


def make_systems(plan: Plan) -> dict[str, System]:
    driver = f"{plan.pgqueuer_driver} {_version(plan.pgqueuer_driver)}"
    systems = [
        System("roofline", f"raw SQL roofline (SKIP LOCKED, batch {BATCH})"),
        System("lean", f"lean queue (input apart, narrow state, batch {BATCH})"),
        *(
            System(f"pgqueuer-{b}", f"PGQueuer {_version('pgqueuer')} ({driver}, drain, batch {b})")
            for b in plan.pgqueuer_batches
        ),
        System(
            "procrastinate", f"procrastinate {_version('procrastinate')} (wait=False, conc. {CONCURRENCY})"
        ),
        System("papayya", f"papayya native engine (burst, conc. {CONCURRENCY})"),
    ]
    return {s.key: s for s in systems}


def measurable(plan: Plan, systems: dict[str, System]) -> dict[str, DrainFn]:
    """The drains to run; the other systems are marked skipped, with the reason."""
    drains: dict[str, DrainFn] = {
        "roofline": _on_fresh_database(drain_roofline),
        "lean": _on_fresh_database(drain_lean),
        **{
            f"pgqueuer-{b}": _on_fresh_database(drain_pgqueuer, driver=plan.pgqueuer_driver, batch=b)
            for b in plan.pgqueuer_batches
        },
        "procrastinate": _on_fresh_database(drain_procrastinate),
        "papayya": drain_papayya,
    }
    needs = {"pgqueuer": ("pgqueuer", plan.pgqueuer_driver), "procrastinate": ("procrastinate",)}
    for key in list(drains):
        family = key.split("-")[0]
        absent = [m for m in needs.get(family, ()) if importlib.util.find_spec(m) is None]
        if family not in plan.only and key not in plan.only:
            systems[key].skipped = "not asked for (--only)"
        elif absent:
            systems[key].skipped = f"{' and '.join(absent)} not installed (pip install -e '.[bench]')"
        elif key == "papayya":
            systems[key].skipped = papayya_missing()
        if systems[key].skipped:
            del drains[key]
    return drains


def _resized(plan: Plan, d: Drain) -> int:
    """Items for a drain of ``plan.seconds`` at the rate ``d`` ran."""
    return min(max(math.ceil(d.rate * plan.seconds * 1.2), 100), plan.max_items)


def _size(plan: Plan, drain: DrainFn, label: str, workers: int) -> int:
    """Items for a drain of about ``plan.seconds``: from a probe drain at ``plan.probe_items``."""
    if plan.items:
        return plan.items
    probe = drain(plan.server, plan.probe_items, workers)
    n = _resized(plan, probe)
    print(f"   ... {label}, {workers} worker(s): probe {probe.rate:,.0f} items/s -> {n:,} items", flush=True)
    return n


def _sized_drain(plan: Plan, drain: DrainFn, label: str, workers: int, sizes: dict[int, int]) -> Drain:
    """A drain at this cell's size; a drain far shorter than ``plan.seconds`` (a probe's rate is not a
    long drain's) is not counted: the cell is sized again from it and drained again, twice at most."""
    if workers not in sizes:
        sizes[workers] = _size(plan, drain, label, workers)
    for _ in range(2):
        d = drain(plan.server, sizes[workers], workers)
        if plan.items or d.drain_s >= 0.8 * plan.seconds or sizes[workers] >= plan.max_items:
            return d
        sizes[workers] = _resized(plan, d)
        print(
            f"   ... {label}, {workers} worker(s): {d.drain_s:.2f} s is short; not counted, "
            f"-> {sizes[workers]:,} items",
            flush=True,
        )
    return drain(plan.server, sizes[workers], workers)


def run_drains(plan: Plan, systems: dict[str, System]) -> None:
    """Every system's drains, taking turns (a load that comes and goes hits them all alike)."""
    drains = measurable(plan, systems)
    sizes: dict[str, dict[int, int]] = {key: {} for key in drains}
    for r in range(plan.repeat):
        for workers in plan.workers:
            for key, drain in list(drains.items()):
                s = systems[key]
                try:
                    d = _sized_drain(plan, drain, s.label, workers, sizes[key])
                except Exception as exc:  # one system failing leaves the others' figures standing
                    traceback.print_exc()
                    s.failed = s.skipped = str(exc).splitlines()[0]
                    del drains[key]
                    continue
                s.add(d)
                short = " (shorter than --seconds)" if not plan.items and d.drain_s < plan.seconds else ""
                print(
                    f"   ... round {r + 1}, {s.label}, {workers} worker(s): {d.items:,} items in "
                    f"{d.drain_s:.2f} s{short}: {d.rate:,.0f} items/s, {d.wal_per_item:,.0f} WAL B/item"
                    f"{' (checkpoint during the drain)' if d.checkpoints else ''}",
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
        d = burst_papayya(plan.server, n, 1)
        rss.append({"items": n, "peak_rss_mib": d.peak_rss_kib[0] / 1024, "items_per_s": d.rate})
        print(f"   ... peak RSS over {n:,} items: {d.peak_rss_kib[0] / 1024:.1f} MiB", flush=True)
    return {"submit": submit, "latency": latency, "rss": rss}


def best_pgqueuer(systems: dict[str, System], workers: int) -> System | None:
    """PGQueuer at its best batch for ``workers`` workers (the highest median rate)."""
    measured = [s for k, s in systems.items() if k.startswith("pgqueuer-") and s.rate(workers)]
    return max(measured, key=lambda s: s.rate(workers) or 0.0, default=None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(systems: dict[str, System], workers: tuple[int, ...]) -> dict[str, list[float | None]]:
    ours, roof, lean = systems["papayya"], systems["roofline"], systems["lean"]
    out: dict[str, list[float | None]] = {
        "papayya / PGQueuer at its best batch": [],
        "papayya / procrastinate": [],
        "papayya / raw SQL roofline": [],
        "PGQueuer at its best batch / raw SQL roofline": [],
        "papayya WAL per item / lean queue's": [],
    }
    for w in workers:
        pgq = best_pgqueuer(systems, w)
        pgq_rate = pgq.rate(w) if pgq else None
        ratios_w = (
            _ratio(ours.rate(w), pgq_rate),
            _ratio(ours.rate(w), systems["procrastinate"].rate(w)),
            _ratio(ours.rate(w), roof.rate(w)),
            _ratio(pgq_rate, roof.rate(w)),
            _ratio(ours.wal(w), lean.wal(w)),
        )
        for name, value in zip(out, ratios_w, strict=True):
            out[name].append(value)
    return out


def _rate_cell(ds: list[Drain] | None) -> str:
    if not ds:
        return "-"
    rates = [d.rate for d in ds]
    return f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"


def _wal_cell(ds: list[Drain] | None) -> str:
    if not ds:
        return "-"
    mark = "*" if any(d.checkpoints for d in ds) else ""
    return f"{statistics.median(d.wal_per_item for d in ds):,.0f}{mark}"


def _size_cell(ds: list[Drain] | None) -> str:
    if not ds:
        return "-"
    items = sorted({d.items for d in ds})
    counts = f"{items[0]:,}" if len(items) == 1 else f"{items[0]:,}-{items[-1]:,}"
    return f"{counts} in {min(d.drain_s for d in ds):.1f}-{max(d.drain_s for d in ds):.1f} s"


def report(plan: Plan, systems: dict[str, System], engine: dict[str, Any], header: list[str]) -> None:
    print("\n" + "\n".join(header))
    rounds = f"median [min-max] of {plan.repeat} round{'s' if plan.repeat > 1 else ''}"
    print(
        f"\n1. Draining items ({INPUT_BYTES:,} B input, {RESULT_BYTES} B result each), workers released "
        f"together,\n   each drain on a fresh database: items/s from the release to the last durable "
        f"completion, {rounds}"
    )
    cols = [f"{w} worker{'s' if w > 1 else ''}" for w in plan.workers]
    width = 30

    def table(title: str, cell: Callable[[list[Drain] | None], str], enqueue: bool = False) -> None:
        print(
            f"\n   {title:58}" + ("  enqueue/s" if enqueue else "") + "".join(f"{c:>{width}}" for c in cols)
        )
        for s in systems.values():
            if s.skipped:
                print(f"   {s.label:58}  {'FAILED' if s.failed else 'skipped'}: {s.skipped}")
                continue
            cells = "".join(f"{cell(s.rounds.get(w)):>{width}}" for w in plan.workers)
            print(f"   {s.label:58}" + (f"{s.enqueue_rate:>11,.0f}" if enqueue else "") + cells)

    table("items/s", _rate_cell, enqueue=True)
    table("WAL bytes per item while draining (median; * a checkpoint)", _wal_cell)
    table("items per drain, and the drains' seconds", _size_cell)
    print()
    for name, values in ratios(systems, plan.workers).items():
        cells = "".join(f"{(f'{v:.2f}x' if v else '-'):>{width}}" for v in values)
        print(f"   {name:58}{cells}")
    best = [best_pgqueuer(systems, w) for w in plan.workers]
    print(
        "   PGQueuer's best batch: "
        + ", ".join(
            f"{w} worker(s): {s.key.split('-')[1] if s else '-'}"
            for w, s in zip(plan.workers, best, strict=True)
        )
    )
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
    print("   peak RSS of one `papayya worker --burst` process by run size:")
    for r in engine["rss"]:
        print(
            f"     {r['items']:>10,} items: {r['peak_rss_mib']:7.1f} MiB  ({r['items_per_s']:,.0f} items/s)"
        )


def document(
    plan: Plan, systems: dict[str, System], engine: dict[str, Any], header: list[str]
) -> dict[str, Any]:
    """The figures as JSON: every round of every cell."""
    return {
        "header": header,
        "plan": asdict(plan),
        "drain": {
            s.key: {"skipped": s.skipped}
            if s.skipped
            else {
                "label": s.label,
                "enqueue_items_per_s": s.enqueue_rate,
                "workers": {
                    w: {
                        "median_items_per_s": s.rate(w),
                        "median_wal_bytes_per_item": s.wal(w),
                        "rounds": [
                            {**asdict(d), "items_per_s": d.rate, "wal_bytes_per_item": d.wal_per_item}
                            for d in ds
                        ],
                    }
                    for w, ds in s.rounds.items()
                },
            }
            for s in systems.values()
        },
        "ratios": ratios(systems, plan.workers),
        "papayya": engine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The native engine beside PostgreSQL queues (see the module docstring)."
    )
    parser.add_argument("--items", type=int, help="items per drain (default: sized to last --seconds)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each drain lasts (default 5)")
    parser.add_argument("--probe-items", type=int, default=2_000, help="items of the probe that sizes a cell")
    parser.add_argument("--max-items", type=int, default=500_000, help="at most this many items per drain")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each cell reports median, min and max")
    parser.add_argument("--workers", default=None, help="worker process counts (default 1,2,4)")
    parser.add_argument(
        "--quick", action="store_true", help="a first look: 2-second drains, 1 round, 1 and 4 workers"
    )
    parser.add_argument("--big", action="store_true", help="submit() and worker RSS over 1,000,000 items too")
    parser.add_argument(
        "--smoke", action="store_true", help="every part once at a tiny size (CI): figures meaningless"
    )
    parser.add_argument(
        "--only",
        default="roofline,lean,pgqueuer,procrastinate,papayya",
        help="which systems to measure (comma-separated; pgqueuer-128 names one batch)",
    )
    parser.add_argument("--pgqueuer-batches", default=",".join(map(str, PGQUEUER_BATCHES)))
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
    quick, smoke = args.quick, args.smoke
    plan = Plan(
        items=200 if smoke and not args.items else args.items,
        seconds=2.0 if quick else args.seconds,
        probe_items=args.probe_items,
        max_items=args.max_items,
        workers=tuple(
            int(w) for w in (args.workers or ("1" if smoke else "1,4" if quick else "1,2,4")).split(",")
        ),
        submit_items=1_000_000 if args.big else (500 if smoke else 20_000 if quick else 100_000),
        rss_items=(
            (300,)
            if smoke
            else (2_000, 10_000)
            if quick
            else (10_000, 100_000, *((1_000_000,) if args.big else ()))
        ),
        latency_samples=3 if smoke else 50 if quick else 200,
        latency_gap=0.02,
        repeat=1 if smoke or quick else args.repeat,
        server=server,
        only=tuple(args.only.split(",")),
        pgqueuer_driver=args.pgqueuer_driver,
        pgqueuer_batches=(32,) if smoke else tuple(int(b) for b in args.pgqueuer_batches.split(",")),
        smoke=smoke,
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = [
        machine_line(server_line(server)),
        f"papayya {_version('papayya')}, pgqueuer {_version('pgqueuer')} (driver {plan.pgqueuer_driver} "
        f"{_version(plan.pgqueuer_driver)}), procrastinate {_version('procrastinate')}, psycopg "
        f"{_version('psycopg')}; {time.strftime('%Y-%m-%d %H:%M')}, load average at start {load}"
        + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else ""),
    ]
    print(header[0])
    systems = make_systems(plan)
    run_drains(plan, systems)
    try:
        engine = run_papayya(plan, systems)
    except Exception as exc:  # the drains above still get reported
        traceback.print_exc()
        systems["papayya"].failed = str(exc).splitlines()[0]
        engine = {"skipped": systems["papayya"].failed}
    report(plan, systems, engine, header)
    if args.json:
        Path(args.json).write_text(
            json.dumps(document(plan, systems, engine, header), indent=2, default=str) + "\n"
        )
    if any(s.failed for s in systems.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
