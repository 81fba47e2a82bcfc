"""What every benchmark prints first: a throwaway papayya home (or database) and the machine it ran on."""

from __future__ import annotations

import os
import platform
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

import papayya


def configure_store() -> str:
    """Configure papayya on PAPAYYA_DATABASE_URL, or an embedded server in a temp home; say which."""
    papayya.configure(home=Path(tempfile.mkdtemp(prefix="papayya-bench-")), progress=False)
    if os.environ.get("PAPAYYA_DATABASE_URL"):
        return "PostgreSQL server"
    return "embedded PostgreSQL (Unix socket)"


def machine_line(store: str) -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; store: {store}"
    )


def print_header(store: str, versions: str, repeat: int, smoke: bool) -> None:
    """The machine, the libraries measured, the rounds and the load: the lines every table follows."""
    print(machine_line(store) + versions)
    print(
        f"best of {repeat} runs; load average {os.getloadavg()[0]:.1f} at the start"
        + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
        + "\n"
    )


# The server the benchmarks that need one (bench_engine, bench_cli) make their throwaway databases on.
SERVER_URL = os.environ.get("BENCH_SERVER_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def throwaway_database(server_url: str = SERVER_URL) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server at ``server_url``, dropped on exit; yields its URL.

    The role in ``server_url`` must be allowed to create databases. Connections still open on exit
    (a worker that was killed) are ended by the drop.
    """
    name = f"papayya_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        # (a URL or a key=value connection string: the test suite's server databases are the latter)
        info = psycopg.conninfo.conninfo_to_dict(server_url)
        info["dbname"] = name
        yield psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v is not None})
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_line(server_url: str = SERVER_URL) -> str:
    """The server's version and the settings that decide what a commit costs."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
            "current_setting('fsync')"
        ).fetchone()
    assert row is not None
    version, sync, fsync = row
    where = psycopg.conninfo.conninfo_to_dict(server_url)
    host, port = where.get("host") or "localhost", where.get("port") or 5432
    return (
        f"PostgreSQL {version.split()[0]} server on {host}:{port} (synchronous_commit={sync}, fsync={fsync})"
    )
