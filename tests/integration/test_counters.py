"""The per-run counters (migration 0009) say what a count of the rows says, on every path that changes
items or the ledger: a run with retries, degradations, failures and LLM calls; a replay;
concurrent writers on many connections, some rolling back; a delete; the reaper's compaction; and a
store migrated from version 8 with data already in it.

``runs show``, ``runs list`` and the dashboard read these counters instead of scanning a run's items, so
a counter that drifts is a wrong number shown to a person: each test compares every counter of its
tenant with ``count(*)`` over the rows (the same SQL the reliability checker's I4 runs after kills).
"""

from __future__ import annotations

import random
import threading
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import papayya
from papayya import agent, migrate, run
from papayya.result import RunResult
from papayya.runtime import Runtime
from tests.migration.test_migrations import empty_db  # noqa: F401  (a fixture)
from tests.reliability.checker import COUNTERS_OFF_SQL


def counters_off(database_url: str, tenant: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(COUNTERS_OFF_SQL, {"t": tenant}).fetchone()
    assert row is not None
    return int(row[0])


def fake_llm(*, prompt: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 10 + len(prompt), "completion_tokens": 5},
        "choices": [{"finish_reason": "stop", "message": {"content": prompt}}],
    }


ATTEMPTS: dict[str, int] = {}


@agent(name="counters-enrich", retries=1)
def enrich(item: papayya.Item) -> Any:
    """Items ending in 1 fail once then succeed, in 5 fail, in 3 are degraded; two LLM calls each."""
    n = int(item.id.rsplit("-", 1)[1])
    run.llm("first", provider="openai", model="gpt-4o-mini", max_tokens=5)(fake_llm, prompt=item.id)
    run.llm("second", provider="openai", model="gpt-4o", max_tokens=5)(fake_llm, prompt=item.id * 2)
    ATTEMPTS[item.id] = ATTEMPTS.get(item.id, 0) + 1
    if n % 10 == 1 and ATTEMPTS[item.id] == 1:
        raise TimeoutError("the provider took too long")
    if n % 10 == 5:
        raise ValueError(f"cannot parse item {item.id!r}")
    if n % 10 == 3:
        run.degrade("low_confidence", path="summary", message="unsure")
    return {"id": item.id}


def test_a_run_and_its_replay_keep_every_counter_equal_to_a_count_of_its_rows(
    rt: Runtime, tenant: str, database_url: str
) -> None:
    # Given a 30-item run with retries, degradations, failures and two priced models
    ATTEMPTS.clear()
    result = enrich.map([{"id": f"c-{n:03d}"} for n in range(30)], tenant=tenant)
    assert result.counts == {"succeeded": 24, "degraded": 3, "failed": 3}
    assert counters_off(database_url, tenant) == 0

    # Then what runs show reads from the counters is what the rows say
    loaded = RunResult.load(result.run_id, tenant)
    assert loaded.counts == {"succeeded": 24, "degraded": 3, "failed": 3}
    with psycopg.connect(database_url) as conn:
        calls, cost = conn.execute(
            "SELECT count(*), sum(cost_usd) FROM papayya.llm_calls WHERE run_id = %s", (result.run_id,)
        ).fetchone() or (0, None)
    assert (loaded.llm_calls, loaded.cost_usd) == (calls, cost)
    assert calls == 2 * 30  # (a retry's calls are answered from the journal, not paid again)

    # When the failed slice is replayed
    replayed = enrich.replay(run=result.run_id, outcome="failed")

    # Then every counter still equals a count of its rows, the replay run's too
    assert counters_off(database_url, tenant) == 0
    assert RunResult.load(replayed.run_id, tenant).counts == {"succeeded": 0, "degraded": 0, "failed": 3}


