"""A fresh database migrates to exactly the expected catalog; migrating again is a no-op."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from papayya import MigrationError, migrate

EXPECTED_TABLES = {
    "attempts": {
        "attempt_id",
        "item_id",
        "run_id",
        "tenant_id",
        "number",
        "backend",
        "worker",
        "lease_token",
        "status",
        "reasons",
        "output",
        "error",
        "fingerprint",
        "cost_usd",
        "cost_unknown",
        "started_at",
        "finished_at",
    },
    "items": {
        "item_id",
        "run_id",
        "tenant_id",
        "key",
        "input",
        "status",
        "attempts",
        "max_attempts",
        "reasons",
        "output",
        "error",
        "fingerprint",
        "cost_usd",
        "cost_unknown",
        "lease_token",
        "lease_expires_at",
        "replayed_from",
        "created_at",
        "updated_at",
        "finished_at",
        "cluster_label",
        "available_at",
        "stalls",
    },
    "llm_calls": {
        "call_id",
        "tenant_id",
        "run_id",
        "item_id",
        "attempt_id",
        "step_key",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "stop_reason",
        "latency_ms",
        "cost_usd",
        "price_source",
        "idempotency_key",
        "created_at",
        "reserved_usd",
        "lease_token",
        "lease_lost",
        "mode",
        "live_cost_usd",
    },
    "llm_batches": {
        "batch_id",
        "provider",
        "endpoint",
        "model",
        "base_url",
        "provider_batch_id",
        "status",
        "rows",
        "provider_status",
        "error",
        "leased_by",
        "lease_expires_at",
        "next_poll_at",
        "polls",
        "created_at",
        "submitted_at",
        "ended_at",
    },
    "batch_requests": {
        "custom_id",
        "item_id",
        "tenant_id",
        "run_id",
        "attempt_id",
        "step_key",
        "request_hash",
        "provider",
        "endpoint",
        "model",
        "base_url",
        "body",
        "charged_usd",
        "accounts",
        "batch_id",
        "status",
        "error",
        "created_at",
        "finished_at",
    },
    "price_overrides": {
        "tenant_id",
        "provider",
        "model",
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "updated_at",
    },
    "runs": {
        "run_id",
        "tenant_id",
        "agent_name",
        "name",
        "backend",
        "status",
        "replayed_from",
        "total_items",
        "options",
        "created_at",
        "finished_at",
        "budget_usd",
        "paused_reason",
        "entrypoint",
        "from_journal",
        "replay_slice",
        "priority",
        "gen",
    },
    "schema_version": {"version", "name", "checksum", "applied_at"},
    "steps": {
        "item_id",
        "step_key",
        "tenant_id",
        "attempt_id",
        "kind",
        "result",
        "created_at",
        "request_hash",
    },
    "tenants": {
        "tenant_id",
        "config",
        "created_at",
        "updated_at",
        "budget_usd",
        "budget_period",
        "max_running",
        "gen",
    },
    "budget_accounts": {
        "scope",
        "owner",
        "period",
        "tenant_id",
        "period_start",
        "spent_usd",
        "reserved_usd",
        "updated_at",
    },
    "rate_limits": {
        "provider",
        "model",
        "tenant_id",
        "requests_per_minute",
        "tokens_per_minute",
        "requests_left",
        "tokens_left",
        "refilled_at",
        "created_at",
        "updated_at",
    },
    "rate_closures": {"provider", "model", "closed_until", "updated_at"},
    "item_inputs": {"item_id", "tenant_id", "input"},
    "tenant_secrets": {"tenant_id", "name", "key_id", "nonce", "ciphertext", "created_at", "updated_at"},
    "run_item_counts": {"run_id", "tenant_id", "shard", "status", "n"},
    "tenant_roles": {"role_name", "tenant_id", "created_at"},
    "run_call_counts": {
        "run_id",
        "tenant_id",
        "shard",
        "provider",
        "model",
        "calls",
        "unpriced_calls",
        "cost_usd",
        "input_tokens",
        "output_tokens",
    },
}


@pytest.fixture
def empty_db(database_url: str) -> Iterator[str]:
    """A brand-new empty database on the same server as the session's."""
    name = f"papayya_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v is not None})
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _catalog(conn: psycopg.Connection) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'papayya'"
    ).fetchall()
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set()).add(column)
    return tables


def test_fresh_migrate_gives_the_expected_catalog(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        assert migrate.current_version(conn) == 0
        conn.rollback()
        applied = migrate.migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.available()]
        assert _catalog(conn) == EXPECTED_TABLES
        assert migrate.current_version(conn) == migrate.available()[-1].version
        conn.rollback()
        assert migrate.migrate(conn) == []  # idempotent


