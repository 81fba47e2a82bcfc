"""The PostgreSQL store: every read and write papayya makes, as typed methods over named queries."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from papayya import migrate as _migrate
from papayya.errors import NotFound, ReplayError, StaleLease, StoreUnavailable, TenantError
from papayya.store.connection import PoolHealth, open_pool, redact, translated
from papayya.store.queries import q

log = logging.getLogger("papayya.store")

Row = dict[str, Any]

__all__ = ["AttemptClaim", "Finish", "Row", "Store"]


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def recordset(rows: Sequence[dict[str, Any]]) -> Jsonb:
    """Many rows as one jsonb parameter, which a statement reads with ``jsonb_to_recordset`` (ids as
    text, cast back by the column list there). One JSON dump of the batch costs about a third of the
    CPU that one array per column does (psycopg dumps each array element on its own), and the server
    parses it faster too: the engine's begin and finish statements carry every item of a batch."""
    return Jsonb(rows)


class AttemptClaim:
    """What ``begin_attempt`` hands back: the attempt number, fencing token, input and journal."""

    __slots__ = (
        "failures",
        "from_journal",
        "input",
        "journal",
        "number",
        "replayed_from",
        "run_gen",
        "token",
    )

    def __init__(
        self,
        number: int,
        token: int,
        input: dict[str, Any],
        journal: dict[str, Any],
        failures: int = 0,
        from_journal: bool = False,
        replayed_from: UUID | None = None,
        run_gen: int | None = None,
    ) -> None:
        self.number = number
        self.token = token
        self.input = input
        self.journal = journal
        self.failures = failures  # earlier attempts that failed (pauses and stalls do not count)
        self.from_journal = from_journal  # a replay that answers from the original's recorded steps
        self.replayed_from = replayed_from
        self.run_gen = run_gen  # the run's control generation the claim saw it running at


@dataclass(frozen=True, slots=True)
class Finish:
    """One attempt's result, as ``attempts_finish`` writes it. ``retry_in``: seconds a requeued item
    waits before any worker may claim it again."""

    item_id: UUID
    tenant_id: str
    attempt_id: UUID
    lease_token: int
    item_status: str
    attempt_status: str
    terminal: bool
    reasons: list[dict[str, Any]]
    output: Any
    error: dict[str, Any] | None
    fingerprint: str | None
    cluster_label: str | None = None
    retry_in: float | None = None
    run_id: UUID | None = None  # the item's run: completed in the same transaction if this was its last


# What a tenant-bound role may do, table by table; row-level security narrows each to its tenant.
_READ_ONLY = ("price_overrides", "tenant_secrets", "schema_version")
_READ_WRITE = (
    "runs", "items", "item_inputs", "attempts", "steps", "llm_calls", "budget_accounts", "run_item_counts",
    "run_call_counts", "rate_limits", "rate_closures", "batch_requests",
)  # fmt: skip
# The role a scoped store whose own role bypasses row-level security (the schema's owner, a superuser,
# as the embedded server's default user is) drops to, so PAPAYYA_TENANT holds for it too.
SCOPED_ROLE = "papayya_scoped"
# The tenant the current request acts for (the dashboard sets it for a tenant token): every connection
# a store lends in this context is scoped to it, whatever the store's own scope, so row-level security
# holds a request even if the code serving it asks for another tenant's rows.
REQUEST_TENANT: ContextVar[str | None] = ContextVar("papayya_request_tenant", default=None)


def _grant_tenant_rights(conn: psycopg.Connection[Any], role: str) -> None:
    """Grant ``role`` what a tenant's workers and dashboard need; row-level security does the rest."""
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA papayya TO {}").format(ident))
    conn.execute(sql.SQL("GRANT SELECT, INSERT ON papayya.tenants TO {}").format(ident))
    for table in _READ_ONLY:
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier("papayya", table), ident))
    for table in _READ_WRITE:
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                sql.Identifier("papayya", table), ident
            )
        )
    conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA papayya TO {}").format(ident))


