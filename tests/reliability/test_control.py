"""One control plane in the store: what papayya reports about a run and its money stays true for
long-lived worker processes while people pause, resume and lower budgets, and while a worker is frozen
past its lease.

The workers are real ``papayya worker`` processes (the fixtures of test_engine_workers.py) serving
the agents below, which pay the test's FakeProvider through the real ``openai`` client; the checks
read the store and the provider's own bill, not what papayya says about itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import papayya
from papayya import control
from papayya.budgets import Budgets
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider
from tests.reliability.test_engine_workers import (  # noqa: F401  (fixtures)
    Workers,
    env,
    query,
    statuses,
    submit,
    terminal,
    wait_for,
    workers,
)

CONTROL_AGENTS = textwrap.dedent(
    '''
    """Agents for the control-plane tests: one or two paid calls with a pause between them."""

    import os
    import time

    import openai

    import papayya
    import papayya_openai

    SUFFIX = os.environ["WORKLOAD_SUFFIX"]
    SLEEP = float(os.environ.get("WORKLOAD_SLEEP", "0"))
    client = papayya_openai.instrument(
        openai.OpenAI(base_url=os.environ["WORKLOAD_FAKE_URL"], api_key="test", max_retries=0)
    )


    def ask(text):
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}], max_tokens=20
        )


    @papayya.agent(name=f"once-{SUFFIX}")
    def once(item):
        ask(item.id)
        time.sleep(SLEEP)
        return {"ok": True}


    @papayya.agent(name=f"late-{SUFFIX}")
    def late(item):
        time.sleep(SLEEP)  # most of an item's time is before its call: few calls are ever in flight
        ask(item.id)
        return {"ok": True}


    @papayya.agent(name=f"twice-{SUFFIX}")
    def twice(item):
        ask(item.id + " first")
        time.sleep(SLEEP)
        ask(item.id + " second")
        return {"ok": True}
    '''
)


@pytest.fixture
def agents(workers: Workers, tmp_path: Path) -> Workers:  # noqa: F811
    (tmp_path / "control_agents.py").write_text(CONTROL_AGENTS)
    return workers


def start_worker(group: Workers, agent: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """``papayya worker control_agents:AGENT ARGS`` in the group (killed when the test ends)."""
    n = len(group.procs)
    log = group.cwd / f"worker-{n}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "papayya", "worker", f"control_agents:{agent}", *args],
            cwd=group.cwd,
            env={**group.env, **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    group.procs.append(proc)
    group.logs[proc.pid] = log
    return proc


def attempts(url: str, run_id: uuid.UUID) -> dict[str, int]:
    rows = query(url, "SELECT status, count(*) FROM papayya.attempts WHERE run_id = %s GROUP BY 1", (run_id,))
    return {s: int(n) for s, n in rows}


def run_status(url: str, run_id: uuid.UUID) -> str:
    ((status,),) = query(url, "SELECT status FROM papayya.runs WHERE run_id = %s", (run_id,))
    return str(status)


def money(url: str, run_id: uuid.UUID) -> tuple[Decimal, Decimal]:
    """(Σ items.cost_usd, Σ ledger) of the run."""
    ((items,),) = query(
        url, "SELECT coalesce(sum(cost_usd), 0) FROM papayya.items WHERE run_id = %s", (run_id,)
    )
    ((ledger,),) = query(
        url, "SELECT coalesce(sum(cost_usd), 0) FROM papayya.llm_calls WHERE run_id = %s", (run_id,)
    )
    return Decimal(items), Decimal(ledger)


def unrecorded(url: str, run_id: uuid.UUID, fake: FakeProvider) -> int:
    """Calls in flight now: billed by the provider, not yet in the ledger."""
    ((recorded,),) = query(url, "SELECT count(*) FROM papayya.llm_calls WHERE run_id = %s", (run_id,))
    return fake.count - int(recorded)


@pytest.mark.slow
def test_a_long_lived_worker_runs_a_run_resumed_after_it_saw_the_pause(
    rt: Runtime, database_url: str, tenant: str, fake: FakeProvider, agents: Workers
) -> None:
    total = 40
    # Given one worker that has been serving the agent, and a run of items longer than its
    # once-a-second check, so the worker sees the pause while it holds items of the run
    run_id = submit(f"once-{tenant}", [{"id": f"i{n:03d}"} for n in range(total)], tenant)
    start_worker(agents, "once", "-c", "4", WORKLOAD_SLEEP="1.2", PAPAYYA_LEASE_SECONDS="5")
    wait_for("4 items done", lambda: statuses(database_url, run_id).get("succeeded", 0) >= 4)
    # When a person pauses the run, and the worker has seen it (nothing of the run runs any more)
    control.pause(run_id)
    wait_for("nothing running", lambda: statuses(database_url, run_id).get("running", 0) == 0)
    time.sleep(1.5)  # the worker idles with the run paused: the state its caches used to keep forever
    # and the run is resumed for its workers (the dashboard's button, POST /api/runs/RUN/resume)
    control.requeue_run(run_id)
    # Then the same worker finishes the run, without giving items back in a loop
    wait_for("every item done", terminal(database_url, run_id, total), timeout=120)
    counts = attempts(database_url, run_id)
    assert sum(counts.values()) <= 2 * total, counts
    wait_for("run completed", lambda: run_status(database_url, run_id) == "completed", timeout=10)
    assert fake.count == len({b.idempotency_key for b in fake.bill}) == total  # nothing paid twice


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["tenant", "run", "pause"])
def test_a_budget_lowered_below_spend_stops_new_spend_at_the_calls_in_flight(
    rt: Runtime, database_url: str, tenant: str, fake: FakeProvider, agents: Workers, scope: str
) -> None:
    # Given a tenant with room, and two workers of 16 threads spending it (each item works a while,
    # then pays once: the leased chunks of budget are what stands between a call and the accounts)
    papayya.tenants.add(tenant)
    papayya.tenants.set_budget(tenant, "100")
    run_id = submit(f"late-{tenant}", [{"id": f"i{n:04d}"} for n in range(3000)], tenant)
    for _ in range(2):
        start_worker(agents, "late", "-c", "16", WORKLOAD_SLEEP="0.05", PAPAYYA_LEASE_SECONDS="5")
    wait_for("spending", lambda: fake.count >= 100)
    # When the tenant's budget, or the run's own, is lowered below what was spent (the run's from
    # the command line, as a person does it), or the run is paused,
    if scope == "tenant":
        papayya.tenants.set_budget(tenant, "0.000001")
    elif scope == "pause":  # or the run is paused by a person
        control.pause(run_id)
    else:
        subprocess.run(
            [sys.executable, "-m", "papayya", "runs", "set", str(run_id), "--budget", "0.000001"],
            env=agents.env,
            capture_output=True,
            timeout=60,
            check=True,
        )
    # then from the moment the command returns, new calls are at most those already in flight
    # (billed, not yet recorded), plus the one or two a thread had reserved and not yet sent.
    billed_at_return = fake.count
    in_flight = unrecorded(database_url, run_id, fake)
    wait_for("nothing running", lambda: statuses(database_url, run_id).get("running", 0) == 0)
    time.sleep(2 * Budgets.CHUNK_SECONDS)
    late = fake.count - billed_at_return
    assert late <= in_flight + 2, (late, in_flight)
    assert run_status(database_url, run_id) == "paused"
    items, ledger = money(database_url, run_id)
    assert items == ledger == fake.billed_usd


@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_pays_for_nothing_it_no_longer_owns(
    rt: Runtime, database_url: str, tenant: str, fake: FakeProvider, agents: Workers
) -> None:
    total = 64
    # Given a worker in the middle of items that pay twice with a pause in between (1 s leases)
    run_id = submit(f"twice-{tenant}", [{"id": f"i{n:03d}"} for n in range(total)], tenant)
    frozen = start_worker(agents, "twice", "-c", "8", WORKLOAD_SLEEP="0.5")
    wait_for("8 items running", lambda: statuses(database_url, run_id).get("running", 0) >= 8)
    wait_for("first calls paid", lambda: fake.count >= 8)
    # When it is frozen (SIGSTOP) well past its lease, another worker takes its items over,
    frozen.send_signal(signal.SIGSTOP)
    time.sleep(0.5)  # a request already sent reaches the provider (and is billed) meanwhile
    in_flight = unrecorded(database_url, run_id, fake)  # billed, not recorded: what it may still record
    start_worker(agents, "twice", "-c", "8", WORKLOAD_SLEEP="0.05")
    wait_for(
        "every attempt of the frozen worker was reaped",
        lambda: (
            not query(
                database_url,
                "SELECT 1 FROM papayya.attempts WHERE run_id = %s AND status = 'running' AND worker LIKE %s",
                (run_id, f"%:{frozen.pid}"),
            )
        ),
    )
    # and then it wakes up (SIGCONT)
    frozen.send_signal(signal.SIGCONT)
    wait_for("every item done", terminal(database_url, run_id, total), timeout=120)
    time.sleep(1)
    # (the other worker did take items over: their frozen attempts were reaped as stalled)
    assert attempts(database_url, run_id).get("stalled", 0) > 0
    # Then the woken worker paid for nothing it no longer owned: the only calls recorded by an
    # attempt whose lease had moved on are those that were on the wire when it froze,
    ((lease_lost,),) = query(
        database_url, "SELECT count(*) FROM papayya.llm_calls WHERE run_id = %s AND lease_lost", (run_id,)
    )
    assert lease_lost <= in_flight, (lease_lost, in_flight)
    keys = [b.idempotency_key for b in fake.bill]
    assert len(keys) - len(set(keys)) <= in_flight  # and only those can have been paid twice;
    # every call the provider billed is in the ledger, attributed to its item to the last digit.
    ((ledger_calls,),) = query(
        database_url, "SELECT count(*) FROM papayya.llm_calls WHERE run_id = %s", (run_id,)
    )
    assert ledger_calls == len(keys)
    items, ledger = money(database_url, run_id)
    assert items == ledger == fake.billed_usd


def test_two_finishers_concluding_a_runs_last_items_at_once_complete_it(rt: Runtime, tenant: str) -> None:
    # A forced interleaving: the run's last two items concluded by two workers at the same instant,
    # fifty times over. Exactly the later of them completes the run, every time, with nobody waiting.
    from papayya import execute
    from papayya.engine.worker import begin_attempts
    from papayya.execute import ItemRef

    def _noop(item: object) -> None:
        """Never called: the test concludes attempts by hand."""

    agent = papayya.agent(name=f"finishers-{tenant}")(_noop)
    for _ in range(50):
        handle = agent.submit([{"id": "a"}, {"id": "b"}], tenant=tenant)
        rows = rt.store.items_claim(
            agents=[agent.name], run_ids=[handle.run_id], limit=2, worker="test", lease_seconds=30
        )
        assert len(rows) == 2
        ctxs = [
            execute.context(
                rt,
                agent,
                ItemRef(row["item_id"], row["key"], row["run_id"], row["tenant_id"]),
                attempt_id=row["attempt_id"],
                number=row["attempts"],
                token=row["lease_token"],
                input=row["input"],
                journal={},
                failures=0,
                from_journal=False,
                backend="native",
                price_overrides={},
            )
            for row in rows
        ]
        assert begin_attempts(rt, ctxs) == {c.item_id for c in ctxs}
        finishes = []
        for ctx in ctxs:
            judged = execute.judge(ctx, output={"ok": True})
            assert judged is not None
            finishes.append(judged.finish)
        barrier = threading.Barrier(2)

        def finish(f: object, barrier: threading.Barrier) -> None:
            barrier.wait()
            rt.store.attempts_finish([f])  # type: ignore[list-item]

        threads = [threading.Thread(target=finish, args=(f, barrier)) for f in finishes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert rt.store.run_get(handle.run_id, tenant)["status"] == "completed"


def test_an_intake_run_stays_open_during_its_day_and_completes_after_it(rt: Runtime, tenant: str) -> None:
    from papayya import execute, intake

    def _noop(item: object) -> None:
        """Never called: the test concludes the attempt by hand."""

    agent = papayya.agent(name=f"intake-{tenant}")(_noop)
    # Given a message of the team's own code adopted into today's intake run, and concluded
    ref = intake.adopt(rt, agent, tenant_id=tenant, key="doc-1", input={"text": "a"}, backend="celery")
    ctx = execute.begin(rt, agent, ref, backend="celery", price_overrides={})
    assert ctx is not None
    execute.conclude(ctx, output={"ok": True})
    # Then the run stays open for the rest of its day (more messages may come),
    assert rt.store.run_get(ref.run_id, tenant)["status"] == "running"
    assert rt.store.runs_complete([ref.run_id]) == []
    # and once its day is over, with nothing open, it completes
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.runs SET created_at = created_at - interval '1 day' WHERE run_id = %s",
            (ref.run_id,),
        )
    assert rt.store.runs_complete([ref.run_id]) == [ref.run_id]
    assert rt.store.run_get(ref.run_id, tenant)["status"] == "completed"


def test_the_reaper_re_drives_a_stalled_item_once_not_every_lease(
    rt: Runtime, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papayya import reaper

    class Queue:
        """A backend whose workers live elsewhere: it records what the reaper re-drives."""

        name = "celery"

        def __init__(self) -> None:
            self.sent: list[str] = []

        def redrive(self, rt: Runtime, refs: list[object]) -> None:
            self.sent += [ref.key for ref in refs]  # type: ignore[attr-defined]

    papayya.configure(lease_seconds=0.2)  # a lease period the test can wait out
    rt = get_runtime()
    queue = Queue()
    monkeypatch.setattr(rt, "backend", queue)
    papayya.tenants.add(tenant)
    run_id, item_id = uuid.uuid4(), uuid.uuid4()
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name=f"redrive-{tenant}",
        name=None,
        backend="celery",
        items=[(item_id, "lost", "{}")],
        max_attempts=1,
        options={},
    )
    # Given an item whose worker was lost (the reaper marked it stalled for its backend)
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute("UPDATE papayya.items SET status = 'stalled' WHERE item_id = %s", (item_id,))
    # When the reaper sweeps once a lease and more, for four leases
    for _ in range(4):
        reaper.sweep(rt)
        time.sleep(0.25)
    # Then it published the item again once, not once per lease period
    assert queue.sent == ["lost"]


def _paused_run_with_one_item(rt: Runtime, tenant: str, backend: str) -> tuple[uuid.UUID, uuid.UUID]:
    papayya.tenants.add(tenant)
    run_id, item_id = uuid.uuid4(), uuid.uuid4()
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name=f"park-{tenant}",
        name=None,
        backend=backend,
        items=[(item_id, "k", "{}")],
        max_attempts=1,
        options={},
    )
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute("UPDATE papayya.runs SET status = 'paused' WHERE run_id = %s", (run_id,))
    return run_id, item_id


def test_a_message_refused_while_its_run_is_resumed_is_not_parked_against_the_lifted_pause(
    rt: Runtime, tenant: str
) -> None:
    from papayya import execute
    from papayya.execute import ItemRef
    from papayya.store.queries import q

    run_id, item_id = _paused_run_with_one_item(rt, tenant, "celery")
    ref = ItemRef(item_id, "k", run_id, tenant)
    found: list[str] = []
    # Given a resume in flight (its transaction has made the run running and not committed yet)
    with psycopg.connect(rt.store.url) as resuming:
        resuming.execute(q("run_resume"), {"run_id": run_id, "tenant_id": tenant})
        # When a worker's message for the item is refused at that moment (its claim saw the pause)
        worker = threading.Thread(target=lambda: found.append(execute.refusal(rt, ref)), daemon=True)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive(), "the park did not wait for the resume that holds the run row"
        resuming.commit()
    worker.join(10)
    # Then the park saw the resume: the item is not parked as paused in a running run
    with psycopg.connect(rt.store.url) as conn:
        row = conn.execute(
            "SELECT i.status, r.status FROM papayya.items i JOIN papayya.runs r USING (run_id) "
            "WHERE i.item_id = %s",
            (item_id,),
        ).fetchone()
    assert row == ("queued", "running")
    assert found == ["running"]  # queued now: the message looks again (it is claimable)


def test_the_reaper_sends_back_to_work_an_item_left_paused_in_a_running_run(rt: Runtime, tenant: str) -> None:
    from papayya import reaper

    run_id, item_id = _paused_run_with_one_item(rt, tenant, "celery")
    # Given an item left paused while its run runs (a park that raced a resume on an older papayya)
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute("UPDATE papayya.runs SET status = 'running' WHERE run_id = %s", (run_id,))
        conn.execute(
            "UPDATE papayya.items SET status = 'paused', updated_at = now() - interval '1 hour' "
            "WHERE item_id = %s",
            (item_id,),
        )
    # When the reaper scans
    reaper._unpark(rt)
    # Then the item is stalled for its backend's reaper to re-drive, not left paused forever
    with psycopg.connect(rt.store.url) as conn:
        (status,) = conn.execute("SELECT status FROM papayya.items WHERE item_id = %s", (item_id,)).fetchone()
    assert status == "stalled"


def test_first_messages_of_a_day_racing_to_create_its_intake_run_are_all_recorded(
    rt: Runtime, tenant: str
) -> None:
    from papayya import intake

    def _noop(item: object) -> None:
        """Never called: only the intake is under test."""

    agent = papayya.agent(name=f"intake-race-{tenant}")(_noop)
    papayya.tenants.add(tenant)

    def race(backend: str, n: int = 8) -> tuple[set[uuid.UUID], int, list[BaseException]]:
        """``n`` first messages of the day for one (tenant, agent, backend), adopted at one moment."""
        barrier = threading.Barrier(n)
        refs: list[intake.ItemRef] = []
        errors: list[BaseException] = []

        def deliver(k: int) -> None:
            barrier.wait(10)
            try:
                refs.append(
                    intake.adopt(rt, agent, tenant_id=tenant, key=f"m{k}", input={"k": k}, backend=backend)
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=(k,), daemon=True) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return {r.run_id for r in refs}, len(refs), errors

    # Given rounds of 8 first messages of a day (each round a new backend name, so a new run), each
    # creating today's run unless another did first: its primary key and its (run, tenant) key race
    for round_ in range(40):
        runs, adopted, errors = race(f"race{round_}")
        # Then every message is an item of that one run, and none failed
        assert errors == []
        assert (len(runs), adopted) == (1, 8)
