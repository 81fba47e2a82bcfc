"""The papayya plugin of the Temporal adapter: registers the ``temporal`` backend.

Loaded through the ``papayya`` entry-point group by every papayya runtime, so it imports nothing of
Temporal until the backend is chosen (``PAPAYYA_BACKEND=temporal``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from papayya.hookspecs import hookimpl


def _backend() -> Any:
    try:
        from papayya_temporal.backend import TemporalBackend
    except ImportError as exc:
        from papayya.errors import ConfigError

        raise ConfigError(
            f"The temporal backend needs the temporal extra ({exc.name} is missing); install it with "
            "`pip install 'papayya[temporal]'`."
        ) from None
    return TemporalBackend()


@hookimpl
def papayya_register_backends(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """Temporal: a run's items become activities of a MapItems workflow."""
    register("temporal", _backend)