def _scoping_role(url: str, tenant: str) -> str | None:
    """The role a store scoped to ``tenant`` sets in its sessions: None when row-level security
    already holds the URL's role, else :data:`SCOPED_ROLE` (created, granted the tenant rights and
    granted to the URL's role on first use).

    Raises:
        TenantError: the role bypasses row-level security and may not create or grant that role.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT row_security_active('papayya.items')").fetchone()
        if row is None or row[0]:
            return None
        try:
            with conn.transaction():
                found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SCOPED_ROLE,)).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(SCOPED_ROLE)))
                _grant_tenant_rights(conn, SCOPED_ROLE)
                member = conn.execute(
                    "SELECT pg_has_role(current_user, %s, 'MEMBER')", (SCOPED_ROLE,)
                ).fetchone()
                if not (member and member[0]):
                    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(SCOPED_ROLE)))
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            return _scoping_role(url, tenant)  # another process created it at the same moment
        except psycopg.errors.InsufficientPrivilege:
            raise TenantError(
                f"Cannot scope this process to tenant {tenant!r}: its database role bypasses row-level "
                f"security and may not create or join the role {SCOPED_ROLE} it drops to; connect with a "
                "role bound to the tenant (`papayya tenants grant`), or once, as a superuser, run "
                f"CREATE ROLE {SCOPED_ROLE} NOLOGIN and GRANT {SCOPED_ROLE} TO this role."
            ) from None
    return SCOPED_ROLE


class Store:
    """Typed access to the papayya schema. Thread-safe: each call borrows a pooled connection."""

    def __init__(
        self, url: str, *, pool_size: int = 16, auto_migrate: bool = True, tenant: str | None = None
    ) -> None:
        """``tenant``: scope every session of this store to one tenant (``papayya.tenant``; held by
        row-level security for roles other than the schema's owner, see docs/security.md)."""
        self.url = url
        self.tenant = tenant
        role = None
        if tenant is not None:
            # A scoped store's sessions may not be able to migrate (they drop to a role that row-level
            # security holds): migrate first, as the role in the URL.
            if auto_migrate:
                with psycopg.connect(url, autocommit=True) as conn:
                    _migrate.migrate(conn)
            role = _scoping_role(url, tenant)
        self._pool: ConnectionPool[psycopg.Connection[Row]] = open_pool(
            url, max_size=pool_size, tenant=tenant, role=role
        )
        self._health = PoolHealth(self._pool, url, tenant=tenant, role=role)
        # Budget reservations and settlements commit without waiting for the WAL flush: they are
        # rewritten from the ledger (which is durable) by reconcile, and holding a hot account row for
        # an fsync per LLM call would serialise every worker on it. Opened at the first such write,
        # so a CLI read opens one pool, not two.
        self._fast_args = (pool_size, tenant, role)
        self._fast_health: PoolHealth | None = None
        self._scoped: bool | None = None  # whether row-level security applies to this store's role
        self._request_role: str | None = None  # the role a REQUEST_TENANT checkout drops to ("": none)
        self._pinned = threading.local()  # .conn: the connection of this thread's open transaction()
        self._closed = False
        self._lock = threading.Lock()
        if auto_migrate and tenant is None:
            try:
                self.migrate()
            except BaseException:
                self.close()  # a store that cannot be used leaves no pool behind
                raise

    def __repr__(self) -> str:
        return f"Store({redact(self.url)})"

    def _row_security(self, conn: psycopg.Connection[Row]) -> bool:
        """Whether row-level security applies to this store's role (any role but the schema's owner,
        superusers and BYPASSRLS roles); asked once, a role does not change."""
        if self._scoped is None:
            row = conn.execute("SELECT row_security_active('papayya.items') AS active").fetchone()
            self._scoped = bool(row and row["active"])
        return self._scoped

    @contextlib.contextmanager
    def _connection(self, *, fast: bool = False) -> Iterator[psycopg.Connection[Row]]:
        """A pooled connection, driver errors translated, or the connection of the transaction this
        thread has open (:meth:`transaction`).

        A pooled connection the server hung up on (a restart, a failover) is noticed at checkout and
        swapped for a live one, so the first call after a restart works; while the server is away,
        calls fail within ``FAIL_FAST`` seconds with StoreUnavailable instead of waiting the pool's
        timeout (see :mod:`papayya.store.connection`)."""
        pinned: psycopg.Connection[Row] | None = getattr(self._pinned, "conn", None)
        if pinned is not None:
            with translated():
                yield pinned
            return
        health = self._fast() if fast else self._health
        scope = REQUEST_TENANT.get()
        try:
            with translated(), health.connection() as conn:
                if scope is None or scope == self.tenant:
                    yield conn
                else:
                    with self._scoped_to(conn, scope):
                        yield conn
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, psycopg.errors.TransactionRollback):  # not a lost link
                self.recover()
            raise

    @contextlib.contextmanager
    def _scoped_to(self, conn: psycopg.Connection[Row], tenant: str) -> Iterator[None]:
        """Hold ``conn`` to ``tenant`` while it is lent (:data:`REQUEST_TENANT`): the tenant setting
        and, when this store's role bypasses row-level security, the role it drops to; both put back
        when it returns. Should putting them back fail, the connection is closed, not pooled."""
        if self._request_role is None:
            self._request_role = _scoping_role(self.url, tenant) or ""
        conn.execute(
            "SELECT set_config('papayya.tenant', %s, false), set_config('role', %s, false)",
            (tenant, self._request_role or "none"),
        )
        try:
            yield
        finally:
            try:
                conn.execute(
                    "SELECT set_config('papayya.tenant', %s, false), set_config('role', 'none', false)",
                    (self.tenant or "",),
                )
            except psycopg.Error:
                conn.close()  # the pool drops a closed connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run every store call this thread makes inside the block in one transaction: all of them
        apply, or (the block raised) none. Nested blocks join the outer one."""
        if getattr(self._pinned, "conn", None) is not None:
            yield
            return
        with self._connection() as conn, conn.transaction():
            self._pinned.conn = conn
            try:
                yield
            finally:
                self._pinned.conn = None

    def recover(self) -> None:
        """After a connection error: check the pooled connections, dropping those the server closed
        (a restart, a failover), so the next calls get live ones; until one does, checkouts check the
        connection first and wait at most ``FAIL_FAST`` seconds."""
        for health in (self._health, self._fast_health):
            if health is not None:
                health.recover()

    def _fast(self) -> PoolHealth:
        """The pool of writes that commit without waiting for the WAL flush, opened on first use."""
        health = self._fast_health
        if health is None:
            with self._lock:
                if self._closed:
                    raise StoreUnavailable("This papayya store is closed; papayya.reset() builds a new one.")
                if self._fast_health is None:
                    size, tenant, role = self._fast_args
                    pool = open_pool(
                        self.url,
                        max_size=size,
                        synchronous_commit=False,
                        tenant=tenant,
                        role=role,
                        probe=False,
                    )
                    fast = PoolHealth(pool, self.url, synchronous_commit=False, tenant=tenant, role=role)
                    # Its first checkouts wait briefly, then connect directly: opened during an outage,
                    # it fails fast like the main pool instead of waiting out the pool's timeout.
                    fast.recover()
                    self._fast_health = fast
                health = self._fast_health
        return health

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
                if self._fast_health is not None:
                    self._fast_health.pool.close()

    # -- plumbing: named queries from any ``.sql`` file of papayya.store (adapters add their own file) --

    def fetch_all(self, name: str, params: dict[str, Any], *, flushed: bool = True) -> list[Row]:
        """Every row of the named query. ``flushed=False``: a write that commits without waiting for
        the WAL flush (the server keeps it if this process dies; a server crash within a fraction of a
        second may lose it)."""
        with self._connection(fast=not flushed) as conn:
            return conn.execute(q(name), params).fetchall()

    def fetch_one(self, name: str, params: dict[str, Any]) -> Row | None:
        """The first row of the named query, or None."""
        with self._connection() as conn:
            return conn.execute(q(name), params).fetchone()

    def execute(self, name: str, params: dict[str, Any]) -> int:
        """Run the named statement; the number of rows it touched."""
        with self._connection() as conn:
            return conn.execute(q(name), params).rowcount

    def migrate(self) -> list[_migrate.Migration]:
        with self._connection() as conn:
            return _migrate.migrate(conn)

    def schema_version(self) -> int:
        with self._connection() as conn:
            return _migrate.current_version(conn)

    # -- tenants ----------------------------------------------------------------------------------

    def tenant_create(self, tenant_id: str, config: dict[str, Any] | None = None) -> bool:
        """Create a tenant; False when it already existed (nothing changes then)."""
        row = self.fetch_one("tenant_upsert", {"tenant_id": tenant_id, "config": Jsonb(config or {})})
        return row is not None

    def tenant_get(self, tenant_id: str) -> Row | None:
        return self.fetch_one("tenant_get", {"tenant_id": tenant_id})

    def tenant_list(self, limit: int = 1000) -> list[Row]:
        return self.fetch_all("tenant_list", {"limit": limit})

    def tenant_update_config(self, tenant_id: str, set_: dict[str, Any], unset: Sequence[str] = ()) -> None:
        n = self.execute(
            "tenant_merge_config", {"tenant_id": tenant_id, "set": Jsonb(set_), "unset": list(unset)}
        )
        if n == 0:
            raise NotFound(f"Tenant {tenant_id!r} does not exist; create it with `papayya tenants add`.")

    def price_override_set(
        self, tenant_id: str, provider: str, model: str, prices: dict[str, Decimal | None]
    ) -> None:
        self.execute(
            "price_override_upsert",
            {
                "tenant_id": tenant_id,
                "provider": provider,
                "model": model,
                "input_mtok": prices.get("input_mtok"),
                "output_mtok": prices.get("output_mtok"),
                "cache_read_mtok": prices.get("cache_read_mtok"),
                "cache_write_mtok": prices.get("cache_write_mtok"),
            },
        )

    def price_override_delete(self, tenant_id: str, provider: str, model: str) -> bool:
        params = {"tenant_id": tenant_id, "provider": provider, "model": model}
        return self.execute("price_override_delete", params) > 0

    def price_overrides(self, tenant_id: str) -> list[Row]:
        return self.fetch_all("price_overrides_for_tenant", {"tenant_id": tenant_id})

    # -- tenant-bound roles (migration 0011, docs/security.md) -------------------------------------

    def tenant_grant(self, tenant_id: str, role: str) -> bool:
        """Bind the login role ``role`` to ``tenant_id`` (creating it, without a password, when it does
        not exist) and grant it what a tenant's workers and dashboard need. True when created.

        Raises:
            NotFound: no such tenant.
            TenantError: the role is bound to another tenant, or would bypass row-level security (a
                superuser, a BYPASSRLS role, the schema's owner).
        """
        ident = sql.Identifier(role)
        with self._connection() as conn, conn.transaction():
            if conn.execute(q("tenant_get"), {"tenant_id": tenant_id}).fetchone() is None:
                raise NotFound(f"No tenant {tenant_id!r}; add it with `papayya tenants add {tenant_id}`.")
            bound = conn.execute(
                "SELECT tenant_id FROM papayya.tenant_roles WHERE role_name = %s", (role,)
            ).fetchone()
            if bound is not None and bound["tenant_id"] != tenant_id:
                raise TenantError(
                    f"Role {role!r} is bound to tenant {bound['tenant_id']!r}; a role serves one tenant, "
                    "so create another role for this one."
                )
            found = conn.execute(
                "SELECT r.rolsuper, r.rolbypassrls, r.oid = n.nspowner AS owner FROM pg_roles r, "
                "pg_namespace n WHERE r.rolname = %s AND n.nspname = 'papayya'",
                (role,),
            ).fetchone()
            if found is not None and (found["rolsuper"] or found["rolbypassrls"] or found["owner"]):
                raise TenantError(
                    f"Role {role!r} is a superuser, has BYPASSRLS or owns the papayya schema, so row-level "
                    "security would not hold it to one tenant; grant a role of its own instead."
                )
            if found is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            _grant_tenant_rights(conn, role)
            conn.execute(
                "INSERT INTO papayya.tenant_roles (role_name, tenant_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (role, tenant_id),
            )
        return found is None

    def tenant_revoke(self, role: str) -> str | None:
        """Take back what :meth:`tenant_grant` gave ``role`` (the role itself stays); the tenant it was
        bound to, or None when it was not bound."""
        ident = sql.Identifier(role)
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                "DELETE FROM papayya.tenant_roles WHERE role_name = %s RETURNING tenant_id", (role,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA papayya FROM {}").format(ident))
            conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA papayya FROM {}").format(ident))
            conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA papayya FROM {}").format(ident))
        return str(row["tenant_id"])

    def tenant_roles(self, tenant_id: str | None = None) -> list[Row]:
        with self._connection() as conn:
            return conn.execute(
                "SELECT role_name, tenant_id, created_at FROM papayya.tenant_roles "
                "WHERE %(t)s::text IS NULL OR tenant_id = %(t)s ORDER BY tenant_id, role_name",
                {"t": tenant_id},
            ).fetchall()

    # -- runs and items ---------------------------------------------------------------------------

    def run_create(
        self,
        *,
        run_id: UUID,
        tenant_id: str,
        agent_name: str,
        name: str | None,
        backend: str,
        items: Sequence[tuple[UUID, str, str]],
        max_attempts: int,
        options: dict[str, Any],
        replayed_from: UUID | None = None,
        budget_usd: Decimal | None = None,
        entrypoint: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> None:
        """Record a run and all its items (id, key, input JSON text) in one transaction, and tell idle
        workers of the agent (a notification, delivered at commit)."""
        with self._connection() as conn, conn.transaction():
            conn.execute(
                q("run_insert"),
                {
                    "run_id": run_id,
                    "tenant_id": tenant_id,
                    "agent_name": agent_name,
                    "name": name,
                    "backend": backend,
                    "total_items": len(items),
                    "options": Jsonb(options),
                    "replayed_from": replayed_from,
                    "budget_usd": budget_usd,
                    "entrypoint": _json(entrypoint),
                    "priority": priority,
                },
            )
            conn.execute(q("work_notify"), {"agent": agent_name})
            # COPY: the fastest way into PostgreSQL (a million items in seconds, not minutes). A role
            # under row-level security may not COPY into a table that has it (a tenant-bound role): its
            # items are copied into a temporary table and inserted from there, policies checked.
            # The items' rows and their inputs apart (written once here, never rewritten when an
            # item's status changes: 0013_item_inputs).
            scoped = self._row_security(conn)
            if scoped:
                conn.execute(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS papayya_intake (item_id uuid, run_id uuid, "
                    "tenant_id text, key text, input jsonb, max_attempts integer) ON COMMIT DELETE ROWS"
                )
                with conn.cursor().copy(
                    "COPY pg_temp.papayya_intake (item_id, run_id, tenant_id, key, input, max_attempts) "
                    "FROM STDIN"
                ) as copy:
                    for item_id, key, text in items:
                        copy.write_row((item_id, run_id, tenant_id, key, text, max_attempts))
                conn.execute(
                    "INSERT INTO papayya.items (item_id, run_id, tenant_id, key, max_attempts) "
                    "SELECT item_id, run_id, tenant_id, key, max_attempts FROM pg_temp.papayya_intake"
                )
                conn.execute(
                    "INSERT INTO papayya.item_inputs (item_id, tenant_id, input) "
                    "SELECT item_id, tenant_id, input FROM pg_temp.papayya_intake"
                )
                return
            cursor = conn.cursor()
            with cursor.copy(
                "COPY papayya.items (item_id, run_id, tenant_id, key, max_attempts) FROM STDIN"
            ) as copy:
                for item_id, key, _ in items:
                    copy.write_row((item_id, run_id, tenant_id, key, max_attempts))
            with cursor.copy("COPY papayya.item_inputs (item_id, tenant_id, input) FROM STDIN") as copy:
                for item_id, _, text in items:
                    copy.write_row((item_id, tenant_id, text))

    def attempt_begin(
        self,
        *,
        item_id: UUID,
        tenant_id: str,
        run_id: UUID,
        attempt_id: UUID,
        backend: str,
        worker: str,
        lease_seconds: float,
        max_stalls: int = 3,
    ) -> AttemptClaim | None:
        """Claim an item for a new attempt: queued, stalled, or running with an expired lease (its
        worker died; that attempt is kept as stalled). None when it cannot run now (taken, paused, done,
        its run not running, or it lost its worker ``max_stalls`` times)."""
        with self._connection() as conn:
            row = conn.execute(
                q("attempt_begin"),
                {
                    "item_id": item_id,
                    "tenant_id": tenant_id,
                    "run_id": run_id,
                    "attempt_id": attempt_id,
                    "backend": backend,
                    "worker": worker,
                    "lease_seconds": lease_seconds,
                    "max_stalls": max_stalls,
                },
            ).fetchone()
        if row is None:
            return None
        return AttemptClaim(
            row["attempts"],
            row["lease_token"],
            row["input"],
            row["journal"],
            row["failures"],
            bool(row["from_journal"]),
            row["replayed_from"],
            row["run_gen"],
        )

    def step_record(
        self,
        *,
        item_id: UUID,
        tenant_id: str,
        attempt_id: UUID,
        step_key: str,
        kind: str,
        result: Any,
        request_hash: str | None,
    ) -> None:
        self.execute(
            "step_record",
            {
                "item_id": item_id,
                "tenant_id": tenant_id,
                "attempt_id": attempt_id,
                "step_key": step_key,
                "kind": kind,
                "result": Jsonb(result),
                "request_hash": request_hash,
            },
        )

    def llm_call_record(
        self,
        params: dict[str, Any],
        *,
        journal_result: Any = None,
        journal: bool,
        request_hash: str | None = None,
    ) -> bool:
        """Write one ledger row (and, when ``journal``, its journal step) in one round trip, adding its
        cost to its item. True when the attempt's lease (``lease_token``) had moved on: the row is
        written all the same, flagged ``lease_lost``."""
        params = {
            "mode": "live",
            "live_cost_usd": None,
            **params,
            "result": Jsonb(journal_result) if journal else None,
            "journal": journal,
            "request_hash": request_hash,
        }
        with self._connection() as conn:
            row = conn.execute(q("llm_call_record"), params).fetchone()
        return bool(row and row["lease_lost"])

    def attempt_finish(self, finish: Finish) -> None:
        """Write one attempt's result and the item's new status, fenced by its lease token; StaleLease
        when the item is no longer held by this attempt."""
        if not self.attempts_finish([finish]):
            raise StaleLease(
                f"Item {finish.item_id} is no longer held by this attempt (lease token "
                f"{finish.lease_token} is stale); its result was discarded."
            )

    def attempts_finish(self, finishes: Sequence[Finish]) -> set[UUID]:
        """Write many attempts' results in one statement; return the item ids whose write applied (the
        others' lease tokens were stale: someone else holds those items now).

        A run whose last open item concludes here becomes ``completed`` in the same transaction, with
        no waiter needed: the transaction first locks the runs it finishes items of, so two finishers
        concluding a run's last two items at once take turns, and the second sees the first's item
        concluded (READ COMMITTED: each statement reads what was committed before it began)."""
        if not finishes:
            return set()
        params = {
            "finishes": recordset(
                [
                    {
                        "item_id": str(f.item_id),
                        "tenant_id": f.tenant_id,
                        "attempt_id": str(f.attempt_id),
                        "token": f.lease_token,
                        "item_status": f.item_status,
                        "attempt_status": f.attempt_status,
                        "terminal": f.terminal,
                        "reasons": f.reasons,
                        "output": f.output,
                        "error": f.error,
                        "fingerprint": f.fingerprint,
                        "label": f.cluster_label,
                        "delay": f.retry_in,
                    }
                    for f in finishes
                ]
            )
        }
        run_ids = sorted({f.run_id for f in finishes if f.run_id is not None and f.terminal}, key=str)
        with self._connection() as conn, conn.transaction():
            if run_ids:
                conn.execute(q("runs_lock"), {"run_ids": run_ids})
            applied = {r["item_id"] for r in conn.execute(q("attempts_finish"), params).fetchall()}
            if run_ids and applied:
                conn.execute(q("runs_complete"), {"run_ids": run_ids})
        return applied

    def runs_complete(self, run_ids: Sequence[UUID]) -> list[UUID]:
        """Complete those of ``run_ids`` that are running with nothing left to do (an intake run only
        once its day is over), under the runs' locks; return the ids completed."""
        ids = sorted(set(run_ids), key=str)
        if not ids:
            return []
        with self._connection() as conn, conn.transaction():
            conn.execute(q("runs_lock"), {"run_ids": ids})
            return [r["run_id"] for r in conn.execute(q("runs_complete"), {"run_ids": ids}).fetchall()]

    # -- the native engine ------------------------------------------------------------------------

    def items_claim(
        self,
        *,
        agents: Sequence[str],
        run_ids: Sequence[UUID] | None,
        limit: int,
        worker: str,
        lease_seconds: float,
        backend: str = "native",
        alone: bool = True,
    ) -> list[Row]:
        """Claim up to ``limit`` queued items fairly across tenants (see engine.sql): each row has the
        item (id, key, run, tenant, input), its lease token, the id and number its next attempt will
        have, its journal and failures so far. The attempt itself is recorded when a thread takes the
        item (``attempts_begin``)."""
        return self.fetch_all(
            "items_claim",
            {
                "agents": list(agents),
                "run_ids": None if run_ids is None else list(run_ids),
                "limit": limit,
                "worker": worker,
                "lease_seconds": lease_seconds,
                "backend": backend,
                "alone": alone,
            },
        )

    def items_reap(self, *, max_stalls: int, lost: dict[str, Any], limit: int = 1000) -> list[Row]:
        """Recover items whose lease expired (see engine.sql); ``lost`` holds the error, fingerprint
        and label written on items that lost their worker ``max_stalls`` times."""
        return self.fetch_all(
            "items_reap",
            {
                "max_stalls": max_stalls,
                "limit": limit,
                "lost_error": Jsonb(lost["error"]),
                "lost_fingerprint": lost["fingerprint"],
                "lost_label": lost["label"],
            },
        )

    def items_redrive_due(self, backend: str, lease_seconds: float, limit: int = 1000) -> list[Row]:
        """Stalled items of ``backend`` due to be published again (see engine.sql)."""
        params = {"backend": backend, "lease_seconds": lease_seconds, "limit": limit}
        return self.fetch_all("items_redrive_due", params)

    def run_progress(self, run_id: UUID, tenant_id: str) -> Row:
        row = self.fetch_one("run_progress", {"run_id": run_id, "tenant_id": tenant_id})
        if row is None:
            raise NotFound(f"No run {run_id}; list runs with `papayya runs list`.")
        return row

    def work_ready(self, agents: Sequence[str]) -> Row:
        row = self.fetch_one("work_ready", {"agents": list(agents)})
        assert row is not None  # an aggregate always returns one row
        return row

    def notify_work(self, agent_name: str) -> None:
        """Wake idle workers of an agent (a hint; they poll too)."""
        self.execute("work_notify", {"agent": agent_name})

    def tenant_max_running_set(self, tenant_id: str, max_running: int | None) -> None:
        row = self.fetch_one("tenant_max_running_set", {"tenant_id": tenant_id, "max_running": max_running})
        if row is None:
            raise NotFound(f"Tenant {tenant_id!r} does not exist; create it with `papayya tenants add`.")

    def leases_extend(self, held: Sequence[tuple[UUID, int]], lease_seconds: float) -> set[UUID]:
        """Heartbeat: extend the leases still held; return the item ids that were extended."""
        if not held:
            return set()
        rows = self.fetch_all(
            "leases_extend",
            {
                "item_ids": [h[0] for h in held],
                "tokens": [h[1] for h in held],
                "lease_seconds": lease_seconds,
            },
        )
        return {r["item_id"] for r in rows}

    def attempts_concluded(self, held: Sequence[tuple[UUID, int]]) -> set[UUID]:
        """Of (item id, lease token) pairs, the items whose attempt under that token has concluded."""
        if not held:
            return set()
        rows = self.fetch_all(
            "attempts_concluded", {"item_ids": [h[0] for h in held], "tokens": [h[1] for h in held]}
        )
        return {r["item_id"] for r in rows}

    def run_complete(self, run_id: UUID, tenant_id: str) -> bool:
        """Complete the run if it is running with nothing left to do (see ``runs_complete``)."""
        self.run_get(run_id, tenant_id)  # scoped: NotFound for another tenant's run
        return bool(self.runs_complete([run_id]))

    # -- reads ------------------------------------------------------------------------------------

    def run_get(self, run_id: UUID, tenant_id: str | None = None) -> Row:
        row = self.fetch_one("run_get", {"run_id": run_id, "tenant_id": tenant_id})
        if row is None:
            raise NotFound(f"No run {run_id}; list runs with `papayya runs list`.")
        return row

    def run_summary(self, run_id: UUID, tenant_id: str, *, top: int = 5) -> Row:
        """Counts by status, cost, top degraded reasons, top failures and cost by model for a run."""
        params = {"run_id": run_id, "tenant_id": tenant_id, "limit": top}
        with self._connection() as conn:
            counts = {r["status"]: r["n"] for r in conn.execute(q("run_status_counts"), params)}
            cost = conn.execute(q("run_cost"), params).fetchone()
            reasons = conn.execute(q("run_top_reasons"), params).fetchall()
            failures = conn.execute(q("run_top_failures"), params).fetchall()
            by_model = conn.execute(q("run_cost_by_model"), params).fetchall()
        return {"counts": counts, "cost": cost, "reasons": reasons, "failures": failures, "models": by_model}

    def items_page(
        self,
        run_id: UUID,
        *,
        tenant_id: str | None,
        status: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Row]:
        return self.fetch_all(
            "items_page",
            {"run_id": run_id, "tenant_id": tenant_id, "status": status, "after": after, "limit": limit},
        )

    def item_detail(self, item_id: UUID, tenant_id: str | None = None) -> Row:
        """The item with its attempts, journal steps and LLM calls."""
        with self._connection() as conn:
            item = conn.execute(q("item_get"), {"item_id": item_id, "tenant_id": tenant_id}).fetchone()
            if item is None:
                raise NotFound(f"No item {item_id}; list items with `papayya items list RUN`.")
            scoped = {"item_id": item_id, "tenant_id": item["tenant_id"]}
            item["attempts_detail"] = conn.execute(q("item_attempts"), scoped).fetchall()
            item["steps"] = conn.execute(q("item_steps"), scoped).fetchall()
            item["llm_calls"] = conn.execute(q("item_llm_calls"), scoped).fetchall()
        return item

    def costs(self, by: str, *, since: datetime, until: datetime, tenant_id: str | None = None) -> list[Row]:
        """Cost by one of tenant, run, model, agent (rows keyed ``key``), or two, comma-separated
        (``tenant,model``: rows keyed ``key1`` and ``key2``)."""
        kinds = ("tenant", "run", "model", "agent")
        parts = by.split(",")
        if not 1 <= len(parts) <= 2 or any(p not in kinds for p in parts):
            raise ValueError(f"cannot group costs by {by!r}")
        params: dict[str, Any] = {"since": since, "until": until, "tenant_id": tenant_id}
        if len(parts) == 2:
            return self.fetch_all("costs_by_pair", {**params, "first": parts[0], "second": parts[1]})
        return self.fetch_all(f"costs_by_{by}", params)

    # -- CLI reads --------------------------------------------------------------------------------

    def tenant_stats(self, tenant_id: str) -> Row:
        """A tenant's run count (``replay_runs`` of them replays), last run, LLM calls, spend (priced
        calls), unpriced calls, and its items by current outcome (``items``, ``replayed``: see
        :meth:`tenant_item_counts`)."""
        with self._connection() as conn:
            stats = conn.execute(q("tenant_stats"), {"tenant_id": tenant_id}).fetchone() or {}
        return {**stats, **self.tenant_item_counts([tenant_id])[tenant_id]}

    def tenant_item_counts(self, tenant_ids: Sequence[str]) -> dict[str, Row]:
        """Each tenant's items by the counting rule: every item it sent once, by its current outcome
        (the newest conclusion across its replays), as ``items`` ({status: n}); ``replayed``: how many
        of them have been replayed. Replay items are never added to the counts."""
        counts: dict[str, Row] = {t: {"items": {}, "replayed": 0} for t in tenant_ids}
        for r in self.fetch_all("tenant_item_counts", {"tenant_ids": list(tenant_ids)}):
            entry = counts[r["tenant_id"]]
            entry["items"][r["status"]] = r["n"]
            entry["replayed"] += r["replayed"]
        return counts

    def run_list_detail(self, tenant_id: str | None = None, limit: int = 50) -> list[Row]:
        """Newest runs first, each with its item counts by status (``counts``), calls and cost."""
        params = {
            "tenant_id": tenant_id,
            "limit": limit,
            "status": None,
            "before_at": None,
            "before_id": None,
        }
        return self.fetch_all("run_list_detail", params)

    def items_across(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        since: datetime | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Row]:
        """A tenant's items across its runs by the counting rule: each item it sent once, as the item
        whose outcome counts for it now (``replayed`` when it has replays), in key order."""
        params = {"tenant_id": tenant_id, "status": status, "since": since, "after": after, "limit": limit}
        return self.fetch_all("items_across", params)

    def item_id_by_key(self, run_id: UUID, tenant_id: str, key: str) -> UUID:
        """The id of the item with the user's ``key`` in a run; NotFound when the run has none."""
        row = self.fetch_one("item_id_by_key", {"run_id": run_id, "tenant_id": tenant_id, "key": key})
        if row is None:
            raise NotFound(
                f"Run {run_id} has no item with id {key[:60]!r}; list its items with "
                f"`papayya items list {run_id}`."
            )
        item_id: UUID = row["item_id"]
        return item_id

    def runs_by_prefix(self, lo: UUID, hi: UUID, tenant_id: str | None) -> list[Row]:
        """Runs whose id lies in ``lo..hi`` (a typed prefix, padded), oldest first; at most 20."""
        return self.fetch_all("runs_by_prefix", {"lo": lo, "hi": hi, "tenant_id": tenant_id})

    def items_by_ref(
        self,
        key: str,
        span: tuple[UUID, UUID] | None,
        *,
        run_id: UUID | None = None,
        tenant_id: str | None = None,
    ) -> list[Row]:
        """Items with the user's ``key``, or whose id lies in ``span`` (a typed prefix, padded), in a run
        and a tenant when given, oldest first; ``by_key`` says which. At most 200."""
        lo, hi = span if span is not None else (None, None)
        params = {"key": key, "lo": lo, "hi": hi, "run_id": run_id, "tenant_id": tenant_id}
        return self.fetch_all("items_by_ref", params)

    # -- rate limits ------------------------------------------------------------------------------

    def rate_limit_set(
        self,
        provider: str,
        model: str,
        tenant_id: str,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
    ) -> Row:
        """Create or replace the limits of one (provider, model, tenant) key; return the row."""
        row = self.fetch_one(
            "rate_limit_upsert",
            {
                "provider": provider,
                "model": model,
                "tenant_id": tenant_id,
                "requests_per_minute": requests_per_minute,
                "tokens_per_minute": tokens_per_minute,
            },
        )
        assert row is not None  # an upsert always returns its row
        return row

    def rate_limit_delete(self, provider: str, model: str, tenant_id: str) -> bool:
        params = {"provider": provider, "model": model, "tenant_id": tenant_id}
        return self.execute("rate_limit_delete", params) > 0

    def rate_limit_list(self, period: float = 60.0) -> list[Row]:
        """Every limit, with the requests and tokens its bucket holds now."""
        return self.fetch_all("rate_limit_list", {"period": period})

    def rate_snapshot(self) -> list[Row]:
        """Keys with limits (``closed_for`` NULL) and closures in force (seconds left in ``closed_for``)."""
        return self.fetch_all("rate_snapshot", {})

    def rate_take(self, provider: str, model: str, tenant_id: str, tokens: int, period: float) -> Row:
        """Take one request of ``tokens`` from every matching limit, or nothing; ``ok``, ``wait_seconds``,
        ``closed_for`` (a closure in force), ``keys`` (limits matched)."""
        row = self.fetch_one(
            "rate_take",
            {
                "provider": provider,
                "model": model,
                "tenant_id": tenant_id,
                "tokens": tokens,
                "period": period,
            },
        )
        assert row is not None  # an aggregate always returns one row
        return row

    def rate_settle(self, provider: str, model: str, tenant_id: str, delta: int) -> int:
        """Add ``delta`` tokens (estimated minus used) to every matching token bucket; return how many."""
        params = {"provider": provider, "model": model, "tenant_id": tenant_id, "delta": delta}
        return self.execute("rate_settle", params)

    def rate_close(self, provider: str, model: str, seconds: float) -> Row:
        """Close provider/model for ``seconds`` (never shortening a closure); return it."""
        row = self.fetch_one("rate_close", {"provider": provider, "model": model, "seconds": seconds})
        assert row is not None
        return row

    def rate_closures_open(self) -> list[Row]:
        return self.fetch_all("rate_closures_open", {})

    # -- budgets ----------------------------------------------------------------------------------

    def budget_accounts_ensure(self, keys: dict[str, Any]) -> None:
        """Create the tenant's period account and the run's account if missing, spent from the ledger."""
        self.execute("budget_accounts_ensure", keys)

    def budget_reserve(self, keys: dict[str, Any], amount: Decimal | None) -> Row:
        """Atomically reserve ``amount`` on both accounts, or nothing. Row: fits, run_status, reserved,
        accounts (each scope's spent, reserved and limit as seen under the row lock)."""
        with self._connection(fast=True) as conn:
            row = conn.execute(q("budget_reserve"), {**keys, "amount": amount}).fetchone()
        assert row is not None
        return row

    def budget_settle(self, keys: dict[str, Any], *, reserved: Decimal, actual: Decimal) -> None:
        with self._connection(fast=True) as conn:
            conn.execute(q("budget_settle"), {**keys, "reserved": reserved, "actual": actual})

    def budget_reconcile(self, tenant_id: str) -> None:
        self.execute("budget_reconcile", {"tenant_id": tenant_id})

    def budget_view(self, keys: dict[str, Any]) -> list[Row]:
        return self.fetch_all("budget_view", keys)

    def tenant_budget_set(self, tenant_id: str, budget_usd: Decimal | None, period: str | None) -> None:
        row = self.fetch_one(
            "tenant_budget_set", {"tenant_id": tenant_id, "budget_usd": budget_usd, "budget_period": period}
        )
        if row is None:
            raise NotFound(f"Tenant {tenant_id!r} does not exist; create it with `papayya tenants add`.")

    def run_budget_set(self, run_id: UUID, tenant_id: str, budget_usd: Decimal | None) -> None:
        self.fetch_all("run_budget_set", {"run_id": run_id, "tenant_id": tenant_id, "budget_usd": budget_usd})

    def runs_pause(self, tenant_id: str, run_id: UUID | None, reason: str) -> list[Row]:
        """Pause one running run, or every running run of the tenant; rows of ``run_id`` and the new
        control generation ``gen`` of each run paused (announced on ``papayya_control``)."""
        return self.fetch_all("runs_pause", {"tenant_id": tenant_id, "run_id": run_id, "reason": reason})

    def run_resume(self, run_id: UUID, tenant_id: str) -> Row:
        row = self.fetch_one("run_resume", {"run_id": run_id, "tenant_id": tenant_id})
        assert row is not None
        return row

    def run_live_leases(self, run_id: UUID, tenant_id: str) -> int:
        row = self.fetch_one("run_live_leases", {"run_id": run_id, "tenant_id": tenant_id})
        return int(row["n"]) if row else 0

    def run_pending_items(self, run_id: UUID, tenant_id: str) -> list[tuple[UUID, str]]:
        rows = self.fetch_all("run_pending_items", {"run_id": run_id, "tenant_id": tenant_id})
        return [(r["item_id"], r["key"]) for r in rows]

    def tenant_spend_since(self, tenant_id: str, since: datetime | None) -> Decimal:
        row = self.fetch_one("tenant_spend_since", {"tenant_id": tenant_id, "since": since})
        return Decimal(row["spent"]) if row else Decimal(0)

    def runs_paused_of_tenant(self, tenant_id: str) -> list[UUID]:
        return [r["run_id"] for r in self.fetch_all("runs_paused_of_tenant", {"tenant_id": tenant_id})]

    # -- CLI budget reads -------------------------------------------------------------------------

    def tenant_budgets(self, tenant_ids: Sequence[str], periods: dict[str, Any]) -> dict[str, Row]:
        """Each tenant's budget and period, with what it spent (``spent_usd``, from the ledger) and what
        running workers hold reserved (``reserved_usd``) in its current period (``period_key``), by tenant id.
        ``periods``: ``month_key``, ``month_start``, ``day_key``, ``day_start`` (budgets.period_of)."""
        rows = self.fetch_all("tenant_budgets", {**periods, "tenant_ids": list(tenant_ids)})
        return {r["tenant_id"]: r for r in rows}

    def run_budgets(self, run_ids: Sequence[UUID]) -> dict[UUID, Row]:
        """Each run's own budget (``budget_usd``) and ``paused_reason``, by run id."""
        return {r["run_id"]: r for r in self.fetch_all("run_budgets", {"run_ids": list(run_ids)})}

    # -- replay and clusters ----------------------------------------------------------------------

    def replay_create(
        self,
        params: dict[str, Any],
        *,
        require_journal: bool,
        refuse: Exception | None = None,
        query: str = "replay_create",
    ) -> Row:
        """Create a replay run of a slice of a source run; returns counts of runs (0/1) and items.

        With ``require_journal`` (a from-journal replay), an original item with no recorded steps raises
        ReplayError naming it, and nothing is created. ``refuse``, if given, is raised (and nothing
        created) once the slice is known not to be empty."""
        with self._connection() as conn, conn.transaction():
            row = conn.execute(q(query), {**params, "slice": Jsonb(params["slice"])}).fetchone()
            assert row is not None
            if refuse is not None and row["runs"]:
                raise refuse
            if require_journal and row["runs"]:
                bare = conn.execute(
                    q("replay_sources_without_journal"),
                    {"run_id": params["run_id"], "tenant_id": params["tenant_id"]},
                ).fetchall()
                if bare:
                    raise ReplayError(
                        f"Item {bare[0]['key']!r} has no recorded steps to answer from; replay it without "
                        "--from-journal. Nothing was created."
                    )
        return row

    def replay_slice_across(
        self, tenant_id: str, *, status: str | None, fingerprint: str | None, not_succeeded: bool
    ) -> list[Row]:
        """The tenant's current items (one per item it sent) with that outcome and/or in that cluster,
        each with its run and agent: what ``replay --tenant`` re-drives."""
        params = {
            "tenant_id": tenant_id,
            "status": status,
            "fingerprint": fingerprint,
            "not_succeeded": not_succeeded,
        }
        return self.fetch_all("replay_slice_across", params)

    def clusters(self, **filters: Any) -> list[Row]:
        """Clusters of one run's items (``run_id``), or across runs by the counting rule: each item a
        tenant sent in the cluster of its current outcome, its replays not added."""
        if filters.get("run_id") is None:
            return self.fetch_all("clusters_across", filters)
        return self.fetch_all("clusters", filters)

    def item_lineage(self, item_id: UUID, tenant_id: str) -> list[Row]:
        return self.fetch_all("item_lineage", {"item_id": item_id, "tenant_id": tenant_id})

    def run_lineage(self, run_id: UUID, tenant_id: str) -> list[Row]:
        return self.fetch_all("run_lineage", {"run_id": run_id, "tenant_id": tenant_id})


def dumps(value: Any) -> str:
    """JSON text for a value already checked to be JSON-serialisable."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
