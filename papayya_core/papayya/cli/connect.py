"""The CLI's way to the store: the same settings and runtime the library uses."""

from __future__ import annotations

from papayya import migrate as _migrate
from papayya.errors import MigrationError
from papayya.runtime import get_runtime
from papayya.store import Store


def connect() -> Store:
    """The configured store, its schema checked.

    With ``PAPAYYA_AUTO_MIGRATE=false`` nothing applies migrations on first use, so an outdated
    schema is reported here as one sentence instead of surfacing later as a missing table.
    """
    rt = get_runtime()
    if not rt.settings.auto_migrate:
        have, need = rt.store.schema_version(), _migrate.available()[-1].version
        if have < need:
            raise MigrationError(
                f"The database schema is at version {have} and this papayya needs {need}; "
                "apply the migrations with `papayya migrate`."
            )
    return rt.store
