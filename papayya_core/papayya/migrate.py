"""The migration runner: ordered ``NNNN_name.sql`` files, one transaction each, under an advisory lock.

The version table ``papayya.schema_version`` holds one row per applied file. Migrations are
forward-only; an applied file is never edited (its checksum is recorded and checked).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from papayya.errors import MigrationError

log = logging.getLogger("papayya.migrate")

# An arbitrary, fixed key: every papayya process serialises schema changes on it.
ADVISORY_LOCK_KEY = 0x70617061_7961  # "papaya"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with this papayya, in order."""
    found: list[Migration] = []
    for entry in resources.files("papayya.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("Two migration files share a version number; renumber one of them.")
    if not found:
        raise MigrationError("No migrations found in the papayya package; reinstall papayya.")
    return found


_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS papayya;
CREATE TABLE IF NOT EXISTS papayya.schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply every pending migration; return the ones applied. Safe to call from many processes.

    A store already at this papayya's version is only read (no lock, no DDL), so any role that may read
    ``papayya.schema_version`` (a tenant-bound role too) passes; a role that may not change the schema
    gets one sentence saying who can.
    """
    previous = conn.autocommit
    conn.autocommit = True
    try:
        if not _pending(conn):
            return []
        try:
            return _migrate_locked(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationError(
                f"The papayya schema is behind this papayya version and this role cannot migrate it "
                f"({str(exc).strip().splitlines()[0][:200]}); run `papayya migrate` as the role that "
                "owns the schema."
            ) from None
    finally:
        conn.autocommit = previous


def _pending(conn: psycopg.Connection[Any]) -> bool:
    """Whether any shipped migration is not applied, or applied with other text."""
    cur = conn.cursor(row_factory=tuple_row)
    row = cur.execute("SELECT to_regclass('papayya.schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return True
    applied: dict[int, str] = dict(
        cur.execute("SELECT version, checksum FROM papayya.schema_version").fetchall()
    )
    return any(applied.get(m.version) != m.checksum for m in available())


def _migrate_locked(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply the pending migrations under the advisory lock (another process may be at it too)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute(_BOOTSTRAP)
        cur = conn.cursor(row_factory=tuple_row)
        rows = cur.execute("SELECT version, checksum FROM papayya.schema_version").fetchall()
        applied = {int(version): checksum for version, checksum in rows}
        done: list[Migration] = []
        for m in available():
            checksum = applied.get(m.version)
            if checksum is not None:
                if checksum != m.checksum:
                    raise MigrationError(
                        f"Migration {m.version:04d}_{m.name} changed after it was applied; "
                        "restore the shipped file and add a new migration instead."
                    )
                continue
            with conn.transaction():
                try:
                    conn.execute(m.sql.encode())
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"Migration {m.version:04d}_{m.name} failed ({str(exc).strip()[:300]}); "
                        "the schema is unchanged by it. Fix the cause and run `papayya migrate`."
                    ) from exc
                conn.execute(
                    "INSERT INTO papayya.schema_version (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
            log.info("applied migration %04d_%s", m.version, m.name)
            done.append(m)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def current_version(conn: psycopg.Connection[Any]) -> int:
    """The highest applied migration, 0 on an empty database."""
    cur = conn.cursor(row_factory=tuple_row)
    row = cur.execute("SELECT to_regclass('papayya.schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = cur.execute("SELECT coalesce(max(version), 0) FROM papayya.schema_version").fetchone()
    return int(row[0]) if row else 0
