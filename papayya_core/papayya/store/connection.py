"""Connections: one psycopg pool per process, and the one place driver errors are translated.

A server restart (or failover) closes every pooled connection at once. :class:`PoolHealth` hands out
the pool's connections and notices one the server hung up on at checkout, without a round trip (its
socket is readable while nothing was asked), so the first call after a restart gets a live connection
instead of failing, and one failure makes the next checkouts check their connection (one round trip)
until a call works again. While the server is away, a call fails within ``FAIL_FAST`` seconds with
StoreUnavailable rather than waiting the pool's ``timeout`` (30 s, which is for a busy pool): a worker's
claim, the budget gate and an LLM call's record say at once that the store is gone.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from papayya.errors import MigrationError, StoreClosed, StoreUnavailable

log = logging.getLogger("papayya.store")


def redact(url: str) -> str:
    """The URL with any password replaced, for messages."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable URL>"
    if "password" in parts:
        parts["password"] = "***"
    return make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


# papayya's transactions are a few statements long. A process frozen (or cut off) in the middle of one
# must not hold its rows (a run's row, its items) for everyone else: the server ends the session
# after 5 s idle in a transaction.


def _configurer(
    *, synchronous_commit: bool, tenant: str | None, role: str | None = None
) -> Callable[[psycopg.Connection[Any]], None]:
    """What each new pooled connection sets for its whole session. ``tenant``: the session is scoped to
    that tenant (``papayya.tenant``), which row-level security holds for any role but the schema's
    owner and superusers (migration 0011; docs/security.md); ``role``: the role the session drops to
    when its own bypasses row-level security, so that it holds."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET application_name = 'papayya'")
        conn.execute("SET idle_in_transaction_session_timeout = '5s'")
        if not synchronous_commit:
            conn.execute("SET synchronous_commit = off")
        if tenant is not None:
            conn.execute("SELECT set_config('papayya.tenant', %s, false)", (tenant,))
        if role is not None:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))

    return configure


def check_reachable(url: str) -> None:
    """Connect once and run a query, or raise StoreUnavailable saying why and what to fix."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        if "does not exist" in reason:
            fix = "create it or fix PAPAYYA_DATABASE_URL"
        elif "authentication" in reason or "password" in reason:
            fix = "fix the user or password in PAPAYYA_DATABASE_URL"
        else:
            fix = "start the server or fix PAPAYYA_DATABASE_URL (unset it to use the embedded one)"
        raise StoreUnavailable(f"Cannot reach PostgreSQL at {redact(url)} ({reason}); {fix}.") from None


def open_pool(
    url: str,
    *,
    max_size: int,
    synchronous_commit: bool = True,
    tenant: str | None = None,
    role: str | None = None,
    probe: bool = True,
) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
    """Open a pool and (``probe``) check the server answers, or raise StoreUnavailable with the reason."""
    if probe:
        check_reachable(url)
    pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        # Autocommit: most writes are one statement, and a COMMIT round trip per write would double
        # their cost. Multi-statement writes use ``conn.transaction()``.
        kwargs={"row_factory": dict_row, "autocommit": True},
        configure=_configurer(synchronous_commit=synchronous_commit, tenant=tenant, role=role),
        open=True,
        name="papayya",
        timeout=30,
    )
    return pool


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn connection-level driver errors into StoreUnavailable; let the rest through."""
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        raise MigrationError(
            "The papayya schema is missing or behind this papayya version; run `papayya migrate` "
            "(or enable PAPAYYA_AUTO_MIGRATE)."
        ) from exc
    except PoolClosed as exc:
        raise StoreClosed(
            "papayya's connection pool was closed while this code still used it (the runtime was shut "
            "down); stop workers before closing papayya, or configure it again."
        ) from exc
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise StoreUnavailable(
            f"Lost the PostgreSQL store ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            "check the server is up, then retry."
        ) from exc


FAIL_FAST = 3  # seconds: the longest a call waits for a connection while the server is known to be away
_SUSPECT_WAIT = 0.5  # seconds a suspect pool gets to hand out a (re)connected connection


def _hung_up(conn: psycopg.Connection[Any]) -> bool:
    """The server closed this idle connection (or sent it something unasked): its socket is readable.
    No round trip; a connection cut off without a word (a network partition) still looks alive."""
    if conn.closed or conn.broken:
        return True
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)
    except (OSError, ValueError, psycopg.Error):
        return True


class PoolHealth:
    """Checkouts from one pool that survive a server restart and fail fast while it is away."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[dict[str, Any]]],
        url: str,
        *,
        synchronous_commit: bool = True,
        tenant: str | None = None,
        role: str | None = None,
    ) -> None:
        self.pool = pool
        self.url = url
        self._configure = _configurer(synchronous_commit=synchronous_commit, tenant=tenant, role=role)
        self._suspect = False  # a connection failed, and no call has worked since

    @property
    def suspect(self) -> bool:
        """A connection failed and no call has worked since."""
        return self._suspect

    def recover(self) -> None:
        """A connection failed: check the idle ones now (dropping those the server closed) and check
        each checkout until a call works again."""
        self._suspect = True
        try:
            self.pool.check()
        except Exception as exc:  # the server is still away; the next call reports it
            log.debug("pool check failed: %s", exc)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A live connection: pooled, or (while the pool reconnects after an outage) a direct one.

        Raises:
            psycopg.OperationalError, PoolTimeout: the server does not answer (translated by the caller).
        """
        conn, pooled = self._checkout()
        try:
            yield conn
        except BaseException:
            self._checkin(conn, pooled)
            raise
        self._checkin(conn, pooled)
        if pooled:
            self._suspect = False

    def _checkout(self) -> tuple[psycopg.Connection[dict[str, Any]], bool]:
        if not self._suspect:
            conn = self.pool.getconn()
            if not _hung_up(conn) or self._alive(conn):
                return conn, True
            self.recover()
        try:
            conn = self.pool.getconn(timeout=_SUSPECT_WAIT)
        except PoolTimeout:
            # The pool's own reconnection may be backing off (seconds) after an outage; the server may
            # be back already, and a direct connection says so at once either way.
            return self._direct(), False
        if self._alive(conn):
            return conn, True
        return self._direct(), False

    def _alive(self, conn: psycopg.Connection[dict[str, Any]]) -> bool:
        """One round trip; a dead connection goes back to the pool, which drops it and opens another."""
        try:
            ConnectionPool.check_connection(conn)
            return True
        except psycopg.Error:
            self.pool.putconn(conn)
            return False

    def _direct(self) -> psycopg.Connection[dict[str, Any]]:
        conn = psycopg.connect(self.url, connect_timeout=FAIL_FAST, autocommit=True, row_factory=dict_row)
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkin(self, conn: psycopg.Connection[dict[str, Any]], pooled: bool) -> None:
        if pooled:
            self.pool.putconn(conn)
        else:
            conn.close()
