"""The ``celery`` backend, registered through papayya's plugin hook (entry point ``papayya``/``celery``).

Importing this module does not import Celery; choosing ``PAPAYYA_BACKEND=celery`` without Celery
installed is one clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from papayya.hookspecs import hookimpl


def _backend() -> Any:
    from papayya_celery import require_celery

    require_celery()
    from papayya_celery.backend import CeleryBackend

    return CeleryBackend()


@hookimpl
def papayya_register_backends(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """Celery: each item is one Celery message; the team's own workers run it through papayya."""
    register("celery", _backend)
