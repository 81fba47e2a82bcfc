"""Connections: one psycopg pool per process, and the one place driver errors are translated."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from papayya.errors import MigrationError, StoreUnavailable

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


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET application_name = 'papayya'")
    conn.execute("SET idle_in_transaction_session_timeout = '5s'")


def _configure_fast(conn: psycopg.Connection[Any]) -> None:
    _configure(conn)
    conn.execute("SET synchronous_commit = off")


def open_pool(
    url: str, *, max_size: int, synchronous_commit: bool = True
) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
    """Open a pool and check the server answers, or raise StoreUnavailable with the reason."""
    try:
        with psycopg.connect(url, connect_timeout=10) as probe:
            probe.execute("SELECT 1")
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
    pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        # Autocommit: most writes are one statement, and a COMMIT round trip per write would double
        # their cost. Multi-statement writes use ``conn.transaction()``.
        kwargs={"row_factory": dict_row, "autocommit": True},
        configure=_configure if synchronous_commit else _configure_fast,
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
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise StoreUnavailable(
            f"Lost the PostgreSQL store ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            "check the server is up, then retry."
        ) from exc
