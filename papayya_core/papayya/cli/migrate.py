"""``papayya migrate``: bring the database schema up to date."""

from __future__ import annotations

import click

from papayya.cli import render


@click.command("migrate")
@render.json_option
def migrate_command(as_json: bool) -> None:
    """Apply pending schema migrations and print the schema version.

    Safe to run from many machines at once: migrations run one at a time under a database lock.
    """
    from papayya.runtime import configure, get_runtime

    # Apply the migrations here, not as a side effect of connecting, so the report lists them.
    configure(auto_migrate=False)
    store = get_runtime().store
    applied = store.migrate()
    version = store.schema_version()
    if as_json:
        render.emit_json(
            {"version": version, "applied": [{"version": m.version, "name": m.name} for m in applied]}
        )
        return
    if not applied:
        render.out(f"The schema is up to date (version {version}).")
        return
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    plural = "migration" if len(applied) == 1 else "migrations"
    render.out(f"Applied {len(applied)} {plural} ({names}); the schema is at version {version}.")