def test_concurrent_writers_on_many_connections_and_rollbacks_leave_the_counters_true(
    rt: Runtime, tenant: str, database_url: str
) -> None:
    # Given a run of 400 queued items that no worker runs (the test moves its items itself)
    run_id = uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO papayya.tenants (tenant_id) VALUES (%s)", (tenant,))
        conn.execute(
            "INSERT INTO papayya.runs (run_id, tenant_id, agent_name, backend) VALUES (%s, %s, 'w', 'test')",
            (run_id, tenant),
        )
        ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO papayya.items (item_id, run_id, tenant_id, key, input) "
                "SELECT gen_random_uuid(), %s, %s, 'w-' || g, '{}' FROM generate_series(1, 400) g "
                "RETURNING item_id",
                (run_id, tenant),
            )
        ]
    statuses = ["queued", "running", "paused", "stalled", "succeeded", "degraded", "failed", "cancelled"]

    # When eight connections change statuses in transactions of 1 to 40 items, a third rolled back
    # (and those the database picks as deadlock victims), while others insert and delete ledger rows
    deadlocks = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(database_url, autocommit=True) as conn:
            # Victims are wanted, waiting a second for each is not (the test runs as a superuser)
            conn.execute("SET deadlock_timeout = '20ms'")
            for _ in range(60):
                try:
                    with conn.transaction(force_rollback=rng.random() < 0.33):
                        for _ in range(rng.randint(1, 3)):
                            chosen = rng.sample(ids, rng.randint(1, 40))
                            conn.execute(
                                "UPDATE papayya.items SET status = %s WHERE item_id = ANY(%s)",
                                (rng.choice(statuses), chosen),
                            )
                except psycopg.errors.DeadlockDetected:
                    deadlocks.append(seed)

    def ledger(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(database_url) as conn:
            attempt = uuid.uuid4()
            item = ids[0]
            conn.execute(
                "INSERT INTO papayya.attempts (attempt_id, item_id, run_id, tenant_id, number, backend,"
                " worker, lease_token) VALUES (%s, %s, %s, %s, %s, 'test', 'test', 1)",
                (attempt, item, run_id, tenant, 1000 + seed),
            )
            conn.execute("SET deadlock_timeout = '20ms'")
            for _ in range(40):
                try:
                    ledger_round(conn, rng, attempt, item)
                except psycopg.errors.DeadlockDetected:  # a victim against a writer: wanted too
                    deadlocks.append(seed)

    def ledger_round(
        conn: psycopg.Connection[Any], rng: random.Random, attempt: uuid.UUID, item: Any
    ) -> None:
        with conn.transaction(force_rollback=rng.random() < 0.33):
            cost = None if rng.random() < 0.2 else Decimal(rng.randint(1, 10**6)) / 10**9
            conn.execute(
                "INSERT INTO papayya.llm_calls (tenant_id, run_id, item_id, attempt_id, provider,"
                " model, input_tokens, output_tokens, cost_usd, price_source) "
                "SELECT %s, %s, %s, %s, 'openai', m, %s, %s, %s, 'catalog' "
                "FROM unnest(%s::text[]) AS m",
                (
                    tenant,
                    run_id,
                    item,
                    attempt,
                    rng.randint(0, 9),
                    rng.randint(0, 9),
                    cost,
                    rng.sample(["gpt-4o", "gpt-4o-mini", "o3"], rng.randint(1, 3)),
                ),
            )
            if rng.random() < 0.3:
                conn.execute(
                    "DELETE FROM papayya.llm_calls WHERE call_id IN"
                    " (SELECT call_id FROM papayya.llm_calls WHERE run_id = %s"
                    " ORDER BY random() LIMIT 2)",
                    (run_id,),
                )

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(8)]
    threads += [threading.Thread(target=ledger, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then every counter equals a count of the rows
    assert counters_off(database_url, tenant) == 0

    # and when the reaper folds the shards of the connections that are gone, nothing changes but the
    # number of counter rows
    with psycopg.connect(database_url, autocommit=True) as conn:
        shards = conn.execute(
            "SELECT count(DISTINCT shard) FROM papayya.run_item_counts WHERE run_id = %s", (run_id,)
        ).fetchone()
        assert shards is not None
        assert shards[0] > 1
        conn.execute("SELECT papayya.counts_compact()")
        left = conn.execute(
            "SELECT array_agg(DISTINCT shard) FROM papayya.run_item_counts WHERE run_id = %s", (run_id,)
        ).fetchone()
        assert left is not None
        # (the test's own connections are gone; only shard 0 and live backends' shards remain)
        live = {r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity")}
        assert set(left[0]) <= live | {0}
    assert counters_off(database_url, tenant) == 0


def test_deleting_a_runs_items_and_ledger_takes_its_counters_to_nothing(
    rt: Runtime, tenant: str, database_url: str
) -> None:
    ATTEMPTS.clear()
    result = enrich.map([{"id": f"x-{n:03d}"} for n in range(6)], tenant=tenant)
    with psycopg.connect(database_url) as conn:
        for table in ("llm_calls", "steps", "attempts", "items"):
            conn.execute(
                f"DELETE FROM papayya.{table} WHERE item_id IN "
                "(SELECT item_id FROM papayya.items WHERE run_id = %s)",
                (result.run_id,),
            )
    assert counters_off(database_url, tenant) == 0
    assert RunResult.load(result.run_id, tenant).counts == {"succeeded": 0, "degraded": 0, "failed": 0}


def test_migrating_a_store_with_data_counts_what_is_already_there(
    empty_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a store at version 8 holding two runs, items in four statuses and priced and unpriced calls
    shipped = migrate.available()
    monkeypatch.setattr(migrate, "available", lambda: [m for m in shipped if m.version <= 8])
    with psycopg.connect(empty_db) as conn:
        migrate.migrate(conn)
        conn.execute("INSERT INTO papayya.tenants (tenant_id) VALUES ('old')")
        for run_n in range(2):
            run_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO papayya.runs (run_id, tenant_id, agent_name, backend)"
                " VALUES (%s, 'old', 'a', 'local')",
                (run_id,),
            )
            for n, status in enumerate(
                ["queued", "succeeded", "succeeded", "failed", "degraded"][: 3 + run_n * 2]
            ):
                item_id = uuid.uuid4()
                conn.execute(
                    "INSERT INTO papayya.items (item_id, run_id, tenant_id, key, input, status)"
                    " VALUES (%s, %s, 'old', %s, '{}', %s)",
                    (item_id, run_id, f"k{n}", status),
                )
                attempt = uuid.uuid4()
                conn.execute(
                    "INSERT INTO papayya.attempts (attempt_id, item_id, run_id, tenant_id, number, backend,"
                    " worker, lease_token) VALUES (%s, %s, %s, 'old', 1, 'local', 'w', 1)",
                    (attempt, item_id, run_id),
                )
                conn.execute(
                    "INSERT INTO papayya.llm_calls (tenant_id, run_id, item_id, attempt_id, provider, model,"
                    " input_tokens, output_tokens, cost_usd, price_source)"
                    " VALUES ('old', %s, %s, %s, 'openai', 'gpt-4o', 7, 3, %s, %s)",
                    (
                        run_id,
                        item_id,
                        attempt,
                        None if n == 1 else Decimal("0.001"),
                        "unknown" if n == 1 else "catalog",
                    ),
                )
        conn.commit()

    # When it migrates to this papayya's schema
    monkeypatch.setattr(migrate, "available", lambda: shipped)
    with psycopg.connect(empty_db) as conn:
        assert [m.version for m in migrate.migrate(conn)] == [m.version for m in shipped if m.version > 8]

    # Then its counters hold what was already there
    assert counters_off(empty_db, "old") == 0