def test_status_constraints_mirror_the_enums(empty_db: str) -> None:
    from papayya.models import ItemStatus, RunStatus

    with psycopg.connect(empty_db) as conn:
        migrate.migrate(conn)
        checks = dict(
            conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'c' AND conname LIKE '%status%' AND connamespace = 'papayya'::regnamespace"
            ).fetchall()
        )
    assert all(f"'{s.value}'" in checks["papayya.items"] for s in ItemStatus)
    assert all(f"'{s.value}'" in checks["papayya.runs"] for s in RunStatus)


def test_concurrent_migrations_apply_once(empty_db: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_db) as conn:
                results.append(len(migrate.migrate(conn)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(migrate.available())]


def test_an_edited_applied_migration_is_refused(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        migrate.migrate(conn)
        conn.execute("UPDATE papayya.schema_version SET checksum = 'edited' WHERE version = 1")
        conn.commit()
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate.migrate(conn)


def test_a_missing_schema_says_to_migrate(empty_db: str) -> None:
    from papayya.store import Store

    store = Store(empty_db, pool_size=2, auto_migrate=False)
    try:
        with pytest.raises(MigrationError, match="run `papayya migrate`"):
            store.run_get(uuid.uuid4())
    finally:
        store.close()


def test_a_missing_database_says_to_create_it(database_url: str) -> None:
    from papayya import StoreUnavailable
    from papayya.store import Store

    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = "papayya_no_such_db"
    url = psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v is not None})
    with pytest.raises(StoreUnavailable, match="does not exist\\); create it or fix PAPAYYA_DATABASE_URL"):
        Store(url)


def test_items_recorded_before_their_inputs_moved_apart_are_still_read_claimed_and_replayed(
    empty_db: str,
) -> None:
    from papayya.store import Store

    # Given a store at schema 12 holding a queued item whose input is inline, as 0001-0012 kept it
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(migrate._BOOTSTRAP)
        for m in migrate.available():
            if m.version > 12:
                break
            conn.execute(m.sql.encode())
            conn.execute(
                "INSERT INTO papayya.schema_version (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
        run_id, item_id = uuid.uuid4(), uuid.uuid4()
        conn.execute("INSERT INTO papayya.tenants (tenant_id) VALUES ('acme')")
        conn.execute(
            "INSERT INTO papayya.runs (run_id, tenant_id, agent_name, backend, total_items, status) "
            "VALUES (%s, 'acme', 'old.agent', 'native', 1, 'running')",
            (run_id,),
        )
        conn.execute(
            "INSERT INTO papayya.items (item_id, run_id, tenant_id, key, input) "
            "VALUES (%s, %s, 'acme', 'k1', '{\"text\": \"kept inline\"}')",
            (item_id, run_id),
        )
    # When this papayya migrates it (13: inputs apart, nothing moved)
    store = Store(empty_db, pool_size=2)
    try:
        with psycopg.connect(empty_db) as conn:
            assert migrate.current_version(conn) == migrate.available()[-1].version
            assert conn.execute("SELECT count(*) FROM papayya.item_inputs").fetchone() == (0,)
        # Then the item shows its input, a worker's claim carries it, and a replay copies it
        assert store.item_detail(item_id)["input"] == {"text": "kept inline"}
        (claimed,) = store.items_claim(
            agents=["old.agent"], run_ids=None, limit=4, worker="w", lease_seconds=30
        )
        assert (claimed["item_id"], claimed["input"]) == (item_id, {"text": "kept inline"})
        with psycopg.connect(empty_db, autocommit=True) as conn:
            conn.execute(
                "UPDATE papayya.items SET status = 'failed', lease_token = NULL WHERE item_id = %s",
                (item_id,),
            )
        new_run = uuid.uuid4()
        store.fetch_all(
            "replay_create",
            {
                "run_id": new_run, "source_run_id": run_id, "tenant_id": "acme", "name": None,
                "backend": None, "item_ids": None, "keys": None, "status": "failed",
                "not_succeeded": False, "fingerprint": None, "from_journal": False, "slice": None,
                "llm_mode": None,
            },
        )  # fmt: skip
        (replayed,) = store.items_claim(
            agents=["old.agent"], run_ids=[new_run], limit=4, worker="w", lease_seconds=30
        )
        assert replayed["input"] == {"text": "kept inline"}
        assert store.item_detail(replayed["item_id"])["input"] == {"text": "kept inline"}
    finally:
        store.close()
