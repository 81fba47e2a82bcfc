"""The CLI's way to the store: the same settings and runtime the library uses.

The store is found as git finds ``.git`` (see :func:`papayya.config.store_location`), so a command
works from any folder of the project. Only the commands in :data:`MAY_CREATE` start a new embedded
store where there is none (``papayya migrate`` sets a store up, ``papayya worker`` serves one that
scripts will fill); every other command, reads and changes to existing runs and tenants alike, says
there is no store instead of creating an empty 40 MB database in the wrong folder.
"""

from __future__ import annotations

from pathlib import Path

import click

from papayya import migrate as _migrate
from papayya.cli.config import settings
from papayya.config import STORE_DIR, StoreLocation, store_location
from papayya.errors import MigrationError, StoreUnavailable
from papayya.runtime import current_runtime, get_runtime
from papayya.store import Store

# Commands that may create the embedded store (`papayya migrate` opens it without connect()).
MAY_CREATE = frozenset({"migrate", "worker"})

_announced = False


def connect() -> Store:
    """The configured store, its schema checked.

    Raises:
        StoreUnavailable: no store exists where the settings point and this command may not create one.
        MigrationError: with ``PAPAYYA_AUTO_MIGRATE=false``, the schema is older than this papayya (one
            sentence here instead of a missing table later).
    """
    if current_runtime() is None:
        where = store_location(settings())
        ctx = click.get_current_context(silent=True)
        if not where.exists and (ctx is None or ctx.command.name not in MAY_CREATE):
            raise StoreUnavailable(where.missing())
        _announce(where, ctx)
    rt = get_runtime()
    if not rt.settings.auto_migrate:
        have, need = rt.store.schema_version(), _migrate.available()[-1].version
        if have < need:
            raise MigrationError(
                f"The database schema is at version {have} and this papayya needs {need}; "
                "apply the migrations with `papayya migrate`."
            )
    return rt.store


def _announce(where: StoreLocation, ctx: click.Context | None) -> None:
    """Say once, on stderr, which store a command opened when it is not plain to see: papayya found it
    above the current folder (or a configuration file named it), or is about to create it. Not when a
    variable or papayya.configure named it, nor for ./.papayya itself; never in --json output."""
    global _announced
    if _announced or where.named or ctx is None or ctx.params.get("as_json"):
        return
    if where.exists and where.url is None and where.home == Path.cwd().resolve() / STORE_DIR:
        return
    _announced = True
    click.echo(f"papayya: {'store' if where.exists else 'new store'} {where.describe()}", err=True)
