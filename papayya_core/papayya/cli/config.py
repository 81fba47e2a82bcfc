"""``papayya config show``: the settings in effect here, and where each one came from."""

from __future__ import annotations

import os
from typing import Any

import click

from papayya.cli import render
from papayya.config import (
    CONFIG_FILE_ENV,
    Effective,
    effective_settings,
    explicit_overrides,
    redact_url,
    store_location,
)
from papayya.errors import ConfigError


@click.group("config", no_args_is_help=True)
def config_group() -> None:
    """The configuration papayya reads: papayya.configure(...) > PAPAYYA_* variables >
    [tool.papayya] in pyproject.toml (or the file PAPAYYA_CONFIG_FILE names) > defaults."""


@config_group.command("show")
@render.json_option
def show_command(as_json: bool) -> None:
    """Print every setting's effective value and where it came from.

    Sources: explicit (papayya.configure), env PAPAYYA_X, the configuration file's path, or default;
    for home also found (the nearest .papayya/ here or above) or beside the pyproject.toml in effect.
    The first line names the store commands here open. Passwords in database_url are shown as ***.
    Nothing connects to the database.
    """
    found = settings()
    store = store_location(found)
    backends = _installed_backends()
    rows = _rows(found)
    if as_json:
        render.emit_json(
            {
                "file": str(found.file.path) if found.file is not None else None,
                "store": {
                    "url": redact_url(store.url) if store.url is not None else None,
                    "home": str(store.home),
                    "source": store.origin.source,
                    "from": store.origin.where,
                    "exists": store.exists,
                },
                "settings": {
                    name: {"value": value, "source": origin.source, "from": origin.where}
                    for name, value, origin in rows
                },
                "backends": backends,
            }
        )
        return
    where = (
        f"Configuration file: {found.file.where()}"
        if found.file is not None
        else "No configuration file ([tool.papayya] in pyproject.toml here or above, or PAPAYYA_CONFIG_FILE)."
    )
    what = f"Store: {store.describe()}" + (
        "" if store.exists else "; nothing is there yet (your script or `papayya migrate` creates it)"
    )
    render.out(
        render.note(what),
        render.note(where),
        render.table(["setting", "value", "from"], [(n, _text(v), str(o)) for n, v, o in rows]),
    )
    chosen = found.settings.backend
    installed = ", ".join(backends)
    if chosen in backends:
        render.out(render.note(f"Installed backends: {installed}."))
    else:
        render.out(
            render.note(
                f"Backend {chosen!r} is not installed here (installed: {installed}); install the extra "
                f"that provides it, e.g. pip install 'papayya[{chosen}]'."
            )
        )


def settings() -> Effective:
    """The settings in effect here; a configuration file that is not text is a ConfigError."""
    try:
        return effective_settings(**explicit_overrides())
    except UnicodeDecodeError:
        # papayya.config reads the file as TOML, which must be UTF-8; a binary file (a wrong
        # PAPAYYA_CONFIG_FILE) fails to decode before it fails to parse.
        named = os.environ.get(CONFIG_FILE_ENV, "").strip()
        which = f"The file {CONFIG_FILE_ENV} names ({named})" if named else "The pyproject.toml in effect"
        raise ConfigError(f"{which} is not UTF-8 text, so not TOML; fix the file or the variable.") from None


def _rows(found: Effective) -> list[tuple[str, Any, Any]]:
    rows = []
    for name, origin in found.origins.items():
        value = render.jsonable(getattr(found.settings, name))
        if name == "database_url" and isinstance(value, str):
            value = redact_url(value)
        rows.append((name, value, origin))
    return rows


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _installed_backends() -> list[str]:
    """Backend names registered in this environment (the built-in one and installed plugins')."""
    from papayya.plugins import Hooks, make_plugin_manager

    return sorted(Hooks(make_plugin_manager()).register_backends())
